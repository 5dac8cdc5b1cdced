"""Views of cluster members (masters and slaves) and of the cluster itself."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from claud.api.backup import GcSummary
from claud.api.jobs import StrictModel
from claud.api.jobs import WireModel as BaseModel

#: Bounds of what a slave may advertise or report: far above any real host,
#: low enough that sums stay exact and every JSON reader copes.
MAX_CPUS = 65_536
MAX_MB = 2**40  # 1 EiB in MiB


class NodeRole(StrEnum):
    MASTER = "master"
    SLAVE = "slave"


class NodeState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"  # heartbeats late; nothing moved yet
    DEAD = "dead"  # its jobs were declared lost and rescheduled
    DRAINING = "draining"  # alive, but takes no new jobs and gives its jobs away


class NodeResources(BaseModel):
    """Scheduling view: totals advertised by the slave, free = total - reserved by jobs."""

    cpu_total: float = 0.0
    cpu_free: float = 0.0
    memory_mb_total: int = 0
    memory_mb_free: int = 0


class HostUsage(BaseModel):
    """What psutil (or the cgroup) observed on the slave; informational only."""

    cpu_percent: float = Field(0.0, ge=0, le=100 * MAX_CPUS)
    memory_mb_available: int = Field(0, ge=0, le=MAX_MB)
    disk_mb_total: int = Field(0, ge=0, le=MAX_MB)
    disk_mb_free: int = Field(0, ge=0, le=MAX_MB)


class NodeView(BaseModel):
    id: str
    role: NodeRole
    address: str
    state: NodeState
    labels: dict[str, str] = Field(default_factory=dict)
    resources: NodeResources = Field(default_factory=NodeResources)
    usage: HostUsage | None = None
    allocations: int = Field(0, description="jobs placed on this node")
    last_heartbeat: datetime | None = None
    runtime_healthy: bool = Field(
        True, description="the slave's container engine answers; an unhealthy slave takes no placements"
    )
    runtime_error: str | None = Field(None, description="why the engine is unhealthy, as the slave saw it")
    drain_deadline: datetime | None = Field(
        None, description="while draining: batch jobs still running then are forced off"
    )
    lease_left: float | None = Field(
        None, description="a slave's seconds until its lease (slave_lease) runs out unless it heartbeats again; "
        "known on the leader only",
    )


#: The longest drain deadline accepted, seconds (a week): a longer one is a typo.
MAX_DRAIN_DEADLINE = 7 * 24 * 3600


class DrainRequest(StrictModel):
    """The optional body of POST /v1/nodes/{id}/drain."""

    deadline: float | None = Field(
        None, ge=0, le=MAX_DRAIN_DEADLINE,
        description="seconds batch jobs may keep running to finish; then they are forced off "
        "(killed, and placed elsewhere). Without it every job moves at once",
    )


class NodeList(BaseModel):
    nodes: list[NodeView]
    index: int = Field(..., description="the commit index this answer reflects")
    next: str | None = Field(
        None, description="with ?limit: the cursor of the next page (pass it as ?next=); null at the end"
    )


class MasterView(BaseModel):
    id: int
    address: str
    role: str = Field(..., description="leader | follower | candidate | unknown")
    match_index: int | None = None
    reachable: bool = True


class MemberRole(StrEnum):
    VOTER = "voter"
    LEARNER = "learner"  # replicates, neither votes nor counts; promoted once caught up


class MemberView(BaseModel):
    """One master of the cluster configuration (the one in the answering master's log)."""

    id: int
    address: str
    role: MemberRole
    match_index: int | None = Field(None, description="how far its log matches the leader's (known on the leader)")
    member_id: str | None = Field(None, description="the identity of its data directory, once it has spoken")


class MemberList(BaseModel):
    cluster_id: str | None = Field(None, description="made when the cluster bootstrapped; None before")
    configuration_index: int = Field(0, description="the log index of the configuration entry shown")
    members: list[MemberView]


class AddMemberRequest(StrictModel):
    """The body of POST /v1/operator/members: a new master joins as a learner."""

    id: int = Field(..., ge=1, le=2**31 - 1)
    address: str = Field(..., min_length=1, max_length=300, description="host:port where the others reach it")


class ClusterView(BaseModel):
    leader_id: int | None
    leader_address: str | None
    term: int
    commit_index: int
    quorum: int
    masters: list[MasterView]
    cluster_id: str | None = None
    #: The cluster configuration (empty before bootstrap).
    members: list[MemberView] = Field(default_factory=list)
    last_gc: GcSummary | None = Field(
        None, description="the last GC pass this master applied (null: none since it loaded its tables)"
    )
    # What the answering master itself knows (each master answers for itself; the live view reads them).
    master_id: int | None = Field(None, description="the master that answered")
    role: str | None = Field(None, description="its Raft role: leader | follower | candidate | pre_candidate")
    voted_for: int | None = Field(None, description="whom it voted for in this term")
    last_index: int | None = Field(None, description="the last index in its log")
    applied_index: int | None = Field(None, description="the last index it applied to its tables")
    slave_lease: float | None = Field(
        None, description="seconds a slave keeps its jobs without hearing a leader (then it fences them)"
    )
    demo_faults: bool = Field(
        False, description="this master runs with --demo-faults: it takes `claud chaos` (POST /v1/chaos)"
    )
