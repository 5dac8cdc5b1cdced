"""The heartbeat terms the leader grants one slave: how soon it beats again, how
long its lease runs, when the masters suspect it and declare it dead.

Why they scale: every heartbeat costs the leader a request, a parse and a
look at the slave's reports, so a fixed interval makes the leader's load grow
with the cluster. As Nomad does (``max_heartbeats_per_second``), the interval
grows with the number of live slaves so that the leader handles at most about
``max_heartbeats_per_second`` of them, never less than ``heartbeat_interval``:

    interval = max(heartbeat_interval, n / max_heartbeats_per_second * (1 + STAGGER * u))

with ``u`` uniform in [0, 1): the stagger spreads slaves that started together
over the interval, and a small cluster (n ≤ rate * heartbeat_interval / (1 +
STAGGER)) keeps exactly today's terms. The lease, the suspect-after and the
dead-after time follow, all scaled by the same factor ``interval /
heartbeat_interval``.

The safety rule, for every slave count and every interval this hands out:

    dead_after ≥ lease + 2 * election_timeout + interval + ⌈fence_stop_grace⌉ + FENCE_FANOUT_MARGIN

i.e. a slave cut off fences (its lease is what it was granted, counted from a
send before the leader's receipt) before the masters consider it dead and run
its jobs elsewhere. The start-up invariant checks it for the unscaled terms
(factor 1); scaling multiplies the lease, the interval and the dead-after by
the same factor ≥ 1 and leaves the constant terms alone, so the margin only
grows. And ``lease > 2 * interval`` (a healthy slave does not fence on one late
reply) holds for the same reason. The factor is capped at ``node_gc_after /
node_dead_after``: a slave counted live in any grant still in force is then
still in the tables, so a new leader that counts the tables (``longest``)
covers every lease an earlier leader may have granted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

#: What a fencing slave needs beyond the grace to issue every stop and have
#: Docker act on it (the stop fan-out), seconds; part of the start-up invariant.
FENCE_FANOUT_MARGIN = 1.0
#: A deposed leader, cut off from the others, keeps answering heartbeats (and
#: so renewing leases) until check-quorum makes it step down: at most about
#: this many election timeouts after its followers last heard it.
DEPOSED_LEADER_ELECTION_TIMEOUTS = 2
#: The random stagger added to a scaled interval, as a share of it.
STAGGER = 0.25


class Timing(Protocol):
    """The master settings the terms derive from (a :class:`~claud.master.settings.MasterSettings`)."""

    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def slave_lease(self) -> float: ...
    @property
    def suspect_after(self) -> float: ...
    @property
    def node_dead_after(self) -> float: ...
    @property
    def node_gc_after(self) -> float: ...
    @property
    def max_heartbeats_per_second(self) -> float: ...


@dataclass(frozen=True, slots=True)
class HeartbeatTerms:
    """What one reply grants a slave, seconds."""

    interval: float
    lease: float
    suspect_after: float
    dead_after: float
    #: interval / heartbeat_interval (1 for today's terms).
    factor: float = 1.0


def fencing_bound(*, lease: float, interval: float, election_timeout: float, fence_stop_grace: float) -> float:
    """The latest a cut-off slave's containers may still run, counted from its last
    heartbeat the leader received (see :meth:`MasterSettings.fencing_bound`)."""
    deposed = DEPOSED_LEADER_ELECTION_TIMEOUTS * election_timeout
    return lease + deposed + interval + math.ceil(fence_stop_grace) + FENCE_FANOUT_MARGIN


def max_factor(timing: Timing) -> float:
    """The largest scale: a grant's dead-after never outlives GC's patience with a dead slave."""
    return max(1.0, timing.node_gc_after / timing.node_dead_after)


def terms_for(timing: Timing, live_slaves: int, stagger: float) -> HeartbeatTerms:
    """The terms for one reply when ``live_slaves`` slaves heartbeat; ``stagger`` in [0, 1]."""
    stagger = min(1.0, max(0.0, stagger))
    base = timing.heartbeat_interval
    spread = max(0, live_slaves) / timing.max_heartbeats_per_second * (1.0 + STAGGER * stagger)
    if spread <= base:
        return HeartbeatTerms(base, timing.slave_lease, timing.suspect_after, timing.node_dead_after)
    factor = min(spread / base, max_factor(timing))
    return HeartbeatTerms(
        interval=base * factor,
        lease=timing.slave_lease * factor,
        suspect_after=timing.suspect_after * factor,
        dead_after=timing.node_dead_after * factor,
        factor=factor,
    )


def longest(timing: Timing, known_slaves: int) -> HeartbeatTerms:
    """The longest terms any leader may have granted while at most ``known_slaves`` were live:
    what a new leader assumes of every slave until it has heard from it."""
    return terms_for(timing, known_slaves, 1.0)
