"""The Docker-events judge, on synthetic histories: it must rebuild exactly the
running intervals and find exactly the overlaps, whatever the interleaving of
containers, jobs and slaves in the record."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from support.docker_events import (
    ContainerEvent,
    overlaps,
    parse_event,
    run_intervals,
    successful_exits,
)

# A container's life on an integer clock: (start, end or None for still running,
# exit code, pauses inside it). Integer times let the oracle below sample every
# half-second point in between and so check overlap without the formula under test.
Life = tuple[str, str, int, int | None, int | None, list[tuple[int, int]]]


@st.composite
def lives(draw: st.DrawFn) -> list[Life]:
    n_jobs = draw(st.integers(1, 4))
    out: list[Life] = []
    for c in range(draw(st.integers(0, 12))):
        job = f"j{draw(st.integers(0, n_jobs - 1))}"
        start = draw(st.integers(0, 40))
        end = draw(st.one_of(st.none(), st.integers(start, start + 20)))
        code = draw(st.sampled_from([0, 1, 137, 143])) if end is not None else None
        pauses: list[tuple[int, int]] = []
        if end is not None and end - start >= 2 and draw(st.booleans()):
            p = draw(st.integers(start, end - 1))
            pauses.append((p, draw(st.integers(p, end))))
        out.append((f"c{c}", job, start, end, code, pauses))
    return out


def events_of(life: Life, seq0: int) -> list[ContainerEvent]:
    cid, job, start, end, code, pauses = life
    labels = dict(job_id=job, alloc_id=f"{job}-{cid}", slave_id=f"s{int(cid[1:]) % 3}")
    ev = [ContainerEvent(start, seq0, "start", cid, **labels)]
    for a, b in pauses:
        ev += [ContainerEvent(a, seq0 + 1, "pause", cid, **labels),
               ContainerEvent(b, seq0 + 2, "unpause", cid, **labels)]
    if end is not None:
        # What `docker stop` records: kill (SIGTERM), maybe kill (SIGKILL), die, then perhaps destroy.
        ev += [ContainerEvent(end, seq0 + 3, "kill", cid, signal=15, **labels),
               ContainerEvent(end, seq0 + 4, "die", cid, exit_code=code, **labels),
               ContainerEvent(end, seq0 + 5, "destroy", cid, **labels)]
    return ev


def oracle_overlapping_pairs(all_lives: list[Life]) -> set[tuple[str, frozenset[str]]]:
    """Brute force: a pair overlaps iff some half-integer instant sees both running."""
    pairs: set[tuple[str, frozenset[str]]] = set()
    horizon = 100
    for t2 in range(0, 2 * horizon):
        t = t2 / 2
        running: dict[str, list[str]] = {}
        for cid, job, start, end, _code, _p in all_lives:
            if start <= t < (math.inf if end is None else end):
                running.setdefault(job, []).append(cid)
        for job, cids in running.items():
            for i, a in enumerate(cids):
                for b in cids[i + 1:]:
                    pairs.add((job, frozenset({a, b})))
    return pairs


@settings(max_examples=200, deadline=None)
@given(lives(), st.randoms(use_true_random=False))
def test_intervals_and_overlaps_whatever_the_interleaving(all_lives: list[Life], rnd: random.Random) -> None:
    events = [e for i, life in enumerate(all_lives) for e in events_of(life, 10 * i)]
    rnd.shuffle(events)  # the record of several slaves, merged in any order
    intervals = run_intervals(events)

    got = {(i.container_id, i.start, i.end) for i in intervals}
    want = {(cid, float(start), math.inf if end is None else float(end)) for cid, _j, start, end, _c, _p in all_lives}
    assert got == want
    for interval in intervals:
        life = next(life for life in all_lives if life[0] == interval.container_id)
        assert interval.exit_code == life[4]
        assert interval.paused == [(float(a), float(b)) for a, b in life[5]]

    found = {(o.job_id, frozenset({o.first.container_id, o.second.container_id})) for o in overlaps(intervals)}
    assert found == oracle_overlapping_pairs(all_lives)
    for o in overlaps(intervals):
        assert o.seconds > 0

    zeros = successful_exits(intervals)
    for job, runs in zeros.items():
        assert sorted(r.container_id for r in runs) == sorted(
            cid for cid, j, _s, end, code, _p in all_lives if j == job and end is not None and code == 0)


def test_a_hand_over_at_one_instant_is_not_an_overlap() -> None:
    a = dict(job_id="j", alloc_id="j-1", slave_id="s1")
    b = dict(job_id="j", alloc_id="j-2", slave_id="s2")
    events = [ContainerEvent(1.0, 0, "start", "A", **a), ContainerEvent(5.0, 1, "die", "A", exit_code=137, **a),
              ContainerEvent(5.0, 2, "start", "B", **b)]
    assert overlaps(run_intervals(events)) == []
    events += [ContainerEvent(4.999, 3, "start", "C", **b), ContainerEvent(5.0, 4, "die", "C", exit_code=0, **b)]
    [overlap] = overlaps(run_intervals(events))
    assert {overlap.first.container_id, overlap.second.container_id} == {"A", "C"}
    assert abs(overlap.seconds - 0.001) < 1e-9


def test_a_paused_container_still_counts_as_running() -> None:
    a = dict(job_id="j", alloc_id="j-1", slave_id="s1")
    b = dict(job_id="j", alloc_id="j-2", slave_id="s2")
    events = [ContainerEvent(1.0, 0, "start", "A", **a), ContainerEvent(2.0, 1, "pause", "A", **a),
              ContainerEvent(3.0, 2, "start", "B", **b), ContainerEvent(6.0, 3, "unpause", "A", **a)]
    [overlap] = overlaps(run_intervals(events))
    assert overlap.seconds == math.inf


def test_a_container_already_running_when_the_record_began_opens_at_the_window() -> None:
    a = dict(job_id="j", alloc_id="j-1", slave_id="s1")
    b = dict(job_id="j", alloc_id="j-2", slave_id="s2")
    events = [ContainerEvent(3.0, 0, "die", "A", exit_code=0, **a), ContainerEvent(2.0, 1, "start", "B", **b)]
    [interval_a, interval_b] = sorted(run_intervals(events, window_start=1.0), key=lambda i: i.container_id)
    assert (interval_a.start, interval_a.end) == (1.0, 3.0)
    assert len(overlaps([interval_a, interval_b])) == 1


def test_a_destroy_without_die_closes_the_interval_and_a_restart_opens_another() -> None:
    a = dict(job_id="j", alloc_id="j-1", slave_id="s1")
    events = [ContainerEvent(1.0, 0, "start", "A", **a), ContainerEvent(2.0, 1, "die", "A", exit_code=1, **a),
              ContainerEvent(3.0, 2, "start", "A", **a), ContainerEvent(4.0, 3, "destroy", "A", **a)]
    assert [(i.start, i.end) for i in run_intervals(events)] == [(1.0, 2.0), (3.0, 4.0)]


def test_parse_event_reads_the_engine_record_and_ignores_the_rest() -> None:
    raw = {"Type": "container", "Action": "die", "timeNano": 1700000000123456789, "time": 1700000000,
           "Actor": {"ID": "abc", "Attributes": {"claud.job": "j1", "claud.alloc": "j1-2", "claud.slave": "s1",
                                                 "exitCode": "137", "image": "busybox"}}}
    event = parse_event(raw, 7)
    assert event == ContainerEvent(1700000000.1234567, 7, "die", "abc", "j1", "j1-2", "s1", exit_code=137)
    assert parse_event({**raw, "Action": "exec_start: sh -c true"}) is None
    assert parse_event({**raw, "Type": "network"}) is None
    assert parse_event({**raw, "Actor": {"ID": "abc", "Attributes": {"image": "busybox"}}}) is None
    kill = parse_event({**raw, "Action": "kill",
                        "Actor": {"ID": "abc", "Attributes": {"claud.job": "j1", "signal": "9"}}})
    assert kill is not None and kill.signal == 9 and kill.exit_code is None
