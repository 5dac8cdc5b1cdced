"""Desired versus observed: the agent's decisions as one pure function.

Level-triggered: the plan depends only on what the masters want now, what the
runtime shows now, and which actions are still in flight, never on the history
of events. So a pass can run at any time, any number of times, after any crash,
and converge; and every rule below is unit-tested without Docker.

The safety rules, in order of precedence:

* fenced (lease over): stop every running container, start nothing;
* before the first reply of a leader: touch nothing (no start, stop or removal);
* at most one start per allocation, never while one is in flight or a container
  exists; never a restart in place (a restart is a new allocation);
* stop before start, per allocation slot (a job's allocation of one index, see
  :data:`Slot`): no start for a slot while another attempt's container of that
  slot runs (or is stopping) here, or another start of it is in flight; at most
  one start per slot per pass. Replicas of one job (other indexes) are other
  slots: they start and run side by side;
* an allocation the masters have seen start (``may_start`` False) whose
  container is gone is reported missing, never started a second time;
* never stop the container of an allocation the masters want running, unless
  its health check found it unhealthy (then it is stopped, and its exit
  reported unhealthy: the masters restart it, as after a crash);
* a container the masters no longer list (or a second one of an allocation)
  gets no more grace than a fence: its job may already run elsewhere (lost
  while this slave, or its engine, was away).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from claud.api import Allocation, AllocationStatus, ContainerState, DesiredState, Health
from claud.slave.runtime import Observed, Phase

#: An allocation slot: ``(job id, index)``. Its attempts follow one another, never overlap on
#: a slave; the replicas of a job (count > 1) are slots of their own and may share a slave.
#: A container from before replicas has index 0, as has every allocation of a job without count.
Slot = tuple[str, int]


def slot_of(x: Allocation | Observed) -> Slot:
    """The slot an allocation, or a container, holds."""
    return (x.job_id, x.index)


@dataclass(frozen=True, slots=True)
class StopAction:
    container_id: str
    alloc_id: str
    job_id: str
    grace: float
    reason: str  # "desired-stop" | "undesired" | "duplicate" | "fenced" | "unhealthy"


@dataclass(frozen=True, slots=True)
class RemoveAction:
    container_id: str
    alloc_id: str
    job_id: str
    reason: str  # "expired" | "over-limit"


@dataclass(frozen=True, slots=True)
class ReconcileInput:
    #: The masters' desired set by alloc id; None until a leader first answered.
    desired: Mapping[str, Allocation] | None
    observed: Iterable[Observed]
    #: Allocations whose start is in flight (their container may not exist yet).
    starting: frozenset[str] = frozenset()
    #: Containers with a stop or removal in flight.
    busy: frozenset[str] = frozenset()
    #: Allocations whose start failed, with the reason (not retried).
    start_failures: Mapping[str, str] = field(default_factory=dict)
    #: Allocations this agent started; if their container vanishes they are "missing".
    launched: frozenset[str] = frozenset()
    fenced: bool = False
    #: Slots with a start in flight (whatever the attempt): a second attempt must wait.
    starting_slots: frozenset[Slot] = frozenset()
    #: Allocations this slave fenced, with when: an exit at or after that moment was ours.
    fenced_allocs: Mapping[str, datetime] = field(default_factory=dict)
    now: datetime | None = None
    default_grace: float = 5.0
    fence_grace: float = 2.0
    retention: timedelta = timedelta(hours=1)
    max_exited: int = 200
    #: What the health checks concluded, by alloc id, with why (HealthChecker.verdict).
    health: Mapping[str, tuple[Health, str | None]] = field(default_factory=dict)


@dataclass(slots=True)
class ReconcileOutput:
    """What one pass decided: what to start, stop and remove, and what to tell the masters."""

    starts: list[Allocation] = field(default_factory=list)
    stops: list[StopAction] = field(default_factory=list)
    removals: list[RemoveAction] = field(default_factory=list)
    #: What to report to the masters: every desired alloc, plus undesired running containers.
    statuses: list[AllocationStatus] = field(default_factory=list)


def _rank(o: Observed) -> int:
    """Which container speaks for an allocation that has several.

    One that runs; else one that ran or failed to start (the allocation must
    then never run again); else one that was only created.
    """
    if o.phase is Phase.RUNNING:
        return 0
    if o.phase is Phase.EXITED:
        return 1
    return 2 if o.error else 3


def _group(observed: Iterable[Observed]) -> tuple[dict[str, Observed], list[Observed]]:
    """The container that speaks for each allocation, and the extra ones.

    Names make duplicates impossible for containers we create; one made by hand
    (or by an old agent version) is still handled: the running one is kept.
    """
    by_alloc: dict[str, list[Observed]] = {}
    for o in observed:
        by_alloc.setdefault(o.alloc_id, []).append(o)
    primary: dict[str, Observed] = {}
    extra: list[Observed] = []
    for alloc_id, containers in by_alloc.items():
        containers.sort(key=lambda o: (_rank(o), -o.created_at.timestamp() if o.created_at else 0.0))
        primary[alloc_id] = containers[0]
        extra.extend(containers[1:])
    return primary, extra


def _status(
    alloc_id: str,
    job_id: str,
    state: ContainerState,
    container: Observed | None = None,
    message: str | None = None,
    fenced: bool = False,
) -> AllocationStatus:
    return AllocationStatus(
        alloc_id=alloc_id,
        job_id=job_id,
        state=state,
        container_id=container.container_id if container else None,
        exit_code=container.exit_code if container and state is not ContainerState.RUNNING else None,
        message=message,
        started_at=container.started_at if container else None,
        finished_at=container.finished_at if container and state is not ContainerState.RUNNING else None,
        fenced=fenced,
    )


def fenced_exit(c: Observed, fenced_allocs: Mapping[str, datetime]) -> bool:
    """Did this slave's fencing end this container (rather than the job itself)?"""
    fenced_at = fenced_allocs.get(c.alloc_id)
    if fenced_at is None or c.phase is not Phase.EXITED:
        return False
    return c.finished_at is None or c.finished_at >= fenced_at


