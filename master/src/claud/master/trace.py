"""The consensus trace: a bounded record of what this master saw and did, for a learner to watch.

Each master keeps its own trace (never replicated: it is what *this* master
knows) in a ring buffer of :data:`TRACE_CAPACITY` events, each numbered by a
counter that only grows, so that a reader who reconnects with the last id it
saw (``Last-Event-ID``) gets exactly what followed, or learns that it missed
some (the oldest events fall out of the ring, and a restarted master starts a
new trace, with higher ids). ``GET /v1/cluster/trace``
streams it; the live view at ``/ui`` draws it.

A busy cluster must not flood the trace: heartbeats, and answers that move
nothing, are sampled (at most one per peer, kind and direction each
:data:`SAMPLE_SECONDS`), while whatever changes something (entries carried,
an append refused, a vote, a snapshot, a role) is always kept.

The consensus core stays a pure step function: this module only reads the
messages the replicated log sends and receives, and the log calls it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from claud.master.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PreVote,
    PreVoteReply,
    TimeoutNow,
    VoteReply,
    VoteRequest,
)

#: Events a master keeps: minutes of a quiet cluster, seconds of an election storm.
TRACE_CAPACITY = 2_000
#: A sampled event (a heartbeat, an answer that moved nothing) is kept at most this often per key.
SAMPLE_SECONDS = 1.0
#: Sample keys remembered at most (peers x kinds, slaves): past it they are forgotten.
MAX_SAMPLE_KEYS = 10_000
#: A live reader idle this long gets ``None`` (the route sends an SSE comment: a keep-alive).
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One thing a master saw or did; ``fields`` are JSON values."""

    id: int
    at: float  # seconds since the epoch (wall clock: readers compare masters' traces)
    master: int
    kind: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # The event's own keys last: a field cannot pass for them.
        return {**self.fields, "id": self.id, "at": self.at, "master": self.master, "kind": self.kind}


