"""The replicated state machine: the slaves table and the jobs table.

Every master applies the same committed operations in the same order and so
holds the same tables. ``apply`` is deterministic (no clocks, no I/O) and
never raises for a well-formed operation: a request that cannot be honoured
(stopping a completed job, an idempotency key reused with another spec)
becomes an ``Outcome`` with an error code, so replay is always possible.

``apply_entry`` is what the log calls, and it is total: an entry that does not
decode, or whose apply raises, is a *rejected entry* (the same verdict on every
master, since the same bytes meet the same tables), logged, counted in
``rejected_entries``, and the applied index moves past it.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import hashlib
import heapq
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic_core
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr

from claud.api import (
    PLACED_STATES,
    Allocation,
    AllocationStatus,
    AllocationView,
    ContainerState,
    DesiredState,
    Health,
    HostUsage,
    JobEvent,
    JobSpec,
    JobState,
    JobView,
    NodeResources,
    NodeRole,
    NodeState,
    NodeView,
    PortView,
    RolloutState,
    RolloutView,
)
from claud.api.jobs import MAX_VERSIONS, JobVersionView
from claud.api.slave_protocol import PortBinding, PortRange
from claud.daemon.logfmt import log_event
from claud.master import ops
from claud.master.job_index import JobOrder, JobTally
from claud.master.lifecycle import (
    Facts,
    Step,
    StopCause,
    Transition,
    backoff,
    drain_moves_now,
    job_state,
    on_report,
    on_stop,
)
from claud.master.rollout import AllocationFacts
from claud.master.row_restore import row_builder
from claud.master.scheduler import PendingJob, SlaveCapacity, cpu_millis, fits

#: Events kept per job; older ones are dropped so a crash-looping service
#: cannot grow one record without bound.
MAX_EVENTS_PER_JOB = 100
#: The time of an empty entry's no-op (a leader's own first entry).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

log = logging.getLogger("claud.master.state")


class _Row(BaseModel):
    """A table row that keeps its JSON form until it next changes.

    A snapshot then re-encodes only the rows changed since the previous one.
    Encoding every row each time held the event loop for about a second per
    50,000 jobs, long enough for the masters to hold an election. Change a row
    only by assigning its attributes (a change inside a nested list must also
    assign, or call ``touch``), or the snapshot misses the change.
    """

    # A field may keep an older name in snapshots (an alias): built by name, stored by alias.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    _encoded: str | None = PrivateAttr(None)

    # The kept encoding is read and cleared through ``__pydantic_private__``
    # directly: pydantic's attribute hooks cost more than the lookup itself,
    # and a snapshot does one per row. (Typed ``| None``, it is always a dict
    # on a model that declares a private attribute.)
    def __setattr__(self, name: str, value: Any) -> None:
        fields_set = self.__pydantic_fields_set__
        if name not in fields_set:
            # Rows a restore made share one set of field names per pattern of absent fields
            # (row_restore): copied before pydantic adds this name, so no other row gains it.
            object.__setattr__(self, "__pydantic_fields_set__", set(fields_set))
        super().__setattr__(name, value)
        self.__pydantic_private__["_encoded"] = None  # type: ignore[index]

    def touch(self) -> None:
        self.__pydantic_private__["_encoded"] = None  # type: ignore[index]

    def encoded(self) -> str:
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        kept: str | None = private["_encoded"]
        if kept is None:
            kept = private["_encoded"] = self.model_dump_json()
        return kept


def _zero(value: object) -> bool:
    return value == 0


def _none(value: object) -> bool:
    return value is None


def _no_items(value: object) -> bool:
    return value == []


class JobVersion(BaseModel):
    """One version of a job's spec (``PUT /v1/jobs/{id}``, a scale or a revert made it)."""

    version: int
    at: datetime
    spec: JobSpec
    #: It rolled out whole: every allocation ran it and was healthy (what auto_revert goes back to).
    stable: bool = False


class Rollout(BaseModel):
    """The rollout of a job's current version: which, how far, since when."""

    version: int
    state: RolloutState
    message: str = ""
    started_at: datetime
    updated_at: datetime


class JobRecord(_Row):
    """One row per allocation: row ``<job id>`` is the job's allocation 0 and carries the job's own
    fields (versions, rollout); row ``<job id>.<i>`` is its allocation i (``count`` > 1). Each row
    goes through the lifecycle on its own, so a replica is placed, started, lost and placed again
    exactly as a job of one allocation is; the job's state is derived from its rows'
    (``lifecycle.job_state``), and the API shows the rows of index > 0 only inside their job."""

    id: str
    spec: JobSpec
    state: JobState
    #: The slave it is placed on; ``node_id`` in snapshots, its name before slaves had a word of their own.
    slave_id: str | None = Field(None, alias="node_id")
    alloc_id: str | None = None
    container_id: str | None = None
    attempts: int = 0  # placements so far; the alloc id is "<job id>-<attempt>"
    restarts: int = 0  # restarts charged to the restart policy (lost jobs are not charged)
    exit_code: int | None = None
    created_at: datetime
    updated_at: datetime
    not_before: datetime | None = None  # restart backoff: not placed before this time
    pending_reason: str | None = None
    message: str | None = None
    #: Why the masters want it stopped (its desired state is stop); None: it should run.
    #: Snapshots of older masters call it ``stop_reason`` (the same values, "user" and "drain").
    stop_cause: StopCause | None = Field(None, validation_alias=AliasChoices("stop_cause", "stop_reason"))
    #: When the current attempt was first seen running: a short run is a quick exit.
    running_since: datetime | None = None
    #: The current attempt was seen starting or running: a slave must not start it again.
    seen_started: bool = False
    #: A service's consecutive quick exits; its restart backoff grows with them.
    quick_exits: int = 0
    #: The host port of each of the spec's ports, while placed (the plan chose them).
    ports: list[int] = Field(default_factory=list)
    #: With a check, while running: what the slave's checks last concluded.
    health: Health | None = None
    events: list[JobEvent] = Field(default_factory=list)
    # Fields added with replicas and versions: left out of the JSON at their defaults, so a row
    # of a job of one allocation that was never updated keeps its bytes (exclude_if).
    #: Which allocation of its job this row is, 0..count-1.
    index: int = Field(0, exclude_if=_zero)
    #: The job version this row's spec is.
    version: int = Field(0, exclude_if=_zero)
    #: A rollout is stopping it: it is placed again at this version once its container is gone.
    next_version: int | None = Field(None, exclude_if=_none)
    #: When a rollout gave it its version (or asked to): its healthy deadline runs from here.
    replaced_at: datetime | None = Field(None, exclude_if=_none)
    #: Since when it is healthy: running, and its check (if it has one) passing.
    healthy_since: datetime | None = Field(None, exclude_if=_none)
    #: Row 0 only: the job's versions, oldest first (empty: never updated, version 0 is ``spec``).
    versions: list[JobVersion] = Field(default_factory=list, exclude_if=_no_items)
    #: Row 0 only: the rollout of the current version, once the job was updated.
    rollout: Rollout | None = Field(None, exclude_if=_none)


class SlaveRecord(_Row):
    id: str
    address: str
    labels: dict[str, str] = Field(default_factory=dict)
    cpu_total: float
    memory_mb_total: int
    state: NodeState = NodeState.ALIVE  # alive | suspect | dead (draining is a flag)
    draining: bool = False
    registered_at: datetime
    last_heartbeat: datetime | None = None
    usage: HostUsage | None = None
    #: While draining: batch jobs may finish until then, and are forced off after.
    drain_deadline: datetime | None = None
    #: The deadline passed: drained jobs are stopped without grace.
    drain_forced: bool = False
    #: The slave's container engine answers (its heartbeats say); if not, nothing is placed there.
    runtime_healthy: bool = True
    runtime_error: str | None = None
    #: Where its dynamic host ports come from (it says when it registers); None: static ports only.
    port_range: PortRange | None = None
    #: Host path prefixes its jobs may bind.
    host_volumes: list[str] = Field(default_factory=list)
    #: Where its published ports are reached; None: the host of ``address``.
    ports_host: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What applying one operation meant for the client that proposed it."""

    ok: bool = True
    value: Any = None
    code: str = ""  # "not_found", "conflict", ... when not ok
    message: str = ""

    @classmethod
    def error(cls, code: str, message: str) -> Outcome:
        return cls(ok=False, code=code, message=message)


@dataclass
class Change:
    """A transition, published on the event stream after the entry commits."""

    kind: str  # "job" | "node"
    id: str
    state: str
    at: datetime
    slave_id: str | None = None
    message: str = ""
    index: int = 0
    #: Set on a health transition (the job stays running): healthy | unhealthy.
    health: str | None = None
    #: A job of several allocations: the one that changed (``state`` is the job's).
    alloc_index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"health": self.health} if self.health is not None else {}
        if self.alloc_index is not None:
            extra["alloc_index"] = self.alloc_index
        return {
            "type": self.kind,
            "id": self.id,
            "state": self.state,
            "at": self.at.isoformat(),
            "node_id": self.slave_id,
            "message": self.message,
            "index": self.index,
            **extra,
        }


@dataclass(frozen=True, slots=True)
class GcPass:
    """What the last applied GC pass removed; shown by ``/v1/cluster``."""

    at: datetime
    index: int
    jobs: int
    slaves: int


@dataclass(frozen=True, slots=True)
class RestorePass:
    """The last backup restored into these tables: which one (its checksum), at which index."""

    sha256: str
    index: int


@dataclass(frozen=True, slots=True)
class Garbage:
    """The ids a GC pass would remove now, and the rules that chose them (apply checks them again)."""

    job_ids: list[str]
    slave_ids: list[str]
    jobs_finished_before: datetime
    keep_jobs: int
    slaves_dead_before: datetime


def row_id(job_id: str, index: int) -> str:
    """The id of allocation ``index``'s row of job ``job_id``."""
    return job_id if index == 0 else f"{job_id}.{index}"