def _status_of_container(c: Observed, job_id: str, inp: ReconcileInput) -> AllocationStatus:
    if c.phase is Phase.RUNNING:
        return _status(c.alloc_id, job_id, ContainerState.RUNNING, c)
    if c.phase is Phase.CREATED:
        if c.error:
            return _status(c.alloc_id, job_id, ContainerState.FAILED, c, c.error)
        return _status(c.alloc_id, job_id, ContainerState.STARTING, c)
    fenced = fenced_exit(c, inp.fenced_allocs)
    message = "stopped by this slave (fenced): its lease ended or its engine stopped answering" if fenced else c.error
    return _status(c.alloc_id, job_id, ContainerState.EXITED, c, message, fenced=fenced)


def _running_allocs_by_slot(observed: Iterable[Observed]) -> dict[Slot, set[str]]:
    by_slot: dict[Slot, set[str]] = {}
    for o in observed:
        if o.phase is Phase.RUNNING:
            by_slot.setdefault(slot_of(o), set()).add(o.alloc_id)
    return by_slot


def reconcile(inp: ReconcileInput) -> ReconcileOutput:
    plan = ReconcileOutput()
    observed = list(inp.observed)
    primary, extra = _group(observed)
    running_by_slot = _running_allocs_by_slot(observed)
    # Slots that may not get a start this pass; grows as starts are planned.
    blocked_slots = set(inp.starting_slots)
    desired = inp.desired
    known = desired is not None

    # Fencing overrides everything: whatever runs is stopped, desired or not.
    if inp.fenced:
        for c in [*primary.values(), *extra]:
            if c.phase is Phase.RUNNING and c.container_id not in inp.busy:
                grace = inp.fence_grace
                if desired is not None and c.alloc_id in desired:
                    grace = min(desired[c.alloc_id].stop_timeout, inp.fence_grace)
                plan.stops.append(StopAction(c.container_id, c.alloc_id, c.job_id, grace, "fenced"))

    stale_grace = min(inp.default_grace, inp.fence_grace)
    for c in extra:
        if known and not inp.fenced and c.phase is Phase.RUNNING and c.container_id not in inp.busy:
            plan.stops.append(StopAction(c.container_id, c.alloc_id, c.job_id, stale_grace, "duplicate"))

    # Newest attempt first: when two of one slot could start, the masters' latest wins.
    decided = {
        alloc.alloc_id: _decide(alloc, primary.get(alloc.alloc_id), inp, plan, running_by_slot, blocked_slots)
        for alloc in sorted((desired or {}).values(), key=lambda a: (-a.attempt, a.alloc_id))
    }
    plan.statuses.extend(_with_health(decided[alloc_id], inp) for alloc_id in (desired or {}))
    if not inp.fenced:
        for alloc_id, (health, _) in inp.health.items():
            alloc = (desired or {}).get(alloc_id)
            held = primary.get(alloc_id)
            if (
                health is Health.UNHEALTHY and alloc is not None and alloc.desired is DesiredState.RUN
                and held is not None and held.phase is Phase.RUNNING and held.container_id not in inp.busy
            ):
                stop = StopAction(held.container_id, alloc_id, alloc.job_id, alloc.stop_timeout, "unhealthy")
                plan.stops.append(stop)

    for alloc_id, c in primary.items():
        if desired is not None and alloc_id in desired:
            continue
        if c.phase is Phase.RUNNING:
            # Reported so that a new leader can adopt it rather than run it twice.
            plan.statuses.append(_status(alloc_id, c.job_id, ContainerState.RUNNING, c))
            if known and not inp.fenced and c.container_id not in inp.busy:
                plan.stops.append(StopAction(c.container_id, alloc_id, c.job_id, stale_grace, "undesired"))

    if known and inp.now is not None:
        plan.removals = _garbage(primary, extra, desired or {}, inp)
    return plan


