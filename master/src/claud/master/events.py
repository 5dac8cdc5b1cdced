"""Fan-out of committed transitions to event-stream subscribers.

Subscribers get a bounded queue; one that falls too far behind is cut off
(its stream ends and it can reconnect) rather than holding memory or slowing
the commit path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from claud.daemon.waits import within

QUEUE_LIMIT = 10_000
#: An idle stream yields ``None`` this often, so the caller can send a keep-alive.
KEEPALIVE_SECONDS = 15.0


class _Subscriber:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.cut = False


class EventBroker:
    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

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

    async def subscribe(self) -> AsyncIterator[dict[str, Any] | None]:
        sub = _Subscriber()
        self._subscribers.add(sub)
        try:
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
