"""The merged trace: every reachable master's consensus trace as one stream.

A master's trace (:mod:`claud.master.trace`) is what *that* master saw. A
learner wants the whole cluster, but the live view may only talk to the master
that served it (its policy is ``connect-src 'self'``), so that master relays:
``GET /v1/cluster/trace?masters=all`` reads its own trace in process and each
peer's over ``GET /v1/internal/trace`` (the cluster secret; a long poll), and
sends them as one stream.

- **Merged by time:** what was kept before the reader came (or reconnected) is
  gathered from every master that answers within :data:`FIRST_REPLY_WAIT` and
  sent oldest first; after that each batch is sent as it arrives. Masters'
  clocks are compared as they are (one machine, in a demo).
- **Resumable:** the stream's ``id:`` is a cursor, the last id read from each
  master (``1:1764700000000123,2:…``); a reader that reconnects with it as
  ``Last-Event-ID`` gets what followed on each master, and a ``trace.gap`` (with
  ``master``) where some fell out of that master's ring.
- **Each master's state:** a ``status`` event per master (role, term, vote,
  last, commit and applied index) when it changed, at most every
  :data:`STATUS_EVERY` seconds, so the view shows every master, not only its own.
- **Who is heard:** ``relay.lost`` when a master stops answering (killed,
  paused, gone) and ``relay.back`` when it answers again. A partitioned master
  still answers: its trace is observation, not the cluster's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from claud.api.protocol import TRACE_CURSOR, TRACE_PATH
from claud.master.peer_http import PeerConnection, PeerHttpError
from claud.master.trace import KEEPALIVE_SECONDS, trace_gap

if TYPE_CHECKING:
    from claud.master.master import Master

#: How long a peer holds a relay's poll when it has nothing new.
POLL_WAIT = 1.0
#: A poll unanswered this long counts as a master lost (a paused one never answers).
POLL_TIMEOUT = POLL_WAIT + 2.0
#: After a lost master, how long before asking it again.
RETRY_SECONDS = 1.0
#: Events in one poll's answer at most: a ring of 2,000 is replayed in four.
MAX_BATCH = 500
#: How long the replay waits for every master's kept events before it is sent in time order.
FIRST_REPLY_WAIT = 0.5
#: A master's ``status`` is sent at most this often (its commit index moves with every write).
STATUS_EVERY = 0.25
#: Masters a cursor may name (a cluster has 3, 5 or 7).
MAX_CURSOR_MASTERS = 16
#: The largest trace id a cursor may name (JSON-safe; a master's trace never gets near it).
MAX_TRACE_ID = 2**53


class CursorError(ValueError):
    """A ``Last-Event-ID`` that is no cursor; its message says what is wrong."""


def parse_cursor(raw: str) -> dict[int, int]:
    """``1:123,2:456`` -> {1: 123, 2: 456} (hostile input: digits only, bounded)."""
    text = raw.strip()
    if not text:
        return {}
    if text.count(",") >= MAX_CURSOR_MASTERS:
        raise CursorError(f"a cursor names at most {MAX_CURSOR_MASTERS} masters")
    if not text.isascii() or not TRACE_CURSOR.fullmatch(text):
        raise CursorError("a cursor is MASTER:TRACE_ID pairs joined by commas (e.g. 1:1764700000000123)")
    cursor = {int(master): int(last) for master, _, last in (pair.partition(":") for pair in text.split(","))}
    if any(last > MAX_TRACE_ID for last in cursor.values()):
        raise CursorError(f"a cursor's trace ids are at most {MAX_TRACE_ID}")
    return cursor


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(f"{master}:{last}" for master, last in sorted(cursor.items()))


def status_of(master: Master) -> dict[str, Any]:
    """What the view draws of one master, as that master knows it."""
    core = master.replicated.core
    return {
        "role": core.role.value, "term": master.term, "voted_for": core.voted_for, "leader": master.leader_id,
        "last_index": core.last_index, "commit_index": master.commit_index,
        "applied_index": master.state.applied_index,
    }


async def batch_after(master: Master, after: int, wait: float) -> dict[str, Any]:
    """This master's kept events after ``after`` (waiting up to ``wait`` s for one), its trace's
    bounds and its status: the answer of ``GET /v1/internal/trace``."""
    trace = master.trace
    events = await trace.wait_after(after if after <= trace.last_id else 0, wait)
    return {
        "master": master.id, "first_id": trace.first_id, "last_id": trace.last_id,
        "events": [event.as_dict() for event in events[:MAX_BATCH]], "status": status_of(master),
    }


@dataclass
class Batch:
    """One answer from one master (``None`` events: it did not answer)."""

    master: int
    events: list[dict[str, Any]] | None
    first_id: int = 0
    status: dict[str, Any] = field(default_factory=dict)


class Source:
    """Polls one master's trace for one reader, and puts each answer on the reader's queue."""

    def __init__(self, master_id: int, after: int, fetch: Callable[[int, float], Any], queue: asyncio.Queue[Batch]):
        self.master_id, self.after, self._fetch, self._queue = master_id, after, fetch, queue

    async def run(self) -> None:
        wait = 0.0  # the first poll answers at once: the replay must not wait for news
        while True:
            try:
                answer = await self._fetch(self.after, wait)
                events = answer["events"]
                batch = Batch(self.master_id, events, answer["first_id"], answer["status"])
            except (PeerHttpError, ValueError, KeyError, TypeError):
                await self._queue.put(Batch(self.master_id, None))
                await asyncio.sleep(RETRY_SECONDS)
                wait = 0.0
                continue
            if events:
                self.after = events[-1]["id"]
            await self._queue.put(batch)
            wait = POLL_WAIT


def peer_fetch(connection: PeerConnection, address: str) -> Callable[[int, float], Any]:
    """Long-polls one peer's internal trace route; its answer is checked before it is trusted."""

    async def fetch(after: int, wait: float) -> dict[str, Any]:
        response = await connection.get(address, f"{TRACE_PATH}?after={after}&wait={wait:g}", POLL_TIMEOUT + wait)
        if response.status != 200:
            raise ValueError(f"{address} answered {response.status}")
        answer = json.loads(response.body)
        if not isinstance(answer, dict) or not isinstance(answer.get("events"), list):
            raise ValueError(f"{address} sent no trace")
        answer["events"] = [e for e in answer["events"] if _is_event(e)][:MAX_BATCH]
        if not isinstance(answer.get("first_id"), int) or not isinstance(answer.get("status"), dict):
            raise ValueError(f"{address} sent an odd trace")
        return answer

    return fetch


