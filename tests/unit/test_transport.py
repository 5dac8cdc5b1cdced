"""The master<->master protocol end to end, without a network: what one end
writes, the other reads back as the same operations, outcomes and refusals."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from claud.api import JobSpec
from claud.master import ops, transport
from claud.master.raft_config import ChangeKind, ConfChange, ConfChangeRefused
from claud.master.raft_messages import TimeoutNow, message_to_dict
from claud.master.state import Outcome
from claud.master.transport import LeaderUnavailable, MalformedRequest, NotCommitted, NotLeader, OutcomeUnknown

AT = datetime(2026, 1, 1, tzinfo=UTC)


def submit(job_id: str) -> ops.SubmitJob:
    return ops.SubmitJob(at=AT, job_id=job_id, spec=JobSpec(name=job_id, image="claud/busybox"))


class FakeLeader:
    """The part of a replicated log the leader's end of PROPOSE_PATH uses."""

    def __init__(self, answers: dict[str, Outcome | Exception], *, is_leader: bool = True) -> None:
        self.answers, self.is_leader = answers, is_leader
        self.leader_id, self.leader_address, self.commit_index = 1, "10.0.0.1:8700", 42

    async def propose_local(self, op: ops.Encoded) -> Outcome:
        assert isinstance(op.op, ops.SubmitJob) and op.data == ops.encode(op.op)
        answer = self.answers[op.op.job_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


def round_trip(leader: FakeLeader, batch: list[ops.Operation]) -> tuple[list[Outcome | Exception], int]:
    answer = asyncio.run(transport.answer_proposals(leader, transport.encode_proposals(batch)))  # type: ignore[arg-type]
    return transport.parse_proposal_answer(1, 200, json.dumps(answer).encode(), len(batch))


def test_a_forwarded_batch_comes_back_as_outcomes_and_the_same_refusals() -> None:
    leader = FakeLeader({
        "a": Outcome(ok=True, value=("a", True)),
        "b": NotCommitted("entry 7 was replaced"),
        "c": OutcomeUnknown("timed out"),
        "d": LeaderUnavailable("moving"),
    })
    results, index = round_trip(leader, [submit(j) for j in "abcd"])
    assert index == 42
    assert results[0] == Outcome(ok=True, value=("a", True))
    assert [(type(r), str(r)) for r in results[1:]] == [
        (NotCommitted, "entry 7 was replaced"), (OutcomeUnknown, "timed out"), (LeaderUnavailable, "moving"),
    ]


def test_a_forwarded_write_is_logged_as_the_follower_encoded_it_and_earlier_bodies_still_read() -> None:
    op = submit("a")
    [forwarded] = transport.decode_proposals(transport.encode_proposals([op]))
    assert forwarded.data == ops.encode(op) and forwarded.op == op
    # What a master of the earlier version forwards: the operations as JSON objects.
    [earlier] = transport.decode_proposals(('{"ops":[' + ops.encode(op) + "]}").encode())
    assert earlier == forwarded


def test_a_follower_refuses_a_forwarded_batch_and_names_the_leader() -> None:
    leader = FakeLeader({}, is_leader=False)
    with pytest.raises(NotLeader) as refused:
        asyncio.run(transport.answer_proposals(leader, transport.encode_proposals([submit("a")])))  # type: ignore[arg-type]
    assert (refused.value.leader_id, refused.value.leader_address) == (1, "10.0.0.1:8700")


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"ops":{"a":1}}', b'{"ops":[{"kind":"drop_tables"}]}', b'{"ops":[NaN]}',
             b'{"entries":{"a":1}}', b'{"entries":[{"kind":"noop"}]}',
             b'{"entries":["{\\"kind\\":\\"drop_tables\\"}"]}', b'{"entries":["not json"]}']
)
def test_a_body_that_is_not_a_batch_of_operations_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest) as refused:
        transport.decode_proposals(body)
    assert refused.value.code == "malformed_operation"


