"""Pagination of the master's lists (claud.master.paging): orders, cursors, resumption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claud.api import JobEvent, JobSpec, JobState
from claud.master import ops
from claud.master.paging import (
    InvalidCursor,
    JobListRenderer,
    decode_cursor,
    encode_cursor,
    events_page,
    from_micros,
    jobs_page,
    micros,
    nodes_page,
)
from claud.master.state import StateMachine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = JobSpec(name="p", image="claud/busybox")


def machine(*ids_and_offsets: tuple[str, float]) -> StateMachine:
    state = StateMachine()
    for index, (job_id, offset) in enumerate(ids_and_offsets, start=1):
        state.apply(index, ops.SubmitJob(at=T0 + timedelta(seconds=offset), job_id=job_id, spec=SPEC))
    return state


def walk(state: StateMachine, limit: int, wanted=None) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        found, cursor = jobs_page(state, wanted, cursor, limit)
        pages.append([job.id for job in found])
        if cursor is None:
            return pages


def test_jobs_come_by_creation_time_then_id_whatever_the_commit_order() -> None:
    state = machine(("b", 1), ("a", 1), ("c", 0), ("d", 2))
    assert [job.id for job in jobs_page(state, None, None, None)[0]] == ["c", "a", "b", "d"]
    assert walk(state, 3) == [["c", "a", "b"], ["d"]]
    assert walk(state, 2) == [["c", "a"], ["b", "d"]]  # the last page names no cursor
    assert walk(state, 1000) == [["c", "a", "b", "d"]]


def test_a_cursor_survives_jobs_added_and_filters() -> None:
    state = machine(*[(f"j{i}", i) for i in range(5)])
    first, cursor = jobs_page(state, None, None, 2)
    state.apply(99, ops.SubmitJob(at=T0 + timedelta(seconds=10), job_id="late", spec=SPEC))
    state.apply(100, ops.SubmitJob(at=T0 - timedelta(seconds=10), job_id="early", spec=SPEC))
    rest, _ = jobs_page(state, None, cursor, None)
    # None twice, none of the old ones missed.
    assert [j.id for j in first + rest] == ["j0", "j1", "j2", "j3", "j4", "late"]
    pending = walk(state, 2, wanted=lambda job: job.state == JobState.PENDING and job.id != "j2")
    assert [job_id for page in pending for job_id in page] == ["early", "j0", "j1", "j3", "j4", "late"]


@pytest.mark.parametrize(
    "cursor", ["", "!!", "e30", encode_cursor([1]), encode_cursor(["x", "y"]), encode_cursor([True, "x"]),
               encode_cursor([1.5, "x"]), encode_cursor([10**30, "x"]), "W" * 5 + "=", "\ud800"]
)
def test_a_cursor_the_masters_did_not_hand_out_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        jobs_page(machine(("a", 0)), None, cursor, 1)


def test_cursors_are_opaque_and_exact() -> None:
    when = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
    assert from_micros(micros(when)) == when
    cursor = encode_cursor([micros(when), "abc"])
    assert "=" not in cursor and "abc" not in cursor
    assert decode_cursor(cursor, (int, str)) == [micros(when), "abc"]


def test_events_page_oldest_first_and_resume_after_older_ones_are_dropped() -> None:
    events = [JobEvent(at=T0 + timedelta(seconds=s), state=JobState.PENDING, message=str(i))
              for i, s in enumerate([0, 1, 1, 1, 2, 3])]  # three in one commit
    seen, cursor = [], None
    while True:
        page, cursor = events_page(events, cursor, 2)
        seen += [e.message for e in page]
        if cursor is None:
            break
    assert seen == ["0", "1", "2", "3", "4", "5"]
    page, cursor = events_page(events, None, 3)  # ends inside the commit at t=1
    assert [e.message for e in page] == ["0", "1", "2"]
    assert [e.message for e in events_page(events[1:], cursor, None)[0]] == ["3", "4", "5"]  # "0" dropped meanwhile
    assert [e.message for e in events_page(events[4:], cursor, None)[0]] == ["4", "5"]  # the whole commit dropped


def test_nodes_masters_by_numeric_id_then_slaves_by_id() -> None:
    items = [(1, "s2", "s2"), (0, "10", "m10"), (1, "s1", "s1"), (0, "2", "m2")]
    assert nodes_page(items, None, None) == (["m2", "m10", "s1", "s2"], None)
    first, cursor = nodes_page(items, None, 3)
    assert first == ["m2", "m10", "s1"]
    assert nodes_page([*items, (1, "s0", "s0")], cursor, 3) == (["s2"], None)


def test_the_list_renderer_keeps_a_rendering_until_the_row_changes() -> None:
    state = machine(("a", 0), ("b", 1))
    renderer = JobListRenderer()
    body = renderer.body(state, list(state.jobs.values()), 7, None)
    assert body.startswith(b'{"jobs":[{') and body.endswith(b'],"index":7,"next":null}')
    job = state.jobs["a"]
    kept = renderer.render(state, job)
    assert renderer.render(state, job) is kept
    job.pending_reason = "no room"
    assert b"no room" in renderer.render(state, job)
    assert renderer.render(state, job) == state.job_view(job, with_events=False).model_dump_json().encode()


# ------------------------------------------- the kept order against a sort of the table


def sorted_jobs_page(state: StateMachine, wanted, cursor: str | None, limit: int | None):
    """The straightforward page: every job sorted, filtered, bisected (what jobs_page did before
    the state machine kept the order)."""
    import bisect

    heads = (job for job in state.jobs.values() if job.index == 0)
    jobs = sorted(heads if wanted is None else filter(wanted, heads), key=lambda job: (job.created_at, job.id))
    start = 0
    if cursor is not None:
        at, job_id = decode_cursor(cursor, (int, str))
        start = bisect.bisect_right(jobs, (from_micros(at), job_id), key=lambda job: (job.created_at, job.id))
    if limit is None:
        return jobs[start:], None
    chosen = jobs[start:start + limit]
    more = start + limit < len(jobs)
    return chosen, encode_cursor([micros(chosen[-1].created_at), chosen[-1].id]) if more and chosen else None


job_ops = st.lists(
    st.one_of(
        # A submit at a time that may step back (another leader's clock) or repeat one (ties by id).
        st.tuples(st.just("submit"), st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), st.integers(-3, 6),
                  st.integers(1, 3)),
        st.tuples(st.just("stop"), st.integers(0, 20)),
        st.tuples(st.just("gc"), st.integers(0, 2)),
        st.tuples(st.just("restore"),),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_ops, st.integers(1, 5), st.sampled_from([None, JobState.PENDING, JobState.STOPPED]), st.data())
def test_pages_from_the_kept_order_are_those_of_a_sort(steps, limit, state_filter, data) -> None:
    state, made = StateMachine(), 0
    for index, step in enumerate(steps, start=1):
        match step:
            case ("submit", name, offset, count):
                made += 1
                spec = SPEC.model_copy(update={"count": count})
                state.apply(index, ops.SubmitJob(at=T0 + timedelta(seconds=offset), job_id=f"{name}{made % 3}",
                                                 spec=spec))
            case ("stop", n):
                heads = [job_id for job_id, job in state.jobs.items() if job.index == 0]
                if heads:
                    state.apply(index, ops.StopJob(at=T0, job_id=heads[n % len(heads)]))
            case ("gc", keep):
                garbage = state.garbage(T0 + timedelta(days=1), keep, T0, 100)
                state.apply(index, ops.CollectGarbage(
                    at=T0, job_ids=garbage.job_ids, slave_ids=[], jobs_finished_before=T0 + timedelta(days=1),
                    keep_jobs=keep, slaves_dead_before=T0,
                ))
            case ("restore",):
                state = StateMachine.from_snapshot(state.to_snapshot())
    wanted = None if state_filter is None else (lambda job: state.state_of(job) == state_filter)
    for page_limit in (None, limit):
        assert jobs_page(state, wanted, None, page_limit) == sorted_jobs_page(state, wanted, None, page_limit)
    # A walk, and cursors the walk never handed out (a job since removed, a time between jobs).
    cursor = None
    while True:
        page = jobs_page(state, wanted, cursor, limit)
        assert page == sorted_jobs_page(state, wanted, cursor, limit)
        if page[1] is None:
            break
        cursor = page[1]
    odd = encode_cursor([micros(T0) + data.draw(st.integers(-4_000_000, 7_000_000)),
                         data.draw(st.sampled_from(["", "a1", "b", "c2", "zz"]))])
    assert jobs_page(state, wanted, odd, limit) == sorted_jobs_page(state, wanted, odd, limit)
