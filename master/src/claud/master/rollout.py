"""Which allocations a rolling update replaces now, and when it is over: one pure decision.

The leader's rollout loop asks :func:`decide` about each job whose current
version is rolling out, and proposes what it answers (``ops.RolloutStep``);
apply checks that the version is still the job's and the rollout still
running, so a decision made on older tables changes nothing. Keeping it a
function of values (no clock but the ``now`` given, no I/O) is what lets the
unit tests pin it down for every mix of allocation states.

The rules, after Nomad's deployments:

- an allocation counts as *done* once it runs the version and has been healthy
  (running, and passing its check if it has one) for ``min_healthy_time``, or
  once it has finished (a batch job's; nothing is left to replace);
- at most ``max_parallel`` allocations are *in flight* (replaced, or being
  replaced, and not done yet); the next ones are replaced as those finish,
  the ones not running first (replacing them costs no service);
- one in flight that is not healthy ``healthy_deadline`` after it was replaced
  fails the rollout, which then stops replacing (``auto_revert`` is apply's:
  it makes the last stable version the next one);
- every allocation done: the rollout is complete and the version stable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from claud.api import JobState, RolloutState, UpdatePolicy

__all__ = ["AllocationFacts", "Decision", "decide"]


@dataclass(frozen=True, slots=True)
class AllocationFacts:
    """What the decision needs of one allocation row."""

    index: int
    version: int
    #: Being stopped to come back at this version.
    next_version: int | None
    state: JobState
    #: Since when it is healthy; None: it is not.
    healthy_since: datetime | None
    #: When the rollout replaced it (None: it was made at its version, e.g. by a scale-up).
    replaced_at: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    replace: tuple[int, ...] = ()
    outcome: RolloutState | None = None
    message: str = ""


def decide(
    version: int,
    policy: UpdatePolicy,
    count: int,
    started_at: datetime,
    allocations: Sequence[AllocationFacts],
    now: datetime,
) -> Decision | None:
    """What to do now about the rollout of ``version`` (None: nothing, wait)."""
    wanted = [a for a in allocations if a.index < count]

    def at_version(a: AllocationFacts) -> bool:
        return a.version == version and a.next_version is None

    def done(a: AllocationFacts) -> bool:
        if a.state.terminal:
            return True  # a batch allocation that finished: nothing left to replace
        return (
            at_version(a) and a.healthy_since is not None
            and (now - a.healthy_since).total_seconds() >= policy.min_healthy_time
        )

    if len(wanted) >= count and all(done(a) for a in wanted):
        return Decision(outcome=RolloutState.COMPLETE, message=f"all {count} allocations healthy at version {version}")
    in_flight = [a for a in wanted if version in (a.version, a.next_version) and not done(a)]
    for a in in_flight:
        since = a.replaced_at or started_at
        if a.healthy_since is None and (now - since).total_seconds() > policy.healthy_deadline:
            return Decision(
                outcome=RolloutState.FAILED,
                message=f"allocation {a.index} not healthy within {policy.healthy_deadline:g}s "
                f"(it is {a.state.value})",
            )
    budget = policy.max_parallel - len(in_flight)
    if budget <= 0:
        return None
    waiting = sorted(
        (a for a in wanted if version not in (a.version, a.next_version) and not a.state.terminal),
        key=lambda a: (a.state is JobState.RUNNING, a.index),
    )
    replace = tuple(a.index for a in waiting[:budget])
    return Decision(replace=replace) if replace else None
