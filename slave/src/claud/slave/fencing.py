"""The fencing lease: how long this slave may keep jobs running without a leader.

The leader declares a silent slave dead (and runs its jobs elsewhere) only
after a timeout longer than the lease it hands out. So if the slave stops its
containers once the lease is over, a job never runs in two places at once.

The lease is measured from when the successful request was *sent*: the master
granted it at some moment after that, so counting from the send can only end
the lease early, never late. All times are ``CLOCK_BOOTTIME`` seconds: a
wall-clock jump cannot stretch the lease, and, unlike ``CLOCK_MONOTONIC``, the
clock keeps counting while the host is suspended (the masters' clocks do).

The lease outlives the agent process: its end is written to the state
directory at every renewal, so a restarted agent fences at the end the old
process earned, not a fresh lease counted from its own start. A record from an
earlier boot (the clock restarted from zero) or none at all counts as a lease
already over: the agent then starts fenced until a leader answers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEASE_FILE = "lease.json"
FENCED_FILE = "fenced.json"
#: Fenced allocations remembered at most; the oldest are forgotten beyond it.
MAX_FENCED = 10_000
#: The shortest heartbeat interval the agent will use to honour a short lease.
MIN_HEARTBEAT = 0.05


def boottime() -> float:
    """Seconds since boot, suspended time included: the lease clock."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def boot_id() -> str:
    """Names this boot; CLOCK_BOOTTIME readings are only comparable within one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"


class Lease:
    """Expires ``seconds`` after the send time of the last request a leader answered."""

    def __init__(self, seconds: float, last_success: float) -> None:
        self._seconds = seconds
        self._last_success = last_success

    @classmethod
    def ended(cls, seconds: float, now: float) -> Lease:
        """A lease that is already over: nothing may run until a leader answers."""
        return cls(seconds, now - seconds - 1.0)

    @property
    def seconds(self) -> float:
        return self._seconds

    @property
    def last_success(self) -> float:
        return self._last_success

    @property
    def deadline(self) -> float:
        return self._last_success + self._seconds

    def renew(self, sent_at: float, seconds: float) -> bool:
        """Extend the lease; says whether its deadline moved (worth persisting)."""
        before = self.deadline
        # A long poll answered now was sent long ago; it must not pull the
        # deadline back behind what a recent heartbeat already earned.
        self._last_success = max(self._last_success, sent_at)
        self._seconds = seconds
        return self.deadline != before

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def remaining(self, now: float) -> float:
        return self.deadline - now


@dataclass(frozen=True, slots=True)
class Terms:
    """The fencing terms this slave actually applies, derived from the masters' offer."""

    lease: float
    grace: float
    heartbeat: float
    #: Why the offer could not be taken as it was (logged once), or None.
    problem: str | None = None


def honour(
    *,
    lease: float,
    grace: float,
    heartbeat: float,
    longest_lease: float,
    grace_cap: float | None,
    round_trip: float,
) -> Terms:
    """The safest terms that still meet the masters' offer (lease, grace, heartbeat).

    The masters declare this slave dead some time after lease + grace; every
    adjustment here only ever fences *earlier* or beats *faster*, never later,
    so whatever was refused the bound the masters count on still holds:

    * a lease longer than this slave accepts (``longest_lease``) is cut to it;
    * a grace above the local cap is cut to the cap;
    * a grace shorter than one kill round trip to the engine cannot be met from
      the lease end: the fence then begins that much before the lease ends;
    * a lease shorter than two heartbeats would fence on one late reply: the
      slave beats faster (a third of the lease) rather than stretch the lease.
    """
    problems: list[str] = []
    if not (math.isfinite(lease) and lease > 0):
        return Terms(0.0, 0.0, heartbeat, f"lease {lease!r}s is not a positive number: staying fenced")
    if lease > longest_lease:
        problems.append(f"lease {lease}s exceeds this slave's longest lease {longest_lease}s")
        lease = longest_lease
    if not (math.isfinite(grace) and grace >= 0):
        problems.append(f"fence grace {grace!r}s is not a number of seconds: using 0")
        grace = 0.0
    if grace_cap is not None and grace > grace_cap:
        grace = grace_cap  # the operator's stricter bound, not a problem of the offer
    if grace < round_trip:
        problems.append(
            f"fence grace {grace}s is shorter than one kill round trip ({round_trip}s): "
            f"fencing {round_trip - grace:.3g}s before the lease ends"
        )
        lease -= round_trip - grace
    if lease < 2 * heartbeat:
        faster = min(heartbeat, max(MIN_HEARTBEAT, lease / 3))
        problems.append(
            f"lease {lease:.3g}s is shorter than two heartbeats of {heartbeat}s: beating every {faster:.3g}s"
        )
        heartbeat = faster
    return Terms(max(0.0, lease), grace, heartbeat, "; ".join(problems) or None)


