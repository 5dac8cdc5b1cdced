"""Docker's own event history as the judge of "never twice".

The masters and the agents can be wrong about what ran; the engine is not.
Every container CLAUD starts carries ``claud.job``, ``claud.alloc`` and
``claud.slave``; the engine records ``start``, ``die``, ``kill``, ``destroy``,
``pause`` and ``unpause`` for it with a nanosecond timestamp. From that record
alone this module rebuilds, for every container, the intervals in which it was
running, and finds every pair of containers of one job whose intervals meet,
on one slave or on two.

The interval logic (``parse_event``, ``run_intervals``, ``overlaps``) is pure so
the unit tests can drive it with synthetic events; ``EventRecorder`` is the thin
shell that reads the engine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

#: The actions the judge reads; the rest (create, attach, exec_*, ...) say nothing about running.
ACTIONS = frozenset({"start", "die", "kill", "destroy", "pause", "unpause", "oom"})


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
class RunInterval:
    """A container running from ``start`` to ``end`` (``inf`` while it still runs)."""

    container_id: str
    job_id: str
    alloc_id: str | None
    slave_id: str | None
    start: float
    end: float = math.inf
    exit_code: int | None = None
    #: Sub-intervals frozen by ``docker pause``: still running for the judge, since
    #: a paused process resumes where it was and holds what it held.
    paused: list[tuple[float, float]] = field(default_factory=list)
    #: Signals sent by ``kill`` events while it ran: [15, 9] is a ``docker stop`` that
    #: ran out of grace, [9] alone a ``docker kill``; who sent them is for the caller to know.
    signals: list[int] = field(default_factory=list)

    def describe(self, origin: float = 0.0) -> str:
        end = "still running" if math.isinf(self.end) else f"{self.end - origin:.3f}"
        how = f" exit={self.exit_code}" if self.exit_code is not None else ""
        how += f" signals={self.signals}" if self.signals else ""
        return (f"{self.container_id[:12]} alloc={self.alloc_id} slave={self.slave_id} "
                f"from {self.start - origin:.3f} to {end}{how}")


@dataclass(frozen=True)
class Overlap:
    """Two containers of one job running at once, for ``seconds``."""

    job_id: str
    first: RunInterval
    second: RunInterval

    @property
    def seconds(self) -> float:
        return min(self.first.end, self.second.end) - max(self.first.start, self.second.start)

    def describe(self, origin: float = 0.0) -> str:
        return (f"job {self.job_id} ran twice at once for {self.seconds:.3f}s: "
                f"[{self.first.describe(origin)}] and [{self.second.describe(origin)}]")


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_event(raw: Mapping[str, Any], seq: int = 0) -> ContainerEvent | None:
    """One decoded ``docker events`` record, or None when it is not a CLAUD container's
    running-relevant event (other types, other actions, no ``claud.job`` label).

    ``exec_start: sh -c ...`` style actions carry a suffix; only the verb counts.
    """
    if raw.get("Type", "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "").split(":", 1)[0].strip()
    if action not in ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    container_id = str(actor.get("ID") or raw.get("id") or "")
    job_id = attributes.get("claud.job")
    if not container_id or not job_id:
        return None
    at = int(raw["timeNano"]) / 1e9 if "timeNano" in raw else float(raw.get("time", 0))
    return ContainerEvent(
        at=at,
        seq=seq,
        action=action,
        container_id=container_id,
        job_id=str(job_id),
        alloc_id=attributes.get("claud.alloc"),
        slave_id=attributes.get("claud.slave"),
        exit_code=_int_or_none(attributes.get("exitCode")) if action == "die" else None,
        signal=_int_or_none(attributes.get("signal")) if action == "kill" else None,
    )


def run_intervals(events: Iterable[ContainerEvent], window_start: float = -math.inf) -> list[RunInterval]:
    """Every running interval of every container, ordered by start.

    ``start`` opens an interval, ``die`` closes it (``destroy`` too, should the
    engine lose the ``die``). A container seen dying or paused without a
    ``start`` in the record was already running when the record began: its
    interval opens at ``window_start``, the conservative choice.
    """
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    open_: dict[str, RunInterval] = {}
    paused_since: dict[str, float] = {}
    done: list[RunInterval] = []

    def opened(e: ContainerEvent, at: float) -> RunInterval:
        interval = RunInterval(e.container_id, e.job_id or "", e.alloc_id, e.slave_id, at)
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


def overlaps(intervals: Iterable[RunInterval]) -> list[Overlap]:
    """Every pair of distinct containers of one job that ran at the same time.

    Touching is not overlapping: one container dying at the instant the next
    starts is a clean hand-over.
    """
    by_job: dict[str, list[RunInterval]] = defaultdict(list)
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


def successful_exits(intervals: Iterable[RunInterval]) -> dict[str, list[RunInterval]]:
    """Per job, the containers that ran to an exit code of 0 (a batch job must have at most one)."""
    by_job: dict[str, list[RunInterval]] = defaultdict(list)
    for interval in intervals:
        if interval.exit_code == 0:
            by_job[interval.job_id].append(interval)
    return dict(by_job)


class EventRecorder:
    """Records the engine's events of the given slaves' containers, live, from ``start``.

    Live, because the engine keeps only its last 256 events for a ``since`` query
    (moby's ``eventsLimit``): on a busy engine, history read at the end has lost
    the starts of the campaign's first containers. At ``stop`` the stream is closed
    and the short tail since the last event received is read from history, to
    miss nothing up to ``until``.
    """

    def __init__(self, slave_ids: Iterable[str], since: float) -> None:
        import threading

        self.slave_ids = set(slave_ids)
        self.since = since
        self._raw: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    _FILTERS: ClassVar[dict[str, str]] = {"type": "container", "label": "claud.slave"}

    def _keep(self, raw: Mapping[str, Any]) -> None:
        attributes = (raw.get("Actor") or {}).get("Attributes") or {}
        if attributes.get("claud.slave") not in self.slave_ids:
            return
        key = (str((raw.get("Actor") or {}).get("ID")), str(raw.get("Action")), int(raw.get("timeNano", 0)))
        with self._lock:
            self._raw.setdefault(key, dict(raw))

    def start(self) -> EventRecorder:
        import docker

        self._client = docker.from_env(timeout=60)
        self._stream = self._client.events(since=math.floor(self.since) - 1, filters=self._FILTERS, decode=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for raw in self._stream:
                self._keep(raw)
        except Exception as exc:  # noqa: BLE001 - the stream closed by stop(), or the engine went away
            self.error = exc

    def stop(self, until: float) -> list[ContainerEvent]:
        """Every event recorded from ``since`` to ``until``, parsed."""
        import docker

        with self._lock:
            last = max((k[2] for k in self._raw), default=int(self.since * 1e9)) / 1e9
        if self._stream is not None:
            self._stream.close()
        self._thread.join(10)
        client = docker.from_env(timeout=60)
        try:
            tail = client.events(since=math.floor(last) - 1, until=math.ceil(until) + 1,
                                 filters=self._FILTERS, decode=True)
            try:
                for raw in tail:
                    self._keep(raw)
            finally:
                tail.close()
        finally:
            client.close()
            if self._client is not None:
                self._client.close()
        with self._lock:
            ordered = sorted(self._raw.values(), key=lambda r: int(r.get("timeNano", 0)))
        parsed = [parse_event(raw, seq) for seq, raw in enumerate(ordered)]
        return [e for e in parsed if e is not None]

    def intervals(self, until: float) -> list[RunInterval]:
        return run_intervals(self.stop(until), window_start=self.since)

    def close(self) -> None:
        """Stop listening without reading anything (cleanup after a failure)."""
        import contextlib

        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close()
