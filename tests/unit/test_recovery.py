"""Disaster recovery: the data directory of the one master left of three becomes
a one-member cluster that has every entry it held, committed or not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from claud.api import JobSpec
from claud.master import ops
from claud.master.raft_config import Configuration, Member, config_from_entry
from claud.master.recovery import recover_as_one_member_cluster
from claud.master.storage import Entry, HardState, LogStore
from support.memory_master import memory_master


def _survivor(data_dir: Path) -> LogStore:
    """The disk of master 1 of {1, 2, 3}: three jobs known committed, a fourth not yet."""
    store = LogStore(data_dir / "claud.db")
    three = Configuration(tuple(Member(i, f"127.0.0.1:1870{i}", True) for i in (1, 2, 3)), cluster_id="old")
    entries = [Entry(1, 1, three.entry_data())]
    for i in range(4):
        job = ops.SubmitJob(at=ops.utcnow(), job_id=f"j{i}", spec=JobSpec(name=f"n{i}", image="claud/busybox:latest"))
        entries.append(Entry(2 + i, 2, ops.encode(job)))
    store.append(entries)
    store.save_hard_state(HardState(term=3, voted_for=2))
    store.save_commit_index(4)
    return store


def test_the_survivor_becomes_the_only_voter_of_a_new_cluster(tmp_path: Path) -> None:
    store = _survivor(tmp_path)
    recovered = recover_as_one_member_cluster(store, 1, "127.0.0.1:18700")
    assert recovered.voters == {1} and recovered.cluster_id not in ("", "old")
    last = store.entries(1)[-1]
    assert (last.index, last.term, config_from_entry(last.data)) == (6, 4, recovered)
    assert store.hard_state() == HardState(term=4, voted_for=1)  # above every term it saw
    store.close()


def test_a_recovered_master_leads_alone_and_keeps_every_job(tmp_path: Path) -> None:
    _survivor(tmp_path).close()

    async def scenario() -> None:
        master, _ = memory_master(tmp_path, recover_from_data_dir=True)
        await master.start()
        try:
            async with asyncio.timeout(10):
                while not master.replicated.leader_ready:
                    await asyncio.sleep(0.01)
            assert sorted(master.state.jobs) == ["j0", "j1", "j2", "j3"]
            configuration = master.replicated.committed_configuration
            assert configuration is not None and configuration.voters == {1}
            assert master.identity.cluster_id == configuration.cluster_id != "old"
        finally:
            await master.stop()

    asyncio.run(scenario())
