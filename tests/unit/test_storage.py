"""The durable log: what was appended survives a reopen, snapshots compact it,
and recovery rebuilds exactly the tables that were acknowledged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from claud.api import JobSpec, JobState
from claud.master import ops
from claud.master.standalone import StandaloneLog
from claud.master.storage import Entry, HardState, LogStore

AT = datetime(2026, 1, 1, tzinfo=UTC)


def submit(i: int) -> ops.SubmitJob:
    return ops.SubmitJob(at=AT, job_id=f"j{i}", spec=JobSpec(name=f"n{i}", image="claud/busybox"))


def test_entries_hard_state_and_truncation_survive_reopen(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "db")
    store.append([Entry(i, 1, ops.encode(submit(i))) for i in range(1, 6)])
    store.append([Entry(4, 2, ops.encode(submit(40)))])  # a new leader overwrote index 4 onwards
    store.save_hard_state(HardState(term=2, voted_for=3))
    store.close()
    store = LogStore(tmp_path / "db")
    assert [(e.index, e.term) for e in store.entries(1)] == [(1, 1), (2, 1), (3, 1), (4, 2)]
    assert store.hard_state() == HardState(term=2, voted_for=3)
    assert store.last_index_and_term() == (4, 2)


def test_group_commit_recovery_and_snapshot(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = LogStore(tmp_path / "db")
        state, _ = StandaloneLog.recover(store)
        applied = []
        log = StandaloneLog(store, state, lambda: applied.append(state.applied_index), snapshot_every=50)
        log.start()
        outcomes = await asyncio.gather(*(log.propose(submit(i)) for i in range(120)))
        assert all(o.ok for o in outcomes)
        assert len(applied) < 120  # batched: fewer commits than proposals
        await log.stop()
        store.close()

    asyncio.run(scenario())
    store = LogStore(tmp_path / "db")
    snapshot = store.snapshot()
    assert snapshot is not None and snapshot.index >= 50
    assert store.entries(1, snapshot.index) == []  # compacted
    state, replayed = StandaloneLog.recover(store)
    assert len(state.jobs) == 120
    assert replayed == 120 - snapshot.index
    assert all(job.state == JobState.PENDING for job in state.jobs.values())
