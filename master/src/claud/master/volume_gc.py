"""After a GC pass removes jobs, their slaves remove the jobs' named volumes.

The leader that proposed the pass knows, before it commits, where each job
with named volumes ran (its slave and the slaves of the placements its events
keep); once the removal is applied it asks each of those slaves, with the
cluster secret, to remove that job's volumes (``DELETE /v1/jobs/{id}/volumes``).
Best effort, never in the log: a slave that does not answer keeps the volumes
(``docker volume ls --filter label=claud.job=ID`` finds them). The slave
refuses while the job is still desired there, and the engine never removes a
volume a container still uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import httpx

from claud.api import JobState
from claud.api.jobs import ADDRESS, LONG_ID
from claud.api.protocol import slave_job_volumes_path
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.logfmt import log_event
from claud.master.auth import cluster_secret_headers
from claud.master.state import SlaveRecord, StateMachine

log = logging.getLogger(__name__)

#: Seconds one slave may take to answer (it lists and removes a job's volumes).
ANSWER_TIMEOUT = 30.0


def volume_homes(state: StateMachine, job_ids: Iterable[str]) -> dict[str, set[str]]:
    """The slaves where each of these jobs may have left named volumes (jobs without any are left out):
    those each of its allocations was placed on, at any of its versions."""
    homes: dict[str, set[str]] = {}
    for job_id in job_ids:
        head = state.head(job_id)
        if head is None:
            continue
        slaves: set[str] = set()
        for row in state.rows(head):
            if not any(volume.name is not None for volume in row.spec.volumes or ()):
                continue
            slaves.update(e.node_id for e in row.events if e.state == JobState.SCHEDULED and e.node_id)
            if row.slave_id is not None:
                slaves.add(row.slave_id)
        if slaves:
            homes[job_id] = slaves
    return homes


def volumes_url(address: str, job_id: str, scheme: str) -> httpx.URL:
    """The slave's volumes route for ``job_id``, from parts checked again (the secret goes there)."""
    if not ADDRESS.fullmatch(address):
        raise ValueError(f"{address[:80]!r} is not host:port")
    host, port = parse_host_port(address)
    if names_no_host(host):
        raise ValueError(f"{address!r} names no host")
    if not LONG_ID.fullmatch(job_id):
        raise ValueError(f"{job_id[:80]!r} is not a job id")
    return httpx.URL(scheme=scheme, host=host, port=port, path=slave_job_volumes_path(job_id))


async def remove_volumes(
    http: httpx.AsyncClient, secret: str, scheme: str, slaves: Mapping[str, SlaveRecord],
    homes: Mapping[str, set[str]],
) -> None:
    """Ask each slave to remove each collected job's volumes; failures are logged, never raised."""
    headers = cluster_secret_headers(secret)
    for job_id, slave_ids in homes.items():
        for slave_id in sorted(slave_ids):
            slave = slaves.get(slave_id)
            if slave is None:
                log_event(log, "volumes.kept", logging.WARNING, job=job_id, slave=slave_id, reason="slave unknown")
                continue
            try:
                answer = await http.delete(volumes_url(slave.address, job_id, scheme), headers=headers,
                                           follow_redirects=False, timeout=ANSWER_TIMEOUT)
            except (ValueError, httpx.HTTPError) as exc:
                log_event(log, "volumes.kept", logging.WARNING, job=job_id, slave=slave_id, reason=str(exc))
                continue
            if answer.status_code != 200:
                log_event(log, "volumes.kept", logging.WARNING, job=job_id, slave=slave_id,
                          reason=f"slave answered {answer.status_code}: {answer.text[:200]}")
                continue
            body = answer.json()
            log_event(log, "volumes.removed", job=job_id, slave=slave_id, removed=body.get("removed"),
                      kept=body.get("kept"))
