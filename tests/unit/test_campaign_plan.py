"""The fault campaign's plan is a function of its seed, and its outage lengths
fall on the side of each timeout their band names (support.faults)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from support.campaign import plan_jobs
from support.faults import KINDS, Timing, plan

timings = st.builds(Timing, heartbeat=st.sampled_from([0.3, 0.5, 1.0]), lease=st.floats(2.5, 6),
                    fence_grace=st.sampled_from([0.0, 1.0, 3.0]), dead_after=st.floats(12, 20))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), timings)
def test_one_seed_one_campaign_with_bands_on_the_right_side(seed: int, timing: Timing) -> None:
    first = plan(random.Random(seed), timing, ["a", "b", "c"], 8)
    assert first == plan(random.Random(seed), timing, ["a", "b", "c"], 8)
    for fault in first:
        assert fault.kind in KINDS and fault.slave in ("a", "b", "c") and 0 <= fault.pick < 1
        if fault.kind in ("slave_kill", "slave_freeze", "slave_cut", "machine_death"):
            if fault.band == "short":
                assert fault.duration < timing.lease
            elif fault.band == "blip":
                assert timing.lease + timing.fence_grace < fault.duration < timing.dead_after
            else:
                assert fault.band == "long" and fault.duration > timing.dead_after
    jobs = plan_jobs(random.Random(seed), 10)
    assert jobs == plan_jobs(random.Random(seed), 10)
    for job in jobs:
        assert (job.spec.get("type") == "service") == (job.kind == "service")


def test_an_overlap_is_excused_only_while_the_agent_was_away() -> None:
    from support.campaign import excused_overlap
    from support.docker_events import Overlap, RunInterval
    from support.faults import Outage

    timing = Timing(fence_grace=1.0, dead_after=7.0)
    stale = RunInterval("c1", "j", "j-1", "s-a", 0.0, 40.0)
    copy = RunInterval("c2", "j", "j-2", "s-b", 10.0, float("inf"))
    away = Outage("s-a", "slave_kill", 2.0, 30.0)  # back at 30: must have stopped by 33
    assert not excused_overlap(Overlap("j", stale, copy), [away], timing)
    assert excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 32.5), copy), [away], timing)
    # Killed again soon after it came back: the two outages add up.
    again = Outage("s-a", "slave_kill", 31.0, 45.0)
    assert excused_overlap(Overlap("j", stale, copy), [away, again], timing)
    # Too short an outage for the masters to move the job: no excuse.
    assert not excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 12.0), copy),
                               [Outage("s-a", "slave_kill", 9.0, 12.0)], timing)
    # A cut leaves the agent running: it must fence, no excuse.
    assert not excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 32.5), copy),
                               [Outage("s-a", "slave_cut", 2.0, 30.0)], timing)
