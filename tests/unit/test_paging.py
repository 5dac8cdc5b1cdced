"""Pagination of the master's lists (claud.master.paging): orders, cursors, resumption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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