class Trace:
    """A ring buffer of :class:`TraceEvent` with live readers.

    Not thread-safe: record from the event loop (every caller is on it)."""

    def __init__(
        self,
        master_id: int,
        capacity: int = TRACE_CAPACITY,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        first_id: int | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.master_id = master_id
        self._events: deque[TraceEvent] = deque(maxlen=capacity)
        # Ids start from the wall clock (milliseconds x 1000), so they grow across a
        # restart too: a reader resuming with an id from before it gets all that is
        # kept (after a gap), never a stretch of the new run mistaken for the old.
        self._next_id = first_id if first_id is not None else int(wall() * 1000) * 1000
        self._first_id = self._next_id
        self._clock, self._wall = clock, wall
        self._sampled_at: dict[Hashable, float] = {}
        self._changed = asyncio.Event()
        self._readers = 0
        #: The match index last answered, per (peer, direction): an answer that repeats it moved nothing.
        self._matches: dict[tuple[int, str], int] = {}
        #: Events not kept because their key was sampled recently.
        self.dropped = 0

    @property
    def first_id(self) -> int:
        """The id of this run's first event: an id below it is from before a restart."""
        return self._first_id

    @property
    def last_id(self) -> int:
        """The id of the newest event (one below the first id before any)."""
        return self._next_id - 1

    def record(self, kind: str, *, sample: Hashable | None = None, **fields: Any) -> TraceEvent | None:
        """Keep one event; with ``sample``, only if no event of that key was kept
        in the last :data:`SAMPLE_SECONDS` (None when it was not kept)."""
        if sample is not None:
            now = self._clock()
            last = self._sampled_at.get(sample)
            if last is not None and now - last < SAMPLE_SECONDS:
                self.dropped += 1
                return None
            if len(self._sampled_at) >= MAX_SAMPLE_KEYS:  # slaves come and go: forget, rather than grow
                self._sampled_at.clear()
            self._sampled_at[sample] = now
        event = TraceEvent(id=self._next_id, at=round(self._wall(), 3), master=self.master_id, kind=kind,
                           fields=fields)  # fmt: skip
        self._next_id += 1
        self._events.append(event)
        if self._readers:  # wake every waiting reader; each takes a fresh event for the next wait
            self._changed.set()
            self._changed = asyncio.Event()
        return event

    def after(self, last_id: int) -> list[TraceEvent]:
        """The kept events newer than ``last_id``, oldest first."""
        if not self._events or last_id >= self._events[-1].id:
            return []
        first = self._events[0].id
        start = max(0, last_id - first + 1)  # ids are consecutive inside the ring
        return list(self._events)[start:]

    async def wait_after(self, last_id: int, timeout: float) -> list[TraceEvent]:  # noqa: ASYNC109 - a long poll's wait
        """The kept events newer than ``last_id``; when there are none, the first ones
        recorded within ``timeout`` seconds (an empty list if none was)."""
        changed = self._changed
        events = self.after(last_id)
        if events or timeout <= 0:
            return events
        self._readers += 1
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return []
        finally:
            self._readers -= 1
        return self.after(last_id)

    async def follow(self, last_id: int, keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[TraceEvent | None]:
        """The events after ``last_id``, then each new one as it is recorded;
        ``None`` after ``keepalive`` seconds without one."""
        while True:
            events = await self.wait_after(last_id, keepalive)
            if not events:
                yield None
                continue
            for event in events:
                yield event
            last_id = events[-1].id

    # ------------------------------------------------------------ consensus messages

    def message(self, msg: Message, direction: str) -> None:
        """A message this master sent (``out``) or received (``in``); heartbeats
        and answers that moved nothing are sampled."""
        peer = msg.dst if direction == "out" else msg.src
        base: dict[str, Any] = {"dir": direction, "src": msg.src, "dst": msg.dst, "term": msg.term}
        if isinstance(msg, VoteRequest):
            self.record("vote.request", pre=isinstance(msg, PreVote), last_index=msg.last_index,
                        last_term=msg.last_term, **base)  # fmt: skip
        elif isinstance(msg, VoteReply):
            kind = "vote.granted" if msg.granted else "vote.refused"
            self.record(kind, pre=isinstance(msg, PreVoteReply), **base)
        elif isinstance(msg, AppendEntries):
            heartbeat = not msg.entries
            self.record("append", sample=("append", peer, direction) if heartbeat else None,
                        entries=len(msg.entries), prev_index=msg.prev_index, commit=msg.commit, **base)  # fmt: skip
        elif isinstance(msg, AppendEntriesReply):
            # A refusal, or an answer that moves the match index, is kept; a heartbeat's echo is sampled.
            moved = self._matches.get((peer, direction)) != msg.match_index
            if msg.success:
                self._matches[(peer, direction)] = msg.match_index
            sampled = msg.success and not moved
            self.record("append.answer", sample=("append.answer", peer, direction) if sampled else None,
                        success=msg.success, match_index=msg.match_index, **base)  # fmt: skip
        elif isinstance(msg, InstallSnapshot):
            self.record("snapshot.send", index=msg.snapshot.index, **base)
        elif isinstance(msg, InstallSnapshotReply):
            self.record("snapshot.answer", match_index=msg.match_index, **base)
        elif isinstance(msg, TimeoutNow):
            self.record("transfer", **base)


def trace_gap(last: int, first: int, first_of_run: int) -> dict[str, Any] | None:
    """The ``trace.gap`` a reader who had ``last`` is owed when the next event it gets is
    ``first`` (None when nothing is missing); ``first_of_run`` is the trace's first id
    since its master started, so a ``last`` below it means the master restarted."""
    if not last or first <= last + 1:
        return None
    restarted = last < first_of_run  # what the old run recorded after ``last`` is gone
    return {"after": last, "first": first, "missed": None if restarted else first - last - 1, "restarted": restarted}


async def trace_stream(trace: Trace, start: int, keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[str]:
    """The trace after ``start`` as server-sent events: ``id:`` the trace id, ``event:``
    its kind, ``data:`` its JSON; a ``trace.gap`` event where events fell out of the
    ring before this reader got them (it came back late, or reads slowly, or the
    master restarted in between); a comment
    as a keep-alive."""
    yield ": connected\n\n"
    last = start
    async for event in trace.follow(start, keepalive):
        if event is None:
            yield ": keep-alive\n\n"
            continue
        gap = trace_gap(last, event.id, trace.first_id)
        if gap is not None:
            yield f"event: trace.gap\ndata: {json.dumps(gap)}\n\n"
        last = event.id
        yield f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.as_dict())}\n\n"
