"""``claud verify``: a verdict on a run's history, judged without the cluster's word for it.

The masters and the agents can be wrong about what ran; the Docker engines are
not. Every container CLAUD starts carries ``claud.job``, ``claud.alloc`` and
``claud.slave``; an engine records ``start``, ``die``, ``kill``, ``destroy``,
``pause`` and ``unpause`` for it with a nanosecond timestamp. From that record
alone this module rebuilds, for every container, the intervals in which it ran,
and finds every pair of containers of one job whose intervals meet, on one
slave or on two. From the masters' jobs and their transitions it finds the
jobs a client was told exist and the masters do not know (missing), and the
jobs that stopped moving: in a state a job only passes through (pending,
scheduled, starting, stopping, lost; not running) with no transition for
``stuck_after`` seconds, stuck, or, pending with the scheduler's reason,
unplaceable.

Everything here is pure: events, jobs and instants in, a :class:`Verdict` out,
so the unit tests (and the chaos campaign's judge, tests/support) drive it with
synthetic histories. Reading the engines, a saved event log and the API is
:mod:`claud.client._verify_sources`'s business.

The rules, once:

* An interval is half-open, ``[start, die)``: touching is not overlapping. One
  container dying at the very instant the next starts is a clean hand-over.
* A container with no ``die`` (or ``destroy``) in the record is still running:
  its interval is open (``end`` is infinite), and an overlap with it lasts until
  the end of the window judged.
* A container first seen dying, paused or killed, with no ``start`` in the
  record, was already running when the record began: its interval opens at the
  window's start, the conservative choice.
* A paused container still counts as running: it resumes where it was and holds
  what it held.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from claud.api import LABEL_ALLOC, LABEL_JOB, LABEL_SLAVE
from claud.api.jobs import TERMINAL_STATES, JobEvent, JobState

__all__ = [
    "ACTIONS",
    "DEFAULT_STUCK_AFTER",
    "TRANSIENT_STATES",
    "ContainerEvent",
    "ContainerInterval",
    "EventLogError",
    "JobHistory",
    "Missing",
    "Overlap",
    "Stuck",
    "Unplaceable",
    "Verdict",
    "judge",
    "missing_jobs",
    "overlaps",
    "parse_event",
    "parse_instant",
    "read_event_log",
    "run_intervals",
    "stuck_jobs",
    "successful_exits",
]

#: The actions the judge reads; the rest (create, attach, exec_*, ...) say nothing about running.
ACTIONS = frozenset({"start", "die", "kill", "destroy", "pause", "unpause", "oom"})
#: Seconds without a transition after which a job that has not ended is stuck:
#: a placement, a start or a stop takes seconds; two minutes is a cluster that forgot it.
DEFAULT_STUCK_AFTER = 120.0


# --- Docker's record ------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerEvent:
    """One engine event of a CLAUD container, with the labels that name its job."""

    at: float  # seconds since the epoch, the engine's clock
    seq: int  # arrival order, to order events of one nanosecond
    action: str
    container_id: str
    job_id: str | None
    alloc_id: str | None
    slave_id: str | None
    exit_code: int | None = None
    signal: int | None = None


@dataclass
class ContainerInterval:
    """A container running from ``start`` to ``end`` (``inf`` while it still runs)."""

    container_id: str
    job_id: str
    alloc_id: str | None
    slave_id: str | None
    start: float
    end: float = math.inf
    exit_code: int | None = None
    #: Sub-intervals frozen by ``docker pause``: still running for the judge.
    paused: list[tuple[float, float]] = field(default_factory=list)
    #: Signals sent by ``kill`` events while it ran: [15, 9] is a ``docker stop`` that
    #: ran out of grace, [9] alone a ``docker kill``; who sent them is for the caller to know.
    signals: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return math.isinf(self.end)

    def describe(self, origin: float = 0.0) -> str:
        end = "still running" if self.running else f"{self.end - origin:.3f}"
        how = f" exit={self.exit_code}" if self.exit_code is not None else ""
        how += f" signals={self.signals}" if self.signals else ""
        return (f"{self.container_id[:12]} alloc={self.alloc_id} slave={self.slave_id} "
                f"from {self.start - origin:.3f} to {end}{how}")

    def as_json(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "alloc_id": self.alloc_id,
            "slave_id": self.slave_id,
            "start": _iso(self.start),
            "end": None if self.running else _iso(self.end),
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class Overlap:
    """Two containers of one job running at once."""

    job_id: str
    first: ContainerInterval
    second: ContainerInterval

    @property
    def began(self) -> float:
        return max(self.first.start, self.second.start)

    @property
    def seconds(self) -> float:
        """How long both ran; infinite while both still run."""
        return min(self.first.end, self.second.end) - self.began

    def seconds_until(self, until: float) -> float:
        """How long both ran, counting a container still running as running until ``until``."""
        return min(self.first.end, self.second.end, until) - self.began

    def describe(self, origin: float = 0.0) -> str:
        return (f"job {self.job_id} ran twice at once for {self.seconds:.3f}s: "
                f"[{self.first.describe(origin)}] and [{self.second.describe(origin)}]")


class EventLogError(ValueError):
    """A saved event log, or one record of it, that is not what ``docker events`` writes."""


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError, OverflowError):
        return None


def _event_time(raw: Mapping[str, Any]) -> float:
    """The event's instant in seconds: ``timeNano`` when there is one (as every engine since 1.22 writes)."""
    if "timeNano" in raw:
        nano = raw["timeNano"]
        if isinstance(nano, bool) or not isinstance(nano, int | str):
            raise EventLogError("timeNano is not an integer")
        try:
            return _in_range(int(nano) / 1e9)
        except ValueError:
            raise EventLogError(f"timeNano {str(nano)[:40]!r} is not an integer") from None
        except OverflowError:
            raise EventLogError("timeNano is out of range") from None
    seconds = raw.get("time")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise EventLogError("neither timeNano nor time is a number")
    try:
        return _in_range(float(seconds))
    except OverflowError:
        raise EventLogError("time is out of range") from None