def asked_heartbeat(own: float, base: float, next_heartbeat: float | None) -> float:
    """The interval the masters ask this slave to beat at, before ``honour`` checks it against the lease.

    A leader that scales the interval with the cluster (``next_heartbeat``)
    scales the lease and its failure detector by the same factor, so the slave
    beats as slowly as asked; ``honour`` still beats faster if the lease it
    applies (perhaps cut to its longest) would not cover two of them. Without
    it (an earlier master), never slower than the masters' base interval.
    """
    if next_heartbeat is not None and math.isfinite(next_heartbeat) and next_heartbeat > 0:
        return next_heartbeat
    return min(own, base) if math.isfinite(base) and base > 0 else own


def kill_window(grace: float, round_trip: float) -> float:
    """Seconds from SIGTERM to SIGKILL so that the kill *lands* by the fence's grace.

    Together with ``honour`` (which starts the fence ``round_trip - grace``
    early when the grace is shorter than a round trip): TERM at the applied
    lease end, KILL ``kill_window`` later, dead ``round_trip`` after that, which
    is never later than the masters' lease end + grace.
    """
    return max(0.0, grace - round_trip)


# --- persistence ---


def ensure_state_dir(path: Path) -> Path:
    """Create the state directory 0700 (and tighten an existing one)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _write_atomically(path: Path, payload: Any) -> None:
    # write + rename: a crash leaves the old record or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(payload, out, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as src:
            return json.load(src)
    except (OSError, ValueError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What the last process knew: when its lease was renewed, for how long, with which grace."""

    boot: str
    renewed_at: float
    seconds: float
    grace: float


def save_lease(state_dir: Path, record: LeaseRecord) -> None:
    _write_atomically(
        state_dir / LEASE_FILE,
        {"boot": record.boot, "renewed_at": record.renewed_at, "seconds": record.seconds, "grace": record.grace},
    )


def load_lease(state_dir: Path) -> LeaseRecord | None:
    """The persisted lease, or None if absent or unreadable (the file is hostile input too)."""
    raw = _read_json(state_dir / LEASE_FILE)
    if not isinstance(raw, dict) or not isinstance(raw.get("boot"), str):
        return None
    renewed_at, seconds, grace = (_number(raw.get(k)) for k in ("renewed_at", "seconds", "grace"))
    if renewed_at is None or seconds is None or grace is None or seconds < 0 or grace < 0:
        return None
    return LeaseRecord(raw["boot"], renewed_at, seconds, grace)


def lease_from_record(record: LeaseRecord | None, *, boot: str, now: float, fallback_seconds: float) -> Lease:
    """The lease a starting agent holds: the old process's, or one already over.

    A record is only believed for this boot and if it does not lie in the
    future (a clock cannot run backwards; a record that says so is not ours).
    """
    if record is None or record.boot != boot or record.renewed_at > now:
        return Lease.ended(fallback_seconds, now)
    return Lease(record.seconds, record.renewed_at)


class FencedLog:
    """Allocations whose container this slave stopped because its lease ended.

    Persisted so that a restarted agent still reports those exits as fenced
    (lost, not failed). Each entry keeps the wall-clock time of the fence: only
    a container that finished at or after it was stopped by us; one that had
    ended on its own just before keeps its own exit.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self._dir = state_dir
        self._entries: dict[str, float] = {}
        if state_dir is not None:
            raw = _read_json(state_dir / FENCED_FILE)
            if isinstance(raw, dict):
                for alloc_id, at in raw.items():
                    stamp = _number(at)
                    if isinstance(alloc_id, str) and 0 < len(alloc_id) <= 128 and stamp is not None:
                        self._entries[alloc_id] = stamp

    def snapshot(self) -> Mapping[str, float]:
        return dict(self._entries)

    def __contains__(self, alloc_id: object) -> bool:
        return alloc_id in self._entries

    def add(self, alloc_ids: Iterable[str], at: float) -> None:
        """Record before acting: a crash after the stop must not forget who stopped it."""
        new = [a for a in alloc_ids if a not in self._entries]
        if not new:
            return
        for alloc_id in new:
            self._entries[alloc_id] = at
        if len(self._entries) > MAX_FENCED:
            for alloc_id in sorted(self._entries, key=self._entries.__getitem__)[: len(self._entries) - MAX_FENCED]:
                del self._entries[alloc_id]
        self._save()

    def keep_only(self, alloc_ids: Iterable[str]) -> None:
        """Forget allocations nobody can ask about any more (no container, not desired)."""
        keep = set(alloc_ids)
        gone = [a for a in self._entries if a not in keep]
        if gone:
            for alloc_id in gone:
                del self._entries[alloc_id]
            self._save()

    def _save(self) -> None:
        if self._dir is not None:
            _write_atomically(self._dir / FENCED_FILE, self._entries)