def _is_event(event: Any) -> bool:
    return (
        isinstance(event, dict) and isinstance(event.get("id"), int) and isinstance(event.get("kind"), str)
        and isinstance(event.get("at"), int | float) and isinstance(event.get("master"), int)
    )


class Relay:
    """One reader's merged stream: a :class:`Source` per master, one queue."""

    def __init__(self, master: Master, cursor: dict[int, int],
                 connect: Callable[[], PeerConnection] | None) -> None:  # fmt: skip
        self._master, self._cursor, self._connect = master, dict(cursor), connect
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._lost: set[int] = set()
        self._status_sent: dict[int, tuple[float, dict[str, Any]]] = {}
        self._connections: list[PeerConnection] = []

    def _sources(self) -> list[Source]:
        master = self._master
        here = Source(master.id, self._cursor.get(master.id, 0),
                      lambda after, wait: batch_after(master, after, wait), self._queue)  # fmt: skip
        sources = [here]
        if self._connect is not None:
            for peer_id, address in master.directory.items():
                if peer_id == master.id:
                    continue
                connection = self._connect()
                self._connections.append(connection)
                sources.append(Source(peer_id, self._cursor.get(peer_id, 0), peer_fetch(connection, address),
                                      self._queue))  # fmt: skip
        return sources

    async def stream(self, keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[str]:
        sources = self._sources()
        tasks = [asyncio.create_task(s.run(), name=f"trace-relay-{s.master_id}") for s in sources]
        try:
            yield ": connected\n\n"
            # The replay: every master's kept events, oldest first.
            first: list[Batch] = []
            deadline = time.monotonic() + FIRST_REPLY_WAIT
            while len({b.master for b in first}) < len(sources) and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    first.append(await asyncio.wait_for(self._queue.get(), left))
            for chunk in self._send(first, merge=True):
                yield chunk
            while True:
                try:
                    batch = await asyncio.wait_for(self._queue.get(), keepalive)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                for chunk in self._send([batch], merge=False):
                    yield chunk
        finally:
            for task in tasks:
                task.cancel()
            for connection in self._connections:
                connection.close()

    def _send(self, batches: list[Batch], *, merge: bool) -> list[str]:
        out: list[str] = []
        events: list[dict[str, Any]] = []
        for batch in batches:
            if batch.events is None:
                if batch.master not in self._lost:
                    self._lost.add(batch.master)
                    out.append(_sse("relay.lost", {"master": batch.master, "at": round(time.time(), 3)}))
                continue
            if batch.master in self._lost:
                self._lost.discard(batch.master)
                out.append(_sse("relay.back", {"master": batch.master, "at": round(time.time(), 3)}))
            out.extend(self._gap(batch))
            out.extend(self._status(batch))
            events.extend(batch.events)
        if merge:
            events.sort(key=lambda e: (e["at"], e["master"], e["id"]))
        for event in events:
            master = event["master"]
            if event["id"] <= self._cursor.get(master, 0):
                continue  # already sent (a replay overlapping what a reconnect resumed from)
            self._cursor[master] = event["id"]
            out.append(f"id: {format_cursor(self._cursor)}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n")
        return out

    def _gap(self, batch: Batch) -> list[str]:
        assert batch.events is not None
        if not batch.events:
            return []
        gap = trace_gap(self._cursor.get(batch.master, 0), batch.events[0]["id"], batch.first_id)
        return [] if gap is None else [_sse("trace.gap", {"master": batch.master, **gap})]

    def _status(self, batch: Batch) -> list[str]:
        now = time.monotonic()
        sent = self._status_sent.get(batch.master)
        if sent is not None and (sent[1] == batch.status or now - sent[0] < STATUS_EVERY):
            return []
        self._status_sent[batch.master] = (now, batch.status)
        return [_sse("status", {**batch.status, "master": batch.master, "at": round(time.time(), 3)})]


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def relay_stream(master: Master, cursor: dict[int, int], connect: Callable[[], PeerConnection] | None,
                 keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[str]:  # fmt: skip
    """The merged trace after ``cursor``, as server-sent events (see the module's docstring)."""
    return Relay(master, cursor, connect).stream(keepalive)