def head_id(row: JobRecord) -> str:
    """The id of the job an allocation row belongs to."""
    return row.id.rsplit(".", 1)[0] if row.index else row.id


def desired_spec(head: JobRecord) -> JobSpec:
    """The spec of the job's current version (``head`` is its row 0)."""
    return head.versions[-1].spec if head.versions else head.spec


def desired_version(head: JobRecord) -> int:
    return head.versions[-1].version if head.versions else 0


def slave_last_alive(slave: SlaveRecord) -> datetime:
    """When a slave was last heard from, as the tables know it: its node-GC age counts from here."""
    return slave.last_heartbeat or slave.registered_at


@dataclass(frozen=True, slots=True)
class SnapshotParts:
    applied_index: int
    jobs: list[str]
    slaves: list[str]
    pending: list[str]


#: The version of the snapshot text :func:`join_snapshot` writes, its first field. A
#: snapshot that says it is in this format is restored without validating its rows
#: again; one with no format (written before there was one) is validated in full;
#: any other is refused. Raise it whenever the meaning of a stored row changes.
SNAPSHOT_FORMAT = 2


class SnapshotCorrupt(ValueError):
    """A snapshot this master cannot restore: not its format, or not whole. Nothing was restored."""


def join_snapshot(parts: SnapshotParts) -> str:
    jobs, slaves = ",".join(parts.jobs), ",".join(parts.slaves)
    pending = json.dumps(parts.pending, separators=(",", ":"))
    return (f'{{"format":{SNAPSHOT_FORMAT},"applied_index":{parts.applied_index},'
            f'"jobs":[{jobs}],"nodes":[{slaves}],"pending":{pending}}}')


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Without the cyclic collector while a table is rebuilt: the rows hold no cycles,
    and each of the collections that hundreds of thousands of new objects set off
    walks every object made so far (most of a restore's time, measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # The new rows are long-lived: moved out of the collector's generations,
        # the first collection after the restore does not walk every one of them
        # (a second of a 100,000-job restore, measured). They are still freed,
        # by their reference counts, when a later restore replaces them.
        gc.freeze()
        if enabled:
            gc.enable()


@dataclass(slots=True)
class Reservations:
    """What the jobs placed on one slave hold of it: their ids, each with what it reserved
    (milli-cores, MiB), and the running totals, kept on place and unplace so a slave's
    capacity costs the same whatever it runs (no recount over its jobs)."""

    jobs: dict[str, tuple[int, int]] = field(default_factory=dict)
    cpu_millis: int = 0
    memory_mb: int = 0

    def add(self, job_id: str, cpu: int, memory_mb: int) -> None:
        if job_id in self.jobs:  # placed twice without an unplace: the totals count it once
            self.remove(job_id)
        self.jobs[job_id] = (cpu, memory_mb)
        self.cpu_millis += cpu
        self.memory_mb += memory_mb

    def remove(self, job_id: str) -> None:
        held = self.jobs.pop(job_id, None)
        if held is not None:  # what it added, not what its spec says now: the totals cannot drift
            self.cpu_millis -= held[0]
            self.memory_mb -= held[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.jobs


def reserved_by(job: JobRecord) -> tuple[int, int]:
    """What a placed job holds of its slave: milli-cores and MiB, the scheduler's units."""
    resources = job.spec.resources
    return cpu_millis(resources.cpu), int(resources.memory_mb)


@dataclass
class StateMachine:
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    slaves: dict[str, SlaveRecord] = field(default_factory=dict)
    applied_index: int = 0
    # Indexes derived from ``jobs``; rebuilt on restore, never persisted.
    _pending: dict[str, None] = field(default_factory=dict)
    #: Pending jobs the scheduler has not yet found a reason to leave pending (new,
    #: requeued): a pass with no new room looks only at these, not at every pending job.
    _unexplained: dict[str, None] = field(default_factory=dict)
    #: Pending jobs in restart backoff, and until when.
    _backoff: dict[str, datetime] = field(default_factory=dict)
    #: The jobs placed on each slave, with their reservations' totals (``Reservations``).
    _placed_by_slave: dict[str, Reservations] = field(default_factory=dict)
    #: The host ports the placed jobs hold, by slave (only slaves where some job holds one).
    _ports_by_slave: dict[str, set[int]] = field(default_factory=dict)
    _by_idempotency_key: dict[str, str] = field(default_factory=dict)
    #: The indexes (> 0) of each job's other allocation rows: only jobs of count > 1 are here.
    _replicas: dict[str, set[int]] = field(default_factory=dict)
    #: The jobs whose current version is rolling out (the leader's rollout loop looks at these only).
    _rolling: set[str] = field(default_factory=set)
    #: Log index of the last change to each slave's desired set (the watch version).
    slave_versions: dict[str, int] = field(default_factory=dict)
    #: Slaves whose version moved since the last ``drain_bumped``: only their watches need waking.
    _bumped: set[str] = field(default_factory=set)
    #: Rises whenever a slave may have gained room (registered, came back, undrained,
    #: a job left it): only then can a job that fitted nowhere fit somewhere.
    capacity_epoch: int = 0
    #: Transitions since the last ``drain_changes``.
    _changes: list[Change] = field(default_factory=list)
    #: Entries this process found it could not apply (they changed nothing but the
    #: applied index). A process-local count, like any Prometheus counter: it is not
    #: in snapshots, and the replication loop carries it over a snapshot install.
    rejected_entries: int = 0
    #: The last GC pass applied since these tables were loaded (not in snapshots:
    #: after a restart it is unknown until the next pass).
    last_gc: GcPass | None = None
    #: Each placed job's allocation as last handed to its slave, with the row encoding and drain
    #: flag it was built from (process-local, never in snapshots): a heartbeat or watch reply
    #: rebuilds only the allocations whose job changed since, not the slave's whole desired set.
    _allocations: dict[str, tuple[str, bool, Allocation]] = field(default_factory=dict, compare=False, repr=False)
    #: The last restore applied since these tables were loaded (process-local, like ``last_gc``):
    #: a restore route whose answer was lost looks here for its own.
    last_restore: RestorePass | None = None
    #: The jobs (row 0s) in list order, for ``GET /v1/jobs`` (``paging.jobs_page``); derived, never persisted.
    job_order: JobOrder = field(default_factory=JobOrder, init=False, compare=False, repr=False)
    #: The jobs by state, for ``/metrics`` (``job_counts``): told of every job a change touches.
    _job_tally: JobTally = field(default_factory=JobTally, init=False, compare=False, repr=False)
    #: The slave ids, sorted: ``scheduling_snapshot`` hands the scheduler its slaves in the order
    #: it ranks them in, so its sort is one linear pass. Kept on register and GC, derived on restore.
    _slave_order: list[str] = field(default_factory=list, init=False, compare=False, repr=False)
    #: Each slave's ``SlaveCapacity`` as the last scheduling snapshot built it, with everything it
    #: was built from (``_kept_capacity``): a pass rebuilds only the slaves that changed since.
    _capacities: dict[str, tuple[tuple[Any, ...], SlaveCapacity]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    # ---------------------------------------------------------------- apply

    def apply_entry(self, index: int, data: str | bytes) -> Outcome:
        """Apply committed entry ``index`` (an encoded operation; empty is a no-op).

        Total and deterministic: an entry that does not decode, or whose apply
        raises, is rejected alike on every master and the index moves on. Only
        an index already applied raises ValueError: that is the caller's bug.
        """
        if index <= self.applied_index:
            raise ValueError(f"entry {index} already applied (at {self.applied_index})")
        try:
            op = ops.decode(data) if data else ops.Noop(at=EPOCH)
        except ValueError as exc:  # pydantic's ValidationError included
            self.applied_index = index
            return self._reject(index, "undecodable", exc)
        return self.apply(index, op)

    def apply(self, index: int, op: ops.Operation) -> Outcome:
        """Apply a decoded operation. An index at or below ``applied_index`` is a
        programming error (ValueError); anything ``op`` holds is not: if its apply
        raises, the entry is rejected and the indexes rebuilt from the rows."""
        if index <= self.applied_index:
            raise ValueError(f"entry {index} already applied (at {self.applied_index})")
        self.applied_index = index
        handler = getattr(self, f"_apply_{op.kind}", None)
        if handler is None:
            return self._reject(index, "unknown_operation", ValueError(f"no such operation {op.kind!r}"))
        try:
            outcome: Outcome = handler(op)
            return outcome
        except (MemoryError, RecursionError):
            raise  # not a verdict on the entry: it could differ between masters; fail-stop
        except Exception as exc:  # noqa: BLE001 - apply never raises: the entry is rejected alike everywhere
            # A bug: the handlers compute before they assign, so this should never
            # happen. Every master meets the same exception at the same point; the
            # indexes are rebuilt from the rows just as a snapshot restore would.
            self._rebuild_indexes()
            return self._reject(index, "apply_failed", exc)

    def _reject(self, index: int, reason: str, exc: BaseException) -> Outcome:
        self.rejected_entries += 1
        error = str(exc).replace("\n", "; ")[:500]
        log_event(log, "state.entry_rejected", logging.ERROR, index=index, reason=reason,
                  error_type=type(exc).__name__, error=error)
        return Outcome.error("rejected", f"entry {index} rejected ({reason}): {error}")

    def _apply_noop(self, op: ops.Noop) -> Outcome:
        return Outcome()

    def _apply_submit_job(self, op: ops.SubmitJob) -> Outcome:
        existing_id, refusal = self._submit_verdict(op.job_id, op.spec, {}, set())
        if refusal is not None:
            return refusal
        if existing_id is not None:
            return Outcome(value=(existing_id, False))
        self._create_job(op.job_id, op.spec, op.at)
        return Outcome(value=(op.job_id, True))

    def _apply_submit_group(self, op: ops.SubmitGroup) -> Outcome:
        """Each submit as if it were an entry of its own, in order; the value is their
        outcomes. A submit whose apply raises is rejected alone (the indexes rebuilt
        from the rows, as :meth:`apply` does for an entry): the others stand."""
        outcomes: list[Outcome] = []
        for submit in op.ops:
            try:
                outcomes.append(self._apply_submit_job(submit))
            except (MemoryError, RecursionError):
                raise  # not a verdict on the entry (see apply)
            except Exception as exc:  # noqa: BLE001 - apply never raises: this submit is rejected alike everywhere
                self._rebuild_indexes()
                outcomes.append(self._reject(self.applied_index, "apply_failed", exc))
        return Outcome(value=outcomes)

    def _apply_submit_jobs(self, op: ops.SubmitJobs) -> Outcome:
        """All or nothing: every job is judged against the tables (and the batch's
        earlier jobs) before any row is made, so a refusal changes nothing."""
        verdicts: list[tuple[str, bool]] = []
        batch_keys: dict[str, tuple[str, JobSpec]] = {}
        batch_ids: set[str] = set()
        for i, submitted in enumerate(op.jobs):
            existing_id, refusal = self._submit_verdict(submitted.job_id, submitted.spec, batch_keys, batch_ids)
            if refusal is not None:  # the index travels with the refusal: the route names jobs.<i>
                return Outcome(ok=False, value={"index": i}, code=refusal.code, message=f"jobs.{i}: {refusal.message}")
            if existing_id is None:
                key = submitted.spec.idempotency_key
                if key is not None:
                    batch_keys[key] = (submitted.job_id, submitted.spec)
                batch_ids.add(submitted.job_id)
                verdicts.append((submitted.job_id, True))
            else:
                verdicts.append((existing_id, False))
        for submitted, (job_id, created) in zip(op.jobs, verdicts, strict=True):
            if created:
                self._create_job(job_id, submitted.spec, op.at)
        return Outcome(value=verdicts)

    def _submit_verdict(
        self, job_id: str, spec: JobSpec, batch_keys: dict[str, tuple[str, JobSpec]], batch_ids: set[str]
    ) -> tuple[str | None, Outcome | None]:
        """What submitting ``spec`` as ``job_id`` would do, changing nothing: the id of the job
        its idempotency key already names, or a refusal, or neither (a new job). A batch's jobs
        judged before this one count as made: ``batch_keys`` (by key) and ``batch_ids``."""
        key = spec.idempotency_key
        if key is not None:
            known = batch_keys.get(key)
            if known is None and key in self._by_idempotency_key:
                existing = self.jobs[self._by_idempotency_key[key]]
                # An update changed the job since: the spec it was submitted with is its first version.
                known = (existing.id, existing.versions[0].spec if existing.versions else existing.spec)
            if known is not None:
                if known[1] != spec:
                    return None, Outcome.error(
                        "conflict",
                        f"idempotency key {key!r} was already used for job {known[0]} with a different spec",
                    )
                return known[0], None
        if job_id in self.jobs or job_id in batch_ids:
            return None, Outcome.error("conflict", f"job id {job_id} already exists")
        return None, None

    def _create_job(self, job_id: str, spec: JobSpec, at: datetime) -> None:
        key = spec.idempotency_key
        job = JobRecord(
            id=job_id, spec=spec, state=JobState.PENDING, created_at=at, updated_at=at
        )
        self.jobs[job.id] = job
        self.job_order.add(job.created_at, job.id)
        if key is not None:
            self._by_idempotency_key[key] = job.id
        self._pending[job.id] = None
        self._unexplained[job.id] = None
        self._event(job, at, JobState.PENDING, "submitted")
        for index in range(1, spec.count):
            self._create_row(job, index, spec, 0, at)

    def _create_row(self, head: JobRecord, index: int, spec: JobSpec, version: int, at: datetime) -> JobRecord:
        """Allocation ``index`` of the job ``head`` is row 0 of, new and pending."""
        row = JobRecord(
            id=row_id(head.id, index), spec=spec, state=JobState.PENDING, created_at=at, updated_at=at,
            index=index, version=version,
        )
        self.jobs[row.id] = row
        self._replicas.setdefault(head.id, set()).add(index)
        self._pending[row.id] = None
        self._unexplained[row.id] = None
        self._event(row, at, JobState.PENDING, "submitted" if version == 0 else f"added at version {version}")
        return row

    def _remove_row(self, row: JobRecord) -> None:
        """Forget allocation row ``row`` (index > 0: scaled away) and every index entry that names it."""
        self._unplace(row)
        self._forget_pending(row.id)
        self.jobs.pop(row.id, None)
        self._job_tally.changed(head_id(row))
        self._allocations.pop(row.id, None)
        indexes = self._replicas.get(head_id(row))
        if indexes is not None:
            indexes.discard(row.index)
            if not indexes:
                del self._replicas[head_id(row)]

    # ------------------------------------------------------- jobs of rows

    def head(self, job_id: str) -> JobRecord | None:
        """The job ``job_id`` (its row 0), or None; an allocation row's id names no job."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.index == 0 else None

    def head_of(self, row: JobRecord) -> JobRecord | None:
        return row if row.index == 0 else self.jobs.get(head_id(row))

    def rows(self, head: JobRecord) -> list[JobRecord]:
        """The job's allocation rows by index, row 0 (``head``) first."""
        indexes = self._replicas.get(head.id)
        if not indexes:
            return [head]
        return [head, *(self.jobs[row_id(head.id, i)] for i in sorted(indexes))]

    def state_of(self, head: JobRecord) -> JobState:
        """The job's state, derived from its allocations' (``lifecycle.job_state``)."""
        if head.id not in self._replicas:
            return head.state
        return job_state([(row.state, row.stop_cause) for row in self.rows(head)])

    def rolling_out(self) -> list[tuple[JobRecord, list[AllocationFacts]]]:
        """The jobs whose current version is rolling out, each with its allocations as
        ``rollout.decide`` reads them."""
        rolling = []
        for job_id in sorted(self._rolling):
            head = self.head(job_id)
            if head is not None and head.rollout is not None:
                facts = [
                    AllocationFacts(row.index, row.version, row.next_version, row.state, row.healthy_since,
                                    row.replaced_at)
                    for row in self.rows(head)
                ]
                rolling.append((head, facts))
        return rolling

    def _spec_of(self, head: JobRecord, version: int) -> JobSpec:
        for kept in reversed(head.versions):
            if kept.version == version:
                return kept.spec
        return desired_spec(head)

    def _apply_apply_plan(self, op: ops.ApplyPlan) -> Outcome:
        placed = 0
        for placement in op.placements:
            job = self.jobs.get(placement.job_id)
            slave = self.slaves.get(placement.slave_id)
            if job is None or slave is None or job.state != JobState.PENDING:
                continue
            if job.not_before is not None and job.not_before > op.at:
                continue
            # The plan was made on a snapshot; the newest state has the last word
            # (its ports included: a port given twice on one slave rejects that placement).
            if not fits(self.capacity(slave), as_pending(job), placement.ports):
                continue
            self._place(job, slave, op.at, placement.ports)
            placed += 1
        for job_id, reason in op.unplaced.items():
            job = self.jobs.get(job_id)
            if job is not None and job.state == JobState.PENDING:
                self._unexplained.pop(job_id, None)
                if job.pending_reason != reason:
                    job.pending_reason = reason
                    job.updated_at = op.at
                    self._touch_job(job)  # its job's view shows the reason too
        return Outcome(value=placed)

    def _apply_register_node(self, op: ops.RegisterSlave) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            slave = SlaveRecord(
                id=op.slave_id,
                address=op.address,
                labels=op.labels,
                cpu_total=op.cpu_total,
                memory_mb_total=op.memory_mb_total,
                registered_at=op.at,
                last_heartbeat=op.at,
                port_range=op.port_range,
                host_volumes=op.host_volumes,
                ports_host=op.ports_host,
            )
            self.slaves[slave.id] = slave
            bisect.insort(self._slave_order, slave.id)
            self._slave_change(slave, op.at, "registered")
            self.capacity_epoch += 1
        else:
            self.capacity_epoch += 1
            slave.address, slave.labels = op.address, op.labels
            slave.cpu_total, slave.memory_mb_total = op.cpu_total, op.memory_mb_total
            slave.port_range, slave.host_volumes = op.port_range, op.host_volumes
            slave.ports_host = op.ports_host
            slave.last_heartbeat = op.at
            if slave.state != NodeState.ALIVE:
                slave.state = NodeState.ALIVE
                self._slave_change(slave, op.at, "heartbeats resumed")
        self._bump(slave.id)
        return Outcome()

    def _apply_touch_nodes(self, op: ops.TouchSlaves) -> Outcome:
        for slave_id, at in op.heartbeats.items():
            if slave := self.slaves.get(slave_id):
                slave.last_heartbeat = at
        for slave_id, usage in op.usage.items():
            if slave := self.slaves.get(slave_id):
                slave.usage = usage
        return Outcome()

    def _apply_set_node_state(self, op: ops.SetSlaveState) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            return Outcome.error("not_found", f"node {op.slave_id} not found")
        if slave.state == op.state:
            return Outcome()
        slave.state = op.state
        self._slave_change(slave, op.at, op.reason)
        if op.state == NodeState.ALIVE:
            self.capacity_epoch += 1
        if op.state == NodeState.DEAD:
            self._lose_jobs(slave, op.at, f"slave {slave.id} is dead: {op.reason}".rstrip(": "))
        self._bump(slave.id)
        return Outcome()

    def _lose_jobs(self, slave: SlaveRecord, at: datetime, why: str) -> None:
        for job_id in sorted(self._placed_ids(slave.id)):
            job = self.jobs[job_id]
            step = on_stop(job, StopCause.SLAVE_LOST)
            if step is not None:
                message = why if step.step is Step.LOST else f"{why}; {step.message}"
                self._transition(job, Transition(step.step, message), at)

    def _apply_set_drain(self, op: ops.SetDrain) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            return Outcome.error("not_found", f"node {op.slave_id} not found")
        deadline = op.deadline if op.draining else None
        if slave.draining == op.draining and slave.drain_deadline == deadline:
            return Outcome()
        if slave.draining != op.draining:
            self._slave_change(slave, op.at, "draining" if op.draining else "drain cancelled")
        slave.draining, slave.drain_deadline, slave.drain_forced = op.draining, deadline, False
        if not op.draining:
            self.capacity_epoch += 1
        else:
            for job in self.placed_jobs(slave.id):
                if drain_moves_now(job, deadline is not None):
                    self._stop(job, StopCause.DRAIN, op.at)
            if deadline is not None and deadline <= op.at:
                self._force_drain(slave, op.at)
        self._bump(slave.id)
        return Outcome()

    def _apply_force_drain(self, op: ops.ForceDrain) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            return Outcome.error("not_found", f"node {op.slave_id} not found")
        # Proposed when the leader saw the deadline pass; the tables have the last word.
        deadline = slave.drain_deadline
        if slave.draining and not slave.drain_forced and deadline is not None and deadline <= op.at:
            self._force_drain(slave, op.at)
            self._bump(slave.id)
        return Outcome()

    def _force_drain(self, slave: SlaveRecord, at: datetime) -> None:
        slave.drain_forced = True
        self._slave_change(slave, at, "drain deadline passed; forcing the remaining jobs off")
        for job in self.placed_jobs(slave.id):
            self._stop(job, StopCause.DRAIN, at)

    def _apply_set_runtime_health(self, op: ops.SetRuntimeHealth) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            return Outcome.error("not_found", f"node {op.slave_id} not found")
        error = None if op.healthy else (op.error or "unknown error")
        if (slave.runtime_healthy, slave.runtime_error) == (op.healthy, error):
            return Outcome()
        flipped = slave.runtime_healthy != op.healthy
        slave.runtime_healthy, slave.runtime_error = op.healthy, error
        if flipped:
            self._slave_change(
                slave, op.at,
                "container engine answers again" if op.healthy else f"container engine does not answer: {error}",
            )
        if op.healthy:
            self.capacity_epoch += 1
        return Outcome()

    def _apply_lose_slave_jobs(self, op: ops.LoseSlaveJobs) -> Outcome:
        slave = self.slaves.get(op.slave_id)
        if slave is None:
            return Outcome.error("not_found", f"node {op.slave_id} not found")
        if slave.runtime_healthy:
            return Outcome()  # the engine came back while this was proposed: nothing is lost
        self._lose_jobs(slave, op.at, f"slave {slave.id}'s container engine stayed away: {op.reason}".rstrip(": "))
        self._bump(slave.id)
        return Outcome()

    def _apply_collect_garbage(self, op: ops.CollectGarbage) -> Outcome:
        """Remove what the pass chose and what still qualifies; the value is
        ``{"jobs": [...], "slaves": [...]}``, the ids actually removed."""
        protected = self._kept_terminal(op.keep_jobs)
        jobs = [
            job_id for job_id in dict.fromkeys(op.job_ids)
            if (job := self.head(job_id)) is not None
            and self.state_of(job).terminal
            and self._finished_at(job) <= op.jobs_finished_before
            and job_id not in protected
        ]
        slaves = [
            slave_id for slave_id in dict.fromkeys(op.slave_ids)
            if (slave := self.slaves.get(slave_id)) is not None
            and slave.state == NodeState.DEAD
            and slave_last_alive(slave) <= op.slaves_dead_before
            and not self._placed_ids(slave_id)
        ]
        for job_id in jobs:
            self._remove_job(job_id)
        for slave_id in slaves:
            del self.slaves[slave_id]
            self._slave_order.remove(slave_id)
            self._placed_by_slave.pop(slave_id, None)
            self.slave_versions.pop(slave_id, None)
            self._bumped.add(slave_id)
        self.last_gc = GcPass(at=op.at, index=self.applied_index, jobs=len(jobs), slaves=len(slaves))
        return Outcome(value={"jobs": jobs, "slaves": slaves})

    def _remove_job(self, job_id: str) -> None:
        """Forget a terminal job and every index entry that names it; its
        idempotency key is forgotten too, so that key may make a new job."""
        for row in self.rows(self.jobs[job_id])[1:]:
            self._remove_row(row)
        self._rolling.discard(job_id)
        job = self.jobs.pop(job_id)
        self.job_order.remove(job.created_at, job_id)
        self._job_tally.changed(job_id)
        self._forget_pending(job_id)
        key = job.spec.idempotency_key
        if key is not None and self._by_idempotency_key.get(key) == job_id:
            del self._by_idempotency_key[key]
        if job.slave_id is not None:
            placed = self._placed_by_slave.get(job.slave_id)
            if placed is not None:
                placed.remove(job_id)

    def _kept_terminal(self, keep: int) -> set[str]:
        """The ids of the ``keep`` most recently finished terminal jobs, which no GC removes."""
        if keep <= 0:
            return set()
        return {job.id for job in heapq.nlargest(keep, self._terminal_jobs(), key=self._finish_order)}

    def _terminal_jobs(self) -> list[JobRecord]:
        return [job for job in self.jobs.values() if job.index == 0 and self.state_of(job).terminal]

    def _finished_at(self, head: JobRecord) -> datetime:
        """When a terminal job finished: when its last allocation did."""
        if head.id not in self._replicas:
            return head.updated_at
        return max(row.updated_at for row in self.rows(head))

    def _finish_order(self, job: JobRecord) -> tuple[datetime, str]:
        """The order of "most recent" among terminal jobs: when they finished, then id (a total order)."""
        return self._finished_at(job), job.id

    def garbage(
        self, jobs_finished_before: datetime, keep_jobs: int, slaves_dead_before: datetime, limit: int
    ) -> Garbage:
        """What a GC pass would remove now (at most ``limit`` jobs and ``limit``
        slaves, the oldest first): the same rules apply checks, so a pass
        proposed from these tables removes exactly these ids if nothing changed."""
        terminal = self._terminal_jobs()
        beyond = len(terminal) - keep_jobs
        old = heapq.nsmallest(beyond, terminal, key=self._finish_order) if beyond > 0 else []
        job_ids = [job.id for job in old if self._finished_at(job) <= jobs_finished_before][:limit]
        slave_ids = sorted(
            slave.id for slave in self.slaves.values()
            if slave.state == NodeState.DEAD
            and slave_last_alive(slave) <= slaves_dead_before
            and not self._placed_ids(slave.id)
        )[:limit]
        return Garbage(job_ids, slave_ids, jobs_finished_before, keep_jobs, slaves_dead_before)

    def _apply_restore_tables(self, op: ops.RestoreTables) -> Outcome:
        """Replace the jobs and slaves tables with a backup's, all or nothing: the
        new tables are built aside and swapped in whole, so a failure changes nothing."""
        if hashlib.sha256(op.tables.encode()).hexdigest() != op.sha256:
            return Outcome.error("invalid_snapshot", "the tables do not match their checksum")
        try:
            # The log's own restore, as a snapshot install does it: the route that
            # proposed this checked every record (StateMachine.from_backup) before
            # the checksum bound these bytes, so apply does not pay for it again.
            restored = StateMachine.from_snapshot(op.tables)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            error = str(exc).replace("\n", "; ")[:300]
            return Outcome.error("invalid_snapshot", f"the tables do not restore: {type(exc).__name__}: {error}")
        gone = set(self.slaves) - set(restored.slaves)
        self.jobs, self.slaves = restored.jobs, restored.slaves
        self._pending = restored._pending
        self._derive_indexes()
        self.capacity_epoch += 1
        # Every slave's desired set may have changed (one the backup does not know
        # has none now): each watch version moves, so every slave asks again.
        for slave_id in [*self.slaves, *gone]:
            self.slave_versions[slave_id] = self.applied_index
            self._bumped.add(slave_id)
        self.last_restore = RestorePass(op.sha256, self.applied_index)
        return Outcome(value={"jobs": len(self.jobs), "slaves": len(self.slaves)})

    def _apply_stop_job(self, op: ops.StopJob) -> Outcome:
        job = self.head(op.job_id)
        if job is None:
            return Outcome.error("not_found", f"job {op.job_id} not found")
        state = self.state_of(job)
        if state in (JobState.COMPLETED, JobState.FAILED):
            return Outcome.error("conflict", f"job {job.id} already {state.value}; nothing to stop")
        for row in self.rows(job):
            self._stop(row, StopCause.USER, op.at)
        rollout = job.rollout
        if rollout is not None and rollout.state is RolloutState.RUNNING:  # nothing more to replace
            job.rollout = rollout.model_copy(update={
                "state": RolloutState.FAILED, "message": "the job was stopped", "updated_at": op.at,
            })
            self._rolling.discard(job.id)
        return Outcome(value=job.id)

    # ------------------------------------------------------------- versions

    def _changeable(self, job_id: str) -> JobRecord | Outcome:
        """The job, if a new version of it may be made (it exists, and it is not finished nor
        stopped by a user), else the refusal."""
        head = self.head(job_id)
        if head is None:
            return Outcome.error("not_found", f"job {job_id} not found")
        state = self.state_of(head)
        if state.terminal or any(row.stop_cause is StopCause.USER for row in self.rows(head)):
            return Outcome.error(
                "conflict", f"job {head.id} is {state.value}: it has no next version (submit a new job)"
            )
        return head

    def _apply_update_job(self, op: ops.UpdateJob) -> Outcome:
        head = self._changeable(op.job_id)
        if isinstance(head, Outcome):
            return head
        current = desired_spec(head)
        if op.spec.type != current.type:
            return Outcome.error("conflict", f"type: job {head.id} is a {current.type.value} job; an update "
                                 "cannot change that (submit a new job)")
        self._new_version(head, op.spec, op.at, "updated")
        return Outcome(value=head.id)

    def _apply_scale_job(self, op: ops.ScaleJob) -> Outcome:
        head = self._changeable(op.job_id)
        if isinstance(head, Outcome):
            return head
        current = desired_spec(head)
        self._new_version(head, current.model_copy(update={"count": op.count}), op.at, f"scaled to {op.count}")
        return Outcome(value=head.id)

    def _apply_revert_job(self, op: ops.RevertJob) -> Outcome:
        head = self._changeable(op.job_id)
        if isinstance(head, Outcome):
            return head
        kept = next((v for v in head.versions if v.version == op.version), None)
        if kept is None:
            return Outcome.error("not_found", f"job {head.id} keeps no version {op.version}")
        self._new_version(head, kept.spec, op.at, f"reverted to version {op.version}")
        return Outcome(value=head.id)

    def _new_version(self, head: JobRecord, spec: JobSpec, at: datetime, why: str) -> None:
        """Make ``spec`` the job's next version. A change of ``count`` alone scales: no allocation
        is replaced, and the allocations at the current version count as at the new one. Any other
        change starts a rollout, which the leader's rollout loop carries out (``rollout.decide``)."""
        current = desired_spec(head)
        spec = spec.model_copy(update={"idempotency_key": current.idempotency_key})  # the job's key stays its own
        if spec == current:
            return
        rows = self.rows(head)
        if not head.versions:  # version 0 is stable if it ran whole before anything replaced it
            whole = all(self._healthy(row) for row in rows)
            head.versions = [JobVersion(version=0, at=head.created_at, spec=current, stable=whole)]
        previous = head.versions[-1]
        version = previous.version + 1
        scale_only = spec.model_copy(update={"count": current.count}) == current
        made = JobVersion(version=version, at=at, spec=spec, stable=scale_only and previous.stable)
        head.versions = [*head.versions, made][-MAX_VERSIONS:]
        rollout = head.rollout
        if scale_only:
            for row in rows:  # the same spec but its count: whatever ran the version runs this one
                if row.version == previous.version:
                    row.version = version
                if row.next_version == previous.version:
                    row.next_version = version
            if rollout is not None and rollout.version == previous.version:
                head.rollout = rollout.model_copy(update={"version": version, "updated_at": at})
        else:
            for row in rows:
                if row.next_version is not None:  # those being replaced come back at the newest version
                    row.next_version = version
                elif row.spec.model_copy(update={"count": spec.count}) == spec:
                    row.version = version  # it runs this spec already (a revert to what it runs): kept
            head.rollout = Rollout(version=version, state=RolloutState.RUNNING, message="rolling out",
                                   started_at=at, updated_at=at)
            self._rolling.add(head.id)
        self._note(head, at, f"version {version}: {why}")
        self._rescale(head, spec.count, version, at)

    def _rescale(self, head: JobRecord, count: int, version: int, at: datetime) -> None:
        have = self._replicas.get(head.id, set())
        for index in range(1, count):
            if index not in have:
                self._create_row(head, index, self._spec_of(head, version), version, at)
        for row in self.rows(head)[1:]:
            if row.index >= count:
                if row.state is JobState.PENDING or row.state.terminal:
                    self._remove_row(row)
                    self._touch_job(head)
                else:
                    self._stop(row, StopCause.SCALE, at)

    def _healthy(self, row: JobRecord) -> bool:
        return row.state is JobState.RUNNING and (row.spec.check is None or row.health is Health.HEALTHY)

    def _apply_rollout_step(self, op: ops.RolloutStep) -> Outcome:
        head = self.head(op.job_id)
        rollout = head.rollout if head is not None else None
        if head is None or rollout is None or rollout.version != op.version or rollout.state != RolloutState.RUNNING:
            return Outcome(value=False)  # decided on older tables: the rollout moved on
        if self.state_of(head).terminal or any(row.stop_cause is StopCause.USER for row in self.rows(head)):
            return Outcome(value=False)
        count = desired_spec(head).count
        for index in dict.fromkeys(op.replace):
            row = self.jobs.get(row_id(head.id, index))
            if row is None or index >= count or op.version in (row.version, row.next_version):
                continue
            self._replace(head, row, op.version, op.at)
        if op.outcome is not None:
            self._rolling.discard(head.id)
        if op.outcome is RolloutState.COMPLETE:
            head.rollout = rollout.model_copy(update={
                "state": RolloutState.COMPLETE, "message": op.message or "every allocation healthy",
                "updated_at": op.at,
            })
            head.versions = [v.model_copy(update={"stable": True}) if v.version == op.version else v
                             for v in head.versions]
            self._note(head, op.at, f"version {op.version} rolled out")
        elif op.outcome is RolloutState.FAILED:
            head.rollout = rollout.model_copy(update={
                "state": RolloutState.FAILED, "message": op.message or "failed", "updated_at": op.at,
            })
            self._note(head, op.at, f"version {op.version} failed: {op.message or 'failed'}")
            policy = desired_spec(head).update
            stable = next((v for v in reversed(head.versions) if v.stable and v.version != op.version), None)
            # Not when the failed version is that spec already (a revert that failed too): no loop.
            if policy is not None and policy.auto_revert and stable is not None and stable.spec != desired_spec(head):
                self._new_version(head, stable.spec, op.at, f"auto revert to version {stable.version}")
        return Outcome(value=True)

    def _replace(self, head: JobRecord, row: JobRecord, version: int, at: datetime) -> None:
        """A rollout replaces allocation ``row`` by one at ``version``: one not placed takes the
        version at once; one placed is stopped first (``StopCause.UPDATE``, not charged)."""
        row.replaced_at = at
        if row.state is JobState.PENDING:
            self._take_version(head, row, version, at)
        elif row.state in PLACED_STATES:
            row.next_version = version
            self._stop(row, StopCause.UPDATE, at)
            row.touch()

    def _apply_report_allocations(self, op: ops.ReportAllocations) -> Outcome:
        for job, status, step in self._report_steps(op.slave_id, op.statuses, op.runtime_healthy):
            self._transition(job, step, op.at, status)
        return Outcome()

    def _report_steps(
        self, slave_id: str, statuses: Iterable[AllocationStatus], runtime_healthy: bool
    ) -> Iterator[tuple[JobRecord, AllocationStatus, Transition]]:
        """The transitions a slave's reports cause, by ``lifecycle.on_report``: apply and
        the leader's choice of which reports to log both ask here, so they never disagree."""
        facts = self._facts(slave_id, runtime_healthy)
        for status in statuses:
            # The allocation's row from its id (<row id>-<attempt>); the report names the job too.
            job = self.jobs.get(status.alloc_id.rpartition("-")[0])
            if job is None or job.alloc_id != status.alloc_id or job.slave_id != slave_id:
                continue  # a report about an older attempt, or from a slave the job left
            if head_id(job) != status.job_id:
                continue
            step = on_report(job, status, facts)
            if step is not None:
                yield job, status, step

    def _facts(self, slave_id: str, runtime_healthy: bool) -> Facts:
        slave = self.slaves.get(slave_id)
        return Facts(slave_dead=slave is None or slave.state == NodeState.DEAD, runtime_healthy=runtime_healthy)

    # ------------------------------------------------------ job transitions

    def _stop(self, job: JobRecord, cause: StopCause, at: datetime) -> None:
        step = on_stop(job, cause)
        if step is not None:
            self._transition(job, step, at)

    def _transition(
        self, job: JobRecord, step: Transition, at: datetime, status: AllocationStatus | None = None
    ) -> None:
        """Carry out what ``lifecycle`` decided; the only writer of a placed job's state."""
        if status is not None:
            if status.container_id:
                job.container_id = status.container_id
            if status.state not in (ContainerState.STARTING, ContainerState.RUNNING):
                job.exit_code = status.exit_code
        if step.ran:
            self._event(job, at, JobState.RUNNING, f"container {short(job.container_id)} ran")
        match step.step:
            case Step.STARTING:
                job.seen_started = True
                self._event(job, at, JobState.STARTING, step.message, slave_id=job.slave_id)
            case Step.RUNNING:
                job.seen_started = True
                job.running_since = at
                self._event(job, at, JobState.RUNNING, f"container {short(job.container_id)} running")
            case Step.STOPPING:
                job.stop_cause = step.cause
                self._job_tally.changed(head_id(job))  # a user's stop of a stopping row: no event, another job state
                if job.state != JobState.STOPPING:
                    self._event(job, at, JobState.STOPPING, step.message)
                if job.slave_id:
                    self._bump(job.slave_id)
            case Step.LOST:
                self._event(job, at, JobState.LOST, step.message)
                self._requeue(job, at, "rescheduling", charge=False)
            case Step.RESTART:
                self._requeue(job, at, step.message, charge=True)
            case Step.COMPLETED | Step.FAILED | Step.STOPPED:
                self._finish(job, at, step.to, step.message)
        if step.step is Step.HEALTH or (step.step is Step.RUNNING and status is not None and status.health):
            self._health(job, status, at)
        if step.step is Step.RUNNING and job.spec.check is None:
            job.healthy_since = at  # without a check, running is healthy
        if job.state is JobState.PENDING or job.state.terminal:
            self._settle(job, at)

    def _settle(self, row: JobRecord, at: datetime) -> None:
        """A row that left its slave: one past the job's count (scaled down) goes away; one a
        rollout stopped takes its new version (its spec) before it is placed again."""
        head = self.head_of(row)
        if head is None:
            return
        if row.index > 0 and row.index >= desired_spec(head).count:
            self._remove_row(row)
            self._touch_job(row)
            return
        if row.next_version is not None and row.state is JobState.PENDING:
            self._take_version(head, row, row.next_version, at)

    def _take_version(self, head: JobRecord, row: JobRecord, version: int, at: datetime) -> None:
        """A pending row's spec becomes ``version``'s: its next placement runs it."""
        row.spec = self._spec_of(head, version)
        row.version, row.next_version = version, None
        row.pending_reason = None
        self._unexplained[row.id] = None  # another spec may fit where the old one did not
        self._event(row, at, JobState.PENDING, f"at version {version}; placing it")

    def _health(self, job: JobRecord, status: AllocationStatus | None, at: datetime) -> None:
        """A running job's check changed its verdict: recorded, and a job event."""
        health = status.health if status is not None else None
        if health is None or health == job.health or job.state != JobState.RUNNING:
            return
        job.health = health
        job.healthy_since = at if health is Health.HEALTHY else None
        message = f"health: {health.value}" + (f" ({status.message})" if status and status.message else "")
        self._record(job, at, message, health=health)

    def _place(self, job: JobRecord, slave: SlaveRecord, at: datetime, ports: Iterable[int] = ()) -> None:
        self._forget_pending(job.id)
        job.ports = list(ports)
        if job.ports:
            self._ports_by_slave.setdefault(slave.id, set()).update(job.ports)
        job.health = None
        job.healthy_since = None
        job.attempts += 1
        job.slave_id = slave.id
        job.alloc_id = f"{job.id}-{job.attempts}"  # <job id>.<index>-<attempt> past index 0
        job.container_id = None
        job.exit_code = None
        job.pending_reason = None
        job.not_before = None
        job.stop_cause = None
        job.running_since = None
        job.seen_started = False
        self._placed_by_slave.setdefault(slave.id, Reservations()).add(job.id, *reserved_by(job))
        self._event(job, at, JobState.SCHEDULED, f"placed on {slave.id} (attempt {job.attempts})", slave_id=slave.id)
        self._bump(slave.id)

    def _forget_pending(self, job_id: str) -> None:
        self._pending.pop(job_id, None)
        self._unexplained.pop(job_id, None)
        self._backoff.pop(job_id, None)

    def _unplace(self, job: JobRecord) -> None:
        if job.ports:
            held = self._ports_by_slave.get(job.slave_id or "")
            if held is not None:
                held.difference_update(job.ports)
                if not held:
                    del self._ports_by_slave[job.slave_id or ""]
            job.ports = []  # the slave's ports are free again
        job.health = None
        job.healthy_since = None
        if job.slave_id is not None:
            placed = self._placed_by_slave.get(job.slave_id)
            if placed is not None:
                placed.remove(job.id)
            self._bump(job.slave_id)
            self.capacity_epoch += 1

    def _finish(self, job: JobRecord, at: datetime, state: JobState, message: str) -> None:
        self._unplace(job)
        self._forget_pending(job.id)
        job.stop_cause = None
        self._event(job, at, state, message)

    def _requeue(self, job: JobRecord, at: datetime, message: str, *, charge: bool) -> None:
        """Back to pending for another attempt; ``charge`` counts it against the restart policy."""
        if charge:  # computed before anything changes
            wait = backoff(job, at)
            not_before = at + timedelta(seconds=wait.delay)
            message = f"{message} in {wait.delay:g}s (restart {wait.restarts})"
        self._unplace(job)
        if charge:
            job.restarts, job.quick_exits = wait.restarts, wait.quick_exits
            job.not_before = not_before
            self._backoff[job.id] = not_before
        job.slave_id = None
        job.stop_cause = None
        job.pending_reason = None
        self._pending[job.id] = None
        self._unexplained[job.id] = None
        self._event(job, at, JobState.PENDING, message)

    def _event(self, job: JobRecord, at: datetime, state: JobState, message: str, slave_id: str | None = None) -> None:
        job.state = state
        self._record(job, at, message, slave_id)

    def _note(self, head: JobRecord, at: datetime, message: str) -> None:
        """An event of the job itself (a version, a rollout's end), on row 0; no row changes state."""
        self._record(head, at, message)

    def _record(
        self, job: JobRecord, at: datetime, message: str, slave_id: str | None = None, health: Health | None = None
    ) -> None:
        """One event of the row in its state now (the latest MAX_EVENTS_PER_JOB kept), published as a job change."""
        job.updated_at = at
        job.message = message
        job.events.append(JobEvent(
            at=at, state=job.state, message=message, node_id=slave_id or job.slave_id, attempt=job.attempts,
            health=health, index=job.index,
        ))
        if len(job.events) > MAX_EVENTS_PER_JOB:
            del job.events[: len(job.events) - MAX_EVENTS_PER_JOB]
        job.touch()  # the list changed in place
        self._job_change(job, at, message, health.value if health is not None else None)

    def _job_change(self, row: JobRecord, at: datetime, message: str, health: str | None = None) -> None:
        """A change of one allocation row, published as a change of its job (in the job's state)."""
        self._job_tally.changed(head_id(row))
        if row.index == 0 and row.id not in self._replicas:
            self._changes.append(Change("job", row.id, row.state.value, at, row.slave_id, message,
                                        self.applied_index, health))
            return
        head = self._touch_job(row)
        state = self.state_of(head) if head is not None else row.state
        self._changes.append(Change("job", head_id(row), state.value, at, row.slave_id, message, self.applied_index,
                                    health, alloc_index=row.index))

    def _touch_job(self, row: JobRecord) -> JobRecord | None:
        """Row 0's kept encoding is dropped when another row of its job changes: what is kept from
        it (the list view) then describes the job as it is now."""
        head = self.head_of(row)
        if head is not None and head is not row:
            head.touch()
        return head

    def _slave_change(self, slave: SlaveRecord, at: datetime, message: str) -> None:
        state = NodeState.DRAINING if slave.draining and slave.state == NodeState.ALIVE else slave.state
        self._changes.append(Change("node", slave.id, state.value, at, slave.id, message, self.applied_index))

    def _bump(self, slave_id: str) -> None:
        self.slave_versions[slave_id] = self.applied_index
        self._bumped.add(slave_id)

    # ---------------------------------------------------------------- reads

    def drain_changes(self) -> list[Change]:
        changes, self._changes = self._changes, []
        return changes

    def drain_bumped(self) -> set[str]:
        """The slaves whose version moved since the last call (whose watches may answer now)."""
        bumped, self._bumped = self._bumped, set()
        return bumped

    def job_counts(self) -> Mapping[JobState, int]:
        """How many jobs are in each state (states with none left out), for ``/metrics``: the
        kept tally, recounted for the jobs changed since the last call (``JobTally``)."""
        return self._job_tally.counts(self._job_state_by_id, self._every_job_state)

    def _job_state_by_id(self, job_id: str) -> JobState | None:
        head = self.head(job_id)
        return None if head is None else self.state_of(head)

    def _every_job_state(self) -> Iterator[tuple[str, JobState]]:
        return ((job.id, self.state_of(job)) for job in self.jobs.values() if job.index == 0)

    def has_pending(self) -> bool:
        return bool(self._pending)

    def _placed_ids(self, slave_id: str) -> Collection[str]:
        return self._placed_by_slave.get(slave_id, ())

    def placed_jobs(self, slave_id: str) -> list[JobRecord]:
        return [self.jobs[j] for j in sorted(self._placed_ids(slave_id))]

    def reserved(self, slave_id: str) -> tuple[int, int]:
        """What the jobs placed on the slave reserve of it (milli-cores, MiB): kept, not recounted."""
        placed = self._placed_by_slave.get(slave_id)
        return (placed.cpu_millis, placed.memory_mb) if placed is not None else (0, 0)

    def capacity(self, slave: SlaveRecord) -> SlaveCapacity:
        """The slave as the scheduler sees it, in constant time (the totals are kept on place/unplace)."""
        cpu, memory = self.reserved(slave.id)
        return SlaveCapacity(
            id=slave.id,
            labels=slave.labels,
            cpu_total=slave.cpu_total,
            memory_mb_total=slave.memory_mb_total,
            cpu_reserved=cpu / 1000,
            memory_mb_reserved=memory,
            schedulable=slave.state == NodeState.ALIVE and not slave.draining and slave.runtime_healthy,
            port_range=(slave.port_range.low, slave.port_range.high) if slave.port_range else None,
            ports_used=self._ports_used(slave.id),
            host_volumes=tuple(slave.host_volumes),
        )

    def _kept_capacity(self, slave: SlaveRecord) -> SlaveCapacity:
        """``capacity(slave)``, reused while nothing it is built from changed: the key holds every
        value ``capacity`` reads (the host paths and ports copied, as they are lists and sets), so
        a kept one is always equal to one built now. Comparing the key costs a fraction of
        building the capacity (a frozen dataclass of ten fields); heartbeats change the slave's
        row but none of these."""
        cpu, memory = self.reserved(slave.id)
        key = (
            slave.id, slave.labels, slave.cpu_total, slave.memory_mb_total, slave.state, slave.draining,
            slave.runtime_healthy, slave.port_range, tuple(slave.host_volumes), cpu, memory,
            self._ports_used(slave.id),
        )
        kept = self._capacities.get(slave.id)
        if kept is not None and kept[0] == key:
            return kept[1]
        capacity = self.capacity(slave)
        self._capacities[slave.id] = (key, capacity)
        return capacity

    def _ports_used(self, slave_id: str) -> frozenset[int]:
        """The host ports the jobs placed on a slave hold."""
        held = self._ports_by_slave.get(slave_id)
        return frozenset(held) if held else frozenset()

    def scheduling_snapshot(
        self, now: datetime, only_unexplained: bool = False
    ) -> tuple[list[SlaveCapacity], list[PendingJob]]:
        """What the scheduler needs, as immutable values: the slaves by id (each capacity kept
        until the slave changes: ``_kept_capacity``), the pending jobs in pending order, less
        jobs in backoff, and with ``only_unexplained`` less jobs already found to fit nowhere."""
        order = self._slave_order
        if len(order) != len(self.slaves):  # cannot happen (kept with the table); then it still holds
            order = sorted(self.slaves)
        slaves = [self._kept_capacity(self.slaves[slave_id]) for slave_id in order]
        if len(self._capacities) > 2 * len(self.slaves) + 100:  # forget slaves that are gone
            self._capacities = {
                slave_id: kept for slave_id, kept in self._capacities.items() if slave_id in self.slaves
            }
        candidates = self._unexplained if only_unexplained else self._pending
        jobs = [
            as_pending(j, self._siblings_slaves(j))
            for j in map(self.jobs.__getitem__, candidates)
            if j.not_before is None or j.not_before <= now
        ]
        return slaves, jobs

    def _siblings_slaves(self, row: JobRecord) -> frozenset[str] | None:
        """For spread: the slaves the job's other allocations are placed on; None: the job packs
        (one allocation, or ``spread: false``)."""
        head = self.head_of(row)
        if head is None or head.id not in self._replicas or not desired_spec(head).spread:
            return None
        return frozenset(
            other.slave_id for other in self.rows(head)
            if other is not row and other.slave_id is not None and other.state in PLACED_STATES
        )

    def next_backoff_expiry(self) -> datetime | None:
        return min(self._backoff.values()) if self._backoff else None

    def desired_allocations(self, slave_id: str) -> list[Allocation]:
        slave = self.slaves.get(slave_id)
        forced = slave is not None and slave.drain_forced
        kept = self._allocations
        allocations = []
        for job in self.placed_jobs(slave_id):
            row = job.encoded()  # a new string after any change to the row (the snapshot reuses it)
            cached = kept.get(job.id)
            if cached is not None and cached[0] is row and cached[1] == forced:
                allocations.append(cached[2])
                continue
            allocation = _allocation(job, forced)
            kept[job.id] = (row, forced, allocation)
            allocations.append(allocation)
        if len(kept) > 2 * len(self.jobs) + 1000:  # forget jobs that are gone
            self._allocations = {job_id: entry for job_id, entry in kept.items() if job_id in self.jobs}
        return allocations

    def relevant_statuses(
        self, slave_id: str, statuses: Iterable[AllocationStatus], runtime_healthy: bool = True
    ) -> list[AllocationStatus]:
        """The reports that would change the tables; the rest need no log entry."""
        return [status for _, status, _ in self._report_steps(slave_id, statuses, runtime_healthy)]

    def job_view(self, job: JobRecord, with_events: bool = True) -> JobView:
        """The job ``job`` is row 0 of: its current version's spec, its state (derived from its
        allocations'), index 0's placement in the fields of a job of one allocation, and every
        allocation in ``allocations``."""
        rows = self.rows(job)
        events: list[JobEvent] | None = None
        if with_events:
            events = list(job.events) if len(rows) == 1 else sorted(
                (event for row in rows for event in row.events), key=lambda event: event.at
            )[-MAX_EVENTS_PER_JOB:]
        rollout = job.rollout
        # A job of several allocations waits on whichever of them waits: index 0's, else the first's.
        reason = job.pending_reason or next(
            (f"allocation {row.index}: {row.pending_reason}" for row in rows[1:] if row.pending_reason), None
        )
        return JobView(
            **desired_spec(job).model_dump(exclude={"ports"}),
            id=job.id,
            state=self.state_of(job),
            node_id=job.slave_id,
            alloc_id=job.alloc_id,
            container_id=job.container_id,
            attempts=job.attempts,
            exit_code=job.exit_code,
            created_at=job.created_at,
            updated_at=job.updated_at,
            pending_reason=reason,
            message=job.message,
            ports=self._port_views(job),
            health=job.health,
            events=events,
            version=desired_version(job),
            desired=desired_spec(job).count,
            running=sum(1 for row in rows if row.state is JobState.RUNNING),
            allocations=[self._allocation_view(row) for row in rows],
            rollout=None if rollout is None else RolloutView(
                version=rollout.version, state=rollout.state, message=rollout.message, updated_at=rollout.updated_at,
            ),
        )

    def _allocation_view(self, row: JobRecord) -> AllocationView:
        return AllocationView(
            id=row.alloc_id, index=row.index, version=row.version, state=row.state, slave_id=row.slave_id,
            container_id=row.container_id, attempt=row.attempts, exit_code=row.exit_code,
            ports=self._port_views(row), health=row.health, pending_reason=row.pending_reason,
            message=row.message, updated_at=row.updated_at,
        )

    def versions_view(self, head: JobRecord) -> list[JobVersionView]:
        """The job's kept versions, newest first (a job never updated has its version 0)."""
        kept = head.versions or [JobVersion(version=0, at=head.created_at, spec=head.spec)]
        return [JobVersionView(version=v.version, at=v.at, stable=v.stable, spec=v.spec) for v in reversed(kept)]

    def _port_views(self, job: JobRecord) -> list[PortView]:
        slave = self.slaves.get(job.slave_id) if job.slave_id and job.ports else None
        host = None
        if slave is not None:
            host = slave.address.rsplit(":", 1)[0]
            if slave.ports_host:
                host = f"[{slave.ports_host}]" if ":" in slave.ports_host else slave.ports_host
        views = []
        for i, port in enumerate(job.spec.ports):
            given = job.ports[i] if slave is not None and i < len(job.ports) else None
            views.append(PortView(
                **port.model_dump(), host_port=given,
                address=f"{host}:{given}" if host is not None and given is not None else None,
            ))
        return views

    def slave_view(self, slave: SlaveRecord) -> NodeView:
        cap = self.capacity(slave)
        state = NodeState.DRAINING if slave.draining and slave.state == NodeState.ALIVE else slave.state
        return NodeView(
            id=slave.id,
            role=NodeRole.SLAVE,
            address=slave.address,
            state=state,
            labels=slave.labels,
            resources=NodeResources(
                cpu_total=slave.cpu_total,
                cpu_free=round(slave.cpu_total - cap.cpu_reserved, 3),
                memory_mb_total=slave.memory_mb_total,
                memory_mb_free=slave.memory_mb_total - cap.memory_mb_reserved,
            ),
            usage=slave.usage,
            allocations=len(self._placed_ids(slave.id)),
            last_heartbeat=slave.last_heartbeat,
            runtime_healthy=slave.runtime_healthy,
            runtime_error=slave.runtime_error,
            drain_deadline=slave.drain_deadline,
        )

    # ------------------------------------------------------------ snapshots

    def to_snapshot(self) -> str:
        """The tables as JSON text, built from each row's kept encoding."""
        return join_snapshot(self.snapshot_parts())

    def snapshot_parts(self) -> SnapshotParts:
        """The tables' encoded rows as they are now; ``join_snapshot`` makes the
        text from them. The parts are immutable, so the (costlier) join can run
        in another thread while the tables change."""
        return SnapshotParts(
            self.applied_index,
            [job.encoded() for job in self.jobs.values()],
            [slave.encoded() for slave in self.slaves.values()],
            list(self._pending),
        )

    @classmethod
    def from_snapshot(cls, encoded: str) -> StateMachine:
        """The tables of a snapshot, whole, or SnapshotCorrupt (and nothing).

        A snapshot in :data:`SNAPSHOT_FORMAT` was written by this code from
        validated rows, and the store or the transfer that brought it checked
        its checksum: its rows are rebuilt as they were, not validated again
        (:mod:`claud.master.row_restore`). An older snapshot is validated in full."""
        with _collector_paused():
            try:
                data = pydantic_core.from_json(encoded, allow_inf_nan=False, cache_strings="keys")
                version = data.get("format")
                if version is not None and version != SNAPSHOT_FORMAT:
                    raise SnapshotCorrupt(f"snapshot format {version!r}; this master reads {SNAPSHOT_FORMAT}")
                trusted = version == SNAPSHOT_FORMAT
                build_slave = row_builder(SlaveRecord) if trusted else SlaveRecord.model_validate
                build_job = row_builder(JobRecord) if trusted else JobRecord.model_validate
                sm = cls(applied_index=data["applied_index"])
                if isinstance(sm.applied_index, bool) or not isinstance(sm.applied_index, int):
                    raise TypeError(f"applied_index {sm.applied_index!r} is not an integer")
                for raw in data["nodes"]:
                    slave = build_slave(raw)
                    sm.slaves[slave.id] = slave
                    sm.slave_versions[slave.id] = sm.applied_index
                for raw in data["jobs"]:
                    job = build_job(raw)
                    sm.jobs[job.id] = job
                sm._pending = dict.fromkeys(job_id for job_id in data["pending"] if job_id in sm.jobs)
                sm._derive_indexes()
            except SnapshotCorrupt:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # pydantic's ValidationError included
                detail = str(exc).replace("\n", "; ")[:300]
                raise SnapshotCorrupt(f"snapshot does not restore: {type(exc).__name__}: {detail}") from None
        return sm

    @classmethod
    def from_backup(cls, encoded: str) -> StateMachine:
        """The tables of a backup, every record validated (a backup comes from
        outside the log: nothing in it is trusted); ValueError naming the first
        problem. Its applied index is the backup's, to be replaced by the caller's."""
        try:
            data = json.loads(encoded)
        except ValueError as exc:
            raise ValueError(f"the tables are not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("the tables are not a JSON object")
        for key, kind in (("applied_index", int), ("jobs", list), ("nodes", list), ("pending", list)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"the tables have no {key!r} {kind.__name__}")
        sm = cls(applied_index=data["applied_index"])
        for table, model, rows in (("jobs", JobRecord, sm.jobs), ("nodes", SlaveRecord, sm.slaves)):
            for position, raw in enumerate(data[table]):
                try:
                    record = model.model_validate(raw)
                except ValueError as exc:  # pydantic's ValidationError
                    error = str(exc).replace("\n", "; ")[:300]
                    raise ValueError(f"{table}[{position}] is not a valid record: {error}") from None
                if record.id in rows:
                    raise ValueError(f"{table}[{position}]: id {record.id!r} appears twice")
                rows[record.id] = record  # type: ignore[assignment]
        # What the log's restore (from_snapshot) trusts, checked here: the pending
        # list is exactly the pending jobs, and a placed job is on a known slave.
        pending = data["pending"]
        if not all(isinstance(job_id, str) for job_id in pending) or len(set(pending)) != len(pending):
            raise ValueError("the pending list holds something other than distinct job ids")
        waiting = {job.id for job in sm.jobs.values() if job.state == JobState.PENDING}
        if set(pending) != waiting:
            odd = sorted(set(pending) ^ waiting)[:3]
            raise ValueError(f"the pending list does not match the pending jobs (e.g. {', '.join(odd)})")
        for job in sm.jobs.values():
            if job.state in PLACED_STATES and job.slave_id not in sm.slaves:
                raise ValueError(f"job {job.id} is {job.state.value} on slave {job.slave_id!r}, which the tables lack")
        sm._pending = dict.fromkeys(pending)
        sm._derive_indexes()
        for slave_id in sm.slaves:
            sm.slave_versions[slave_id] = sm.applied_index
        return sm

    def _derive_indexes(self) -> None:
        """Every index but ``_pending`` (whose order is the tables'), from the rows."""
        self._by_idempotency_key, self._placed_by_slave, self._ports_by_slave = {}, {}, {}
        self._unexplained, self._backoff, self._replicas, self._rolling = {}, {}, {}, set()
        self.job_order = JobOrder((job.created_at, job.id) for job in self.jobs.values() if job.index == 0)
        self._job_tally.reset()
        self._slave_order = sorted(self.slaves)
        for job in self.jobs.values():
            if job.rollout is not None and job.rollout.state is RolloutState.RUNNING:
                self._rolling.add(job.id)
            if job.index:
                self._replicas.setdefault(head_id(job), set()).add(job.index)
                # Its spec's idempotency key is row 0's: row 0 answers for it.
            elif job.spec.idempotency_key is not None:
                self._by_idempotency_key.setdefault(job.spec.idempotency_key, job.id)
            if job.state in PLACED_STATES and job.slave_id is not None:
                # The totals are derived again from the rows, never read from a snapshot.
                self._placed_by_slave.setdefault(job.slave_id, Reservations()).add(job.id, *reserved_by(job))
                if job.ports:
                    self._ports_by_slave.setdefault(job.slave_id, set()).update(job.ports)
        for job_id in self._pending:
            job = self.jobs[job_id]
            if job.pending_reason is None:
                self._unexplained[job_id] = None
            if job.not_before is not None:
                self._backoff[job_id] = job.not_before

    def _rebuild_indexes(self) -> None:
        """After a failed apply: indexes that agree with the rows, as a restore makes them."""
        pending = [j for j in self._pending if j in self.jobs and self.jobs[j].state == JobState.PENDING]
        pending += [j.id for j in self.jobs.values() if j.state == JobState.PENDING and j.id not in self._pending]
        self._pending = dict.fromkeys(pending)
        self._derive_indexes()
        self.capacity_epoch += 1
        for slave_id in self.slaves:
            self.slave_versions[slave_id] = self.applied_index
            self._bumped.add(slave_id)


def _allocation(job: JobRecord, forced: bool) -> Allocation:
    """What the job's slave is to run for it; ``forced``: its slave's drain is past its deadline."""
    return Allocation(
        alloc_id=job.alloc_id or "",
        job_id=head_id(job),
        attempt=job.attempts,
        index=job.index,
        version=job.version,
        desired=DesiredState.STOP if job.state == JobState.STOPPING else DesiredState.RUN,
        image=job.spec.image,
        command=job.spec.command,
        env=job.spec.env,
        resources=job.spec.resources,
        # Past a drain's deadline, what is moved is killed, not asked to stop.
        stop_timeout=0.0 if forced and job.stop_cause is StopCause.DRAIN else job.spec.stop_timeout,
        may_start=not (job.seen_started or job.state in (JobState.STARTING, JobState.RUNNING)),
        user=job.spec.user,
        ports=[
            PortBinding(name=p.name, container=p.container, host=host)
            for p, host in zip(job.spec.ports, job.ports, strict=False)
        ],
        check=job.spec.check,
        volumes=job.spec.volumes,
    )


def as_pending(job: JobRecord, spread_from: frozenset[str] | None = None) -> PendingJob:
    """The row as the scheduler sees it; ``spread_from``: the slaves its job's other allocations
    hold, which it avoids while another slave fits (None: nothing to spread from)."""
    spec = job.spec
    resources = spec.resources
    if not spec.ports and not spec.volumes and spread_from is None:
        return PendingJob(job.id, resources.cpu, resources.memory_mb, spec.constraints.labels)
    return PendingJob(
        job.id, resources.cpu, resources.memory_mb, spec.constraints.labels,
        ports=tuple(p.host for p in spec.ports),
        host_paths=tuple(v.host_path for v in spec.volumes if v.host_path is not None),
        attempt=job.attempts,
        group=head_id(job) if spread_from is not None else None,
        spread_from=spread_from or frozenset(),
    )


def short(container_id: str | None) -> str:
    return (container_id or "?")[:12]
