"""The durable log: what was appended survives a reopen, snapshots compact it,
and a restarted master rebuilds exactly the tables it acknowledged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from claud.api import JobSpec, JobState
from claud.master import ops
from claud.master.peers import MasterDirectory
from claud.master.replication import ReplicatedLog
from claud.master.storage import Entry, HardState, LogStore, Snapshot
from support.memory_master import LoneTransport

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
    store.save_snapshot(Snapshot(index=2, term=1, state="{}"))
    assert [e.index for e in store.entries(1)] == [3, 4]
    store.save_snapshot(Snapshot(index=3, term=1, state="{}"), replace_log=True)
    assert store.entries(1) == []


def test_an_older_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """A master's own snapshot is saved in the background and can lose a race
    with the newer one its leader sent; storing it would open a gap in the log."""
    store = LogStore(tmp_path / "db")
    assert store.save_snapshot(Snapshot(index=10, term=2, state='{"from": "leader"}'), replace_log=True)
    store.append([Entry(11, 2, "a"), Entry(12, 2, "b")])
    assert not store.save_snapshot(Snapshot(index=7, term=1, state='{"from": "self"}'))
    assert not store.save_snapshot(Snapshot(index=10, term=2, state='{"from": "self"}'))
    assert store.snapshot() == Snapshot(index=10, term=2, state='{"from": "leader"}')
    assert [e.index for e in store.entries(1)] == [11, 12]


def single_master(store: LogStore, snapshot_every: int = 50) -> ReplicatedLog:
    directory = MasterDirectory(1, "127.0.0.1:1")
    return ReplicatedLog(
        master_id=1, cluster_size=1, store=store, directory=directory, transport=LoneTransport(),
        election_timeout=0.1, snapshot_every=snapshot_every, propose_timeout=5,
    )


async def until_leader(log: ReplicatedLog) -> None:
    async with asyncio.timeout(5):
        while not log.leader_ready:
            await asyncio.sleep(0.01)


def test_batched_commits_recovery_and_snapshot(tmp_path: Path) -> None:
    async def first_life() -> None:
        log = single_master(LogStore(tmp_path / "db"))
        log.start()
        await until_leader(log)
        # Submits at once share entries (group commit); one at a time, each has its own.
        outcomes = await asyncio.gather(*(log.propose(submit(i)) for i in range(60)))
        outcomes += [await log.propose(submit(i)) for i in range(60, 120)]
        assert all(o.ok for o in outcomes)
        await log.stop()
        log._store.close()

    asyncio.run(first_life())
    store = LogStore(tmp_path / "db")
    snapshot = store.snapshot()
    assert snapshot is not None and snapshot.index >= 50
    assert store.entries(1, snapshot.index) == []  # compacted

    async def second_life() -> None:
        log = single_master(store)
        # Known-committed entries are applied before any election.
        assert len(log.state.jobs) == 120
        log.start()
        await until_leader(log)
        assert (await log.propose(submit(1000))).ok
        assert len(log.state.jobs) == 121
        assert all(job.state == JobState.PENDING for job in log.state.jobs.values())
        await log.stop()

    asyncio.run(second_life())


def test_a_snapshot_keeps_its_configuration_and_an_old_table_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "old.db")  # the snapshot table as it was before configurations
    old.execute("CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, "
                "term INTEGER NOT NULL, data BLOB NOT NULL)")
    old.commit()
    old.close()
    store = LogStore(tmp_path / "old.db")
    assert store.snapshot() is None
    assert store.save_snapshot(Snapshot(index=5, term=2, state="{}", config='{"cluster_id":"c","members":[]}'))
    store.close()
    assert LogStore(tmp_path / "old.db").snapshot() == Snapshot(5, 2, "{}", '{"cluster_id":"c","members":[]}')


def test_the_configuration_survives_snapshots_and_restarts(tmp_path: Path) -> None:
    async def life(first: int, proposals: int) -> tuple[str, int]:
        log = single_master(LogStore(tmp_path / "db"), snapshot_every=20)
        log.start()
        await until_leader(log)
        # One at a time: submits sent at once would share entries (group commit), and make no snapshot.
        assert all([(await log.propose(submit(first + i))).ok for i in range(proposals)])
        configuration = log.configuration
        committed = log.committed_configuration
        await log.stop()
        log._store.close()
        assert configuration is not None and configuration == committed and configuration.voters == {1}
        return configuration.cluster_id, log.core.configuration_index

    cluster_id, _ = asyncio.run(life(0, 60))
    store = LogStore(tmp_path / "db")
    snapshot = store.snapshot()
    assert snapshot is not None and snapshot.index > 1 and cluster_id in snapshot.config
    assert store.entries(1, snapshot.index) == []  # the configuration entry itself is compacted away
    store.close()
    again, _ = asyncio.run(life(100, 1))
    assert again == cluster_id  # restarted from the snapshot: the same cluster, not a new bootstrap
