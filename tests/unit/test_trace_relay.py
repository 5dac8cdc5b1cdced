"""The merged trace's rules without sockets: its cursor (hostile input), and what
a relay sends of the masters' answers: oldest first in a replay, nothing twice,
a gap where a master's ring lost events, a status only when it changed, and one
word when a master stops answering and when it is back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.master import trace_relay
from claud.master.trace_relay import Batch, CursorError, Relay, format_cursor, parse_cursor

cursors = st.dictionaries(st.integers(0, 10**9), st.integers(0, trace_relay.MAX_TRACE_ID), max_size=16)


@given(cursors)
def test_a_cursor_reads_back_as_written(cursor: dict[int, int]) -> None:
    assert parse_cursor(format_cursor(cursor)) == cursor


@given(st.text(max_size=600))
def test_any_text_is_a_cursor_or_refused_with_why(raw: str) -> None:
    try:
        cursor = parse_cursor(raw)
    except CursorError as exc:
        assert "cursor" in str(exc)
        return
    assert all(0 <= last <= trace_relay.MAX_TRACE_ID for last in cursor.values())
    assert len(cursor) <= trace_relay.MAX_CURSOR_MASTERS


@pytest.mark.parametrize("bad", ["1", "1:", ":1", "a:1", "1:a", "1:2,", "1:-2", "\uff11:2", "1:" + "9" * 17])
def test_what_is_no_cursor(bad: str) -> None:
    with pytest.raises(CursorError):
        parse_cursor(bad)


def event(master: int, id_: int, at: float, kind: str = "append") -> dict[str, Any]:
    return {"master": master, "id": id_, "at": at, "kind": kind}


def sent(chunks: list[str]) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(kind, id, data) of each server-sent event."""
    out = []
    for chunk in chunks:
        fields = dict(line.split(": ", 1) for line in chunk.strip().split("\n"))
        out.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return out


def relay(cursor: dict[int, int] | None = None) -> Relay:
    return Relay(master=None, cursor=cursor or {}, connect=None)  # type: ignore[arg-type]  # _send needs none


def test_a_replay_is_sent_oldest_first_whichever_master_answered_first() -> None:
    r = relay()
    out = sent(r._send([Batch(2, [event(2, 10, 5.0), event(2, 11, 7.0)], 10, {"role": "follower"}),
                        Batch(1, [event(1, 50, 6.0)], 50, {"role": "leader"})], merge=True))  # fmt: skip
    traced = [(data["master"], data["id"]) for kind, _, data in out if kind == "append"]
    assert traced == [(2, 10), (1, 50), (2, 11)]
    assert [cursor for kind, cursor, _ in out if kind == "append"][-1] == "1:50,2:11"
    assert {data["master"] for kind, _, data in out if kind == "status"} == {1, 2}


def test_nothing_at_or_before_the_cursor_is_sent_again() -> None:
    r = relay({1: 50})
    out = sent(r._send([Batch(1, [event(1, 50, 1.0), event(1, 51, 2.0)], 40)], merge=False))
    assert [data["id"] for kind, _, data in out if kind == "append"] == [51]


def test_a_gap_names_the_master_and_a_restart() -> None:
    r = relay({1: 50, 2: 10})
    out = sent(r._send([Batch(1, [event(1, 60, 1.0)], 40), Batch(2, [event(2, 900, 1.0)], 800)], merge=False))
    gaps = {data["master"]: data for kind, _, data in out if kind == "trace.gap"}
    assert gaps[1]["missed"] == 9 and not gaps[1]["restarted"]
    assert gaps[2]["restarted"] and gaps[2]["missed"] is None


def test_a_lost_master_is_said_once_and_its_return_once() -> None:
    r = relay()
    kinds = [k for k, _, _ in sent(r._send([Batch(3, None), Batch(3, None)], merge=False))]
    kinds += [k for k, _, _ in sent(r._send([Batch(3, [], 1, {"role": "follower"})], merge=False))]
    assert kinds == ["relay.lost", "relay.back", "status"]


def test_a_status_is_sent_when_it_changed_and_not_more_often_than_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(trace_relay.time, "monotonic", lambda: now[0])
    r = relay()

    def statuses(status: dict[str, Any]) -> int:
        return sum(k == "status" for k, _, _ in sent(r._send([Batch(1, [], 1, status)], merge=False)))

    assert statuses({"term": 1}) == 1
    now[0] += 10
    assert statuses({"term": 1}) == 0  # unchanged
    assert statuses({"term": 2}) == 1
    now[0] += trace_relay.STATUS_EVERY / 2
    assert statuses({"term": 3}) == 0  # changed, but too soon
    now[0] += trace_relay.STATUS_EVERY
    assert statuses({"term": 3}) == 1
