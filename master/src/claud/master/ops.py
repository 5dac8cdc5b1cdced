"""Operations: the only way the replicated tables change.

Each operation is one log entry. It carries everything apply needs (ids,
timestamps chosen by the proposer) so that replaying the log on any master
gives exactly the same tables: apply never reads a clock, a random source or
the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticSerializationError

from claud.api import AllocationStatus, HostUsage, JobSpec, NodeState
from claud.api.jobs import (
    MAX_BATCH_JOBS,
    MAX_COUNT,
    MAX_PORTS,
    AbsolutePath,
    Address,
    JobId,
    Labels,
    Message,
    NodeId,
    Reason,
    RolloutState,
)
from claud.api.jobs import WireModel as BaseModel
from claud.api.nodes import MAX_CPUS, MAX_MB
from claud.api.slave_protocol import MAX_ALLOCATIONS, PortRange

#: Timestamps an operation may carry. The upper bound leaves room for every
#: sum apply makes (a restart backoff) below ``datetime.max``.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(9000, 1, 1, tzinfo=UTC)
#: Items in one plan, one report or one touch; far above a real cluster's.
MAX_ITEMS = 1_000_000


def utcnow() -> datetime:
    """The proposer's wall clock, the ``at`` of every operation it proposes (apply reads none)."""
    return datetime.now(UTC)


class InvalidOperation(ValueError):
    """An operation that could not be encoded as an entry every replica can apply."""


def _utc(at: datetime) -> datetime:
    """In UTC, and in range: apply compares and adds timestamps, so every one must be aware and bounded."""
    if not MIN_TIME <= at < MAX_TIME:
        raise ValueError(f"must be between {MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}")
    return at.astimezone(UTC)


#: An aware timestamp, normalised to UTC.
Timestamp = Annotated[AwareDatetime, AfterValidator(_utc)]


