"""Bounded waits for the daemons' event loops: the one way CLAUD waits with a deadline.

Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that
arrives just as the wait ends (cpython#86296), and a loop that survives its
cancel makes a clean stop wait forever (seen in the slave's lease loop, whose
waits can be a millisecond). ``asyncio.timeout`` passes the cancellation on,
and it needs no extra task per wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_set(event: asyncio.Event, seconds: float | None) -> bool:
    """Until ``event`` is set or ``seconds`` pass (None: no limit); says whether it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, cancelled after ``seconds`` with :class:`TimeoutError` (None: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable
