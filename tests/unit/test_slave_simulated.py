"""Many slave agents in one process, with the simulated runtime and an in-memory master.

No Docker and no sockets: the master is an httpx MockTransport. This is how a
benchmark runs hundreds of hollow slaves; here it checks that agents share no
state, that the simulated runtime honours its documented knobs, and that the
protocol loop (watch, heartbeat, reconcile) converges.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from claud.api import Allocation, Assignments, DesiredState, Heartbeat, Resources, WatchRequest
from claud.api.protocol import HEARTBEAT_PATH, MASTER_ID_HEADER
from claud.slave.agent import Agent
from claud.slave.resources import Capacity, CgroupLimits, UsageProbe
from claud.slave.runtime.simulated import SimulatedRuntime, simulated_duration
from claud.slave.settings import SlaveSettings


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """Every slave needs a cluster secret; these agents talk to an in-memory master that ignores it."""
    path = tmp_path / "cluster-secret"
    path.write_text("s3cret\n")
    return path


def alloc(
    alloc_id: str, env: dict[str, str] | None = None, command: list[str] | None = None, **kw: Any
) -> Allocation:
    return Allocation(
        alloc_id=alloc_id,
        job_id=kw.pop("job_id", f"job-{alloc_id}"),
        attempt=kw.pop("attempt", 1),
        desired=kw.pop("desired", DesiredState.RUN),
        image="claud/busybox:latest",
        command=command or [],
        env=env or {},
        resources=Resources(),
        **kw,
    )


def test_duration_comes_from_env_then_sleep_command_then_default() -> None:
    assert simulated_duration(alloc("a", {"CLAUD_SIM_SECONDS": "2.5"}, ["sleep", "9"]), 1.0) == 2.5
    assert simulated_duration(alloc("a", command=["/bin/sleep", "4"]), 1.0) == 4.0
    assert simulated_duration(alloc("a", command=["sh", "-c", "sleep 4"]), 1.0) == 1.0
    assert simulated_duration(alloc("a", {"CLAUD_SIM_SECONDS": "inf"}), 1.0) == float("inf")


class MemoryMaster:
    """The leader's side of the protocol for many slaves, in memory."""

    def __init__(self) -> None:
        self.version: dict[str, int] = {}
        self.desired: dict[str, dict[str, Allocation]] = {}
        self.heartbeats: dict[str, Heartbeat] = {}
        self.changed = asyncio.Event()
        self.lease_seconds = 5.0
        self.heartbeat_interval = 0.1
        #: The known_version of every watch asked, in order.
        self.watches: list[int] = []
        #: Seconds a heartbeat's answer takes (a real master commits first).
        self.heartbeat_delay = 0.0

    def put(self, node: str, *allocs: Allocation) -> None:
        self.desired.setdefault(node, {}).update({a.alloc_id: a for a in allocs})
        self.version[node] = self.version.get(node, 0) + 1
        self.changed.set()
        self.changed = asyncio.Event()

    def reply(self, node: str) -> httpx.Response:
        body = Assignments(
            term=1,
            leader_id=1,
            leader_address="m1:1",
            version=self.version.get(node, 0),
            allocations=list(self.desired.get(node, {}).values()),
            lease_seconds=self.lease_seconds,
            heartbeat_interval=self.heartbeat_interval,
        )
        return httpx.Response(200, content=body.model_dump_json(), headers={MASTER_ID_HEADER: "1"})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == HEARTBEAT_PATH:
            beat = Heartbeat.model_validate_json(request.content)
            await asyncio.sleep(self.heartbeat_delay)
            self.heartbeats[beat.slave_id] = beat
            return self.reply(beat.slave_id)
        ask = WatchRequest.model_validate_json(request.content)
        self.watches.append(ask.known_version)
        deadline = time.monotonic() + ask.wait_seconds
        while self.version.get(ask.slave_id, 0) == ask.known_version and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self.reply(ask.slave_id)

    def state(self, node: str, alloc_id: str) -> tuple[str, int | None] | None:
        beat = self.heartbeats.get(node)
        found = next((s for s in beat.allocations if s.alloc_id == alloc_id), None) if beat else None
        return (found.state.value, found.exit_code) if found else None


