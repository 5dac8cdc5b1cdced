"""Operations: the only way the replicated tables change.

Each operation is one log entry. It carries everything apply needs (ids,
timestamps chosen by the proposer) so that replaying the log on any master
gives exactly the same tables: apply never reads a clock, a random source or
the network.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from claud.api import AllocationStatus, HostUsage, JobSpec, NodeState


class _Op(BaseModel):
    at: datetime = Field(..., description="proposer's wall clock, UTC; the time of every event it causes")


class SubmitJob(_Op):
    kind: Literal["submit_job"] = "submit_job"
    job_id: str
    spec: JobSpec


class Placement(BaseModel):
    job_id: str
    node_id: str


class ApplyPlan(_Op):
    """A scheduler plan. Apply re-checks every placement against the newest state."""

    kind: Literal["apply_plan"] = "apply_plan"
    placements: list[Placement] = Field(default_factory=list)
    unplaced: dict[str, str] = Field(default_factory=dict, description="job id -> pending reason")


class RegisterNode(_Op):
    """A slave appeared, changed its advertised capacity or labels, or came back."""

    kind: Literal["register_node"] = "register_node"
    node_id: str
    address: str
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_total: float
    memory_mb_total: int


class ReportAllocations(_Op):
    """Container states a slave observed that differ from what the tables say."""

    kind: Literal["report_allocations"] = "report_allocations"
    node_id: str
    statuses: list[AllocationStatus]


class StopJob(_Op):
    kind: Literal["stop_job"] = "stop_job"
    job_id: str


class SetNodeState(_Op):
    """The failure detector's verdicts: alive, suspect or dead (dead loses its jobs)."""

    kind: Literal["set_node_state"] = "set_node_state"
    node_id: str
    state: NodeState
    reason: str = ""


class SetDrain(_Op):
    kind: Literal["set_drain"] = "set_drain"
    node_id: str
    draining: bool


class TouchNodes(_Op):
    """Last heartbeat times, committed now and then so followers can show them."""

    kind: Literal["touch_nodes"] = "touch_nodes"
    heartbeats: dict[str, datetime]
    usage: dict[str, HostUsage] = Field(default_factory=dict)


class Noop(_Op):
    """A new leader's first entry of its own term (Raft §5.4.2)."""

    kind: Literal["noop"] = "noop"


Operation = Annotated[
    Union[SubmitJob, ApplyPlan, RegisterNode, ReportAllocations, StopJob, SetNodeState, SetDrain, TouchNodes, Noop],
    Field(discriminator="kind"),
]
operation_adapter: TypeAdapter[Operation] = TypeAdapter(Operation)


def encode(op: Operation) -> str:
    return op.model_dump_json()


def decode(data: str | bytes) -> Operation:
    return operation_adapter.validate_json(data)
