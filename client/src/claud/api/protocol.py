"""The names the CLAUD processes agree on below the models: internal paths and headers.

Every ``/v1/internal/*`` route, every ``X-Claud-*`` header and the one
content type the internal routes take are spelled here only; masters, slaves,
the SDK and the tests import them. The bodies those routes carry are the
models of :mod:`claud.api.slave_protocol` (master <-> slave) and the codec of
``claud.master.transport`` (master <-> master).
"""

from __future__ import annotations

import re

#: Every route under this prefix needs the cluster secret (and, with a body, JSON).
INTERNAL_PREFIX = "/v1/internal/"

# master <-> master
#: A batch of consensus messages, one way (answered 204).
RAFT_PATH = INTERNAL_PREFIX + "raft"
#: A batch of writes a follower forwards to the leader.
PROPOSE_PATH = INTERNAL_PREFIX + "propose"
#: A master's id, address and view of the leader; how a ``--peers`` address learns its id.
WHOAMI_PATH = INTERNAL_PREFIX + "whoami"
#: One chunk of a snapshot the leader streams to a follower (raw bytes, described
#: by ``SNAPSHOT_CHUNK_HEADER``), answered with the offset the follower expects next.
SNAPSHOT_CHUNK_PATH = INTERNAL_PREFIX + "snapshot/chunk"
#: A configuration change (add, remove a master) a follower forwards to the leader.
MEMBERS_PATH = INTERNAL_PREFIX + "members"
#: One master's consensus trace, long-polled by the master relaying every master's
#: (``GET /v1/cluster/trace?masters=all``).
TRACE_PATH = INTERNAL_PREFIX + "trace"

# slave -> master
HEARTBEAT_PATH = INTERNAL_PREFIX + "heartbeat"
WATCH_PATH = INTERNAL_PREFIX + "watch"

# master -> master or slave, in a cluster started with --demo-faults (claud.api.chaos)
#: A fault for the process that receives it; the public ``POST /v1/chaos`` forwards here.
CHAOS_PATH = INTERNAL_PREFIX + "chaos"

# master -> slave (the slave's own server; the cluster secret guards it too)
#: The route a slave serves its containers' output on, as FastAPI spells a path parameter.
SLAVE_LOGS_ROUTE = "/v1/allocations/{alloc_id}/logs"


def slave_logs_path(alloc_id: str) -> str:
    """``SLAVE_LOGS_ROUTE`` for one allocation; the caller has checked ``alloc_id``."""
    return SLAVE_LOGS_ROUTE.format(alloc_id=alloc_id)


#: The slave's route a master calls to run a command in an allocation's container (``claud exec``).
SLAVE_EXEC_ROUTE = "/v1/allocations/{alloc_id}/exec"


#: The slave's route the leader calls once GC has removed a job: its named volumes go too.
SLAVE_JOB_VOLUMES_ROUTE = "/v1/jobs/{job_id}/volumes"


def slave_job_volumes_path(job_id: str) -> str:
    """``SLAVE_JOB_VOLUMES_ROUTE`` for one job; the caller has checked ``job_id``."""
    return SLAVE_JOB_VOLUMES_ROUTE.format(job_id=job_id)


def slave_exec_path(alloc_id: str) -> str:
    """``SLAVE_EXEC_ROUTE`` for one allocation; the caller has checked ``alloc_id``."""
    return SLAVE_EXEC_ROUTE.format(alloc_id=alloc_id)


#: Carries the cluster secret on every master<->master and master<->slave request.
CLUSTER_SECRET_HEADER = "X-Claud-Cluster-Secret"
#: On every 200 (and 421) of a heartbeat or watch: which master answered, so a
#: slave learns the id behind each address it was given.
MASTER_ID_HEADER = "X-Claud-Master-Id"
#: On every master -> master request, with MASTER_ID_HEADER (the sender's id):
#: the cluster the sender belongs to ("" before it has a configuration) and the
#: identity of its data directory. A master refuses (403) another cluster's, and
#: a member that comes back with another data directory (claud.master.identity).
CLUSTER_ID_HEADER = "X-Claud-Cluster-Id"
MEMBER_ID_HEADER = "X-Claud-Member-Id"
#: On a job's logs (public /v1): the allocation (attempt) the output comes from.
ALLOC_ID_HEADER = "X-Claud-Alloc-Id"
#: On a slave's logs answer: the container the output comes from.
CONTAINER_ID_HEADER = "X-Claud-Container-Id"

#: On a snapshot chunk: which transfer, snapshot, offset, total size and checksum it belongs to (compact JSON).
SNAPSHOT_CHUNK_HEADER = "X-Claud-Snapshot-Chunk"

#: The only content type an internal route with a body accepts (a web page
#: cannot send it cross-origin without a preflight).
JSON_CONTENT_TYPE = "application/json"
#: The content type of a snapshot chunk, the one internal body that is not JSON
#: (no more a "simple" cross-origin request than JSON is: it needs a preflight too).
SNAPSHOT_CONTENT_TYPE = "application/octet-stream"

# the event stream (GET /v1/events)
#: A job or slave event's id: the log index of the entry that made it, and its place
#: among that entry's events (``42.0``); what ``Last-Event-ID`` resumes after.
EVENT_ID = re.compile(r"(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,8})")
#: The merged trace's id (``GET /v1/cluster/trace?masters=all``): the last trace id
#: read from each master, ``MASTER:ID`` pairs joined by commas (``1:17647…,2:17647…``).
TRACE_CURSOR = re.compile(r"[0-9]{1,10}:[0-9]{1,16}(?:,[0-9]{1,10}:[0-9]{1,16}){0,15}")
