"""Faults a demo-mode process injects into itself on demand (``claud chaos``, ``--demo-faults``).

A master or a slave started with ``--demo-faults`` takes a
:class:`~claud.api.chaos.FaultRequest` on its internal chaos route and acts
on itself, so that a demo (or a test) can break a live cluster the way
machines and networks break, without root, iptables or signals:

- ``kill``: exit at once with status 137 (as after SIGKILL), nothing cleaned
  up: a crash. A supervisor (deploy/demo.sh's restart loop, compose's
  ``restart:``) brings it back, and it recovers from its disk.
- ``pause``: stop working, as SIGSTOP would, for ``seconds``: the process's
  loops wait on :attr:`Faults.running`, and :class:`FaultMiddleware` holds
  every request (and every answer in flight) until the pause ends.
- ``partition``: cut the process off from its peers until ``heal`` (or for
  ``seconds``): its internal routes answer 503 ``partitioned`` and what it
  sends its peers is dropped (each process says where: the master's
  transport, the slave's heartbeats).

The chaos route itself is outside every fault, so ``resume`` and ``heal``
always reach a paused or partitioned process. Which faults hold at an
instant is :class:`FaultState`, pure; :class:`Faults` keeps it for one
process, with the events its loops wait on and the timer that ends a timed
fault.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any

from claud.api.chaos import DEFAULT_PAUSE_SECONDS, ChaosAction, ChaosResult, FaultRequest
from claud.daemon.api_errors import error_body
from claud.daemon.logfmt import log_event

log = logging.getLogger("claud.daemon.faults")

#: The exit status of a ``kill``: what a shell reports for a SIGKILLed process (128 + 9).
KILL_EXIT_CODE = 137
#: A kill waits this long for its 202 to leave when the route could not wait for it itself.
KILL_FALLBACK_DELAY = 1.0

# The ASGI types, spelled here so that the daemon package needs no web framework.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FaultState:
    """Which faults hold, as deadlines on a monotonic clock. Pure: time comes in as ``now``.

    ``paused_until`` is None when not paused; ``partitioned`` with a None
    ``partition_until`` lasts until ``heal``.
    """

    paused_until: float | None = None
    partitioned: bool = False
    partition_until: float | None = None

    def paused_at(self, now: float) -> bool:
        return self.paused_until is not None and now < self.paused_until

    def partitioned_at(self, now: float) -> bool:
        return self.partitioned and (self.partition_until is None or now < self.partition_until)

    def settled(self, now: float) -> FaultState:
        """The same faults with those that have run out at ``now`` ended."""
        state = self
        if state.paused_until is not None and not state.paused_at(now):
            state = replace(state, paused_until=None)
        if state.partitioned and not state.partitioned_at(now):
            state = replace(state, partitioned=False, partition_until=None)
        return state

    def next_expiry(self) -> float | None:
        """When the next timed fault ends; None when none is timed."""
        ends = [t for t in (self.paused_until, self.partition_until if self.partitioned else None) if t is not None]
        return min(ends) if ends else None

    def after(self, action: ChaosAction, seconds: float | None, now: float) -> FaultState:
        """The faults once ``action`` is taken at ``now``. A second pause or partition
        replaces the first's end; ``kill`` changes nothing here (the process ends)."""
        state = self.settled(now)
        if action is ChaosAction.PAUSE:
            return replace(state, paused_until=now + (DEFAULT_PAUSE_SECONDS if seconds is None else seconds))
        if action is ChaosAction.RESUME:
            return replace(state, paused_until=None)
        if action is ChaosAction.PARTITION:
            return replace(state, partitioned=True, partition_until=None if seconds is None else now + seconds)
        if action is ChaosAction.HEAL:
            return replace(state, partitioned=False, partition_until=None)
        return state


def describe(action: ChaosAction, before: FaultState, seconds: float | None, now: float) -> str:
    """One line saying what ``action`` did, given the faults that held before it."""
    if action is ChaosAction.KILL:
        return f"killed: exits with status {KILL_EXIT_CODE} now"
    if action is ChaosAction.PAUSE:
        length = DEFAULT_PAUSE_SECONDS if seconds is None else seconds
        return f"paused for {length:g}s" + (" (it was paused already)" if before.paused_at(now) else "")
    if action is ChaosAction.RESUME:
        return "resumed" if before.paused_at(now) else "was not paused"
    if action is ChaosAction.PARTITION:
        return "partitioned " + ("until heal" if seconds is None else f"for {seconds:g}s")
    return "healed" if before.partitioned_at(now) else "was not partitioned"


