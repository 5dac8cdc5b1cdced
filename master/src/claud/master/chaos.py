"""``claud chaos`` on a master: the public route that names a target, and this master's own faults.

- ``POST /v1/chaos`` (API token) takes a :class:`~claud.api.chaos.ChaosRequest`
  on any master started with ``--demo-faults`` (else 403 ``chaos_disabled``),
  finds the target among the masters (the directory) and the slaves (the
  slaves table), and forwards the fault to its internal chaos route, or takes
  it here when the target is this master. A master's id wins over a slave of
  the same name.
- ``POST /v1/internal/chaos`` (cluster secret) is where a fault lands, on a
  master; the slave serves the same route (``claud.slave.api``).
- :class:`claud.master.partition.PartitionedTransport` is the master's half of
  a partition: what it would send other masters is dropped.

The faults themselves (pause, partition, kill) are :mod:`claud.daemon.faults`.
The chaos routes are outside every fault, so ``resume`` and ``heal`` always
get through; a partitioned master's public API still answers (a client sees
it lose its leader), and it still forwards chaos requests: they are the
demo's remote control, not the cluster's traffic.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask

from claud.api import ErrorBody
from claud.api.chaos import ChaosAction, ChaosRequest, ChaosResult, FaultRequest
from claud.api.jobs import ADDRESS
from claud.api.protocol import CHAOS_PATH, JSON_CONTENT_TYPE
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.api_errors import ApiError
from claud.daemon.faults import Faults
from claud.master import openapi as docs
from claud.master.api import MasterDep, require_token
from claud.master.auth import cluster_secret_headers
from claud.master.master import Master

#: The public route (``claud chaos``); the internal one is ``claud.api.protocol.CHAOS_PATH``.
PUBLIC_CHAOS_PATH = "/v1/chaos"
#: How long the target has to answer a forwarded fault (a paused one answers its chaos route at once).
FORWARD_TIMEOUT = 5.0

router = APIRouter(prefix="/v1", tags=["chaos"], dependencies=[Depends(require_token)], responses=docs.AUTHENTICATED)
#: Checked by TokenAuthMiddleware: the cluster secret, a JSON body.
internal = APIRouter(include_in_schema=False)

_DOCS: dict[int | str, dict[str, Any]] = {
    202: {"description": "what the target did (a killed target exits once it has answered)"},
    403: {"model": ErrorBody,
          "description": "this master (or the target) was not started with --demo-faults (`chaos_disabled`)"},
    404: {"model": ErrorBody, "description": "no master or slave has the target's id (`not_found`)"},
    502: {"model": ErrorBody,
          "description": "the target did not answer (`target_unreachable`) or answered oddly (`target_error`)"},
    **docs.BAD_JSON, **docs.TOO_LARGE, **docs.INVALID,
}


def refuse_unless_enabled(faults: Faults, who: str) -> None:
    if not faults.enabled:
        raise ApiError(
            403, "chaos_disabled",
            f"{who} takes no faults: fault injection is for demo clusters, whose masters and slaves are all "
            "started with --demo-faults (CLAUD_DEMO_FAULTS=true)",
        )


def answer(faults: Faults, fault: FaultRequest, target: str, role: str) -> JSONResponse:
    """Take ``fault`` here; a kill exits once the 202 is out."""
    result = faults.take(fault, target, role)
    kill = BackgroundTask(faults.kill_now) if fault.action is ChaosAction.KILL else None
    return JSONResponse(result.model_dump(mode="json"), status_code=202, background=kill)


@router.post("/chaos", status_code=202, response_model=ChaosResult, operation_id="chaos", responses=_DOCS)
async def chaos(body: ChaosRequest, master: MasterDep) -> JSONResponse:
    """Break one process of a demo cluster on purpose: ``kill`` it (exit 137, a
    crash), ``pause`` it (as SIGSTOP: it does nothing and answers nothing for
    ``seconds``, 15 by default), ``resume`` it, ``partition`` it from its peers
    (until ``heal``, or for ``seconds``) or ``heal`` it.

    The target is a master's id or a slave's id. Only a cluster started with
    ``--demo-faults`` takes this (else 403 ``chaos_disabled``); a partitioned
    master's public API still answers."""
    refuse_unless_enabled(master.faults, f"master {master.id}")
    fault = FaultRequest(action=body.action, seconds=body.seconds)
    role, address = find_target(master, body.target)
    if role == "master" and body.target == str(master.id):
        return answer(master.faults, fault, body.target, role)
    result = await forward(master, role, body.target, address, fault)
    return JSONResponse(result.model_dump(mode="json"), status_code=202)


@internal.post(CHAOS_PATH, status_code=202)
async def chaos_here(body: FaultRequest, master: MasterDep) -> JSONResponse:
    """A fault for this master, forwarded by the master that took ``POST /v1/chaos``."""
    refuse_unless_enabled(master.faults, f"master {master.id}")
    return answer(master.faults, body, str(master.id), "master")


def find_target(master: Master, target: str) -> tuple[str, str]:
    """(role, address) of the master or slave whose id is ``target``; 404 naming it otherwise."""
    masters = dict(master.directory.items())
    if target.isdigit() and str(int(target)) == target and int(target) in masters:
        return "master", masters[int(target)]
    slave = master.state.slaves.get(target)
    if slave is not None:
        return "slave", slave.address
    known = ", ".join([*map(str, sorted(masters)), *sorted(master.state.slaves)[:20]])
    raise ApiError(404, "not_found", f"no master or slave has id {target!r} (known: {known})", "target")


def target_url(address: str, scheme: str) -> httpx.URL:
    """The chaos route of the process at ``address``, from parts checked again here:
    the cluster secret goes with the request (as ``claud.master.api.slave_logs_url``)."""
    if not ADDRESS.fullmatch(address):
        raise ValueError(f"{address[:80]!r} is not host:port")
    host, port = parse_host_port(address)
    if names_no_host(host):
        raise ValueError(f"{address!r} names no host")
    return httpx.URL(scheme=scheme, host=host, port=port, path=CHAOS_PATH)


async def forward(master: Master, role: str, target: str, address: str, fault: FaultRequest) -> ChaosResult:
    """Send ``fault`` to the target's chaos route; its answer, or the ApiError that says why not."""
    who = f"{role} {target}"
    try:
        url = target_url(address, master.scheme)
    except ValueError as exc:
        raise ApiError(502, "target_unreachable", f"{who} has no usable address: {exc}") from None
    headers = {**cluster_secret_headers(master.cluster_secret), "Content-Type": JSON_CONTENT_TYPE}
    try:
        # The slaves' client: it verifies every CLAUD process against the cluster's CA.
        response = await master.slave_http.post(
            url, content=fault.model_dump_json(), headers=headers, timeout=FORWARD_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise ApiError(502, "target_unreachable", f"{who} at {address} is unreachable: {exc!r}"[:500]) from None
    if response.status_code == 202:
        try:
            return ChaosResult.model_validate_json(response.content)
        except ValidationError:
            raise ApiError(502, "target_error", f"{who} answered 202 with an odd body") from None
    try:
        code, message = (error := response.json()["error"])["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = None, response.text[:200]
    if code == "chaos_disabled":
        raise ApiError(403, "chaos_disabled", f"{who}: {message}")
    raise ApiError(502, "target_error", f"{who} answered {response.status_code}: {message}"[:500])