def _decide(
    alloc: Allocation,
    c: Observed | None,
    inp: ReconcileInput,
    plan: ReconcileOutput,
    running_by_slot: Mapping[Slot, set[str]],
    blocked_slots: set[Slot],
) -> AllocationStatus:
    """Status of one desired allocation, adding the actions it needs to the plan."""
    aid, jid, slot = alloc.alloc_id, alloc.job_id, slot_of(alloc)
    in_flight = aid in inp.starting
    failure = inp.start_failures.get(aid)

    def start() -> str | None:
        """Plan the start if every rule allows it; else say why it waits."""
        if not _may_start(inp):
            return None
        if running_by_slot.get(slot, set()) - {aid} or slot in blocked_slots:
            return "waiting for an older attempt of this allocation on this slave to stop"
        plan.starts.append(alloc)
        blocked_slots.add(slot)
        return None

    if alloc.desired is DesiredState.STOP:
        if c is None:
            if in_flight:
                return _status(aid, jid, ContainerState.STARTING)
            if failure is not None:
                return _status(aid, jid, ContainerState.FAILED, message=failure)
            return _status(
                aid, jid, ContainerState.MISSING, message="no container (stopped before it started)"
            )
        if c.phase is Phase.RUNNING:
            if not inp.fenced and c.container_id not in inp.busy:
                plan.stops.append(StopAction(c.container_id, aid, jid, alloc.stop_timeout, "desired-stop"))
            return _status(aid, jid, ContainerState.RUNNING, c, "stopping")
        if c.phase is Phase.CREATED and not c.error:
            if in_flight:
                return _status(aid, jid, ContainerState.STARTING, c)
            return _status(aid, jid, ContainerState.MISSING, c, "stopped before it started")
        return _status_of_container(c, jid, inp)

    # desired = run
    if c is None:
        if in_flight:
            return _status(aid, jid, ContainerState.STARTING)
        if failure is not None:
            return _status(aid, jid, ContainerState.FAILED, message=failure)
        if aid in inp.launched:
            return _status(aid, jid, ContainerState.MISSING, message="container removed outside CLAUD")
        if not alloc.may_start:
            # The masters saw this attempt start: its container ran and is gone
            # (removed while the agent was away). Starting it again would run it twice.
            return _status(aid, jid, ContainerState.MISSING, message="container gone")
        return _status(aid, jid, ContainerState.STARTING, message=start())
    if c.phase is Phase.CREATED and not c.error:
        if failure is not None and not in_flight:
            return _status(aid, jid, ContainerState.FAILED, c, failure)
        # Created but never started (the agent died in between): start it, the
        # runtime adopts the existing container instead of making a second one.
        waiting = None
        if not in_flight and c.container_id not in inp.busy:
            waiting = start()
        return _status(aid, jid, ContainerState.STARTING, c, waiting)
    return _status_of_container(c, jid, inp)


def _with_health(status: AllocationStatus, inp: ReconcileInput) -> AllocationStatus:
    """A desired allocation's status with its checks' verdict: while it runs, and on the exit
    of one stopped for being unhealthy (so the masters know why it ended)."""
    verdict = inp.health.get(status.alloc_id)
    if verdict is None or status.state not in (ContainerState.RUNNING, ContainerState.EXITED):
        return status
    health, why = verdict
    if status.state is ContainerState.EXITED:
        if health is not Health.UNHEALTHY or status.fenced:
            return status
        return status.model_copy(update={"health": health, "message": f"unhealthy: {why}; stopped by its slave"})
    if health is Health.UNHEALTHY and why and status.message is None:
        return status.model_copy(update={"health": health, "message": why})
    return status.model_copy(update={"health": health})


def _may_start(inp: ReconcileInput) -> bool:
    # Nothing starts before a leader has spoken, nor once the lease is over.
    return inp.desired is not None and not inp.fenced


def _garbage(
    primary: Mapping[str, Observed],
    extra: list[Observed],
    desired: Mapping[str, Allocation],
    inp: ReconcileInput,
) -> list[RemoveAction]:
    """Exited containers nobody asks about any more: past retention, or beyond the cap.

    A container of a desired allocation is never removed (its logs and exit code
    are still wanted), nor one with an action or start in flight.
    """
    now = inp.now
    assert now is not None
    # Everything that does not run counts against the cap, including containers
    # created but never started (a crash between create and start).
    finished = [c for c in [*primary.values(), *extra] if c.phase is not Phase.RUNNING]
    removable = [
        c
        for c in finished
        if c.alloc_id not in desired and c.alloc_id not in inp.starting and c.container_id not in inp.busy
    ]

    def ended(c: Observed) -> datetime:
        return c.finished_at or c.created_at or now

    removable.sort(key=ended)
    chosen: dict[str, RemoveAction] = {}
    for c in removable:
        if now - ended(c) >= inp.retention:
            chosen[c.container_id] = RemoveAction(c.container_id, c.alloc_id, c.job_id, "expired")
    excess = len(finished) - len(chosen) - inp.max_exited
    for c in removable:
        if excess <= 0:
            break
        if c.container_id not in chosen:
            chosen[c.container_id] = RemoveAction(c.container_id, c.alloc_id, c.job_id, "over-limit")
            excess -= 1
    return list(chosen.values())