async def wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_many_simulated_agents_share_one_process(secret_file: Path) -> None:
    async def scenario() -> None:
        master = MemoryMaster()
        http = httpx.AsyncClient(transport=httpx.MockTransport(master.handle), base_url="http://m1:1")
        usage = UsageProbe("/", limits=CgroupLimits())
        agents = []
        for i in range(40):
            settings = SlaveSettings(
                id=f"sim{i}", masters=["m1:1"], runtime="simulated", heartbeat_interval=0.1,
                cluster_secret_file=secret_file, watch_wait=2,
                # Off: the same ids and secret in another run of this suite on the machine (UDP
                # broadcast on 8702) would be heard as conflicting peers.
                no_discovery=True,
            )
            agents.append(
                Agent(
                    settings,
                    SimulatedRuntime(settings.id),
                    http=http,
                    capacity=Capacity(4, 4096, "flag", "flag"),
                    usage=usage,
                )
            )
        for agent in agents:
            await agent.start()
        try:
            await wait_until(lambda: len(master.heartbeats) == len(agents))
            for agent in agents:
                node = agent.settings.id
                master.put(
                    node,
                    alloc(f"{node}-batch", {"CLAUD_SIM_SECONDS": "0.2", "CLAUD_SIM_EXIT_CODE": "3"}),
                    alloc(f"{node}-svc", {"CLAUD_SIM_SECONDS": "inf"}),
                    alloc(f"{node}-bad", {"CLAUD_SIM_START_ERROR": "no such image"}),
                )
            for agent in agents:
                node = agent.settings.id
                await wait_until(lambda n=node: master.state(n, f"{n}-batch") == ("exited", 3))
                await wait_until(lambda n=node: master.state(n, f"{n}-svc") == ("running", None))
                await wait_until(lambda n=node: master.state(n, f"{n}-bad") == ("failed", None))
            # Each agent saw only its own allocations.
            for agent in agents:
                assert {s.alloc_id.split("-")[0] for s in agent.statuses} == {agent.settings.id}
            node = agents[0].settings.id
            master.put(node, alloc(f"{node}-svc", {"CLAUD_SIM_SECONDS": "inf"}, desired=DesiredState.STOP))
            await wait_until(lambda: master.state(node, f"{node}-svc") == ("exited", 143))
            assert master.state(agents[1].settings.id, f"{agents[1].settings.id}-svc") == ("running", None)
        finally:
            for agent in agents:
                await agent.stop()
            await http.aclose()

    asyncio.run(scenario())


def test_a_placement_reaches_the_agent_by_its_watch_not_its_next_heartbeat(secret_file: Path) -> None:
    """Heartbeats far apart: a start within a fraction of their interval came through the watch,
    which the agent asks from its very start (before any reply: version 0, the lowest a master takes)."""

    async def scenario() -> None:
        master = MemoryMaster()
        master.heartbeat_interval = master.lease_seconds = 10.0
        master.heartbeat_delay = 0.2  # the watch is asked before the first reply, as on a real cluster
        http = httpx.AsyncClient(transport=httpx.MockTransport(master.handle), base_url="http://m1:1")
        settings = SlaveSettings(
            id="sim-watch", masters=["m1:1"], runtime="simulated", heartbeat_interval=10,
            default_lease=30, cluster_secret_file=secret_file, watch_wait=20, no_discovery=True,
        )
        agent = Agent(settings, SimulatedRuntime(settings.id), http=http,
                      capacity=Capacity(4, 4096, "flag", "flag"), usage=UsageProbe("/", limits=CgroupLimits()))
        await agent.start()
        try:
            await wait_until(lambda: "sim-watch" in master.heartbeats and agent.desired is not None)
            await wait_until(lambda: len(master.watches) >= 1)
            assert master.watches[0] == 0
            asked = time.monotonic()
            master.put("sim-watch", alloc("sim-watch-svc", {"CLAUD_SIM_SECONDS": "inf"}))
            await wait_until(lambda: any(s.alloc_id == "sim-watch-svc" and s.state.value == "running"
                                         for s in agent.statuses), timeout=5)
            assert time.monotonic() - asked < 2.0  # the next heartbeat is ~10 s away
        finally:
            await agent.stop()
            await http.aclose()

    asyncio.run(scenario())


def test_simulated_agent_fences_when_the_master_goes_silent(secret_file: Path) -> None:
    async def scenario() -> None:
        master = MemoryMaster()
        silent = asyncio.Event()

        async def handle(request: httpx.Request) -> httpx.Response:
            if silent.is_set():
                raise httpx.ConnectError("partitioned", request=request)
            return await master.handle(request)

        http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
        settings = SlaveSettings(
            id="fence", masters=["m1:1"], runtime="simulated", heartbeat_interval=0.1,
            cluster_secret_file=secret_file, watch_wait=1, no_discovery=True,
        )
        runtime = SimulatedRuntime(settings.id)
        agent = Agent(
            settings,
            runtime,
            http=http,
            capacity=Capacity(1, 512, "flag", "flag"),
            usage=UsageProbe("/", limits=CgroupLimits()),
        )
        await agent.start()
        try:
            master.lease_seconds = 1.0
            master.put("fence", alloc("svc", {"CLAUD_SIM_SECONDS": "inf"}))
            await wait_until(lambda: master.state("fence", "svc") == ("running", None))
            silent.set()
            began = time.monotonic()
            await wait_until(lambda: agent.fenced, timeout=5)
            # The lease runs from the last answered heartbeat, at most one interval ago.
            assert 0.8 <= time.monotonic() - began <= 2.0
            await wait_until(
                lambda: [(s.state.value, s.exit_code) for s in agent.statuses] == [("exited", 143)], 3
            )
            silent.clear()
            await wait_until(lambda: not agent.fenced and master.state("fence", "svc") == ("exited", 143), 5)
        finally:
            await agent.stop()
            await http.aclose()

    asyncio.run(scenario())


