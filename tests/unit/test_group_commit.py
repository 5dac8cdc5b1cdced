"""Group commit: single submits the leader logs together in one ``submit_group`` entry.

Each submit of a group is applied as if it were an entry of its own, in order:
one refused submit refuses only itself, an idempotency key used twice in one
group names the first job, and every replica decodes the operations the leader
applied. A master in memory (tests/support/memory_master.py) shows the
concurrent submits sharing entries and each answered with its own outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from claud.api import JobSpec, JobState
from claud.master import ops
from claud.master.state import StateMachine
from support.memory_master import memory_master

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEADLINE = 10.0


def _submit(job_id: str, name: str = "a", key: str | None = None, at: datetime = T0) -> ops.Encoded:
    spec = JobSpec(name=name, image="claud/busybox", idempotency_key=key)
    return ops.encode_checked(ops.SubmitJob(at=at, job_id=job_id, spec=spec))


def test_a_group_entry_decodes_to_the_operations_it_was_made_of() -> None:
    parts = [_submit(f"{i:012x}", key=f"k{i}", at=T0 + timedelta(seconds=i)) for i in range(5)]
    group = ops.group_submits(parts)
    decoded = ops.decode(group.data)
    assert decoded == group.op
    assert isinstance(decoded, ops.SubmitGroup)
    assert [op.job_id for op in decoded.ops] == [f"{i:012x}" for i in range(5)]
    assert decoded.at == T0


# A submit: its id (from a small set, so ids collide), its name, its key (from a small set, so keys repeat).
SUBMITS = st.lists(
    st.tuples(st.sampled_from(["a" * 12, "b" * 12, "c" * 12, "d" * 12]), st.sampled_from(["x", "y"]),
              st.sampled_from([None, "k1", "k2"])),
    min_size=1, max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(SUBMITS, st.integers(0, 3))
def test_a_group_applies_as_its_submits_would_one_entry_each(submits: list[tuple[str, str, str | None]],
                                                              earlier: int) -> None:
    parts = [_submit(job_id, name, key) for job_id, name, key in submits]
    one_by_one, grouped = StateMachine(), StateMachine()
    for sm in (one_by_one, grouped):  # some jobs already there
        for i in range(earlier):
            sm.apply(i + 1, _submit(submits[i % len(submits)][0], "x", "k1").op)
    singles = [one_by_one.apply(earlier + 1 + i, part.op) for i, part in enumerate(parts)]
    outcome = grouped.apply(earlier + 1, ops.decode(ops.group_submits(parts).data))
    assert outcome.ok
    assert outcome.value == singles
    rows = {i: j.model_dump() for i, j in grouped.jobs.items()}
    assert rows == {i: j.model_dump() for i, j in one_by_one.jobs.items()}


def test_one_refused_submit_of_a_group_refuses_only_itself() -> None:
    sm = StateMachine()
    sm.apply(1, _submit("a" * 12, "x", "k").op)
    group = ops.group_submits([_submit("b" * 12, "y", "k"), _submit("c" * 12, "z"), _submit("a" * 12, "w")])
    outcome = sm.apply(2, ops.decode(group.data))
    first, second, third = outcome.value
    assert not first.ok and first.code == "conflict"  # key k names job a with another spec
    assert second.ok and second.value == ("c" * 12, True)
    assert not third.ok and "already exists" in third.message
    assert set(sm.jobs) == {"a" * 12, "c" * 12}


def test_a_group_whose_submit_raises_in_apply_rejects_that_submit_alone(monkeypatch: object) -> None:
    sm = StateMachine()
    real = sm._apply_submit_job

    def flaky(op: ops.SubmitJob) -> object:
        if op.job_id == "b" * 12:
            raise RuntimeError("a bug")
        return real(op)

    sm._apply_submit_job = flaky  # type: ignore[method-assign]
    outcome = sm.apply(1, ops.decode(ops.group_submits([_submit("a" * 12), _submit("b" * 12), _submit("c" * 12)]).data))
    results = outcome.value
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].code == "rejected"
    assert set(sm.jobs) == {"a" * 12, "c" * 12}


def test_concurrent_submits_share_entries_and_each_gets_its_own_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, _ = memory_master(tmp_path)
        await master.start()
        try:
            async with asyncio.timeout(DEADLINE):
                while not master.replicated.leader_ready:
                    await asyncio.sleep(0.01)
            before = master.commit_index
            submits = [
                ops.SubmitJob(at=T0, job_id=f"{i:012x}", spec=JobSpec(name=f"j{i}", image="claud/busybox",
                                                                      idempotency_key=f"k{i % 40}"))
                for i in range(50)
            ]
            outcomes = await asyncio.gather(*(master.propose(op) for op in submits))
            # The ten that repeat a key with another name are refused, alone.
            assert [o.ok for o in outcomes] == [True] * 40 + [False] * 10
            assert [o.value for o in outcomes[:40]] == [(f"{i:012x}", True) for i in range(40)]
            assert all(o.code == "conflict" for o in outcomes[40:])
            assert all(master.state.jobs[f"{i:012x}"].state == JobState.PENDING for i in range(40))
            # Read-your-writes: each was answered once applied here; fewer entries than submits.
            assert master.commit_index - before < 50
            kinds = [ops.decode(e.data).kind for e in master.store.entries(before + 1) if e.data.startswith("{")]
            assert "submit_group" in kinds
        finally:
            await master.stop()

    asyncio.run(scenario())
