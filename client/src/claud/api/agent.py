"""The master <-> slave protocol (internal, authenticated by the cluster secret).

The slave is level-triggered: each reply carries the *whole* desired set of
allocations for that slave, never a delta, so a lost reply or a restarted
agent converges on the next one. An allocation is one attempt of one job; a
restart is a new allocation with a new id, so a container never has to be
"restarted" in place and ``claud.alloc`` names exactly one container ever.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from claud.api.jobs import Resources
from claud.api.nodes import HostUsage

#: Carries the cluster secret on every master<->master and master<->slave request.
CLUSTER_SECRET_HEADER = "X-Claud-Cluster-Secret"


class ContainerState(StrEnum):
    STARTING = "starting"  # the agent is creating/starting it (maybe pulling)
    RUNNING = "running"
    EXITED = "exited"  # ran and ended; exit_code set
    FAILED = "failed"  # could not be started (bad image, bad command); message set
    MISSING = "missing"  # was started once but is gone (removed behind our back)


class AllocationStatus(BaseModel):
    """What the slave observes about one allocation's container."""

    alloc_id: str
    job_id: str
    state: ContainerState
    container_id: str | None = None
    exit_code: int | None = None
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class DesiredState(StrEnum):
    RUN = "run"
    STOP = "stop"


class Allocation(BaseModel):
    """What the masters want one slave to do about one allocation."""

    alloc_id: str
    job_id: str
    attempt: int
    desired: DesiredState
    image: str
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources
    stop_timeout: float = 5.0


class Heartbeat(BaseModel):
    """Sent by a slave every heartbeat interval, and at once when a container changes."""

    node_id: str
    address: str = Field(..., description="host:port where the slave serves container logs")
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_total: float
    memory_mb_total: int
    usage: HostUsage = Field(default_factory=HostUsage)
    allocations: list[AllocationStatus] = Field(default_factory=list)


class Assignments(BaseModel):
    """A master's answer to a heartbeat or a watch: the full desired set."""

    term: int
    leader_id: int | None
    leader_address: str | None
    version: int = Field(..., description="changes whenever this slave's desired set changes")
    allocations: list[Allocation] = Field(default_factory=list)
    lease_seconds: float = Field(..., description="stop all containers after this long without a leader")
    heartbeat_interval: float
    fence_stop_grace: float = Field(
        3.0, description="when fencing, SIGKILL after at most this many seconds of SIGTERM grace"
    )


class WatchRequest(BaseModel):
    node_id: str
    known_version: int
    wait_seconds: float = Field(10.0, ge=0, le=60)