def test_a_bug_in_one_heartbeat_does_not_end_the_loop_that_renews_the_lease(secret_file: Path) -> None:
    """The watch loop once died of a validation error and nobody saw; the heartbeat loop
    must outlive any one failure, or the slave fences itself while its masters are fine."""

    async def scenario() -> None:
        master = MemoryMaster()
        http = httpx.AsyncClient(transport=httpx.MockTransport(master.handle), base_url="http://m1:1")
        settings = SlaveSettings(
            id="sim-bug", masters=["m1:1"], runtime="simulated", heartbeat_interval=0.1,
            cluster_secret_file=secret_file, watch_wait=1, no_discovery=True,
        )
        agent = Agent(settings, SimulatedRuntime(settings.id), http=http,
                      capacity=Capacity(1, 512, "flag", "flag"), usage=UsageProbe("/", limits=CgroupLimits()))
        real = agent.masters.heartbeat
        failures = 0

        async def heartbeat_with_a_bug(beat: Heartbeat) -> Assignments:
            nonlocal failures
            if failures < 2:
                failures += 1
                raise RuntimeError("a bug")
            return await real(beat)

        agent.masters.heartbeat = heartbeat_with_a_bug  # type: ignore[method-assign,assignment]
        await agent.start()
        try:
            await wait_until(lambda: "sim-bug" in master.heartbeats, timeout=5)
            assert failures == 2 and not agent.fenced
        finally:
            await agent.stop()
            await http.aclose()

    asyncio.run(scenario())


def test_replicas_of_one_job_run_side_by_side_on_one_slave(secret_file: Path) -> None:
    """Three allocations of one job (indexes 0..2) on one slave: each its own container, all at once;
    a new attempt of index 1 waits only for index 1's old one."""

    def replica(index: int, attempt: int, **kw: Any) -> Allocation:
        alloc_id = f"web-{attempt}" if index == 0 else f"web.{index}-{attempt}"
        return alloc(alloc_id, {"CLAUD_SIM_SECONDS": "inf"}, job_id="web", attempt=attempt, index=index, **kw)

    async def scenario() -> None:
        master = MemoryMaster()
        http = httpx.AsyncClient(transport=httpx.MockTransport(master.handle), base_url="http://m1:1")
        settings = SlaveSettings(
            id="sim-replicas", masters=["m1:1"], runtime="simulated", heartbeat_interval=0.1,
            cluster_secret_file=secret_file, watch_wait=1, no_discovery=True,
        )
        runtime = SimulatedRuntime(settings.id)
        agent = Agent(settings, runtime, http=http,
                      capacity=Capacity(4, 4096, "flag", "flag"), usage=UsageProbe("/", limits=CgroupLimits()))
        await agent.start()
        try:
            await wait_until(lambda: "sim-replicas" in master.heartbeats)
            master.put("sim-replicas", replica(0, 1), replica(1, 1), replica(2, 1))
            for alloc_id in ("web-1", "web.1-1", "web.2-1"):
                await wait_until(lambda a=alloc_id: master.state("sim-replicas", a) == ("running", None))
            running = [(o.alloc_id, o.index) for o in await runtime.list() if o.phase.value == "running"]
            assert sorted(running) == [("web-1", 0), ("web.1-1", 1), ("web.2-1", 2)]
            # Index 1 is placed again: its second attempt waits until its first has stopped.
            del master.desired["sim-replicas"]["web.1-1"]
            master.put("sim-replicas", replica(1, 2))
            await wait_until(lambda: master.state("sim-replicas", "web.1-2") == ("running", None))
            by_alloc = {o.alloc_id: o for o in await runtime.list()}
            assert by_alloc["web.1-1"].phase.value == "exited"
            assert by_alloc["web.1-1"].finished_at is not None and by_alloc["web.1-2"].started_at is not None
            assert by_alloc["web.1-1"].finished_at <= by_alloc["web.1-2"].started_at
            assert {by_alloc[a].phase.value for a in ("web-1", "web.2-1")} == {"running"}
        finally:
            await agent.stop()
            await http.aclose()

    asyncio.run(scenario())