class Faults:
    """The faults of one process: the state, the events its loops wait on, the expiry timer.

    ``running`` is set unless paused; ``connected`` is set unless partitioned.
    Without ``enabled`` (no ``--demo-faults``) nothing may change them: every
    request is refused before it gets here, and both events stay set.
    """

    def __init__(self, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self._clock = clock
        self._state = FaultState()
        self.running = asyncio.Event()
        self.running.set()
        self.connected = asyncio.Event()
        self.connected.set()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def paused(self) -> bool:
        return not self.running.is_set()

    @property
    def partitioned(self) -> bool:
        return not self.connected.is_set()

    async def wait_connected(self) -> None:
        """Until this process is neither paused nor partitioned: where a loop that talks to peers waits."""
        while not (self.running.is_set() and self.connected.is_set()):
            await self.running.wait()
            await self.connected.wait()

    def apply(self, request: FaultRequest) -> str:
        """Take the fault; one line saying what was done. A kill only logs and arms the
        fallback exit: the route exits with :meth:`kill_now` once its answer is out."""
        if not self.enabled:
            raise RuntimeError("faults are not enabled (--demo-faults)")  # the routes refuse first
        now = self._clock()
        message = describe(request.action, self._state, request.seconds, now)
        log_event(log, "chaos." + request.action.value, logging.WARNING, seconds=request.seconds, msg=message)
        if request.action is ChaosAction.KILL:
            asyncio.get_running_loop().call_later(KILL_FALLBACK_DELAY, self.kill_now)
            return message
        self._state = self._state.after(request.action, request.seconds, now)
        self._refresh()
        return message

    def take(self, request: FaultRequest, target: str, role: str) -> ChaosResult:
        """:meth:`apply`, answered as the chaos routes answer it."""
        message = self.apply(request)
        seconds = request.seconds
        if request.action is ChaosAction.PAUSE and seconds is None:
            seconds = DEFAULT_PAUSE_SECONDS
        return ChaosResult(target=target, role=role, action=request.action, seconds=seconds,
                           message=f"{role} {target} {message}")

    def kill_now(self) -> None:
        """Exit this instant, as a crash does: no shutdown, no flush beyond the log's."""
        logging.shutdown()
        os._exit(KILL_EXIT_CODE)

    def _refresh(self) -> None:
        """Bring the events in line with the state, and arm the timer for the next expiry."""
        now = self._clock()
        settled = self._state.settled(now)
        if settled != self._state:
            if not settled.paused_at(now) and self._state.paused_until is not None:
                log_event(log, "chaos.resume", logging.WARNING, msg="the pause ran out")
            if not settled.partitioned and self._state.partitioned:
                log_event(log, "chaos.heal", logging.WARNING, msg="the partition ran out")
            self._state = settled
        _set(self.running, not settled.paused_at(now))
        _set(self.connected, not settled.partitioned_at(now))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        expiry = settled.next_expiry()
        if expiry is not None:
            self._timer = asyncio.get_running_loop().call_later(max(0.0, expiry - now), self._refresh)


def _set(event: asyncio.Event, value: bool) -> None:
    if value:
        event.set()
    else:
        event.clear()


class FaultMiddleware:
    """The outermost layer of a demo-mode process's server: a pause holds every request
    (and every answer being sent) until it ends; a partition answers the paths its
    peers use (``cut_off``) with 503 ``partitioned``. The ``exempt`` paths (the chaos
    routes) pass untouched, so ``resume`` and ``heal`` always get through."""

    def __init__(
        self, app: ASGIApp, faults: Faults, exempt: frozenset[str], cut_off: Callable[[str], bool], who: str
    ) -> None:
        self.app, self.faults, self.exempt, self.cut_off, self.who = app, faults, exempt, cut_off, who

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        running = self.faults.running
        await running.wait()
        if self.faults.partitioned and self.cut_off(scope["path"]):
            await self._partitioned(send)
            return

        async def held_send(message: Message) -> None:
            if not running.is_set():  # paused mid-answer: the rest waits, as it would in a stopped process
                await running.wait()
            await send(message)

        await self.app(scope, receive, held_send)

    async def _partitioned(self, send: Send) -> None:
        body = json.dumps(error_body(
            "partitioned", f"{self.who} is cut off from its peers (claud chaos partition); claud chaos heal ends it"
        )).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})