class _Stored(BaseModel):
    """An operation's part, as entries store it: fields may keep an older name on the wire."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


#: A slave's id as entries store it: under ``node_id``, its name from before slaves had
#: a word of their own, so the entries already in a log (and a master of the earlier
#: version, during an upgrade) still read the same.
SlaveId = Annotated[NodeId, Field(alias="node_id")]


class _Op(_Stored):
    at: Timestamp = Field(..., description="proposer's wall clock, UTC; the time of every event it causes")


class SubmitJob(_Op):
    kind: Literal["submit_job"] = "submit_job"
    job_id: JobId
    spec: JobSpec


class SubmittedJob(_Stored):
    """One job of a :class:`SubmitJobs` entry: the id its proposer chose and its spec."""

    job_id: JobId
    spec: JobSpec


class SubmitJobs(_Op):
    """A batch of jobs (``POST /v1/jobs:batch``): apply creates all of them or none."""

    kind: Literal["submit_jobs"] = "submit_jobs"
    jobs: list[SubmittedJob] = Field(..., min_length=1, max_length=MAX_BATCH_JOBS)


#: Submits one group entry holds at most, and the bytes of their entries at most (a group of
#: one larger submit is that submit alone): as large as a batch of the public API may be.
MAX_GROUP_SUBMITS = MAX_BATCH_JOBS
MAX_GROUP_BYTES = 1024 * 1024


class SubmitGroup(_Op):
    """Single submits the leader coalesced into one entry (group commit).

    Unlike :class:`SubmitJobs` nothing is all or none: apply judges each
    submit as if it were an entry of its own, in order, so one refused submit
    (a key used with another spec) refuses only itself. ``at`` is the first
    submit's; each job's events carry its own."""

    kind: Literal["submit_group"] = "submit_group"
    ops: list[SubmitJob] = Field(..., min_length=1, max_length=MAX_GROUP_SUBMITS)


class PlacedJob(_Stored):
    """One job placed on one slave, as an ApplyPlan entry stores it
    (what the scheduler chose is a :class:`claud.master.scheduler.Placement`)."""

    job_id: JobId
    slave_id: SlaveId
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=MAX_PORTS, exclude_if=lambda v: not v,
        description="the host port of each of the job's ports, in the spec's order (apply checks them again)",
    )


class ApplyPlan(_Op):
    """A scheduler plan. Apply re-checks every placement against the newest state."""

    kind: Literal["apply_plan"] = "apply_plan"
    placements: list[PlacedJob] = Field(default_factory=list, max_length=MAX_ITEMS)
    unplaced: dict[JobId, Reason] = Field(
        default_factory=dict, max_length=MAX_ITEMS, description="job id -> pending reason"
    )


class RegisterSlave(_Op):
    """A slave appeared, changed its advertised capacity or labels, or came back."""

    kind: Literal["register_node"] = "register_node"
    slave_id: SlaveId
    address: Address
    labels: Labels = Field(default_factory=dict)
    cpu_total: float = Field(..., ge=0, le=MAX_CPUS)
    memory_mb_total: int = Field(..., ge=0, le=MAX_MB)
    port_range: PortRange | None = Field(None, exclude_if=lambda v: v is None)
    ports_host: str | None = Field(None, max_length=253, pattern=r"^[A-Za-z0-9_.:-]+$", exclude_if=lambda v: v is None)
    host_volumes: list[AbsolutePath] = Field(default_factory=list, max_length=64, exclude_if=lambda v: not v)


class ReportAllocations(_Op):
    """Container states a slave observed that differ from what the tables say."""

    kind: Literal["report_allocations"] = "report_allocations"
    slave_id: SlaveId
    statuses: list[AllocationStatus] = Field(..., max_length=MAX_ALLOCATIONS)
    runtime_healthy: bool = Field(
        True, description="the slave's engine answered when it sent these: if not, what ended is lost, not failed"
    )


class StopJob(_Op):
    kind: Literal["stop_job"] = "stop_job"
    job_id: JobId


class UpdateJob(_Op):
    """``PUT /v1/jobs/{id}``: a new version of the job. A change of ``count`` alone scales it;
    any other change starts a rollout (the leader's rollout loop replaces the allocations)."""

    kind: Literal["update_job"] = "update_job"
    job_id: JobId
    spec: JobSpec


class ScaleJob(_Op):
    """``POST /v1/jobs/{id}/scale``: a new version that differs from the current one in ``count``."""

    kind: Literal["scale_job"] = "scale_job"
    job_id: JobId
    count: int = Field(..., ge=1, le=MAX_COUNT)


class RevertJob(_Op):
    """``POST /v1/jobs/{id}/revert``: a new version with an earlier version's spec, rolled out."""

    kind: Literal["revert_job"] = "revert_job"
    job_id: JobId
    version: int = Field(..., ge=0, le=2**31)


class RolloutStep(_Op):
    """The leader's rollout loop decided for a job's ``version`` (``rollout.decide``): replace the
    allocations at ``replace``, or end the rollout (``complete`` | ``failed``). Apply checks that
    the version is still the job's and its rollout still running: a stale step changes nothing."""

    kind: Literal["rollout_step"] = "rollout_step"
    job_id: JobId
    version: int = Field(..., ge=0, le=2**31)
    replace: list[Annotated[int, Field(ge=0, lt=MAX_COUNT)]] = Field(default_factory=list, max_length=MAX_COUNT)
    outcome: RolloutState | None = None
    message: Message = ""


class SetSlaveState(_Op):
    """The failure detector's verdicts: alive, suspect or dead (dead loses its jobs)."""

    kind: Literal["set_node_state"] = "set_node_state"
    slave_id: SlaveId
    state: NodeState
    reason: Message = ""


class SetDrain(_Op):
    kind: Literal["set_drain"] = "set_drain"
    slave_id: SlaveId
    draining: bool
    deadline: Timestamp | None = Field(
        None, description="when draining: batch jobs may finish until this time, then are forced off"
    )


class ForceDrain(_Op):
    """A drain's deadline passed: what still runs on the slave is killed and moved."""

    kind: Literal["force_drain"] = "force_drain"
    slave_id: SlaveId


class SetRuntimeHealth(_Op):
    """A slave's container engine stopped or started answering (``Heartbeat.runtime``)."""

    kind: Literal["set_runtime_health"] = "set_runtime_health"
    slave_id: SlaveId
    healthy: bool
    error: Message | None = None


class LoseSlaveJobs(_Op):
    """A slave that heartbeats but whose engine stayed away past node-dead-after: its jobs are lost."""

    kind: Literal["lose_slave_jobs"] = "lose_slave_jobs"
    slave_id: SlaveId
    reason: Message = ""


class TouchSlaves(_Op):
    """Last heartbeat times, committed now and then so followers can show them."""

    kind: Literal["touch_nodes"] = "touch_nodes"
    heartbeats: dict[NodeId, Timestamp] = Field(..., max_length=MAX_ITEMS)
    usage: dict[NodeId, HostUsage] = Field(default_factory=dict, max_length=MAX_ITEMS)


class CollectGarbage(_Op):
    """A GC pass (``nomad system gc``): the leader chose these ids from its tables;
    apply removes only those that still qualify, by the rules carried here.

    Terminal jobs go when they finished at or before ``jobs_finished_before``
    and ``keep_jobs`` terminal jobs finished more recently (they are kept,
    however old); dead slaves go when they last heartbeat at or before
    ``slaves_dead_before`` and no job is placed on them. A stale pass (a job
    restarted, a slave came back since it was chosen) removes nothing wrong.
    """

    kind: Literal["collect_garbage"] = "collect_garbage"
    job_ids: list[JobId] = Field(default_factory=list, max_length=MAX_ITEMS)
    slave_ids: list[NodeId] = Field(default_factory=list, max_length=MAX_ITEMS)
    jobs_finished_before: Timestamp
    keep_jobs: int = Field(..., ge=0, le=MAX_ITEMS)
    slaves_dead_before: Timestamp


class RestoreTables(_Op):
    """Replace the jobs and slaves tables with a backup's (``claud operator snapshot restore``).

    ``tables`` is the snapshot body exactly as a backup holds it, checked
    (checksum, every record) before it was proposed; apply validates it again
    and changes nothing unless all of it is valid, so every master replaces its
    tables identically or not at all.
    """

    kind: Literal["restore_tables"] = "restore_tables"
    tables: str
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    source_index: int = Field(..., ge=0)
    source_term: int = Field(..., ge=0)


class Noop(_Op):
    """A new leader's first entry of its own term (Raft §5.4.2)."""

    kind: Literal["noop"] = "noop"


Operation = Annotated[
    SubmitJob | SubmitJobs | SubmitGroup | ApplyPlan | RegisterSlave | ReportAllocations | StopJob | SetSlaveState
    | SetDrain | ForceDrain | SetRuntimeHealth | LoseSlaveJobs | TouchSlaves | CollectGarbage | RestoreTables | Noop
    | UpdateJob | ScaleJob | RevertJob | RolloutStep,
    Field(discriminator="kind"),
]
operation_adapter: TypeAdapter[Operation] = TypeAdapter(Operation)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An entry and the operation every replica decodes from it (:func:`decode` of ``data``).

    The master that made it can apply ``op`` for ``data`` without decoding the
    entry again: decoding is deterministic, so it is what every other replica gets."""

    data: str
    op: Operation


def encode_checked(op: Operation) -> Encoded:
    """The entry for ``op``, checked to decode again: only what every replica can
    apply enters the log, even when a part of ``op`` was built without validation
    (``model_construct``, ``model_copy(update=...)``). InvalidOperation if not."""
    try:
        data = op.model_dump_json()
        decoded = operation_adapter.validate_json(data)
    except (ValueError, PydanticSerializationError) as exc:
        raise InvalidOperation(f"{op.kind}: {exc}") from None
    return Encoded(data, decoded)


def encode(op: Operation) -> str:
    """The entry for ``op`` (see :func:`encode_checked`)."""
    return encode_checked(op).data


def decode(data: str | bytes) -> Operation:
    """The operation in an entry; ValidationError (a ValueError) if it holds none."""
    return operation_adapter.validate_json(data)


def decode_entry(data: str) -> Encoded:
    """An entry another master encoded, with its operation; ValidationError (a ValueError) if it holds none.
    The entry stays byte for byte as it came: that is what every replica decodes."""
    return Encoded(data, operation_adapter.validate_json(data))


def group_submits(submits: list[Encoded]) -> Encoded:
    """One :class:`SubmitGroup` entry of checked ``submit_job`` entries, made without
    encoding or validating anything again: the group's entry is their entries
    joined, so every replica decodes exactly the operations given."""
    if not submits or len(submits) > MAX_GROUP_SUBMITS or any(s.op.kind != "submit_job" for s in submits):
        raise InvalidOperation(f"submit_group: 1 to {MAX_GROUP_SUBMITS} submit_job entries, not {len(submits)}")
    jobs: list[SubmitJob] = [s.op for s in submits]  # type: ignore[misc]
    at = jobs[0].at
    data = ('{"kind":"submit_group","at":"' + at.isoformat() + '","ops":['
            + ",".join(s.data for s in submits) + "]}")
    return Encoded(data, SubmitGroup.model_construct(at=at, ops=jobs))
