"""CLAUD wire models, shared by the masters, the slaves and the SDK."""

from claud.api.errors import ErrorBody, ErrorDetail
from claud.api.jobs import (
    PLACED_STATES,
    TERMINAL_STATES,
    Constraints,
    JobBatch,
    JobBatchResult,
    JobEvent,
    JobEventList,
    JobList,
    JobSpec,
    JobState,
    JobType,
    JobView,
    Resources,
    RestartPolicy,
    RestartPolicyName,
)
from claud.api.nodes import (
    AddMemberRequest,
    ClusterView,
    DrainRequest,
    HostUsage,
    MasterView,
    MemberList,
    MemberRole,
    MemberView,
    NodeList,
    NodeResources,
    NodeRole,
    NodeState,
    NodeView,
)
from claud.api.slave_protocol import (
    Allocation,
    AllocationStatus,
    Assignments,
    ContainerState,
    DesiredState,
    Heartbeat,
    WatchRequest,
)

#: Labels every CLAUD container carries, public names (``docker ps --filter label=claud.job=ID``
#: works for users, and a restarted slave finds its containers by them): never renamed.
LABEL_JOB = "claud.job"
LABEL_ALLOC = "claud.alloc"
LABEL_SLAVE = "claud.slave"

__all__ = [
    "LABEL_ALLOC",
    "LABEL_JOB",
    "LABEL_SLAVE",
    "PLACED_STATES",
    "TERMINAL_STATES",
    "AddMemberRequest",
    "Allocation",
    "AllocationStatus",
    "Assignments",
    "ClusterView",
    "Constraints",
    "ContainerState",
    "DesiredState",
    "DrainRequest",
    "ErrorBody",
    "ErrorDetail",
    "Heartbeat",
    "HostUsage",
    "JobBatch",
    "JobBatchResult",
    "JobEvent",
    "JobEventList",
    "JobList",
    "JobSpec",
    "JobState",
    "JobType",
    "JobView",
    "MasterView",
    "MemberList",
    "MemberRole",
    "MemberView",
    "NodeList",
    "NodeResources",
    "NodeRole",
    "NodeState",
    "NodeView",
    "Resources",
    "RestartPolicy",
    "RestartPolicyName",
    "WatchRequest",
]
