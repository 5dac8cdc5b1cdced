"""The leader's end of the slave protocol: heartbeats, watches, assignments.

A heartbeat is turned into the writes it calls for (a registration, a change
of engine health, the container reports that change a job), committed before
the answer; a watch waits until the slave's desired set changes. Both answer
the whole desired set (:class:`~claud.api.slave_protocol.Assignments`), and
only a leader whose term has begun answers them at all (else NotLeader, 421).

The sessions also keep what the slaves said since this master became leader,
soft state that is not replicated on every heartbeat: when each was last
heard from, its usage and heartbeat time (replicated now and then by the
leader's duties), since when its engine has not answered, and the heartbeat
terms it was granted (:mod:`claud.master.heartbeat_terms`): the interval, the
lease and the deadlines the failure detector applies grow with the number of
live slaves, and the deadlines always cover the longest lease still in force.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from claud.api import Assignments, Heartbeat, HostUsage, NodeState
from claud.daemon.logfmt import log_event
from claud.daemon.waits import wait_set
from claud.master import ops
from claud.master.heartbeat_terms import HeartbeatTerms, longest, terms_for
from claud.master.ops import utcnow
from claud.master.replication import ReplicatedLog
from claud.master.settings import MasterSettings
from claud.master.state import Change, StateMachine
from claud.master.transport import NotLeader

log = logging.getLogger("claud.master")

#: The live-slave count the terms scale with is recounted at most this often, seconds.
LIVE_RECOUNT_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Touches:
    """Heartbeat times and usage of the slaves heard from since the last time these were taken."""

    heartbeats: dict[str, datetime]
    usage: dict[str, HostUsage]


class SlaveSessions:
    def __init__(self, settings: MasterSettings, replicated: ReplicatedLog) -> None:
        self._settings = settings
        self._replicated = replicated
        #: One event per slave with a watch waiting, set when that slave's version moves:
        #: an apply wakes the watches it concerns, not every slave's (O(changed), not O(cluster)).
        self._watch_events: dict[str, asyncio.Event] = {}
        #: The tables the last wake looked at: new ones (a snapshot installed) may move any version.
        self._watched_state: StateMachine | None = None
        # Leader-only soft state: what the slaves told us since we became leader.
        #: When (monotonic) each slave was last heard from.
        self.last_seen: dict[str, float] = {}
        self._heartbeat_at: dict[str, datetime] = {}
        self._usage: dict[str, HostUsage] = {}
        self._touched: set[str] = set()
        #: Since when (monotonic) each slave has said its container engine does not answer.
        self.unhealthy_since: dict[str, float] = {}
        #: Told the id of each slave heard from (telemetry).
        self.on_heartbeat: Callable[[str], None] | None = None
        #: The terms of the last heartbeat reply to each slave (watch replies repeat them).
        self._terms: dict[str, HeartbeatTerms] = {}
        #: When (monotonic) each slave is suspect, and dead, unless heard from again.
        self._suspect_at: dict[str, float] = {}
        self._dead_at: dict[str, float] = {}
        self._live = 0
        self._live_counted_at = -math.inf
        self._base = terms_for(settings, 0, 0.0)

    def begin_leadership(self) -> None:
        """Forget what an earlier leadership heard; give every slave a full period from now.

        The new leader has not heard from anyone yet, which says nothing about
        them: every known slave gets a full dead-after period from now, and so
        does a slave whose engine was down."""
        now = time.monotonic()
        slaves = self._replicated.state.slaves
        self.last_seen = {slave_id: now for slave_id in slaves}
        self._heartbeat_at, self._usage, self._touched = {}, {}, set()
        self.unhealthy_since = {s.id: now for s in slaves.values() if not s.runtime_healthy}
        # An earlier leader may have granted any slave the longest terms its count allowed.
        assumed = longest(self._settings, len(slaves))
        self._terms = {}
        self._suspect_at = {slave_id: now + assumed.suspect_after for slave_id in slaves}
        self._dead_at = {slave_id: now + assumed.dead_after for slave_id in slaves}
        self._live_counted_at = -math.inf

    def forget(self, slave_id: str) -> None:
        """A slave GC removed from the tables: what it said goes too (it registers anew if it returns)."""
        for kept in (self.last_seen, self._heartbeat_at, self._usage, self.unhealthy_since, self._terms,
                     self._suspect_at, self._dead_at):
            kept.pop(slave_id, None)
        self._touched.discard(slave_id)

    def wake_watchers(self, _changes: list[Change] | None = None) -> None:
        """Wake the long-polling watches of the slaves whose version moved (an applied subscriber);
        every watch when the tables were replaced. Each checks its own slave's version."""
        state = self._replicated.state
        bumped = state.drain_bumped()
        if state is not self._watched_state:
            self._watched_state = state
            self.wake_all_watchers()
            return
        for slave_id in bumped:
            event = self._watch_events.pop(slave_id, None)
            if event is not None:
                event.set()

    def wake_all_watchers(self) -> None:
        """Wake every watch (a role change: each then answers, or refuses if this master no longer leads)."""
        events, self._watch_events = self._watch_events, {}
        for event in events.values():
            event.set()

    def take_touches(self) -> Touches:
        """The slaves heard from since the last call (and still registered), for one replicated touch."""
        touched, self._touched = self._touched, set()
        touched &= self._replicated.state.slaves.keys()
        return Touches(
            heartbeats={s: self._heartbeat_at[s] for s in touched},
            usage={s: self._usage[s] for s in touched if s in self._usage},
        )

    def usage(self, slave_id: str) -> HostUsage | None:
        return self._usage.get(slave_id)

    def lease_left(self, slave_id: str) -> float | None:
        """Seconds of the slave's lease left, counted from when this leader last heard it
        (or, not heard yet, from when it became leader: the full period it gives every
        slave); None for a slave it does not know."""
        seen = self.last_seen.get(slave_id)
        if seen is None:
            return None
        lease = self.terms(slave_id).lease
        return round(max(0.0, lease - (time.monotonic() - seen)), 1)

    def terms(self, slave_id: str) -> HeartbeatTerms:
        """What the last heartbeat reply granted the slave (the unscaled terms before one)."""
        return self._terms.get(slave_id, self._base)

    def overdue(self, slave_id: str, now: float) -> tuple[bool, bool]:
        """Whether the slave is silent past its suspect-after, and past its dead-after.

        The dead-after deadline is the latest any grant still in force set: a
        slave that missed the reply with shorter terms still holds the lease of
        an earlier, longer one. A slave not yet counted gets the longest terms."""
        if slave_id not in self._dead_at:
            assumed = longest(self._settings, len(self._replicated.state.slaves))
            self._suspect_at[slave_id] = now + assumed.suspect_after
            self._dead_at[slave_id] = now + assumed.dead_after
        return now >= self._suspect_at[slave_id], now >= self._dead_at[slave_id]

    def live_slaves(self) -> int:
        """Slaves not dead (recounted at most every LIVE_RECOUNT_INTERVAL: a heartbeat must not cost O(cluster))."""
        now = time.monotonic()
        if now - self._live_counted_at >= LIVE_RECOUNT_INTERVAL:
            self._live = sum(1 for s in self._replicated.state.slaves.values() if s.state != NodeState.DEAD)
            self._live_counted_at = now
        return self._live

    def _granted(self, slave_id: str, received: float, terms: HeartbeatTerms, *, heartbeat: bool) -> None:
        """Record a reply granting ``terms``, answering a request received (monotonic) at ``received``.

        The slave counts its lease from the request's send, before ``received``:
        its lease ends by ``received + terms.lease``, which ``terms.dead_after`` covers."""
        if heartbeat:
            self._terms[slave_id] = terms
            self._suspect_at[slave_id] = received + terms.suspect_after
        self._dead_at[slave_id] = max(self._dead_at.get(slave_id, -math.inf), received + terms.dead_after)

    def last_heartbeat(self, slave_id: str) -> datetime | None:
        return self._heartbeat_at.get(slave_id)

    # ---------------------------------------------------------- the protocol

    def _require_leader(self) -> None:
        if not self._replicated.leader_ready:
            leader_id = self._replicated.leader_id
            known = leader_id if leader_id != self._replicated.master_id else None
            raise NotLeader(known, self._replicated.leader_address)

    async def heartbeat(self, hb: Heartbeat) -> Assignments:
        self._require_leader()
        slave_id = hb.slave_id
        if self.on_heartbeat is not None:
            self.on_heartbeat(slave_id)
        received = self.last_seen[slave_id] = time.monotonic()
        self._granted(slave_id, received, terms_for(self._settings, self.live_slaves(), random.random()),
                      heartbeat=True)
        self._heartbeat_at[slave_id] = utcnow()
        self._usage[slave_id] = hb.usage
        self._touched.add(slave_id)
        self._replicated.trace.record("slave.heartbeat", sample=("slave.heartbeat", slave_id), slave=slave_id,
                                      healthy=hb.runtime.healthy)  # fmt: skip
        state = self._replicated.state
        slave = state.slaves.get(slave_id)
        proposals: list[ops.Operation] = []
        if (
            slave is None
            or slave.state != NodeState.ALIVE
            or (slave.address, slave.labels, slave.cpu_total, slave.memory_mb_total)
            != (hb.address, hb.labels, hb.cpu_total, hb.memory_mb_total)
            or (slave.port_range, slave.host_volumes, slave.ports_host)
            != (hb.port_range, hb.host_volumes, hb.ports_host)
        ):
            proposals.append(
                ops.RegisterSlave(
                    at=utcnow(),
                    slave_id=slave_id,
                    address=hb.address,
                    labels=hb.labels,
                    cpu_total=hb.cpu_total,
                    memory_mb_total=hb.memory_mb_total,
                    port_range=hb.port_range,
                    host_volumes=hb.host_volumes,
                    ports_host=hb.ports_host,
                )
            )
        healthy = hb.runtime.healthy
        if healthy:
            self.unhealthy_since.pop(slave_id, None)
        else:
            self.unhealthy_since.setdefault(slave_id, time.monotonic())
        if (slave.runtime_healthy if slave is not None else True) != healthy:
            if not healthy:
                log_event(log, "slave.runtime_unhealthy", logging.WARNING, slave=slave_id, error=hb.runtime.error)
            proposals.append(ops.SetRuntimeHealth(
                at=utcnow(), slave_id=slave_id, healthy=healthy, error=None if healthy else hb.runtime.error
            ))
        statuses = state.relevant_statuses(slave_id, hb.allocations, runtime_healthy=healthy)
        if statuses:
            proposals.append(ops.ReportAllocations(
                at=utcnow(), slave_id=slave_id, statuses=statuses, runtime_healthy=healthy
            ))
        if proposals and isinstance(proposals[0], ops.RegisterSlave):
            # A slave's registration goes first: its health and reports need its row.
            await self._replicated.propose(proposals.pop(0))
        if proposals:
            await asyncio.gather(*(self._replicated.propose(op) for op in proposals))
        return self.assignments(slave_id)

    async def watch(self, slave_id: str, known_version: int, wait_seconds: float) -> Assignments:
        self._require_leader()
        received = time.monotonic()
        deadline = received + min(wait_seconds, self._settings.watch_max_wait)
        while self._replicated.state.slave_versions.get(slave_id, 0) == known_version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            event = self._watch_events.get(slave_id)
            if event is None:
                event = self._watch_events[slave_id] = asyncio.Event()
            if not await wait_set(event, remaining):
                break
        self._require_leader()  # leadership may have moved while this watch waited
        # Its answer renews the lease from the watch's send: the grant counts from its receipt.
        self._granted(slave_id, received, self.terms(slave_id), heartbeat=False)
        return self.assignments(slave_id)

    def assignments(self, slave_id: str) -> Assignments:
        state, settings = self._replicated.state, self._settings
        terms = self.terms(slave_id)
        return Assignments(
            term=self._replicated.term,
            leader_id=self._replicated.leader_id,
            leader_address=self._replicated.leader_address,
            version=state.slave_versions.get(slave_id, 0),
            allocations=state.desired_allocations(slave_id),
            lease_seconds=terms.lease,
            heartbeat_interval=settings.heartbeat_interval,
            next_heartbeat=terms.interval,
            fence_stop_grace=settings.fence_stop_grace,
        )