def _in_range(seconds: float) -> float:
    # Beyond year 9999 no engine wrote it, and datetime could not show it.
    if not -62135596800.0 < seconds < 253402300800.0:
        raise OverflowError
    return seconds


def parse_event(raw: Mapping[str, Any], seq: int = 0) -> ContainerEvent | None:
    """One decoded ``docker events`` record, or None when it is not a CLAUD container's
    running-relevant event (other types, other actions, no ``claud.job`` label).

    ``exec_start: sh -c ...`` style actions carry a suffix; only the verb counts.
    Raises :class:`EventLogError` for a CLAUD container's event without a usable time.
    """
    if raw.get("Type", "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "").split(":", 1)[0].strip()
    if action not in ACTIONS:
        return None
    actor = raw.get("Actor")
    actor = actor if isinstance(actor, Mapping) else {}
    attributes = actor.get("Attributes")
    attributes = attributes if isinstance(attributes, Mapping) else {}
    container_id = str(actor.get("ID") or raw.get("id") or "")
    job_id = attributes.get(LABEL_JOB)
    if not container_id or not job_id:
        return None

    def label(name: str) -> str | None:
        value = attributes.get(name)
        return None if value is None else str(value)

    return ContainerEvent(
        at=_event_time(raw),
        seq=seq,
        action=action,
        container_id=container_id,
        job_id=str(job_id),
        alloc_id=label(LABEL_ALLOC),
        slave_id=label(LABEL_SLAVE),
        exit_code=_int_or_none(attributes.get("exitCode")) if action == "die" else None,
        signal=_int_or_none(attributes.get("signal")) if action == "kill" else None,
    )


def read_event_log(lines: Iterable[str], first_seq: int = 0) -> list[ContainerEvent]:
    """The CLAUD container events of a saved log, as ``docker events --format '{{json .}}'`` writes it:
    one JSON object per line, blank lines ignored. Raises :class:`EventLogError` naming the line."""
    found: list[ContainerEvent] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise EventLogError(f"line {number} is not JSON: {detail}") from None
        if not isinstance(raw, dict):
            raise EventLogError(f"line {number} is not a JSON object (docker events --format '{{{{json .}}}}')")
        try:
            event = parse_event(raw, first_seq + number)
        except EventLogError as exc:
            raise EventLogError(f"line {number}: {exc}") from None
        if event is not None:
            found.append(event)
    return found


def run_intervals(events: Iterable[ContainerEvent], window_start: float = -math.inf) -> list[ContainerInterval]:
    """Every running interval of every container, ordered by start.

    ``start`` opens an interval, ``die`` closes it (``destroy`` too, should the
    engine lose the ``die``). A container seen dying or paused without a
    ``start`` in the record opens at ``window_start`` (see the module's rules).
    """
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    open_: dict[str, ContainerInterval] = {}
    paused_since: dict[str, float] = {}
    done: list[ContainerInterval] = []

    def opened(e: ContainerEvent, at: float) -> ContainerInterval:
        interval = ContainerInterval(e.container_id, e.job_id or "", e.alloc_id, e.slave_id, at)
        open_[e.container_id] = interval
        return interval

    seen: set[str] = set()
    for e in ordered:
        first_sight = e.container_id not in seen
        seen.add(e.container_id)
        current = open_.get(e.container_id)
        if e.action == "start":
            if current is None:
                opened(e, e.at)
            continue
        if current is None and first_sight and e.action in {"die", "kill", "pause", "unpause", "oom"}:
            current = opened(e, window_start)
        if current is None:
            continue
        if e.action == "kill" and e.signal is not None:
            current.signals.append(e.signal)
        elif e.action == "pause":
            paused_since.setdefault(e.container_id, e.at)
        elif e.action == "unpause":
            since = paused_since.pop(e.container_id, current.start)
            current.paused.append((since, e.at))
        elif e.action in {"die", "destroy"}:
            current.end = e.at
            if e.action == "die":
                current.exit_code = e.exit_code
            if e.container_id in paused_since:
                current.paused.append((paused_since.pop(e.container_id), e.at))
            done.append(open_.pop(e.container_id))
    for container_id, interval in open_.items():
        if container_id in paused_since:
            interval.paused.append((paused_since[container_id], math.inf))
        done.append(interval)
    return sorted(done, key=lambda i: (i.start, i.container_id))


def overlaps(intervals: Iterable[ContainerInterval]) -> list[Overlap]:
    """Every pair of distinct containers of one job that ran at the same time
    (half-open intervals: touching is not overlapping), by job, then by start."""
    by_job: dict[str, list[ContainerInterval]] = defaultdict(list)
    for interval in intervals:
        by_job[interval.job_id].append(interval)
    found: list[Overlap] = []
    for job_id, runs in sorted(by_job.items()):
        runs.sort(key=lambda i: (i.start, i.container_id))
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if b.start >= a.end:
                    break  # sorted by start: no later one meets a either
                if a.container_id != b.container_id and b.end > b.start:
                    found.append(Overlap(job_id, a, b))
    return found


def successful_exits(intervals: Iterable[ContainerInterval]) -> dict[str, list[ContainerInterval]]:
    """Per job, the containers that ran to an exit code of 0 (a batch job must have at most one)."""
    by_job: dict[str, list[ContainerInterval]] = defaultdict(list)
    for interval in intervals:
        if interval.exit_code == 0:
            by_job[interval.job_id].append(interval)
    return dict(by_job)


# --- the masters' record ----------------------------------------------------------------


@dataclass(frozen=True)
class JobHistory:
    """A job as the masters know it, with the transitions they kept (oldest first)."""

    job_id: str
    state: JobState
    updated_at: datetime
    pending_reason: str | None = None
    events: tuple[JobEvent, ...] = ()

    @property
    def last_transition(self) -> datetime:
        """When it last changed state: its latest event, else its last update."""
        return max((e.at for e in self.events), default=self.updated_at)


@dataclass(frozen=True)
class Missing:
    """An acknowledged job the masters do not know."""

    job_id: str


@dataclass(frozen=True)
class Stuck:
    """A job that has not ended and has not moved for ``seconds``."""

    job_id: str
    state: JobState
    since: datetime
    seconds: float


@dataclass(frozen=True)
class Unplaceable:
    """A job pending for ``seconds`` because the scheduler finds no slave for it (``reason``)."""

    job_id: str
    reason: str
    since: datetime
    seconds: float


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def missing_jobs(acknowledged: Iterable[str], known: Iterable[str]) -> list[Missing]:
    """Every acknowledged id (once, in sorted order) that is not among the known ones."""
    known_ids = set(known)
    return [Missing(job_id) for job_id in sorted(set(acknowledged) - known_ids)]


#: The states a job only passes through: one that stays in them stopped moving. Not
#: ``running``: a service runs for months without a transition, and a batch job as long as it takes.
TRANSIENT_STATES = frozenset(JobState) - TERMINAL_STATES - {JobState.RUNNING}


def stuck_jobs(jobs: Iterable[JobHistory], now: datetime, stuck_after: float) -> tuple[list[Stuck], list[Unplaceable]]:
    """Jobs in a transient state whose last transition is more than ``stuck_after`` seconds
    before ``now``: unplaceable when pending with the scheduler's reason, stuck otherwise."""
    stuck: list[Stuck] = []
    unplaceable: list[Unplaceable] = []
    for job in sorted(jobs, key=lambda j: j.job_id):
        if job.state not in TRANSIENT_STATES:
            continue
        since = _aware(job.last_transition)
        seconds = (_aware(now) - since).total_seconds()
        if seconds <= stuck_after:
            continue
        if job.state is JobState.PENDING and job.pending_reason:
            unplaceable.append(Unplaceable(job.job_id, job.pending_reason, since, seconds))
        else:
            stuck.append(Stuck(job.job_id, job.state, since, seconds))
    return stuck, unplaceable


# --- the verdict -----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What ``claud verify`` found over ``[since, until]``; ``ok`` only when it found nothing.

    An unplaceable job is a finding too, reported apart from the stuck ones: the
    cluster did not lose it, but it will not run as things stand.
    """

    since: float
    until: float
    jobs: int
    containers: int
    overlaps: tuple[Overlap, ...] = ()
    missing: tuple[Missing, ...] = ()
    stuck: tuple[Stuck, ...] = ()
    unplaceable: tuple[Unplaceable, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.overlaps or self.missing or self.stuck or self.unplaceable)

    def findings(self) -> list[dict[str, Any]]:
        """Every finding as a JSON object with ``job_id`` and ``kind``, job by job."""
        rows: list[dict[str, Any]] = []
        for o in self.overlaps:
            rows.append({"job_id": o.job_id, "kind": "overlap", "began": _iso(o.began),
                         "seconds": round(o.seconds_until(self.until), 6),
                         "containers": [o.first.as_json(), o.second.as_json()]})
        for m in self.missing:
            rows.append({"job_id": m.job_id, "kind": "missing"})
        for s in self.stuck:
            rows.append({"job_id": s.job_id, "kind": "stuck", "state": s.state.value,
                         "since": _iso(s.since.timestamp()), "seconds": round(s.seconds, 3)})
        for u in self.unplaceable:
            rows.append({"job_id": u.job_id, "kind": "unplaceable", "reason": u.reason,
                         "since": _iso(u.since.timestamp()), "seconds": round(u.seconds, 3)})
        order = {"overlap": 0, "missing": 1, "stuck": 2, "unplaceable": 3}
        return sorted(rows, key=lambda r: (r["job_id"], order[r["kind"]]))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "jobs": self.jobs,
            "containers": self.containers,
            "counts": {"overlap": len(self.overlaps), "missing": len(self.missing),
                       "stuck": len(self.stuck), "unplaceable": len(self.unplaceable)},
            "findings": self.findings(),
        }


def judge(
    events: Iterable[ContainerEvent],
    jobs: Sequence[JobHistory],
    *,
    since: float,
    until: float,
    now: datetime,
    acknowledged: Iterable[str] = (),
    known: Iterable[str] | None = None,
    stuck_after: float = DEFAULT_STUCK_AFTER,
    only: frozenset[str] | None = None,
) -> Verdict:
    """The verdict on one run: Docker's events in ``[since, until]`` (seconds since the epoch),
    the masters' jobs as read at ``now``, and the ids a client was told exist.

    ``jobs`` are judged for stuck (choosing them, by the window say, is the caller's
    business); ``known`` are every id the masters know, for missing (default: those of
    ``jobs``). ``only`` restricts every finding to those job ids.
    """
    def wanted(job_id: str | None) -> bool:
        return job_id is not None and (only is None or job_id in only)

    known_ids = set(known) if known is not None else {j.job_id for j in jobs}
    in_window = [e for e in events if since <= e.at <= until and wanted(e.job_id)]
    intervals = run_intervals(in_window, window_start=since)
    judged = [j for j in jobs if wanted(j.job_id)]
    stuck, unplaceable = stuck_jobs(judged, now, stuck_after)
    return Verdict(
        since=since,
        until=until,
        jobs=len(judged),
        containers=len({i.container_id for i in intervals}),
        overlaps=tuple(overlaps(intervals)),
        missing=tuple(missing_jobs([a for a in acknowledged if wanted(a)], known_ids)),
        stuck=tuple(stuck),
        unplaceable=tuple(unplaceable),
    )


# --- instants -----------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_instant(value: str, now: datetime) -> datetime:
    """``--since``/``--until``: an RFC 3339 time with its offset (``2026-12-02T14:00:00Z``)
    or a duration before ``now`` (``90s``, ``10m``, ``2h``, ``1d``). ValueError says why not."""
    text = value.strip()
    if match := _RELATIVE.fullmatch(text):
        return _aware(now) - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value[:60]!r} is neither an RFC 3339 time (2026-12-02T14:00:00Z) "
                         "nor a duration ago (90s, 10m, 2h, 1d)") from None
    if at.tzinfo is None:
        raise ValueError(f"{value[:60]!r} has no UTC offset: add Z or +HH:MM")
    return at


def _iso(at: float) -> str | None:
    if not math.isfinite(at):
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
