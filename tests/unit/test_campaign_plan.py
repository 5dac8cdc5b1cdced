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
