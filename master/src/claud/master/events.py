"""Fan-out of committed transitions to event-stream subscribers, resumable.

Subscribers get a bounded queue; one that falls too far behind is cut off
(its stream ends and it can reconnect) rather than holding memory or slowing
the commit path.

Every transition has an id, ``INDEX.K``: the log index of the entry that made
it and its place among that entry's transitions. The index is the cluster's,
not this master's, so a reader can resume (``Last-Event-ID``) on any master.
The last :data:`REPLAY_LIMIT` transitions are kept to replay to a reader that
comes back; one that comes back later than that first gets a ``gap`` event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from claud.api.protocol import EVENT_ID
from claud.daemon.waits import within

if TYPE_CHECKING:
    from claud.master.state import Change

QUEUE_LIMIT = 10_000
#: Transitions kept for readers that resume (a few minutes of a busy cluster).
REPLAY_LIMIT = 10_000
#: An idle stream yields ``None`` this often, so the caller can send a keep-alive.
KEEPALIVE_SECONDS = 15.0

EventId = tuple[int, int]


def parse_event_id(value: str) -> EventId:
    """``"42.0"`` -> ``(42, 0)``; ValueError for anything that is not an event id."""
    if not EVENT_ID.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not an event id (INDEX.K, as the stream's id: lines)")
    index, _, k = value.partition(".")
    return int(index), int(k)


def event_id_text(event_id: EventId) -> str:
    return f"{event_id[0]}.{event_id[1]}"


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.cut = False


class EventBroker:
    def __init__(self, replay_limit: int = REPLAY_LIMIT) -> None:
        self._subscribers: set[_Subscriber] = set()
        #: The latest transitions, oldest first, with their ids (rendered only when read).
        self._replay: deque[tuple[EventId, Change]] = deque(maxlen=replay_limit)
        #: The newest id that fell out of the replay: a reader after an older one missed some.
        self._evicted: EventId | None = None

    def record(self, changes: Iterable[Change]) -> None:
        """Keep each committed transition for replay, and send it to the live readers."""
        k, last_index = 0, None
        for change in changes:
            if change.index != last_index:
                k, last_index = 0, change.index
            else:
                k += 1
            event_id = (change.index, k)
            if self._replay and event_id <= self._replay[-1][0]:
                continue  # applied again (a snapshot installed under a reader): already told
            if len(self._replay) == self._replay.maxlen:
                self._evicted = self._replay[0][0]
            self._replay.append((event_id, change))
            if self._subscribers:
                self.publish({**change.as_dict(), "event_id": event_id_text(event_id)})

    def replay_after(self, after: EventId) -> tuple[list[dict[str, Any]], bool]:
        """The kept transitions after ``after``, rendered, and whether some between were not kept."""
        kept = [(event_id, change) for event_id, change in self._replay if event_id > after]
        missed = self._evicted is not None and self._evicted > after
        return [{**change.as_dict(), "event_id": event_id_text(event_id)} for event_id, change in kept], missed

    @property
    def has_subscribers(self) -> bool:
        """Lets the commit path skip rendering events nobody is waiting for."""
        return bool(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        for sub in list(self._subscribers):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.cut = True
                self._subscribers.discard(sub)

    async def subscribe(self, after: EventId | None = None) -> AsyncIterator[dict[str, Any] | None]:
        """Live transitions; with ``after``, first those kept since it (a ``gap`` event
        first when some between were not kept). Registered before the replay is taken:
        nothing is missed or told twice between the two."""
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
            if after is not None:
                replay, missed = self.replay_after(after)
                if missed:
                    first = replay[0]["event_id"] if replay else None
                    yield {"type": "gap", "after": event_id_text(after), "first": first}
                for event in replay:
                    yield event
            while True:
                try:
                    yield await within(KEEPALIVE_SECONDS, sub.queue.get())
                except TimeoutError:
                    if sub.cut:
                        return
                    yield None
                    continue
                if sub.cut and sub.queue.empty():
                    return
        finally:
            self._subscribers.discard(sub)
