"""The fault campaign's plan is a function of its seed, its outage lengths fall
on the side of each timeout their band names, overlapping faults never share a
target (support.faults), and the judge's excuses stay within the design's known
limits (support.campaign)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from support.campaign import plan_jobs
from support.faults import DEATHS, KINDS, SLAVE_KINDS, Timing, plan

timings = st.builds(Timing, heartbeat=st.sampled_from([0.3, 0.5, 1.0]), lease=st.floats(2.5, 6),
                    fence_grace=st.sampled_from([0.0, 1.0, 3.0]), dead_after=st.floats(12, 20))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), timings)
def test_one_seed_one_campaign_with_bands_on_the_right_side(seed: int, timing: Timing) -> None:
    first = plan(random.Random(seed), timing, ["a", "b", "c"], 8)
    assert first == plan(random.Random(seed), timing, ["a", "b", "c"], 8)
    def on_its_side(band: str, duration: float) -> None:
        if band == "short":
            assert duration < timing.lease
        elif band == "blip":
            assert timing.lease + timing.fence_grace < duration < timing.dead_after
        else:
            assert band == "long" and duration > timing.dead_after

    for previous, fault in zip([None, *first[:-1]], first, strict=True):
        assert fault.kind in KINDS and fault.slave in ("a", "b", "c") and 0 <= fault.pick < 1
        if fault.kind in ("slave_kill", "slave_freeze", "slave_cut", "machine_death", "engine_unreachable"):
            on_its_side(fault.band, fault.duration)
        if fault.kind == "drain":
            assert fault.deadline is None or 1.0 <= fault.deadline <= 4.0
            assert fault.duration >= timing.lease + (fault.deadline or 0.0)
            if fault.death is not None:
                assert fault.death.kind in DEATHS and 0 < fault.death.after < fault.duration
                on_its_side(fault.death.band, fault.death.duration)
                assert fault.hold >= fault.death.after + fault.death.duration
        else:
            assert fault.deadline is None and fault.death is None
        if fault.overlap is not None:
            # Two at once at most, never on one slave, never two leaders down.
            assert previous is not None and previous.overlap is None
            assert 0 < fault.overlap < max(previous.hold, 0.5)
            assert not (fault.kind == previous.kind == "leader_kill")
            if fault.kind in SLAVE_KINDS and previous.kind in SLAVE_KINDS:
                assert fault.slave != previous.slave
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


def test_an_engine_away_past_node_dead_after_excuses_an_overlap_only_until_it_answers() -> None:
    """The agent ran and held its lease, but could stop nothing without its engine: the
    same known limit as a frozen agent, and it must have killed the copy soon after."""
    from support.campaign import excused_overlap
    from support.docker_events import Overlap, RunInterval
    from support.faults import Outage

    timing = Timing(fence_grace=1.0, dead_after=7.0)
    copy = RunInterval("c2", "j", "j-2", "s-b", 10.0, float("inf"))
    away = Outage("s-a", "engine_unreachable", 2.0, 12.0)  # answering at 12: killed by 15
    assert away.engine_away and not away.agent_stopped and away.nothing_could_stop_its_containers
    assert excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 14.5), copy), [away], timing)
    assert not excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 15.5), copy), [away], timing)
    # Back before node_dead_after: the masters lost nothing, so nothing excuses a copy.
    blip = Outage("s-a", "engine_unreachable", 6.0, 11.0)
    assert not excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 11.5), copy), [blip], timing)
    # An outage of another slave excuses nothing here.
    other = Outage("s-c", "engine_unreachable", 2.0, 12.0)
    assert not excused_overlap(Overlap("j", RunInterval("c1", "j", "j-1", "s-a", 0.0, 14.5), copy), [other], timing)


def test_a_rerun_is_excused_by_a_lost_slave_or_by_an_excused_overlap_only() -> None:
    from support.campaign import excused_rerun
    from support.docker_events import RunInterval
    from support.faults import Outage

    timing = Timing(heartbeat=0.3, dead_after=7.0)
    stale = RunInterval("c1", "j", "j-1", "s-a", 0.0, 9.0, exit_code=0)
    copy = RunInterval("c2", "j", "j-2", "s-b", 8.0, 12.0, exit_code=0)
    assert excused_rerun(stale, [Outage("s-a", "slave_freeze", 5.0, 13.0)], timing)  # exit 0 unreported
    assert not excused_rerun(stale, [Outage("s-a", "slave_freeze", 11.0, 19.0)], timing)  # reported in time
    assert not excused_rerun(stale, [Outage("s-a", "slave_freeze", 5.0, 9.5)], timing)  # too short to be lost
    # The copy elsewhere finished first, the stale one (its engine away) later: excused with the overlap.
    early_copy = RunInterval("c2", "j", "j-2", "s-b", 6.0, 8.5, exit_code=0)
    assert excused_rerun(early_copy, [], timing, frozenset({frozenset(("c1", "c2"))}), [stale])
    assert not excused_rerun(early_copy, [], timing, frozenset(), [stale])
    assert not excused_rerun(copy, [], timing, frozenset({frozenset(("c1", "c3"))}), [stale])


def test_a_placement_on_a_slave_is_judged_against_its_drain_windows() -> None:
    from datetime import UTC, datetime

    from support.campaign import placed_while_draining

    def event(state: str, node: str | None, at: float) -> dict:
        return {"state": state, "node_id": node, "attempt": 1, "at": datetime.fromtimestamp(at, UTC).isoformat()}

    drains = [("s-a", 100.0, 110.0)]
    jobs = {
        "before": {"events": [event("scheduled", "s-a", 99.5), event("running", "s-a", 100.5)]},
        "elsewhere": {"events": [event("scheduled", "s-b", 105.0)]},
        "after": {"events": [event("scheduled", "s-a", 110.5)]},
        "during": {"events": [event("pending", None, 104.0), event("scheduled", "s-a", 105.0)]},
    }
    (found,) = placed_while_draining(jobs, drains, origin_wall=0.0)
    assert found.startswith("during placed on s-a at 105.00s")