@pytest.mark.parametrize(
    "body", [b"{}", b'{"messages":{"a":1}}', b'{"messages":[{"type":"TimeoutNow","src":2,"dst":1,"term":-5}]}']
)
def test_a_body_that_is_not_a_batch_of_messages_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest) as refused:
        transport.decode_raft_batch(body)
    assert refused.value.code == "malformed_message"


def test_raft_messages_survive_the_batch_codec() -> None:
    message = TimeoutNow(src=2, dst=1, term=3)
    assert transport.decode_raft_batch(transport.encode_raft_batch([message_to_dict(message)])) == [message]


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, b'{"error":{"code":"no_leader","message":"busy"}}'), (200, b"not json"), (200, b'{"results":[]}'),
     (200, b'{"results":[],"index":"7"}'), (502, b"<html>bad gateway</html>")],
)
def test_an_answer_the_follower_cannot_use_refuses_the_whole_batch(status: int, body: bytes) -> None:
    with pytest.raises(LeaderUnavailable, match=f"answered {status}"):
        transport.parse_proposal_answer(1, status, body, 2)


def test_writes_the_leader_answered_nothing_or_nonsense_for_have_an_unknown_fate() -> None:
    answer: dict[str, Any] = {"results": [{"ok": True, "value": None}, 5], "index": 9}
    results, index = transport.parse_proposal_answer(1, 200, json.dumps(answer).encode(), 3)
    assert index == 9 and results[0] == Outcome(ok=True, value=None)
    assert [type(r) for r in results[1:]] == [OutcomeUnknown, OutcomeUnknown]


def test_whoami_answers_what_the_resolver_reads() -> None:
    assert transport.parse_whoami(json.dumps(transport.whoami(3, "10.0.0.3:8700", 5, 1)).encode()) == 3
    with pytest.raises(ValueError):
        transport.parse_whoami(b'{"address":"x"}')


class FakeMembershipLeader:
    """The part of a replicated log the leader's end of MEMBERS_PATH uses."""

    def __init__(self, refusal: ConfChangeRefused | None = None, *, is_leader: bool = True) -> None:
        self.refusal, self.is_leader = refusal, is_leader
        self.leader_id, self.leader_address = 1, "10.0.0.1:8700"
        self.changes: list[ConfChange] = []

    async def change_membership(self, change: ConfChange) -> int:
        if self.refusal is not None:
            raise self.refusal
        self.changes.append(change)
        return 17


def conf_round_trip(leader: FakeMembershipLeader, change: ConfChange) -> int:
    status, answer = asyncio.run(
        transport.answer_conf_change(leader, transport.encode_conf_change(change))  # type: ignore[arg-type]
    )
    return transport.parse_conf_change_answer(1, status, json.dumps(answer).encode())


def test_a_forwarded_configuration_change_comes_back_as_its_index_or_its_refusal() -> None:
    leader = FakeMembershipLeader()
    change = ConfChange(ChangeKind.ADD_LEARNER, 4, "10.0.0.4:8700")
    assert conf_round_trip(leader, change) == 17 and leader.changes == [change]
    for reason in ("in_flight", "unknown_member", "already_member", "invalid", "not_leader"):
        with pytest.raises(ConfChangeRefused) as refused:
            conf_round_trip(FakeMembershipLeader(ConfChangeRefused(reason, "no")), change)
        assert refused.value.reason == reason
    with pytest.raises(NotLeader):
        conf_round_trip(FakeMembershipLeader(is_leader=False), change)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"kind": "grow", "id": 1, "address": ""}',
                                  b'{"kind": "remove", "id": true, "address": ""}', b'{"kind": "remove"}'])
def test_a_body_that_is_not_a_configuration_change_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        transport.decode_conf_change(body)


def test_an_answer_about_a_change_the_follower_cannot_use_means_no_leader() -> None:
    with pytest.raises(LeaderUnavailable):
        transport.parse_conf_change_answer(1, 502, b"<html>bad gateway</html>")
    with pytest.raises(OutcomeUnknown):
        transport.parse_conf_change_answer(1, 503, b'{"error": {"code": "outcome_unknown", "message": "m"}}')
