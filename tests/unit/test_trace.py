"""The consensus trace: bounded, numbered, resumable, and not flooded by heartbeats."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given
from hypothesis import strategies as st

from claud.master.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    PreVote,
    PreVoteReply,
    RequestVoteReply,
)
from claud.master.storage import Entry
from claud.master.trace import SAMPLE_SECONDS, Trace, trace_stream


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def trace(capacity: int = 2_000) -> tuple[Trace, Clock]:
    clock = Clock()
    return Trace(1, capacity, clock=clock, wall=lambda: 1_700_000_000.0 + clock.now, first_id=1), clock


@given(capacity=st.integers(1, 50), recorded=st.integers(0, 200))
def test_the_ring_is_bounded_and_ids_only_grow(capacity: int, recorded: int) -> None:
    t, _ = trace(capacity)
    for i in range(recorded):
        t.record("commit", index=i)
    kept = t.after(0)
    assert len(kept) == min(capacity, recorded)
    assert [e.id for e in kept] == list(range(recorded - len(kept) + 1, recorded + 1))
    assert t.last_id == recorded


@given(recorded=st.integers(0, 60), last=st.integers(0, 80))
def test_resuming_after_an_id_gives_exactly_what_followed(recorded: int, last: int) -> None:
    t, _ = trace(25)
    for i in range(recorded):
        t.record("commit", index=i)
    resumed = [e.id for e in t.after(last)]
    oldest = max(1, recorded - 24)
    assert resumed == list(range(max(last + 1, oldest), recorded + 1))


def test_an_event_carries_its_master_kind_time_and_fields() -> None:
    t, _ = trace()
    event = t.record("role", role="leader", term=3)
    assert event is not None
    assert event.as_dict() == {"id": 1, "at": 1_700_000_100.0, "master": 1, "kind": "role", "role": "leader",
                               "term": 3}  # fmt: skip


def test_heartbeats_are_sampled_per_follower_and_entries_never() -> None:
    t, clock = trace()
    heartbeat = {"src": 1, "term": 2, "prev_index": 5, "prev_term": 2, "entries": (), "commit": 5}
    for _ in range(10):  # a heartbeat round every 0.1 s to two followers
        for peer in (2, 3):
            t.message(AppendEntries(dst=peer, **heartbeat), "out")  # type: ignore[arg-type]
        clock.now += 0.1
    sent = [e for e in t.after(0) if e.kind == "append"]
    assert [(e.fields["dst"], e.fields["entries"]) for e in sent] == [(2, 0), (3, 0)]
    clock.now += SAMPLE_SECONDS
    t.message(AppendEntries(src=1, dst=2, term=2, prev_index=5, prev_term=2, entries=(), commit=5), "out")
    for _ in range(3):  # every append that carries entries is kept
        t.message(AppendEntries(src=1, dst=2, term=2, prev_index=5, prev_term=2, entries=(Entry(6, 2, "x"),),
                                commit=5), "out")  # fmt: skip
    assert [e.fields["entries"] for e in t.after(0) if e.kind == "append"] == [0, 0, 0, 1, 1, 1]
    assert t.dropped == 18


def test_answers_that_move_nothing_are_sampled_refusals_and_progress_never() -> None:
    t, _ = trace()

    def answer(match: int, success: bool = True) -> None:
        t.message(AppendEntriesReply(src=2, dst=1, term=2, success=success, match_index=match), "in")

    for match in (5, 5, 5, 6, 6, 7):
        answer(match)
    answer(0, success=False)
    answer(0, success=False)
    kept = [(e.fields["match_index"], e.fields["success"]) for e in t.after(0)]
    # The first echo of a match index is kept (a sample a second), the next ones not.
    assert kept == [(5, True), (5, True), (6, True), (7, True), (0, False), (0, False)]


def test_votes_are_all_kept_with_their_direction() -> None:
    t, _ = trace()
    t.message(PreVote(src=2, dst=1, term=4, last_index=3, last_term=2), "in")
    t.message(PreVoteReply(src=1, dst=2, term=4, granted=True), "out")
    t.message(RequestVoteReply(src=1, dst=3, term=4, granted=False), "out")
    kept = [(e.kind, e.fields["dir"], e.fields["pre"]) for e in t.after(0)]
    assert kept == [("vote.request", "in", True), ("vote.granted", "out", True), ("vote.refused", "out", False)]


def test_slave_heartbeats_are_sampled_per_slave() -> None:
    t, clock = trace()
    for _ in range(5):
        for slave in ("s1", "s2"):
            t.record("slave.heartbeat", sample=("slave.heartbeat", slave), slave=slave)
        clock.now += 0.3
    assert [e.fields["slave"] for e in t.after(0)] == ["s1", "s2", "s1", "s2"]


def test_a_follower_gets_the_kept_events_then_live_ones_then_keepalives() -> None:
    async def run() -> list[int | None]:
        t, _ = trace()
        t.record("commit", index=1)
        t.record("commit", index=2)
        seen: list[int | None] = []
        follower = t.follow(1, keepalive=0.05)
        seen.append((await anext(follower)).id)  # type: ignore[union-attr]
        waiting = asyncio.ensure_future(anext(follower))
        await asyncio.sleep(0)
        t.record("commit", index=3)
        seen.append((await waiting).id)  # type: ignore[union-attr]
        seen.append(await anext(follower))  # nothing new: a keep-alive
        await follower.aclose()
        return seen

    assert asyncio.run(run()) == [2, 3, None]


def test_the_sampler_forgets_rather_than_grows() -> None:
    import claud.master.trace as trace_module

    t, _ = trace()
    for i in range(trace_module.MAX_SAMPLE_KEYS + 5):
        t.record("slave.heartbeat", sample=("slave.heartbeat", f"s{i}"), slave=f"s{i}")
    assert len(t._sampled_at) <= trace_module.MAX_SAMPLE_KEYS
    assert t.last_id == trace_module.MAX_SAMPLE_KEYS + 5


def test_the_stream_names_ids_and_kinds_and_says_what_fell_out_of_the_ring() -> None:
    async def run() -> list[str]:
        t, _ = trace(3)
        for i in range(6):
            t.record("commit", index=i)
        stream = trace_stream(t, 1, keepalive=0.01)
        blocks = [await anext(stream) for _ in range(6)]
        await stream.aclose()
        return blocks

    connected, gap, *events, keepalive = asyncio.run(run())
    assert connected == ": connected\n\n"
    assert gap == 'event: trace.gap\ndata: {"after": 1, "first": 4, "missed": 2, "restarted": false}\n\n'
    assert [b.split("\n")[:2] for b in events] == [[f"id: {i}", "event: commit"] for i in (4, 5, 6)]
    assert json.loads(events[0].split("\n")[2].removeprefix("data: "))["index"] == 3
    assert keepalive == ": keep-alive\n\n"


def test_ids_start_from_the_clock_so_a_restarted_master_numbers_on() -> None:
    before = Trace(1, wall=lambda: 1_700_000_000.0)
    for _ in range(5):
        before.record("commit")
    after_restart = Trace(1, wall=lambda: 1_700_000_000.5)
    first = after_restart.record("commit")
    assert first is not None and first.id > before.last_id
    assert [e.id for e in after_restart.after(before.last_id)] == [first.id]
