"""The master's HTTP API: thin routes over :class:`~claud.master.master.Master`.

Routes validate, propose and render; they never touch the tables directly.
The internal routes hand their bodies to :mod:`claud.master.transport`
(master <-> master) and :mod:`claud.master.slave_sessions` (slave -> master).
Every error is ``{"error": {"code", "message", "field"}}`` with the status
code an HTTP client expects.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from claud.api import (
    AddMemberRequest,
    Assignments,
    ClusterView,
    DrainRequest,
    ExecRequest,
    ExecResult,
    Heartbeat,
    JobBatch,
    JobBatchResult,
    JobEventList,
    JobList,
    JobSpec,
    JobState,
    JobVersionList,
    JobView,
    MasterView,
    MemberList,
    NodeList,
    NodeRole,
    NodeState,
    NodeView,
    RevertRequest,
    ScaleRequest,
    WatchRequest,
)
from claud.api.backup import GcSummary
from claud.api.jobs import (
    ADDRESS,
    LONG_ID,
    MAX_BATCH_IDEMPOTENCY_KEY,
    MAX_COUNT,
    batch_job_key,
    validate_idempotency_key,
)
from claud.api.nodes import MAX_DRAIN_DEADLINE
from claud.api.protocol import (
    ALLOC_ID_HEADER,
    CHAOS_PATH,
    CLUSTER_SECRET_HEADER,
    HEARTBEAT_PATH,
    INTERNAL_PREFIX,
    JSON_CONTENT_TYPE,
    MASTER_ID_HEADER,
    MEMBERS_PATH,
    PROPOSE_PATH,
    RAFT_PATH,
    SNAPSHOT_CHUNK_HEADER,
    SNAPSHOT_CHUNK_PATH,
    SNAPSHOT_CONTENT_TYPE,
    TRACE_PATH,
    WATCH_PATH,
    WHOAMI_PATH,
    slave_exec_path,
    slave_logs_path,
)
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.api_errors import ApiError, error_body
from claud.daemon.faults import FaultMiddleware
from claud.daemon.logfmt import log_event
from claud.daemon.refusal_log import RefusalLog
from claud.master import openapi as docs
from claud.master import ops, trace_relay, transport
from claud.master.auth import bearer, cluster_secret_headers, same_secret
from claud.master.body_limit import BodyLimitMiddleware, replay, replayed_body
from claud.master.dashboard import DASHBOARD_PATHS, SECURITY_HEADERS, dashboard_asset
from claud.master.events import parse_event_id
from claud.master.master import Master, build_master
from claud.master.members import change_members, check_member_address, member_list, refusal
from claud.master.metrics import MEDIA_TYPE as METRICS_MEDIA_TYPE
from claud.master.metrics import render_metrics
from claud.master.ops import utcnow
from claud.master.paging import (
    MAX_CURSOR,
    MAX_LIMIT,
    InvalidCursor,
    JobListRenderer,
    events_page,
    jobs_page,
    nodes_page,
)
from claud.master.raft import Role
from claud.master.raft_config import ChangeKind, ConfChange, ConfChangeRefused
from claud.master.settings import MasterSettings
from claud.master.state import JobRecord, Outcome, row_id
from claud.master.telemetry import RequestTiming
from claud.master.trace import trace_stream
from claud.master.trace_relay import MAX_TRACE_ID
from claud.master.transport import LeaderUnavailable, MalformedRequest, NotCommitted, NotLeader, OutcomeUnknown

log = logging.getLogger("claud.master.api")

ERROR_STATUS = {"not_found": 404, "conflict": 409, "invalid_spec": 422, "invalid_snapshot": 422}
#: Longest Idempotency-Key header accepted.
MAX_IDEMPOTENCY_KEY = 200


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def raise_for(outcome: Outcome) -> None:
    if not outcome.ok:
        raise ApiError(ERROR_STATUS.get(outcome.code, 400), outcome.code, outcome.message)


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` ones in a
# thread pool, a thread hop per request on the hottest path.
async def _master(request: Request) -> Master:
    master: Master = request.app.state.master
    return master


MasterDep = Annotated[Master, Depends(_master)]


#: Shown in the OpenAPI docs ("Authorize" button); enforcement is TokenAuthMiddleware's.
bearer_scheme = HTTPBearer(auto_error=False, description="the API token (--token-file, or <data-dir>/token)")


async def require_token(_: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None) -> None:
    """Declares the token in the schema; the middleware has already checked it."""


class TokenAuthMiddleware:
    """Refuse unauthenticated requests before routing, so that no route (and no
    body parsing, no streaming) ever runs for a caller without its credential.

    ``/v1/internal/*`` needs the cluster secret (there is always one) and, when
    it carries a body, ``Content-Type: application/json`` (``application/octet-stream``
    for a snapshot chunk, which is no simple request either): a web page can send
    a "simple" cross-origin request (text/plain, a form) without a preflight,
    and none of those may reach a route. Everything else but the open paths
    needs the API token in the ``Authorization`` header, never in the URL.
    """

    OPEN_PATHS = frozenset({
        "/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc",
        *DASHBOARD_PATHS,
    })
    #: Open by prefix: the docs page's own scripts and styles (served locally, no CDN).
    OPEN_PREFIXES = ("/docs/static/",)
    #: The routes only masters call: their sender's cluster and data directory are checked.
    MASTER_PATHS = frozenset({RAFT_PATH, PROPOSE_PATH, MEMBERS_PATH, SNAPSHOT_CHUNK_PATH})
    #: Methods whose requests carry no body to parse, hence no content type to check.
    BODYLESS = frozenset({"GET", "HEAD"})

    def __init__(self, app: ASGIApp, master: Master) -> None:
        self.app, self.master = app, master
        self.refusals = RefusalLog(log, master.settings.refused_log_every)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        path: str = scope["path"]
        if path in self.OPEN_PATHS or path.startswith(self.OPEN_PREFIXES):
            return None
        headers = dict(scope["headers"])
        client = (scope.get("client") or ("?", 0))[0]
        if path.startswith(INTERNAL_PREFIX):
            given = headers.get(CLUSTER_SECRET_HEADER.lower().encode(), b"").decode("latin-1")
            if not same_secret(given, self.master.cluster_secret):
                self.refusals.refused(client, path=path, credential="cluster_secret")
                return error_response(401, "unauthorized", f"missing or wrong cluster secret ({CLUSTER_SECRET_HEADER})")
            content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
            takes = SNAPSHOT_CONTENT_TYPE if path == SNAPSHOT_CHUNK_PATH else JSON_CONTENT_TYPE
            if scope["method"] not in self.BODYLESS and content_type != takes.encode():
                self.refusals.refused(client, path=path, credential="content_type")
                return error_response(415, "unsupported_media_type", f"{path} takes Content-Type: {takes}")
            if path in self.MASTER_PATHS:
                stranger = self.master.identity.check(headers)
                if stranger is not None:  # logged once by the check
                    return error_response(403, stranger.code, stranger.message)
            return None
        given_token = bearer(headers.get(b"authorization", b"").decode("latin-1"))
        if not same_secret(given_token, self.master.token):
            self.refusals.refused(client, path=path, credential="token")
            return error_response(
                401, "unauthorized", "missing or wrong API token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None


class RaftReceiver:
    """``POST /v1/internal/raft``, answered below the framework.

    Every batch of consensus messages between masters lands here, many per
    commit: it is the hottest path of a cluster, and it needs none of the
    routing, dependency solving and validation a route pays for. It runs
    inside TokenAuthMiddleware, which has checked the cluster secret; the
    transport decodes the batch.
    """

    PATH = RAFT_PATH

    def __init__(self, app: ASGIApp, master: Master) -> None:
        self.app, self.master = app, master

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await error_response(405, "method_not_allowed", "POST a batch of messages")(scope, receive, send)
            return
        try:
            messages = transport.decode_raft_batch(await replayed_body(receive))
        except MalformedRequest as exc:
            await error_response(400, exc.code, str(exc))(scope, receive, send)
            return
        self.master.replicated.receive(messages)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class ForwardedWrites:
    """``POST /v1/internal/propose`` (a follower's batch of writes), answered below the framework.

    Every write sent to a follower crosses this path, so it skips routing and
    dependency solving as RaftReceiver does; it answers exactly what the route
    ``propose_forwarded`` would (which serves only when this one is not
    installed). It runs inside TokenAuthMiddleware, which has checked the
    sender's cluster secret and identity."""

    PATH = PROPOSE_PATH

    def __init__(self, app: ASGIApp, master: Master) -> None:
        self.app, self.master = app, master

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            response = JSONResponse(await transport.answer_proposals(self.master.replicated,
                                                                     await replayed_body(receive)))
        except Exception as exc:
            known = known_error_response(exc, self.master)
            if known is None:
                raise
            response = known
        await response(scope, receive, send)


class SubmitFastPath:
    """``POST /v1/jobs`` with a valid job spec, answered below the framework.

    Submitting is the hottest public route, and FastAPI's routing, dependency
    solving and body validation cost a master more CPU than the submit itself.
    This path takes only what it can answer exactly as the route would: a JSON
    body that validates as a ``JobSpec``, at most one ``Idempotency-Key`` of
    legal length. Anything else goes on to the route with its body replayed,
    so each error has one rendering; both paths run :func:`submit`. It runs
    inside TokenAuthMiddleware, which has checked the token.
    """

    PATH = "/v1/jobs"
    #: ``POST /v1/jobs:batch`` likewise: a body that validates as a ``JobBatch``, a key the route takes.
    BATCH_PATH = "/v1/jobs:batch"

    def __init__(self, app: ASGIApp, master: Master) -> None:
        self.app, self.master = app, master

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
        elif scope["path"] == self.PATH:
            await self._submit(scope, receive, send)
        elif scope["path"] == self.BATCH_PATH:
            await self._submit_batch(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _submit_batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, taken, key = await self._taken(scope, receive, max_key=MAX_BATCH_IDEMPOTENCY_KEY)
        batch = None
        if taken:
            with contextlib.suppress(ValidationError):  # the full validation of the route names the field
                batch = JobBatch.model_validate_json(body)
        if batch is None:
            await self.app(scope, replay(body, receive), send)
            return
        await self._answer(scope, receive, send, submit_batch(self.master, batch.jobs, key))

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, taken, key = await self._taken(scope, receive, max_key=None)
        spec = None
        if taken:
            with contextlib.suppress(ValidationError):  # the full validation below names the field
                spec = JobSpec.model_validate_json(body)
        if spec is None:
            await self.app(scope, replay(body, receive), send)
            return
        await self._answer(scope, receive, send, submit(self.master, spec, key))

    @staticmethod
    async def _taken(scope: Scope, receive: Receive, *, max_key: int | None) -> tuple[bytes, bool, str | None]:
        """The body; whether this path may answer it (JSON, and no key the route would refuse);
        the ``Idempotency-Key`` as Starlette would decode it (latin-1), None when absent."""
        content_type, keys = b"", []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"idempotency-key":
                keys.append(value)
        body = await replayed_body(receive)
        if content_type.partition(b";")[0].strip().lower() != JSON_CONTENT_TYPE.encode():
            return body, False, None
        if not keys:
            return body, True, None
        if len(keys) != 1 or (max_key is not None and len(keys[0]) > max_key) or not _legal_key(keys[0]):
            return body, False, None
        return body, True, keys[0].decode("latin-1")

    async def _answer(self, scope: Scope, receive: Receive, send: Send, answer: Awaitable[Response]) -> None:
        try:
            response = await answer
        except Exception as exc:
            known = known_error_response(exc, self.master)
            if known is None:
                raise
            response = known
        await response(scope, receive, send)


def _legal_key(raw: bytes) -> bool:
    try:
        validate_idempotency_key(raw.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


def idempotency_key_from_header(raw: str) -> str:
    """The ``Idempotency-Key`` header, held to the rules of the ``idempotency_key`` field.

    ASGI servers hand headers over as bytes and Starlette decodes them as
    latin-1; the key is read back as the UTF-8 text a client sent, so both
    submit paths see the same key (and refuse the same bytes)."""
    try:
        return validate_idempotency_key(raw.encode("latin-1").decode("utf-8"))
    except UnicodeError:
        raise ApiError(422, "invalid_spec", "Idempotency-Key header: not UTF-8 text", "Idempotency-Key") from None
    except ValueError as exc:
        raise ApiError(422, "invalid_spec", f"Idempotency-Key header: {exc}", "Idempotency-Key") from None


# ---------------------------------------------------------------------- jobs

jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_token)], responses=docs.AUTHENTICATED)

#: ``?limit=`` and ``?next=`` of the paginated lists (see claud.master.paging).
Limit = Annotated[
    int | None,
    Query(ge=1, le=MAX_LIMIT, description="answer at most this many items, and a `next` cursor (default: all)"),
]
Cursor = Annotated[
    str | None,
    Query(
        alias="next", max_length=MAX_CURSOR,
        description="the `next` of the previous page: continue after its last item",
    ),
]


def _cursor_error(exc: InvalidCursor) -> ApiError:
    return ApiError(422, "invalid_cursor", str(exc), "next")


async def _renderer(request: Request) -> JobListRenderer:
    renderer: JobListRenderer = request.app.state.job_list_renderer
    return renderer


def _get_job(master: Master, job_id: str) -> JobRecord:
    """The job's row 0 (an allocation row's ``<job>.<index>`` id names no job)."""
    job = master.state.head(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return job


@jobs.post(
    "",
    status_code=201,
    response_model=JobView,
    operation_id="submitJob",
    responses={
        200: {"model": JobView, "description": "the job an earlier submit with the same idempotency key created"},
        201: {"description": "the job, created"},
        **docs.BAD_JSON, **docs.CONFLICT, **docs.TOO_LARGE, **docs.INVALID, **docs.WRITE,
    },
)
async def submit_job(
    spec: JobSpec,
    master: MasterDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_IDEMPOTENCY_KEY)] = None,
) -> Any:
    """Submit a job; answered once the entry is durable on a quorum of masters.

    Retrying with the same ``Idempotency-Key`` (or ``idempotency_key`` field)
    returns the job the first attempt created instead of a second job.
    """
    # Well-formed submits are answered by SubmitFastPath; this route serves the
    # rest (and the OpenAPI schema), with the same logic.
    given = request.headers.getlist("idempotency-key")
    if len(given) > 1:
        raise ApiError(422, "invalid_spec", f"Idempotency-Key header given {len(given)} times; send one",
                       "Idempotency-Key")
    return await submit(master, spec, idempotency_key)


async def submit(master: Master, spec: JobSpec, idempotency_key: str | None) -> Response:
    """Propose the job and render it: 201 when created, 200 when the key names an existing one."""
    if idempotency_key is not None:
        idempotency_key = idempotency_key_from_header(idempotency_key)
        if spec.idempotency_key is not None and spec.idempotency_key != idempotency_key:
            raise ApiError(
                422, "invalid_spec", "Idempotency-Key header and idempotency_key field differ", "idempotency_key"
            )
        if spec.idempotency_key is None:
            # Through validation, never model_copy(update=...): only a valid spec may enter the log.
            spec = spec.with_idempotency_key(idempotency_key)
    for _ in range(3):  # a fresh id collides with an existing one only by (rare) chance
        outcome = await master.propose(ops.SubmitJob(at=utcnow(), job_id=secrets.token_hex(6), spec=spec))
        if outcome.ok or "already exists" not in outcome.message:
            break
    raise_for(outcome)
    job_id, created = outcome.value
    view = master.state.job_view(master.state.jobs[job_id])
    # Serialised by pydantic at once (the JSON JSONResponse would write, without a dict in between).
    return Response(view.model_dump_json(), status_code=201 if created else 200, media_type=JSON_CONTENT_TYPE)


@jobs.post(
    ":batch",
    status_code=201,
    response_model=JobBatchResult,
    operation_id="submitJobsBatch",
    responses={
        200: {"model": JobBatchResult, "description": "every job was made by an earlier batch with the same key"},
        201: {"description": "the batch, committed (some of its jobs may come from an earlier batch with its key)"},
        **docs.BAD_JSON, **docs.CONFLICT, **docs.TOO_LARGE, **docs.INVALID, **docs.WRITE,
    },
)
async def submit_jobs_batch(
    batch: JobBatch,
    master: MasterDep,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=MAX_BATCH_IDEMPOTENCY_KEY)] = None,
) -> Any:
    """Submit up to 1000 jobs as one log entry: all are accepted or none is; answered once committed.

    An invalid job refuses the whole batch (422 naming ``jobs.<i>.<field>``).
    With an ``Idempotency-Key`` header K, job ``i`` is keyed ``K/i``: retrying
    the batch with K returns the same ids and creates nothing twice. A batch
    with the header must leave each job's ``idempotency_key`` out; one
    without it may key its jobs one by one.
    """
    given = request.headers.getlist("idempotency-key")
    if len(given) > 1:
        raise ApiError(422, "invalid_spec", f"Idempotency-Key header given {len(given)} times; send one",
                       "Idempotency-Key")
    return await submit_batch(master, batch.jobs, idempotency_key)


async def submit_batch(master: Master, specs: list[JobSpec], idempotency_key: str | None) -> Response:
    """Propose the jobs as one entry and answer their ids once it is applied here."""
    if idempotency_key is not None:
        batch_key = idempotency_key_from_header(idempotency_key)
        if len(batch_key) > MAX_BATCH_IDEMPOTENCY_KEY:
            raise ApiError(422, "invalid_spec", f"Idempotency-Key header: a batch's key is at most "
                           f"{MAX_BATCH_IDEMPOTENCY_KEY} characters (its jobs' keys add /<i>)", "Idempotency-Key")
        for i, spec in enumerate(specs):
            if spec.idempotency_key is not None:
                raise ApiError(422, "invalid_spec", "a batch sent with an Idempotency-Key header keys its jobs "
                               "itself (<key>/<i>): leave idempotency_key out", f"jobs.{i}.idempotency_key")
        specs = [spec.with_idempotency_key(batch_job_key(batch_key, i)) for i, spec in enumerate(specs)]
    for _ in range(3):  # a fresh id collides with an existing one only by (rare) chance
        op = ops.SubmitJobs(
            at=utcnow(), jobs=[ops.SubmittedJob(job_id=secrets.token_hex(6), spec=spec) for spec in specs]
        )
        outcome = await master.propose(op)
        if outcome.ok or "already exists" not in outcome.message:
            break
    if not outcome.ok:
        where = outcome.value.get("index") if isinstance(outcome.value, dict) else None
        raise ApiError(ERROR_STATUS.get(outcome.code, 400), outcome.code, outcome.message,
                       f"jobs.{where}" if isinstance(where, int) else None)
    verdicts = [(str(job_id), bool(created)) for job_id, created in outcome.value]
    created = sum(made for _, made in verdicts)
    result = JobBatchResult(ids=[job_id for job_id, _ in verdicts], created=created, index=master.commit_index)
    return Response(result.model_dump_json(), status_code=201 if created else 200, media_type=JSON_CONTENT_TYPE)


@jobs.get("", response_model=JobList, operation_id="listJobs", responses=docs.INVALID)
async def list_jobs(
    master: MasterDep,
    renderer: Annotated[JobListRenderer, Depends(_renderer)],
    state: JobState | None = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> Response:
    """All jobs (or those in one state), without their event histories, oldest first.

    With ``limit``, one page at a time: follow ``next`` until it is null.
    """
    wanted = None if state is None else (lambda job: master.state.state_of(job) == state)
    try:
        found, next_cursor = jobs_page(master.state, wanted, cursor, limit)
    except InvalidCursor as exc:
        raise _cursor_error(exc) from None
    # Rendered from each job's kept JSON: no model per job, no second validation.
    return Response(renderer.body(master.state, found, master.commit_index, next_cursor), media_type=JSON_CONTENT_TYPE)


@jobs.get("/{job_id}", response_model=JobView, operation_id="getJob", responses={**docs.NOT_FOUND, **docs.INVALID})
async def get_job(job_id: str, master: MasterDep) -> JobView:
    """One job, with its events (the latest ones; ``/events`` pages through them)."""
    return master.state.job_view(_get_job(master, job_id))


@jobs.get(
    "/{job_id}/events", response_model=JobEventList, operation_id="jobEvents",
    responses={**docs.NOT_FOUND, **docs.INVALID},
)
async def job_events(job_id: str, master: MasterDep, limit: Limit = None, cursor: Cursor = None) -> JobEventList:
    """The job's transitions, oldest first (a job keeps its latest ones); with ``limit``, a page at a time."""
    job = _get_job(master, job_id)
    try:
        found, next_cursor = events_page(job.events, cursor, limit)
    except InvalidCursor as exc:
        raise _cursor_error(exc) from None
    return JobEventList(events=found, next=next_cursor, index=master.commit_index)


@jobs.delete(
    "/{job_id}", status_code=202, response_model=JobView, operation_id="stopJob",
    responses={
        202: {"description": "the job, stopping"}, **docs.NOT_FOUND, **docs.CONFLICT, **docs.INVALID, **docs.WRITE,
    },
)
async def stop_job(job_id: str, master: MasterDep) -> JobView:
    """Stop a job: its container gets SIGTERM, then SIGKILL after the job's ``stop_timeout``."""
    _get_job(master, job_id)
    raise_for(await master.propose(ops.StopJob(at=utcnow(), job_id=job_id)))
    return master.state.job_view(master.state.jobs[job_id])


async def _new_version(
    master: Master, job_id: str, make: Callable[[], ops.UpdateJob | ops.ScaleJob | ops.RevertJob]
) -> JobView:
    _get_job(master, job_id)  # first: an id no job has (one the op's own rules refuse too) is a 404
    raise_for(await master.propose(make()))
    return master.state.job_view(_get_job(master, job_id))


@jobs.put(
    "/{job_id}", response_model=JobView, operation_id="updateJob",
    responses={**docs.BAD_JSON, **docs.NOT_FOUND, **docs.CONFLICT, **docs.INVALID, **docs.TOO_LARGE, **docs.WRITE},
)
async def update_job(job_id: str, spec: JobSpec, master: MasterDep) -> JobView:
    """A new version of the job. A change of ``count`` alone scales it; any other change rolls out:
    ``update.max_parallel`` allocations at a time are replaced, each new one healthy for
    ``update.min_healthy_time`` before the next (``rollout`` in the answer follows it). The same
    spec again makes no version. A finished or stopped job has no next version (409)."""
    return await _new_version(master, job_id, lambda: ops.UpdateJob(at=utcnow(), job_id=job_id, spec=spec))


@jobs.post(
    "/{job_id}/scale", response_model=JobView, operation_id="scaleJob",
    responses={**docs.BAD_JSON, **docs.NOT_FOUND, **docs.CONFLICT, **docs.INVALID, **docs.TOO_LARGE, **docs.WRITE},
)
async def scale_job(job_id: str, body: ScaleRequest, master: MasterDep) -> JobView:
    """A new version with another ``count``; nothing is replaced (new allocations are placed, those
    past the count stopped)."""
    return await _new_version(master, job_id, lambda: ops.ScaleJob(at=utcnow(), job_id=job_id, count=body.count))


@jobs.post(
    "/{job_id}/revert", response_model=JobView, operation_id="revertJob",
    responses={**docs.BAD_JSON, **docs.NOT_FOUND, **docs.CONFLICT, **docs.INVALID, **docs.TOO_LARGE, **docs.WRITE},
)
async def revert_job(job_id: str, body: RevertRequest, master: MasterDep) -> JobView:
    """A new version with the spec of ``version`` (one ``/versions`` lists), rolled out like an update."""
    return await _new_version(
        master, job_id, lambda: ops.RevertJob(at=utcnow(), job_id=job_id, version=body.version)
    )


@jobs.get(
    "/{job_id}/versions", response_model=JobVersionList, operation_id="listJobVersions",
    responses={**docs.NOT_FOUND, **docs.INVALID},
)
async def job_versions(job_id: str, master: MasterDep) -> JobVersionList:
    """The job's kept versions (the last 10), newest first; ``stable``: it rolled out whole."""
    return JobVersionList(versions=master.state.versions_view(_get_job(master, job_id)), index=master.commit_index)


@jobs.get(
    "/{job_id}/logs", response_class=docs.TextStream, operation_id="jobLogs",
    responses={
        200: {
            "description": "the container's output, as it was written",
            "headers": {
                ALLOC_ID_HEADER: {"description": "the attempt this output comes from", "schema": {"type": "string"}},
            },
        },
        **docs.NOT_FOUND, **docs.CONFLICT, **docs.INVALID, **docs.BAD_GATEWAY,
    },
)
async def job_logs(
    job_id: str,
    master: MasterDep,
    follow: bool = False,
    tail: Annotated[int | None, Query(ge=0)] = None,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000, description="an earlier attempt's output, "
                                          "while its slave keeps its exited container (default: the latest)")] = None,
    index: Annotated[int, Query(ge=0, lt=MAX_COUNT, description="which allocation of the job (0..count-1)")] = 0,
) -> StreamingResponse:
    """The output of the job's latest container (or of ``attempt``), streamed from its slave."""
    job = _get_job(master, job_id)
    if index:
        found = master.state.jobs.get(row_id(job.id, index))
        if found is None:
            raise ApiError(404, "not_found", f"job {job_id} has no allocation {index}", field="index")
        job = found
    if attempt is not None and attempt > job.attempts:
        raise ApiError(404, "not_found", f"job {job_id} has had {job.attempts} attempts; it has no attempt {attempt}",
                       field="attempt")
    wanted = job.attempts if attempt is None else attempt
    placed = (e for e in reversed(job.events) if e.state == JobState.SCHEDULED)
    slave_id = next((e.node_id for e in placed if attempt is None or e.attempt == attempt), None)
    alloc_id = job.alloc_id if attempt is None or attempt == job.attempts else f"{job.id}-{wanted}"  # row id
    if attempt is not None and slave_id is None and job.attempts:
        raise ApiError(404, "not_found", f"where attempt {attempt} of job {job_id} ran is no longer recorded "
                       "(its events were trimmed)", field="attempt")
    if alloc_id is None or slave_id is None:
        raise ApiError(409, "conflict", f"job {job_id} has not been placed on a slave yet; it has no logs")
    slave = master.state.slaves.get(slave_id)
    if slave is None:
        raise ApiError(404, "not_found", f"slave {slave_id} that ran job {job_id} is unknown")
    if master.faults.partitioned:
        raise ApiError(502, "slave_unreachable", f"master {master.id} is partitioned from its slaves (claud chaos)")
    http = master.slave_http
    headers = cluster_secret_headers(master.cluster_secret)
    params: dict[str, Any] = {"follow": str(follow).lower()}
    if tail is not None:
        params["tail"] = tail
    try:
        url = slave_logs_url(slave.address, alloc_id, master.scheme)
    except ValueError as exc:
        raise ApiError(502, "slave_unreachable", f"slave {slave_id} has no usable address: {exc}") from None
    request = http.build_request("GET", url, params=params, headers=headers)
    try:
        # A redirect would carry the secret wherever the slave's answer points.
        upstream = await http.send(request, stream=True, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise ApiError(502, "slave_unreachable", f"slave {slave_id} at {slave.address} is unreachable: {exc}") from None
    if upstream.status_code != 200:
        await upstream.aread()
        await upstream.aclose()
        if upstream.status_code == 404:
            which = f"attempt {attempt} of job {job_id}" if attempt is not None else f"job {job_id}"
            raise ApiError(404, "not_found", f"the container of {which} is gone from slave {slave_id}")
        raise ApiError(502, "slave_error", f"slave {slave_id} answered {upstream.status_code} for the logs")
    return StreamingResponse(
        upstream.aiter_raw(), media_type="text/plain; charset=utf-8", background=BackgroundTask(upstream.aclose),
        headers={ALLOC_ID_HEADER: alloc_id},  # which attempt this is: `logs -f` follows restarts by it
    )


#: Seconds a master waits for a slave's exec answer beyond the command's own timeout.
EXEC_ANSWER_SLACK = 10.0


@jobs.post(
    "/{job_id}/exec", response_model=ExecResult, operation_id="execJob",
    responses={
        **docs.EXEC_CONFLICT, **docs.EXEC_TIMEOUT, **docs.BAD_JSON, **docs.NOT_FOUND, **docs.INVALID,
        **docs.TOO_LARGE, **docs.BAD_GATEWAY,
    },
)
async def exec_job(job_id: str, body: ExecRequest, master: MasterDep) -> ExecResult:
    """Run a command in the job's running container, through its slave (not interactive; like ``docker exec``).

    Any master answers from its own state; the command runs once, so a client does not retry it elsewhere.
    """
    head = _get_job(master, job_id)
    rows = master.state.rows(head)
    running = [row for row in rows if row.state == JobState.RUNNING and row.alloc_id and row.slave_id]
    if body.alloc is not None:
        if not any(row.alloc_id == body.alloc for row in running):
            current = ", ".join(row.alloc_id or "" for row in running) or "none"
            raise ApiError(409, "alloc_mismatch", f"allocation {body.alloc} is not one of job {job_id}'s running "
                           f"ones ({current})", field="alloc")
        running = [row for row in running if row.alloc_id == body.alloc]
    if not running:
        state = master.state.state_of(head)
        raise ApiError(409, "not_running", f"job {job_id} is {state.value}: it has no running allocation")
    job = running[0]
    alloc_id, slave_id = job.alloc_id or "", job.slave_id or ""
    slave = master.state.slaves.get(slave_id)
    if slave is None:
        raise ApiError(404, "not_found", f"slave {slave_id} that runs job {job_id} is unknown")
    if master.faults.partitioned:
        raise ApiError(502, "slave_unreachable", f"master {master.id} is partitioned from its slaves (claud chaos)")
    try:
        url = slave_allocation_url(slave.address, alloc_id, master.scheme, slave_exec_path)
    except ValueError as exc:
        raise ApiError(502, "slave_unreachable", f"slave {slave_id} has no usable address: {exc}") from None
    fields: dict[str, Any] = {"job": job_id, "alloc": alloc_id, "slave": slave_id, "argv": body.command}
    try:
        # A redirect would carry the secret wherever the slave's answer points.
        upstream = await master.slave_http.post(
            url, json={"command": body.command, "timeout": body.timeout},
            headers=cluster_secret_headers(master.cluster_secret), follow_redirects=False,
            timeout=httpx.Timeout(10.0, read=body.timeout + EXEC_ANSWER_SLACK),
        )
    except httpx.HTTPError as exc:
        log_event(log, "exec.unreachable", logging.WARNING, **fields, error=str(exc))
        raise ApiError(502, "slave_unreachable", f"slave {slave_id} at {slave.address} did not answer: {exc}") from None
    if upstream.status_code == 200:
        try:
            result = ExecResult.model_validate_json(upstream.content)
        except ValidationError:
            raise ApiError(502, "slave_error", f"slave {slave_id} answered an exec result that is not one") from None
        result = result.model_copy(update={"job_id": job_id, "alloc_id": alloc_id, "node_id": slave_id})
        log_event(log, "exec.done", logging.INFO, **fields, exit_code=result.exit_code, truncated=result.truncated)
        return result
    code, message = _slave_error(upstream)
    log_event(log, "exec.refused", logging.WARNING, **fields, status=upstream.status_code, code=code)
    if upstream.status_code == 504:
        raise ApiError(504, "exec_timeout", message or f"the command did not end within {body.timeout:g}s")
    if upstream.status_code in (404, 409):
        raise ApiError(409, "not_running", f"job {job_id} has no running container on slave {slave_id}: {message}")
    raise ApiError(502, "slave_error", f"slave {slave_id} answered {upstream.status_code} for the exec: {message}")


def _slave_error(response: httpx.Response) -> tuple[str | None, str]:
    """The code and message of a slave's error body (both best effort: it is another process's answer)."""
    try:
        error = response.json()["error"]
        return str(error.get("code")), str(error.get("message", ""))[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, response.text[:200]


def check_slave_address(address: str) -> None:
    """A slave registers where the masters will fetch its logs, with the cluster secret:
    an address naming no host (0.0.0.0, ::, ...) would send that to whatever listens
    on the master's own machine, so the heartbeat is refused (422, field ``address``)."""
    try:
        host, _ = parse_host_port(address)
    except ValueError as exc:
        raise ApiError(422, "invalid_spec", f"address: {exc}", "address") from None
    if names_no_host(host):
        raise ApiError(
            422, "invalid_spec",
            f"address: {address[:80]!r} names no host; the slave must advertise one the masters can reach "
            "(--advertise)",
            "address",
        )


def slave_logs_url(address: str, alloc_id: str, scheme: str = "http") -> httpx.URL:
    """``{scheme}://{host}:{port}/v1/allocations/{alloc}/logs`` of a registered slave, or ValueError."""
    return slave_allocation_url(address, alloc_id, scheme, slave_logs_path)


def slave_allocation_url(
    address: str, alloc_id: str, scheme: str, path: Callable[[str], str]
) -> httpx.URL:
    """``{scheme}://{host}:{port}{path(alloc)}`` of a registered slave, or ValueError.

    The cluster secret goes with this request, so the URL is assembled from
    parts that were checked again here (a registration validated the address,
    this keeps a path, a query or a wildcard host from ever reaching it)."""
    if not ADDRESS.fullmatch(address):
        raise ValueError(f"{address[:80]!r} is not host:port")
    host, port = parse_host_port(address)
    if names_no_host(host):
        raise ValueError(f"{address!r} names no host")
    if not LONG_ID.fullmatch(alloc_id):
        raise ValueError(f"{alloc_id[:80]!r} is not an allocation id")
    return httpx.URL(scheme=scheme, host=host, port=port, path=path(alloc_id))


# --------------------------------------------------------------------- nodes

nodes = APIRouter(
    prefix="/v1/nodes", tags=["nodes"], dependencies=[Depends(require_token)], responses=docs.AUTHENTICATED
)


def _master_role(master: Master, master_id: int) -> str:
    if master_id == master.leader_id:
        return "leader"
    if master_id == master.id:
        campaigning = {Role.CANDIDATE: "candidate", Role.PRE_CANDIDATE: "candidate"}
        return campaigning.get(master.replicated.core.role, "follower")
    return "follower" if master.leader_id is not None else "unknown"


def _master_views(master: Master) -> list[NodeView]:
    views = []
    for master_id, address in master.directory.items():
        reachable = master_id == master.id or master.transport.reachable(master_id) or not master.is_leader
        views.append(
            NodeView(
                id=str(master_id),
                role=NodeRole.MASTER,
                address=address,
                state=NodeState.ALIVE if reachable else NodeState.SUSPECT,
                labels={"raft": _master_role(master, master_id)},
                last_heartbeat=datetime.now(UTC) if master_id == master.id else None,
            )
        )
    return views


def _slave_view(master: Master, slave_id: str) -> NodeView:
    view = master.state.slave_view(master.state.slaves[slave_id])
    # The leader's own memory is fresher than the replicated copy (touched every few seconds).
    view.usage = master.slaves.usage(slave_id) or view.usage
    view.last_heartbeat = master.slaves.last_heartbeat(slave_id) or view.last_heartbeat
    view.lease_left = master.slaves.lease_left(slave_id) if master.is_leader else None
    return view


@nodes.get("", response_model=NodeList, operation_id="listNodes", responses=docs.INVALID)
async def list_nodes(master: MasterDep, limit: Limit = None, cursor: Cursor = None) -> NodeList:
    """Masters by id, then slaves by id; with ``limit``, a page at a time."""
    items = [(0, view.id, view) for view in _master_views(master)]
    items += [(1, slave_id, _slave_view(master, slave_id)) for slave_id in master.state.slaves]
    try:
        found, next_cursor = nodes_page(items, cursor, limit)
    except InvalidCursor as exc:
        raise _cursor_error(exc) from None
    return NodeList(nodes=found, next=next_cursor, index=master.commit_index)


async def _set_drain(master: Master, slave_id: str, draining: bool, deadline: float | None = None) -> NodeView:
    if slave_id not in master.state.slaves:
        if slave_id == str(master.id):
            raise ApiError(409, "conflict", f"node {slave_id} is a master; masters run no jobs")
        raise ApiError(404, "not_found", f"node {slave_id} not found")
    now = utcnow()
    until = None if deadline is None else now + timedelta(seconds=deadline)
    raise_for(await master.propose(ops.SetDrain(at=now, slave_id=slave_id, draining=draining, deadline=until)))
    return _slave_view(master, slave_id)


#: A slave's id in a /v1/nodes path: ``node_id`` in the public API, where a node is a master or a slave.
SlavePath = Annotated[str, Path(alias="node_id", description="the slave's id")]

_DRAIN_DOCS: dict[int | str, dict[str, Any]] = {
    **docs.BAD_JSON, **docs.NOT_FOUND, **docs.CONFLICT, **docs.TOO_LARGE, **docs.INVALID, **docs.WRITE,
}


@nodes.post("/{node_id}/drain", response_model=NodeView, operation_id="drainNode", responses=_DRAIN_DOCS)
async def drain_node(
    slave_id: SlavePath,
    master: MasterDep,
    body: DrainRequest | None = None,
    deadline: Annotated[float | None, Query(ge=0, le=MAX_DRAIN_DEADLINE, allow_inf_nan=False)] = None,
) -> NodeView:
    """Move the slave's jobs elsewhere and place no new ones on it.

    Without a deadline every job moves at once. With ``deadline`` seconds (in
    the JSON body or the query), services move at once and batch jobs may
    finish their work until then; what still runs at the deadline is killed
    and placed elsewhere (Nomad's drain deadline).
    """
    given = body.deadline if body is not None else None
    if given is not None and deadline is not None and given != deadline:
        raise ApiError(422, "invalid_spec", "deadline given in both the query and the body, differently", "deadline")
    return await _set_drain(master, slave_id, True, given if given is not None else deadline)


@nodes.post("/{node_id}/undrain", response_model=NodeView, operation_id="undrainNode", responses=_DRAIN_DOCS)
async def undrain_node(slave_id: SlavePath, master: MasterDep) -> NodeView:
    """Let the scheduler place jobs on a drained slave again."""
    return await _set_drain(master, slave_id, False)


# ------------------------------------------------------------------- cluster

cluster = APIRouter(prefix="/v1", tags=["cluster"], dependencies=[Depends(require_token)], responses=docs.AUTHENTICATED)


@cluster.get("/cluster", response_model=ClusterView, operation_id="clusterStatus")
async def cluster_status(master: MasterDep) -> ClusterView:
    """Who leads, in which term, how far the log is committed, each master's
    replication progress, and the cluster configuration."""
    matches = master.replicated.match_indexes()
    members = member_list(master.replicated, master.identity.member_ids())
    return ClusterView(
        leader_id=master.leader_id,
        leader_address=master.leader_address,
        term=master.term,
        commit_index=master.commit_index,
        quorum=master.replicated.core.quorum,
        cluster_id=members.cluster_id,
        members=members.members,
        last_gc=_last_gc(master),
        master_id=master.id,
        role=master.replicated.core.role.value,
        voted_for=master.replicated.core.voted_for,
        last_index=master.replicated.core.last_index,
        applied_index=master.state.applied_index,
        slave_lease=master.settings.slave_lease,
        demo_faults=master.faults.enabled,
        masters=[
            MasterView(
                id=master_id,
                address=address,
                role=_master_role(master, master_id),
                match_index=master.replicated.core.last_index if master_id == master.id else matches.get(master_id),
                reachable=master_id == master.id or master.transport.reachable(master_id) or not master.is_leader,
            )
            for master_id, address in master.directory.items()
        ],
    )


def _last_gc(master: Master) -> GcSummary | None:
    done = master.state.last_gc
    return None if done is None else GcSummary(at=done.at, index=done.index, jobs=done.jobs, slaves=done.slaves)


@cluster.get(
    "/events", response_class=docs.EventStream, operation_id="events",
    responses={200: {"description": "`event: <type>` / `data: <JSON>` pairs; comments keep the connection alive"}},
)
async def events(
    master: MasterDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    after: Annotated[str | None, Query(max_length=40, description="resume after this event id (INDEX.K)")] = None,
) -> StreamingResponse:
    """Server-sent events: every committed job and node transition, as it commits. Each has
    an ``id:`` (``INDEX.K``); with ``Last-Event-ID`` (or ``?after=``) the stream first
    replays what this master kept since then (``event: gap`` when some was not kept)."""
    given, field = (last_event_id, "Last-Event-ID") if last_event_id is not None else (after, "after")
    try:
        start = parse_event_id(given) if given is not None else None
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}", field=field) from None

    async def stream() -> AsyncIterator[str]:
        yield ": connected\n\n"
        async for event in master.events.subscribe(start):
            if event is None:
                yield ": keep-alive\n\n"
            else:
                event_id = event.get("event_id")
                head = f"id: {event_id}\n" if event_id else ""
                yield f"{head}event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


_TRACE_ID_DOC = ("resume after this trace id (with `masters=all`, the stream's cursor, `MASTER:ID,...`): "
                 "replay the kept events that follow it, then stream live")


def _trace_id(raw: str) -> int:
    """A ``Last-Event-ID`` header: a trace id (hostile input: digits only, bounded)."""
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 16 or int(text) > MAX_TRACE_ID:
        raise ApiError(422, "invalid_spec", f"Last-Event-ID must be a trace id (0..{MAX_TRACE_ID})", "Last-Event-ID")
    return int(text)


class TraceMasters(StrEnum):
    """Whose trace ``GET /v1/cluster/trace`` sends."""

    SELF = "self"
    ALL = "all"


@cluster.get(
    "/cluster/trace", response_class=docs.EventStream, operation_id="clusterTrace",
    responses={
        200: {"description": "`id: <trace id>` (with `masters=all`: a cursor, `MASTER:ID,...`) / "
              "`event: <kind>` / `data: <JSON>`; a `trace.gap` event when events the reader asked for fell "
              "out of a ring; with `masters=all` also `status` (each master's role, term, vote and indexes), "
              "`relay.lost` and `relay.back`; comments keep the connection alive"},
        **docs.INVALID,
    },
)
async def cluster_trace(
    master: MasterDep,
    after: Annotated[int | None, Query(ge=0, le=MAX_TRACE_ID, description=_TRACE_ID_DOC)] = None,
    masters: Annotated[TraceMasters, Query(description="`self`: this master's trace; `all`: every "
                                                       "master's it can reach, merged")] = TraceMasters.SELF,
    last_event_id: Annotated[str | None, Header(max_length=512, description=_TRACE_ID_DOC)] = None,
) -> StreamingResponse:
    """Server-sent events: the consensus trace (roles, elections, votes, appends and
    their answers, snapshots, commits, slave heartbeats, job and slave transitions),
    the kept events first, then live.

    Each master keeps its own bounded trace (the last 2,000 events; heartbeats
    sampled to one per peer a second); ``Last-Event-ID`` (sent by a reconnecting
    reader, so it wins over ``?after=``) resumes without repeats. Ids grow across
    a master's restarts too (they start from its clock); an id ahead of the newest
    (another master's, or a clock set back) replays all that is kept.

    ``masters=all`` relays every master's trace through this one (the live view
    may reach no other), merged by time, with each master's ``status`` and word
    of masters that stop answering (:mod:`claud.master.trace_relay`).
    """
    headers = {"Cache-Control": "no-cache"}
    if masters is TraceMasters.ALL:
        try:
            cursor = trace_relay.parse_cursor(last_event_id) if last_event_id is not None else {}
        except trace_relay.CursorError as exc:
            raise ApiError(422, "invalid_spec", f"Last-Event-ID: {exc}", "Last-Event-ID") from None
        if not cursor and after:
            cursor = {master.id: after}
        return StreamingResponse(trace_relay.relay_stream(master, cursor, master.peer_connection),
                                 media_type="text/event-stream", headers=headers)  # fmt: skip
    trace = master.trace
    start = _trace_id(last_event_id) if last_event_id is not None else (after or 0)
    if start > trace.last_id:
        start = 0
    return StreamingResponse(trace_stream(trace, start), media_type="text/event-stream", headers=headers)


# ------------------------------------------------------------------ operator

operator = APIRouter(
    prefix="/v1/operator", tags=["operator"], dependencies=[Depends(require_token)], responses=docs.AUTHENTICATED
)

_MEMBER_CHANGE_DOCS: dict[int | str, dict[str, Any]] = {
    **docs.BAD_JSON, **docs.NOT_FOUND, **docs.CONFLICT, **docs.TOO_LARGE, **docs.INVALID, **docs.WRITE,
}


async def _change(master: Master, change: ConfChange) -> MemberList:
    try:
        await change_members(master.replicated, master.transport, change, master.settings.propose_timeout + 1)
    except ConfChangeRefused as exc:
        raise refusal(exc) from None
    return member_list(master.replicated, master.identity.member_ids())


@operator.get("/members", response_model=MemberList, operation_id="listMembers")
async def list_members(master: MasterDep) -> MemberList:
    """The cluster configuration: every master that votes or learns, with its
    address and (on the leader) how far its log matches."""
    return member_list(master.replicated, master.identity.member_ids())


@operator.post("/members", response_model=MemberList, operation_id="addMember", responses=_MEMBER_CHANGE_DOCS)
async def add_member(body: AddMemberRequest, master: MasterDep) -> MemberList:
    """Add a master (an empty data directory will do) as a learner: it gets the
    log, and the leader makes it a voter once it has caught up. One change at
    a time: 409 while another is not committed yet."""
    check_member_address(body.address)
    return await _change(master, ConfChange(ChangeKind.ADD_LEARNER, body.id, body.address))


@operator.delete(
    "/members/{member_id}", response_model=MemberList, operation_id="removeMember", responses=_MEMBER_CHANGE_DOCS
)
async def remove_member(member_id: int, master: MasterDep) -> MemberList:
    """Remove a master from the configuration (a leader removed steps down once
    the removal commits). Replace a dead master by adding its successor first,
    then removing it."""
    return await _change(master, ConfChange(ChangeKind.REMOVE, member_id))


# ------------------------------------------------------------------ internal

#: Master<->master and slave<->master routes; TokenAuthMiddleware checks the cluster secret.
internal = APIRouter(include_in_schema=False)


@internal.get(WHOAMI_PATH)
async def whoami(master: MasterDep) -> dict[str, Any]:
    return transport.whoami(master.id, master.address, master.term, master.leader_id)


@internal.get(TRACE_PATH)
async def trace_here(
    master: MasterDep,
    after: Annotated[int, Query(ge=0, le=MAX_TRACE_ID)] = 0,
    wait: Annotated[float, Query(ge=0, le=trace_relay.POLL_WAIT)] = 0.0,
) -> dict[str, Any]:
    """This master's trace after ``after`` for a relaying master: a long poll of up to ``wait`` s."""
    return await trace_relay.batch_after(master, after, wait)


@internal.post(PROPOSE_PATH)
async def propose_forwarded(request: Request, master: MasterDep) -> JSONResponse:
    """Writes a follower forwarded, in a batch; each answered once committed, like a direct one."""
    return JSONResponse(await transport.answer_proposals(master.replicated, await request.body()))


@internal.post(SNAPSHOT_CHUNK_PATH)
async def snapshot_chunk(request: Request, master: MasterDep) -> JSONResponse:
    """One chunk of a snapshot the leader streams here; answered with the offset expected next."""
    status, answer = await master.snapshot_receiver.answer(request.headers.get(SNAPSHOT_CHUNK_HEADER),
                                                           await request.body())
    return JSONResponse(answer, status_code=status)


@internal.post(MEMBERS_PATH)
async def conf_change_forwarded(request: Request, master: MasterDep) -> JSONResponse:
    """A configuration change a follower forwarded; answered once committed."""
    status, body = await transport.answer_conf_change(master.replicated, await request.body())
    return JSONResponse(body, status_code=status)


@internal.post(HEARTBEAT_PATH, response_model=Assignments)
async def slave_heartbeat(hb: Heartbeat, master: MasterDep) -> JSONResponse:
    check_slave_address(hb.address)
    reply = await master.slaves.heartbeat(hb)
    return JSONResponse(reply.model_dump(mode="json"), headers={MASTER_ID_HEADER: str(master.id)})


@internal.post(WATCH_PATH, response_model=Assignments)
async def slave_watch(req: WatchRequest, master: MasterDep) -> JSONResponse:
    reply = await master.slaves.watch(req.slave_id, req.known_version, req.wait_seconds)
    return JSONResponse(reply.model_dump(mode="json"), headers={MASTER_ID_HEADER: str(master.id)})


# --------------------------------------------------------- health, metrics, ui

ops_router = APIRouter(tags=["operations"])


@ops_router.get("/healthz", operation_id="healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@ops_router.get("/readyz", operation_id="readyz", responses=docs.NOT_READY)
async def readyz(master: MasterDep) -> Any:
    """Readiness: this master belongs to a cluster that has a leader."""
    if master.leader_id is None:
        return error_response(503, "no_leader", "no leader elected yet", headers={"Retry-After": "1"})
    return {"status": "ready", "leader_id": master.leader_id}


@ops_router.get(
    "/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_token)], operation_id="metrics",
    responses={200: {"description": "Prometheus text format (version 0.0.4)"}, **docs.AUTHENTICATED},
)
async def metrics(master: MasterDep) -> PlainTextResponse:
    """The master's metrics, in Prometheus text format."""
    return PlainTextResponse(render_metrics(master), media_type=METRICS_MEDIA_TYPE)


def _asset(path: str) -> Response:
    body, media_type = dashboard_asset(path)
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)


@ops_router.get("/ui", response_class=HTMLResponse, operation_id="dashboard")
async def ui() -> Response:
    """The dashboard: a page without data that asks for the token and reads /v1 with it."""
    return _asset("/ui")


@ops_router.get("/ui/dashboard.js", include_in_schema=False)
async def ui_script() -> Response:
    return _asset("/ui/dashboard.js")


@ops_router.get("/ui/dashboard.css", include_in_schema=False)
async def ui_style() -> Response:
    return _asset("/ui/dashboard.css")


@ops_router.get("/ui/favicon.svg", include_in_schema=False)
async def ui_icon() -> Response:
    return _asset("/ui/favicon.svg")


# ------------------------------------------------------------------- the app


def _field_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def known_error_response(exc: Exception, master: Master) -> JSONResponse | None:
    """The answer to each error a route may raise on purpose; None for anything else (a bug: 500)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)
    if isinstance(exc, MalformedRequest):
        return error_response(400, exc.code, str(exc))
    if isinstance(exc, LeaderUnavailable):
        return error_response(
            503, "no_leader", f"no leader can take this write now: {exc}", headers={"Retry-After": "1"}
        )
    if isinstance(exc, NotCommitted):
        return error_response(
            503, "not_committed", f"{exc}; retry with the same idempotency key", headers={"Retry-After": "1"}
        )
    if isinstance(exc, ops.InvalidOperation):
        # A bug where it is raised: every input was validated before it got this far.
        return error_response(422, "invalid_operation", str(exc))
    if isinstance(exc, OutcomeUnknown):
        return error_response(
            503, "outcome_unknown", f"{exc}; retry with the same idempotency key", headers={"Retry-After": "1"}
        )
    if isinstance(exc, NotLeader):
        body = {
            "error": {"code": "not_leader", "message": str(exc), "field": None},
            "leader_id": exc.leader_id,
            "leader_address": exc.leader_address,
            "master_id": master.id,
        }
        return JSONResponse(body, status_code=421, headers={MASTER_ID_HEADER: str(master.id)})
    return None


#: FastAPI's own OpenTelemetry (newer releases) off: a master has its metrics (``/metrics``),
#: and asking the providers whether they are configured cost ~5 % of a master's CPU per request.
NO_FRAMEWORK_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {}
)


def create_app(settings: MasterSettings, master: Master | None = None) -> FastAPI:
    """One app per master process; the master's loops live in the lifespan.

    ``master`` defaults to the one :func:`build_master` makes from ``settings``."""
    # Imported here: their routes use this module's dependencies.
    from claud.master import backup_routes, chaos

    if master is None:
        master = build_master(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await master.start()
        try:
            yield
        finally:
            await master.stop()

    app = FastAPI(
        title="CLAUD master",
        version="0.1.0",
        description="Submit container jobs, watch them run, see the cluster. "
        "Every /v1 endpoint needs `Authorization: Bearer <token>`. "
        "Lists answer everything, or a page at a time with `?limit=` (follow `next` until it is null).",
        lifespan=lifespan,
        docs_url=None,  # served by docs.install_docs, from local files
        redoc_url=None,
        generate_unique_id_function=docs.operation_id,
        **NO_FRAMEWORK_TELEMETRY,
    )
    app.state.master = master
    app.state.job_list_renderer = JobListRenderer()
    # Each added middleware wraps the ones before it: auth runs first, then the
    # body is read within its limits, then the two fast paths.
    app.add_middleware(SubmitFastPath, master=master)
    app.add_middleware(ForwardedWrites, master=master)
    app.add_middleware(RaftReceiver, master=master)
    app.add_middleware(
        BodyLimitMiddleware,
        public_limit=settings.max_request_bytes,
        internal_limit=settings.max_internal_request_bytes,
        read_timeout=settings.request_read_timeout,
        large_paths={backup_routes.RESTORE_PATH: settings.max_restore_bytes},
    )
    app.add_middleware(TokenAuthMiddleware, master=master)
    # Outermost: a refused request is timed too.
    app.add_middleware(
        RequestTiming, telemetry=master.telemetry,
        known=frozenset({*TokenAuthMiddleware.MASTER_PATHS, SubmitFastPath.PATH, SubmitFastPath.BATCH_PATH}),
    )
    if settings.demo_faults:
        # Outermost: a paused master holds every request, authenticated or not (claud.daemon.faults).
        app.add_middleware(
            FaultMiddleware, faults=master.faults, exempt=frozenset({CHAOS_PATH, chaos.PUBLIC_CHAOS_PATH}),
            # A partitioned master's trace is still relayed: it is observation, not the cluster's traffic.
            cut_off=lambda path: path.startswith(INTERNAL_PREFIX) and path != TRACE_PATH, who=f"master {master.id}",
        )

    @app.exception_handler(ApiError)
    @app.exception_handler(MalformedRequest)
    @app.exception_handler(LeaderUnavailable)
    @app.exception_handler(NotCommitted)
    @app.exception_handler(OutcomeUnknown)
    @app.exception_handler(ops.InvalidOperation)
    @app.exception_handler(NotLeader)
    async def _known_error(request: Request, exc: Exception) -> JSONResponse:
        response = known_error_response(exc, master)
        assert response is not None, f"no rendering for {type(exc).__name__}"
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            return error_response(400, "malformed_json", f"request body is not valid JSON: {reason}")
        field = _field_of(tuple(first["loc"]))
        if field is None and tuple(first["loc"]) == ("body",):
            return error_response(
                422, "invalid_spec", "request body must be a JSON object (send Content-Type: application/json)"
            )
        problems = []
        for err in errors:
            where = _field_of(tuple(err["loc"]))
            msg = "unknown field" if err.get("type") == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        return error_response(422, "invalid_spec", "; ".join(problems), field)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette still logs the traceback; the client gets the error body every other status has.
        log_event(log, "api.error", logging.ERROR, path=request.url.path, error=repr(exc)[:500])
        return error_response(500, "internal_error", f"the master failed to answer: {type(exc).__name__}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    for router in (jobs, nodes, cluster, operator, backup_routes.router, chaos.router, internal, chaos.internal,
                   ops_router):
        app.include_router(router)
    docs.install_docs(app)
    docs.install_openapi(app)
    return app
