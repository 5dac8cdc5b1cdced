"""The job and slave event stream resumes: every transition has an id (INDEX.K), the
broker keeps the latest for a reader that comes back, replays exactly what came after
its id, then goes live, and says ``gap`` when some of what it missed was not kept."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.master.events import EventBroker, parse_event_id
from claud.master.state import Change

AT = datetime(2026, 12, 2, tzinfo=UTC)


def change(index: int, job: str) -> Change:
    return Change("job", job, "running", AT, "s1", "", index)


async def read(broker: EventBroker, after: tuple[int, int] | None, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    stream = broker.subscribe(after)
    async for event in stream:
        if event is not None:
            events.append(event)
        if len(events) == count:
            break
    await stream.aclose()
    return events


def test_ids_number_each_entrys_transitions_and_a_resumed_reader_gets_the_rest_then_live() -> None:
    async def scenario() -> None:
        broker = EventBroker()
        broker.record([change(5, "a"), change(5, "b")])
        broker.record([change(7, "c")])
        reader = asyncio.create_task(read(broker, (5, 0), 3))
        await asyncio.sleep(0)
        broker.record([change(8, "d")])
        events = await reader
        assert [(e["event_id"], e["id"]) for e in events] == [("5.1", "b"), ("7.0", "c"), ("8.0", "d")]

    asyncio.run(scenario())


@given(entries=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=30),
       limit=st.integers(min_value=1, max_value=40), cut=st.integers(min_value=0, max_value=120))
def test_a_replay_is_exactly_what_followed_or_says_gap(entries: list[int], limit: int, cut: int) -> None:
    broker = EventBroker(replay_limit=limit)
    told: list[str] = []
    for index, count in enumerate(entries, start=1):
        broker.record([change(index, f"j{index}-{k}") for k in range(count)])
        told += [f"{index}.{k}" for k in range(count)]
    after = parse_event_id(told[min(cut, len(told) - 1)])
    replay, missed = broker.replay_after(after)
    wanted = [i for i in told if parse_event_id(i) > after]
    got = [e["event_id"] for e in replay]
    assert got == wanted[len(wanted) - len(got):]  # the newest of what followed, in order
    assert missed == (len(got) < len(wanted))


def test_a_transition_recorded_twice_is_told_once() -> None:
    broker = EventBroker()
    broker.record([change(3, "a")])
    broker.record([change(3, "a")])  # the same entry's changes again (e.g. after a snapshot install)
    assert [e["event_id"] for e in broker.replay_after((0, 0))[0]] == ["3.0"]


@pytest.mark.parametrize("bad", ["", "1", "1.", ".1", "01.0", "1.01", "-1.0", "1.0.0", "x.y", "9" * 19 + ".0"])
def test_anything_else_is_not_an_event_id(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event id"):
        parse_event_id(bad)
