"""A whole master driven in memory: heartbeat -> commit -> watch, no sockets.

The master is wired by hand from a store in a temporary directory and a
transport that never touches the network (tests/support/memory_master.py), as
build_master wires the real parts; every socket call fails for the test's
duration, so nothing here can lean on a network.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from claud.api import AllocationStatus, ContainerState, DesiredState, Heartbeat, JobSpec, JobState, NodeState
from claud.master import ops
from claud.master.master import Master
from claud.master.state import Outcome
from claud.master.transport import NotLeader
from support.memory_master import memory_master

SLAVE = "s1"
DEADLINE = 10.0


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the in-memory master touched the network")

    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    yield


def heartbeat(**fields: object) -> Heartbeat:
    return Heartbeat.model_validate(
        {"node_id": SLAVE, "address": "127.0.0.1:18901", "cpu_total": 2, "memory_mb_total": 1024, **fields}
    )


async def leading(master: Master) -> None:
    """Start ``master`` and wait (polling, with a deadline) until its leader's duties run."""
    await master.start()
    async with asyncio.timeout(DEADLINE):
        while not (master.replicated.leader_ready and master.duties.running):
            await asyncio.sleep(0.01)


def test_heartbeat_commit_watch(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, transport = memory_master(tmp_path)
        events = master.events.subscribe()
        first_event = asyncio.ensure_future(anext(events))
        await leading(master)
        try:
            # A heartbeat commits the slave's registration before it is answered.
            answer = await master.slaves.heartbeat(heartbeat())
            assert master.state.slaves[SLAVE].state == NodeState.ALIVE
            assert (answer.leader_id, answer.allocations, answer.term) == (1, [], master.term)
            assert answer.version == master.state.slave_versions.get(SLAVE, 0)
            assert (await first_event)["id"] == SLAVE  # published on the event stream once committed

            # A watch on that version waits; a submit, placed by the leader's scheduler, wakes it.
            watch = asyncio.create_task(master.slaves.watch(SLAVE, answer.version, wait_seconds=DEADLINE))
            await asyncio.sleep(0)
            assert not watch.done()
            outcome = await master.propose(ops.SubmitJob(
                at=ops.utcnow(), job_id="j1", spec=JobSpec(name="hello", image="claud/busybox:latest")
            ))
            assert outcome.ok, outcome
            async with asyncio.timeout(DEADLINE):
                told = await watch
            assert told.version > answer.version
            [allocation] = told.allocations
            assert (allocation.job_id, allocation.desired) == ("j1", DesiredState.RUN)
            assert master.state.jobs["j1"].state == JobState.SCHEDULED

            # The slave's report of the container, in the next heartbeat, is committed too.
            running = AllocationStatus(alloc_id=allocation.alloc_id, job_id="j1", state=ContainerState.RUNNING,
                                       container_id="c" * 12, started_at=ops.utcnow())
            await master.slaves.heartbeat(heartbeat(allocations=[running.model_dump(mode="json")]))
            assert master.state.jobs["j1"].state == JobState.RUNNING
            assert master.slaves.last_heartbeat(SLAVE) is not None
        finally:
            await events.aclose()
            await master.stop()
        assert transport.sent == [] and transport.closed  # a lone master sent nothing

    asyncio.run(scenario())


def test_the_trace_records_the_role_the_heartbeats_sampled_and_the_jobs(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, _ = memory_master(tmp_path)
        await leading(master)
        try:
            for _ in range(3):  # in the same second: one kept
                await master.slaves.heartbeat(heartbeat())
            outcome = await master.propose(ops.SubmitJob(
                at=ops.utcnow(), job_id="j1", spec=JobSpec(name="hello", image="claud/busybox:latest")
            ))
            assert outcome.ok, outcome
            async with asyncio.timeout(DEADLINE):
                while master.state.jobs["j1"].state != JobState.SCHEDULED:
                    await asyncio.sleep(0.01)
            events = [e.as_dict() for e in master.trace.after(0)]
            roles = [(e["role"], e["term"], e["leader"]) for e in events if e["kind"] == "role"]
            assert roles[-1] == ("leader", master.term, 1)
            assert [e["slave"] for e in events if e["kind"] == "slave.heartbeat"] == [SLAVE]
            assert [e["state"] for e in events if e["kind"] == "slave"] == ["alive"]
            assert [(e["job"], e["state"]) for e in events if e["kind"] == "job"] == [("j1", "pending"),
                                                                                   ("j1", "scheduled")]
            assert any(e["kind"] == "commit" for e in events)
            assert all(e["master"] == 1 for e in events)
        finally:
            await master.stop()

    asyncio.run(scenario())


def test_slave_protocol_needs_a_leader_whose_term_has_begun(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, _ = memory_master(tmp_path)
        try:
            with pytest.raises(NotLeader) as refused:  # not started: no leader yet
                await master.slaves.heartbeat(heartbeat())
            assert (refused.value.leader_id, refused.value.leader_address) == (None, None)
            with pytest.raises(NotLeader):
                await master.slaves.watch(SLAVE, 0, wait_seconds=0)
        finally:
            await master.stop()

    asyncio.run(scenario())


def test_what_follows_a_commit_is_a_named_list(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, _ = memory_master(tmp_path)
        try:
            assert master.replicated.applied_subscribers == ["events", "log", "trace", "watchers", "scheduler",
                                                             "discovery", "duties", "telemetry", "collector"]
        finally:
            await master.stop()

    asyncio.run(scenario())


def test_a_gc_pass_goes_through_the_log_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``claud system gc``'s path: chosen from the tables, proposed in entries of GC_BATCH
    ids, each re-checked by apply; what is not terminal stays."""
    from claud.master import leader_duties

    monkeypatch.setattr(leader_duties, "GC_BATCH", 2)

    async def run() -> None:
        master, _ = memory_master(tmp_path, job_gc_after=0.001, job_gc_keep=1)
        await leading(master)
        try:
            for n in range(5):
                spec = JobSpec(name=f"j{n}", image="claud/busybox:latest")
                await master.propose(ops.SubmitJob(at=ops.utcnow(), job_id=f"j{n}", spec=spec))
                if n < 4:
                    await master.propose(ops.StopJob(at=ops.utcnow(), job_id=f"j{n}"))
            passes: list[list[str]] = []
            propose = master.replicated.propose

            async def recording(op: ops.Operation) -> Outcome:
                if isinstance(op, ops.CollectGarbage):
                    passes.append(op.job_ids)
                return await propose(op)

            monkeypatch.setattr(master.replicated, "propose", recording)
            collected = await master.duties.collect_garbage()
            assert collected.jobs == ["j0", "j1", "j2"] and collected.slaves == []  # j3: the newest kept
            assert sorted(master.state.jobs) == ["j3", "j4"]
            assert passes == [["j0", "j1"], ["j2"]]  # a full batch, then the rest
            assert master.state.last_gc is not None and master.state.last_gc.jobs == 1
        finally:
            await master.stop()

    asyncio.run(run())
