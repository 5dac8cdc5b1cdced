"""Placement of pending jobs onto slaves, as a pure function.

The leader hands :func:`schedule` an immutable snapshot of its slaves and the
pending jobs, and gets back a :class:`Plan`. It then re-checks every placement
with :func:`fits` against its newest state before committing it (Nomad's
plan/apply split), because the snapshot may be stale by the time the plan is
ready. Keeping this module free of I/O, clocks and randomness is what lets the
unit and property tests pin its behaviour down, and what makes the same
snapshot give the same plan on every master.

Accounting is exact: CPU in integer milli-cores, memory in integer MiB. Float
sums such as ``0.1 + 0.2`` are rounded once, at the edge, so drift can never
let a slave be over-committed nor refuse a job that exactly fills it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "PendingJob",
    "Placement",
    "Plan",
    "SlaveCapacity",
    "Strategy",
    "cpu_millis",
    "fits",
    "path_allowed",
    "ports_valid",
    "schedule",
]


class Strategy(StrEnum):
    """How to choose among the slaves that all have room for a job.

    BINPACK fills slaves up, so whole slaves stay free for big jobs and idle
    ones can be drained; SPREAD evens the load, so one slave's death takes
    fewer jobs with it.
    """

    BINPACK = "binpack"
    SPREAD = "spread"


@dataclass(frozen=True, slots=True)
class SlaveCapacity:
    """One slave as the scheduler sees it: advertised totals minus reservations.

    Reservations are what placed jobs asked for, not what psutil measures, so a
    job that idles still keeps its share and a burst cannot evict a neighbour.
    """

    id: str
    labels: Mapping[str, str]
    cpu_total: float
    memory_mb_total: int
    cpu_reserved: float
    memory_mb_reserved: int
    schedulable: bool
    #: Dynamic host ports come from here (both ends included); None: none (static ports only).
    port_range: tuple[int, int] | None = None
    #: Host ports the allocations placed on it hold.
    ports_used: frozenset[int] = frozenset()
    #: Host path prefixes its jobs may bind (``--allow-host-volumes``).
    host_volumes: tuple[str, ...] = ()
    #: What a pass plans in, worked out once per capacity rather than once per pass (the state
    #: machine keeps a slave's capacity until it changes): usable, then CPU in milli-cores and
    #: memory in MiB, totals then reserved. Derived from the fields above; not compared. None:
    #: they do not convert (a finite CPU too large for milli-cores), and a pass raises as it did.
    exact: tuple[bool, int, int, int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            exact: tuple[bool, int, int, int, int] | None = _exact(self)
        except (OverflowError, ValueError):
            exact = None
        object.__setattr__(self, "exact", exact)


@dataclass(frozen=True, slots=True)
class PendingJob:
    """The part of a job spec that decides where it may run."""

    id: str
    cpu: float
    memory_mb: int
    constraints: Mapping[str, str]
    #: The host side of each declared port, in the spec's order: 0 dynamic, else that static port.
    ports: tuple[int, ...] = ()
    #: Host directories it binds: only slaves that allow each of them fit.
    host_paths: tuple[str, ...] = ()
    #: Its placements so far: a new attempt looks for dynamic ports from another point of the range.
    attempt: int = 0
    #: The job whose allocations spread (None: none to spread from): no two of a group on one
    #: slave while another slave fits, counting the placements of this plan.
    group: str | None = None
    #: Slaves the group's other allocations hold already.
    spread_from: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Placement:
    job_id: str
    slave_id: str
    #: The host port given to each of the job's ports, in the spec's order.
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """What the leader should commit; nothing in it has happened yet.

    ``placements`` and ``unplaced`` both follow the order of the jobs given,
    so the leader commits the oldest jobs first.
    """

    placements: tuple[Placement, ...]
    unplaced: Mapping[str, str]


def cpu_millis(cores: float) -> int:
    """Cores as integer milli-cores, the unit every comparison is made in.

    Rounding to the nearest milli-core absorbs the float error of sums such as
    ``0.1 + 0.1 + 0.1``. Raises ``ValueError``/``OverflowError`` for NaN or
    infinity; :func:`fits` and :func:`schedule` never pass those in.
    """
    return round(cores * 1000)


def fits(slave: SlaveCapacity, job: PendingJob, ports: Sequence[int] = ()) -> bool:
    """Whether ``job`` may go on ``slave`` now with host ``ports`` (the plan's); the leader's re-check of a plan.

    It is the very test :func:`schedule` applies, so a plan built from a
    snapshot passes it unless the state moved on in between: the ports are
    one per declared port, the static ones as asked, the dynamic ones in the
    slave's range, none of them held on the slave nor given twice.
    """
    if _job_problem(job) is not None or not _matches(slave.labels, job.constraints):
        return False
    if not _allows_paths(slave, job) or not ports_valid(slave, job, ports):
        return False
    slot = _Slot.of(slave)
    return slot.usable and slot.has_room(cpu_millis(job.cpu), job.memory_mb)


def ports_valid(slave: SlaveCapacity, job: PendingJob, ports: Sequence[int]) -> bool:
    """Whether ``ports`` is a valid choice of host ports for ``job`` on ``slave`` as it is."""
    if len(ports) != len(job.ports) or len(set(ports)) != len(ports):
        return False
    for asked, given in zip(job.ports, ports, strict=True):
        if given in slave.ports_used:
            return False
        if asked:
            if given != asked:
                return False
        elif slave.port_range is None or not slave.port_range[0] <= given <= slave.port_range[1]:
            return False
    return True


def path_allowed(path: str, prefixes: Iterable[str]) -> bool:
    """Is ``path`` (absolute, normalised) at or under one of ``prefixes``?"""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def _allows_paths(slave: SlaveCapacity, job: PendingJob) -> bool:
    return all(path_allowed(path, slave.host_volumes) for path in job.host_paths)


def schedule(
    slaves: Sequence[SlaveCapacity],
    jobs: Sequence[PendingJob],
    strategy: Strategy = Strategy.BINPACK,
) -> Plan:
    """Place as many ``jobs`` as fit, greedily in the given (oldest-first) order.

    Each job goes to the best slave that has room for it once the placements
    made earlier in this plan are counted; ties go to the lowest slave id, so
    the order of ``nodes`` never matters. A job that fits nowhere stays pending
    with a reason, worked out against the slaves as the whole plan leaves them
    (later jobs only take room away, so the reason still holds when the plan
    is committed). A duplicate slave or job id is a caller bug: only its first
    occurrence is used, so each job id appears exactly once in the plan.
    """
    strategy = Strategy(strategy)
    slots: list[_Slot] = []
    seen_slaves: set[str] = set()
    for slave in slaves:
        if slave.id not in seen_slaves:
            seen_slaves.add(slave.id)
            slots.append(_Slot.of(slave))
    # Any order is sorted here; the state machine's snapshot comes in id order already, which
    # the sort checks in one pass (a single run): n - 1 comparisons, no separate flag to trust.
    slots.sort(key=lambda slot: slot.slave.id)
    usable = [slot for slot in slots if slot.usable]
    # Most jobs share a handful of constraint sets (usually none), so filter
    # the slaves once per set rather than once per job.
    candidates: dict[tuple[tuple[str, str], ...], list[_Slot]] = {}
    # Many slaves: an index per constraint set, so a job costs about log(slaves), not slaves.
    indexes: dict[tuple[tuple[str, str], ...], _Index] | None = {} if len(usable) >= INDEX_AT else None
    entries: dict[int, list[list[_Entry]]] = {}
    sized = [j for j in jobs if _job_problem(j) is None]
    least = (min((cpu_millis(j.cpu) for j in sized), default=0), min((j.memory_mb for j in sized), default=0))

    placements: list[Placement] = []
    seen_jobs: set[str] = set()
    #: For each spreading group, the slaves its allocations hold, this plan's placements included.
    group_slaves: dict[str, set[str]] = {}
    # Reasons for waiting jobs come after the loop; None keeps their place in
    # the job order meanwhile.
    unplaced: dict[str, str | None] = {}
    waiting: list[PendingJob] = []
    for job in jobs:
        if job.id in seen_jobs:
            continue
        seen_jobs.add(job.id)
        problem = _job_problem(job)
        if problem is not None:
            unplaced[job.id] = problem
            continue
        key = _constraint_key(job.constraints)
        if key not in candidates:
            candidates[key] = [s for s in usable if _matches(s.slave.labels, job.constraints)]
        need_cpu, need_mem = cpu_millis(job.cpu), job.memory_mb
        chosen_ports: tuple[int, ...] = ()
        if job.group is not None or job.ports or job.host_paths:
            # Ports and host paths narrow the slaves per job: a scan of those that qualify. Spread
            # prefers those without one of the group; it packs only when none of them fits.
            able = [s for s in candidates[key] if _allows_paths(s.slave, job) and s.free_ports(job) is not None]
            held = group_slaves.setdefault(job.group, set(job.spread_from)) if job.group is not None else None
            best = _pick([s for s in able if s.slave.id not in held], need_cpu, need_mem, strategy) if held else None
            if best is None:
                best = _pick(able, need_cpu, need_mem, strategy)
            if best is not None:
                chosen_ports = best.free_ports(job) or ()
                best.take_ports(chosen_ports)
                if held is not None:
                    held.add(best.slave.id)
        elif indexes is None:
            best = _pick(candidates[key], need_cpu, need_mem, strategy)
        else:
            if key not in indexes:
                indexes[key] = _Index(candidates[key], strategy, least, entries)
            best = indexes[key].pick(need_cpu, need_mem)
        if best is None:
            unplaced[job.id] = None
            waiting.append(job)
            continue
        best.cpu_used += need_cpu
        best.mem_used += need_mem
        if indexes is not None:
            best.version += 1
            for heap in entries.get(id(best), ()):
                heapq.heappush(heap, _entry(best, strategy))
        placements.append(Placement(job.id, best.slave.id, chosen_ports))

    for job in waiting:
        reason = _explain(job, slots)
        siblings = group_slaves.get(job.group) if job.group is not None else None
        if siblings:  # spread never keeps one pending, but where its siblings are explains a full cluster
            reason += f"; spread: its job's other allocations are on {', '.join(sorted(siblings)[:3])}"
            reason += f" and {len(siblings) - 3} more" if len(siblings) > 3 else ""
        unplaced[job.id] = reason
    reasons = {job_id: reason for job_id, reason in unplaced.items() if reason is not None}
    return Plan(placements=tuple(placements), unplaced=reasons)


# --- accounting -----------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """A slave's capacity in exact units, updated as a plan takes shape."""

    slave: SlaveCapacity
    usable: bool
    cpu_total: int
    mem_total: int
    cpu_used: int
    mem_used: int
    #: Bumped at each placement on it: an index entry of an older version is stale.
    version: int = 0
    #: Host ports held, once this plan gave one here (until then the slave's ``ports_used``).
    ports_taken: set[int] | None = None

    @classmethod
    def of(cls, slave: SlaveCapacity) -> _Slot:
        return cls(slave, *(slave.exact or _exact(slave)))

    @property
    def cpu_free(self) -> int:
        return self.cpu_total - self.cpu_used

    @property
    def mem_free(self) -> int:
        return self.mem_total - self.mem_used

    def has_room(self, cpu: int, mem: int) -> bool:
        return self.cpu_free >= cpu and self.mem_free >= mem

    def ports_held(self) -> Set[int]:
        return self.slave.ports_used if self.ports_taken is None else self.ports_taken

    def free_ports(self, job: PendingJob) -> tuple[int, ...] | None:
        """Host ports for each of ``job``'s ports here, or None: the static ones as asked, each
        dynamic one the next free port of the range from a point chosen by the job's id and
        attempt (deterministic, so a plan is reproducible; spread, so that a port some other
        process of the host holds does not fail every attempt of a job, nor every job)."""
        if not job.ports:
            return ()
        held = self.ports_held()
        static = {p for p in job.ports if p}
        if len(static) != sum(1 for p in job.ports if p) or any(p in held for p in static):
            return None
        dynamic = len(job.ports) - len(static)
        picked: list[int] = []
        if dynamic:
            if self.slave.port_range is None:
                return None
            low, high = self.slave.port_range
            size = high - low + 1
            first = _fnv1a(f"{job.id}/{job.attempt}") % size
            for step in range(size):
                port = low + (first + step) % size
                if port not in held and port not in static:
                    picked.append(port)
                    if len(picked) == dynamic:
                        break
            if len(picked) < dynamic:
                return None
        it = iter(picked)
        return tuple(p if p else next(it) for p in job.ports)

    def take_ports(self, ports: Iterable[int]) -> None:
        if ports:
            if self.ports_taken is None:
                self.ports_taken = set(self.slave.ports_used)
            self.ports_taken.update(ports)


def _exact(slave: SlaveCapacity) -> tuple[bool, int, int, int, int]:
    """``SlaveCapacity.exact``: usable; CPU (milli-cores) and memory (MiB) totals; then reserved."""
    # A slave reporting NaN or infinity would make every comparison
    # meaningless; it gets nothing rather than crashing the leader's loop.
    numbers = (slave.cpu_total, slave.cpu_reserved, slave.memory_mb_total, slave.memory_mb_reserved)
    if not all(_finite(n) for n in numbers):
        return (False, 0, 0, 0, 0)
    return (
        bool(slave.schedulable),
        cpu_millis(slave.cpu_total),
        int(slave.memory_mb_total),
        cpu_millis(slave.cpu_reserved),
        int(slave.memory_mb_reserved),
    )


def _fnv1a(text: str) -> int:
    """A stable 32-bit hash (FNV-1a) of ``text``: Python's own ``hash`` of a str differs per process."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _job_problem(job: PendingJob) -> str | None:
    """Why a job can never be placed as written, if it cannot.

    A negative request would hand capacity back to the slave and let later
    jobs over-commit it, so it is refused rather than trusted.
    """
    if not _finite(job.cpu) or job.cpu < 0:
        return f"invalid request: cpu must be a finite number >= 0, got {job.cpu!r}"
    if not _finite(job.memory_mb) or job.memory_mb < 0:
        return f"invalid request: memory must be a finite number of MiB >= 0, got {job.memory_mb!r}"
    return None


def _matches(labels: Mapping[str, str], constraints: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in constraints.items())


def _constraint_key(constraints: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(constraints.items()))


def _free_fraction(free: int, total: int) -> float:
    # A slave with nothing of a resource counts as full of it, not as a
    # division by zero.
    return free / total if total > 0 else 0.0


def _pick(slots: Iterable[_Slot], need_cpu: int, need_mem: int, strategy: Strategy) -> _Slot | None:
    """The slave the strategy prefers among those with room, or None.

    The score is the sum of the CPU and memory fractions left free after the
    placement: BINPACK takes the lowest, SPREAD the highest. Summing, rather
    than looking at one resource, keeps a slave whose memory is full from
    looking empty because its CPUs are idle.
    """
    spread = strategy is Strategy.SPREAD
    best: _Slot | None = None
    best_key: tuple[float, str] | None = None
    for slot in slots:
        if not slot.has_room(need_cpu, need_mem):
            continue
        score = _free_fraction(slot.cpu_free - need_cpu, slot.cpu_total) + _free_fraction(
            slot.mem_free - need_mem, slot.mem_total
        )
        key = (-score if spread else score, slot.slave.id)
        if best_key is None or key < best_key:
            best, best_key = slot, key
    return best


# --- reasons --------------------------------------------------------------


#: From this many usable slaves on, a pass keeps an index (_Index) instead of scanning them all per job.
INDEX_AT = 64
#: Scores within this of the best seen are compared exactly: the index orders by a score that
#: differs from _pick's by a constant per slave size, up to float rounding.
SCORE_SLACK = 1e-9

#: (score before the job, slave id, version, slot): heap order is the strategy's preference.
_Entry = tuple[float, str, int, _Slot]


def _entry(slot: _Slot, strategy: Strategy) -> _Entry:
    score = _free_fraction(slot.cpu_free, slot.cpu_total) + _free_fraction(slot.mem_free, slot.mem_total)
    return (-score if strategy is Strategy.SPREAD else score, slot.slave.id, slot.version, slot)


class _Index:
    """The usable slots of one constraint set, for :func:`_pick`'s choice without a scan.

    _pick scores a slot by its free CPU and memory fractions *after* the job;
    among slots of one size (CPU and memory totals) that is the score before
    the job minus the same amount for all of them, so one heap per size,
    ordered by the score before, meets them in _pick's order. The first slot
    with room in each heap, and any within SCORE_SLACK of it (float rounding),
    are scored exactly as _pick does; the best of those over the heaps is
    _pick's answer. A slot with no room for the smallest job of the pass is
    dropped for the rest of it (room only shrinks during a pass); others
    without room for this job go back.
    """

    def __init__(
        self, slots: Sequence[_Slot], strategy: Strategy, least: tuple[int, int],
        entries: dict[int, list[list[_Entry]]],
    ) -> None:
        self._strategy = strategy
        self._least = least
        by_size: dict[tuple[int, int], list[_Entry]] = {}
        for slot in slots:
            heap = by_size.setdefault((slot.cpu_total, slot.mem_total), [])
            heap.append(_entry(slot, strategy))
            entries.setdefault(id(slot), []).append(heap)
        self._heaps = list(by_size.values())
        for heap in self._heaps:
            heapq.heapify(heap)

    def pick(self, need_cpu: int, need_mem: int) -> _Slot | None:
        spread = self._strategy is Strategy.SPREAD
        best: _Slot | None = None
        best_key: tuple[float, str] | None = None
        for heap in self._heaps:
            aside: list[_Entry] = []
            limit: float | None = None
            while heap:
                entry = heap[0]
                order, _, version, slot = entry
                if version != slot.version:
                    heapq.heappop(heap)  # a newer entry of this slot is in the heap
                    continue
                if limit is not None and order > limit:
                    break
                heapq.heappop(heap)
                if not slot.has_room(need_cpu, need_mem):
                    if slot.has_room(*self._least):
                        aside.append(entry)
                    continue
                aside.append(entry)
                if limit is None:
                    limit = order + SCORE_SLACK
                score = _free_fraction(slot.cpu_free - need_cpu, slot.cpu_total) + _free_fraction(
                    slot.mem_free - need_mem, slot.mem_total
                )
                key = (-score if spread else score, slot.slave.id)
                if best_key is None or key < best_key:
                    best, best_key = slot, key
            for entry in aside:
                heapq.heappush(heap, entry)
        return best


def _explain(job: PendingJob, slots: Sequence[_Slot]) -> str:
    """A short, actionable reason why ``job`` has nowhere to go.

    The checks run from the most permanent cause to the most transient one, so
    the user learns first what waiting will not fix.
    """
    need_cpu, need_mem = cpu_millis(job.cpu), job.memory_mb
    if not any(slot.usable for slot in slots):
        if not slots:
            return "no schedulable slaves (none registered)"
        return f"no schedulable slaves ({len(slots)} known, all down or draining)"

    wanted = _fmt_constraints(job.constraints)
    matching_any = [s for s in slots if _matches(s.slave.labels, job.constraints)]
    matching = [s for s in matching_any if s.usable]
    if not matching:
        if matching_any:
            return (
                f"no schedulable slave matches constraints {wanted}; "
                f"matching but down or draining: {_fmt_ids(matching_any)}"
            )
        return f"no slave matches constraints {wanted}"
    where = f" matching {wanted}" if job.constraints else ""
    if job.host_paths:
        allowed = [s for s in matching if _allows_paths(s.slave, job)]
        if not allowed:
            paths = ", ".join(job.host_paths)
            return f"no schedulable slave{where} allows host volume path {paths} (--allow-host-volumes)"
        matching = allowed
    if job.ports:
        open_ = [s for s in matching if s.free_ports(job) is not None]
        if not open_:
            return _ports_reason(job, matching, where)
        matching = open_

    if not any(s.cpu_total >= need_cpu and s.mem_total >= need_mem for s in matching):
        return _too_large(where, need_cpu, need_mem, matching, matching_any)

    cpu, mem = _fmt_cpu(need_cpu), f"{need_mem} MiB"
    cpu_ok = any(s.cpu_free >= need_cpu for s in matching)
    mem_ok = any(s.mem_free >= need_mem for s in matching)
    most_cpu = min(matching, key=lambda s: (-s.cpu_free, s.slave.id))
    most_mem = min(matching, key=lambda s: (-s.mem_free, s.slave.id))
    if not cpu_ok and not mem_ok:
        return (
            f"no slave{where} with {cpu} free cpu or {mem} free memory; "
            f"best: {most_cpu.slave.id} with {_fmt_cpu(most_cpu.cpu_free)} cpu, "
            f"{most_mem.slave.id} with {most_mem.mem_free} MiB"
        )
    if not cpu_ok:
        return (
            f"no slave{where} with {cpu} free cpu; "
            f"best: {most_cpu.slave.id} with {_fmt_cpu(most_cpu.cpu_free)}"
        )
    if not mem_ok:
        return f"no slave{where} with {mem} free memory; best: {most_mem.slave.id} with {most_mem.mem_free}"
    # Each resource is free somewhere, just never both on the same slave.
    near = _closest(matching, need_cpu, need_mem, free=True)
    return (
        f"no slave{where} has both {cpu} cpu and {mem} free; "
        f"best: {near.slave.id} with {_fmt_cpu(near.cpu_free)} cpu, {near.mem_free} MiB"
    )


def _ports_reason(job: PendingJob, slots: Sequence[_Slot], where: str) -> str:
    """Why no slave has the job's host ports: a static port taken everywhere, or no dynamic one left."""
    for port in sorted({p for p in job.ports if p}):
        if all(port in s.ports_held() for s in slots):
            return f"host port {port} is taken on every schedulable slave{where} ({_fmt_ids(slots)})"
    dynamic = sum(1 for p in job.ports if not p)
    return f"no schedulable slave{where} has {dynamic} free host port(s) in its --port-range and the static ones"


def _too_large(
    where: str, need_cpu: int, need_mem: int, matching: Sequence[_Slot], matching_any: Sequence[_Slot]
) -> str:
    """The reason for a job no schedulable slave could hold even when empty."""
    asleep = [
        s for s in matching_any if not s.usable and s.cpu_total >= need_cpu and s.mem_total >= need_mem
    ]
    # Only a slave that is down or draining could take it: waiting for that
    # slave may help, so say which one instead of calling the job hopeless.
    prefix = f"larger than any {'schedulable ' if asleep else ''}slave{where}: "
    suffix = f"; big enough but down or draining: {_fmt_ids(asleep)}" if asleep else ""
    max_cpu = max(s.cpu_total for s in matching)
    max_mem = max(s.mem_total for s in matching)
    cpu, mem = _fmt_cpu(need_cpu), f"{need_mem} MiB memory"
    if need_cpu > max_cpu and need_mem > max_mem:
        body = f"needs {cpu} cpu and {mem}, largest has {_fmt_cpu(max_cpu)} cpu and {max_mem} MiB"
    elif need_cpu > max_cpu:
        body = f"needs {cpu} cpu, largest has {_fmt_cpu(max_cpu)}"
    elif need_mem > max_mem:
        body = f"needs {mem}, largest has {max_mem}"
    else:
        near = _closest(matching, need_cpu, need_mem, free=False)
        body = (
            f"needs {cpu} cpu with {mem}, none has both; "
            f"closest: {near.slave.id} with {_fmt_cpu(near.cpu_total)} cpu, {near.mem_total} MiB"
        )
    return prefix + body + suffix


def _closest(slots: Sequence[_Slot], need_cpu: int, need_mem: int, *, free: bool) -> _Slot:
    """The slave that comes nearest to holding the job, by free or total room.

    "Nearest" is the largest share of the scarcer resource it could give,
    then the largest share overall, then the lowest id.
    """

    def coverage(have: int, need: int) -> float:
        if need <= 0:
            return 1.0 if have >= need else 0.0
        return max(0, min(have, need)) / need

    def key(slot: _Slot) -> tuple[float, float, str]:
        cpu = coverage(slot.cpu_free if free else slot.cpu_total, need_cpu)
        mem = coverage(slot.mem_free if free else slot.mem_total, need_mem)
        return (-min(cpu, mem), -(cpu + mem), slot.slave.id)

    return min(slots, key=key)


def _fmt_cpu(millis: int) -> str:
    """Cores with at least one decimal and no false precision: 4.0, 0.25, 1.5."""
    text = f"{millis / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _fmt_constraints(constraints: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(constraints.items()))


def _fmt_ids(slots: Sequence[_Slot], limit: int = 3) -> str:
    ids = [slot.slave.id for slot in slots]
    shown = ", ".join(ids[:limit])
    return f"{shown} and {len(ids) - limit} more" if len(ids) > limit else shown
