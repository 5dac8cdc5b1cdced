"""The fence without the engine: its deadline, its pidfds, and the agent carrying it out.

No Docker and no sockets. The pidfd tests pin real (short-lived) child
processes: a pidfd is a kernel object, and faking it would test nothing. A
"container id" here is a piece of the child's own cgroup path, which is all
the check asks of a container's main process (that its cgroup names it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claud.api import Allocation, Assignments, DesiredState, Heartbeat, Resources, WatchRequest
from claud.master.settings import FENCE_FANOUT_MARGIN, MasterSettings
from claud.slave.agent import Agent
from claud.slave.engine_fence import EngineFence, fence_times, open_pinned
from claud.slave.fencing import honour, kill_window
from claud.slave.resources import Capacity, CgroupLimits, UsageProbe
from claud.slave.runtime import Observed, Phase, Runtime, RuntimeUnavailable
from claud.slave.settings import SlaveSettings

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux 5.3+)")

# --- the deadline ---


def test_the_engine_fence_keeps_the_lease_fences_schedule_from_the_first_failure() -> None:
    # TERM a lease after the engine went away, KILL a kill window later.
    assert fence_times(100.0, 4.0, 2.0, 1.0) == (104.0, 105.0)
    assert fence_times(100.0, 4.0, 0.5, 1.0) == (104.0, 104.0)  # no window left: TERM and KILL together
    assert fence_times(100.0, 0.0, 2.0, 1.0) == (100.0, 101.0)  # no lease (refused terms): at once


@settings(max_examples=200, deadline=None)
@given(
    lease=st.floats(min_value=0.5, max_value=60),
    grace=st.floats(min_value=0, max_value=30),
    stop_timeout=st.floats(min_value=0, max_value=300),
    # The masters' bound allows a kill round trip of FENCE_FANOUT_MARGIN (the slave's default).
    round_trip=st.floats(min_value=0, max_value=FENCE_FANOUT_MARGIN),
    heartbeat_share=st.floats(min_value=0.05, max_value=0.49),
    away=st.floats(min_value=0, max_value=1e6),
)
def test_the_kill_lands_before_any_node_dead_after_the_masters_accept(
    lease: float, grace: float, stop_timeout: float, round_trip: float, heartbeat_share: float, away: float
) -> None:
    """Whatever terms the masters may be configured with, the engine fence's kill lands by
    away + node-dead-after at its smallest allowed value: before the masters re-place."""
    masters = MasterSettings(
        id=1, no_discovery=True, slave_lease=lease, fence_stop_grace=grace, heartbeat_interval=lease * heartbeat_share,
        election_timeout=lease / 3.001, suspect_after=0.1, node_dead_after=1e9, node_gc_after=1e9,
    )
    node_dead_after, _ = masters.fencing_bound()
    terms = honour(
        lease=lease, grace=grace, heartbeat=masters.heartbeat_interval, longest_lease=60, grace_cap=None,
        round_trip=round_trip,
    )
    # As the agent does: the job's own stop timeout may only shorten the grace.
    _, kill_at = fence_times(away, terms.lease, min(terms.grace, stop_timeout), round_trip)
    landed = kill_at + round_trip
    assert landed <= away + max(round_trip, lease + grace) + 1e-9 * max(1.0, away)
    assert landed <= away + node_dead_after + 1e-9 * max(1.0, away)
    # Times are absolute (away + ...): their difference carries the rounding of numbers that large.
    assert kill_at - fence_times(away, terms.lease, 0, 0)[0] == pytest.approx(
        kill_window(min(terms.grace, stop_timeout), round_trip), abs=1e-9 * max(1.0, away)
    )


def test_the_absence_counts_from_the_first_failure_until_a_master_heard_healthy() -> None:
    fence = EngineFence("s1")
    assert fence.term_at(4.0) is None
    fence.engine_failed(10.0)
    fence.engine_failed(12.0)  # still the same outage
    assert fence.term_at(4.0) == 14.0
    fence.engine_answered()
    assert fence.term_at(4.0) is None  # answering: nothing to fence
    # Failing again before any master heard "healthy": they may still count from 10.
    fence.engine_failed(20.0)
    assert fence.term_at(4.0) == 14.0
    fence.healthy_heard()  # a heartbeat said healthy while the engine is down again: not over
    assert fence.term_at(4.0) == 14.0
    fence.engine_answered()
    fence.healthy_heard()
    fence.engine_failed(30.0)
    assert fence.term_at(4.0) == 34.0


# --- the pidfds ---


def _child(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv) or ["sleep", "30"], stdout=subprocess.PIPE)


def _marker(pid: int) -> str:
    """Something the process's cgroup file contains, shaped like an id: what a container id is to the check."""
    found = re.search(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", Path(f"/proc/{pid}/cgroup").read_text())
    assert found is not None
    return found.group()


def _running(container_id: str, pid: int | None, alloc_id: str = "a1") -> Observed:
    return Observed(container_id, alloc_id, "j1", Phase.RUNNING, pid=pid)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = _child()
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    assert proc.stdout is not None
    proc.stdout.close()


def test_one_pidfd_per_running_container_released_when_it_is_gone(child: subprocess.Popen[bytes]) -> None:
    fence = EngineFence("s1")
    cid = _marker(child.pid)
    before = _open_fds()
    for _ in range(5):  # every reconcile pass observes it again: still one pidfd
        fence.observe([_running(cid, child.pid)])
    assert fence.pinned == 1 and _open_fds() == before + 1
    fence.observe([Observed(cid, "a1", "j1", Phase.EXITED, exit_code=0)])
    assert fence.pinned == 0 and _open_fds() == before
    fence.observe([_running(cid, child.pid)])
    fence.observe([])  # gone from the listing altogether
    assert fence.pinned == 0 and _open_fds() == before
    fence.observe([_running(cid, child.pid)])
    fence.close()
    assert fence.pinned == 0 and _open_fds() == before


def test_a_new_process_for_the_same_container_replaces_its_pidfd(child: subprocess.Popen[bytes]) -> None:
    fence = EngineFence("s1")
    other = _child()
    try:
        cid = _marker(child.pid)
        assert _marker(other.pid) == cid
        fence.observe([_running(cid, child.pid)])
        before = _open_fds()
        fence.observe([_running(cid, other.pid)])
        assert _open_fds() == before and fence.pinned == 1
        (target,) = fence.take_targets()
        assert target.pid == other.pid
        assert fence.send(target, signal.SIGKILL)
        assert other.wait(5) == -signal.SIGKILL and child.poll() is None
    finally:
        other.kill()
        other.wait(5)
        assert other.stdout is not None
        other.stdout.close()
        fence.close()


def test_a_pinned_process_that_died_is_never_confused_with_a_pid_reuse(child: subprocess.Popen[bytes]) -> None:
    fence = EngineFence("s1")
    fence.observe([_running(_marker(child.pid), child.pid)])
    (target,) = fence.take_targets()
    child.kill()
    child.wait(5)  # reaped: its PID is free for anyone
    assert not fence.send(target, signal.SIGKILL)  # the pidfd still means the dead one: ESRCH
    fence.killed(target)
    assert fence.pinned == 0 and not fence.send(target, signal.SIGKILL)  # released: never signalled again
    fence.close()


def test_a_process_that_cannot_be_pinned_is_said_once_and_left_alone(
    child: subprocess.Popen[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    fence = EngineFence("s1")
    caplog.set_level(logging.WARNING, logger="claud.slave.engine_fence")
    invisible = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no such PID can exist
    elsewhere = _running("c" * 64, child.pid, alloc_id="a2")  # a PID that is not that container's
    for _ in range(3):
        fence.observe([_running("d" * 64, invisible), elsewhere])
    lines = [r for r in caplog.records if getattr(r, "claud_event", None) == "engine_fence.unpinned"]
    assert len(lines) == 2 and fence.pinned == 0
    fields = [r.claud_fields for r in lines]  # type: ignore[attr-defined]
    assert {f["alloc"] for f in fields} == {"a1", "a2"} and all(f["slave"] == "s1" for f in fields)
    assert all("cannot be stopped without its engine" in f["consequence"] for f in fields)
    with pytest.raises(OSError):
        open_pinned("c" * 64, child.pid)
    assert child.poll() is None  # never signalled


def test_a_fence_takes_each_container_once_per_outage(child: subprocess.Popen[bytes]) -> None:
    fence = EngineFence("s1")
    fence.observe([_running(_marker(child.pid), child.pid)])
    assert len(fence.take_targets()) == 1 and fence.take_targets() == []
    fence.engine_answered()
    assert len(fence.take_targets()) == 1
    fence.close()


# --- the agent carrying it out ---


def _stubborn() -> subprocess.Popen[bytes]:
    """A process that ignores SIGTERM, as a container's PID 1 does: only SIGKILL ends it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


class ChildRuntime(Runtime):
    """Each "container" a child process of this test; the engine can be switched off."""

    name = "children"

    def __init__(self) -> None:
        self.answering = True
        self.procs: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}  # container id -> (alloc, child)
        self.finished: dict[str, datetime] = {}
        self.died_at: dict[str, float] = {}  # container id -> boottime it was seen dead (a tight poll)
        self.starts = 0

    def _check(self) -> None:
        if not self.answering:
            raise RuntimeUnavailable("docker: connection refused")

    async def list(self) -> list[Observed]:
        self._check()
        found = []
        for cid, (alloc_id, proc) in self.procs.items():
            code = proc.poll()
            if code is None:
                found.append(Observed(cid, alloc_id, f"job-{alloc_id}", Phase.RUNNING, pid=proc.pid))
            else:
                finished = self.finished.setdefault(cid, datetime.now(UTC))
                found.append(Observed(cid, alloc_id, f"job-{alloc_id}", Phase.EXITED, exit_code=128 - code,
                                      finished_at=finished))
        return found

    async def find(self, alloc_id: str) -> Observed | None:
        return next((o for o in await self.list() if o.alloc_id == alloc_id), None)

    async def start(self, alloc: Allocation, proceed: Callable[[], bool] | None = None) -> Observed:
        self._check()
        self.starts += 1
        proc = await asyncio.to_thread(_stubborn)
        cid = _marker(proc.pid)
        self.procs[cid] = (alloc.alloc_id, proc)
        return Observed(cid, alloc.alloc_id, alloc.job_id, Phase.RUNNING, pid=proc.pid)

    async def stop(self, container_id: str, grace: float) -> None:
        self._check()
        self.procs[container_id][1].kill()

    async def remove(self, container_id: str) -> None:
        self._check()

    async def logs(self, container_id: str, *, follow: bool, tail: int | None) -> AsyncGenerator[bytes, None]:
        yield b""

    async def changes(self) -> AsyncIterator[None]:
        await asyncio.Event().wait()
        yield None

    def reap(self) -> None:
        for alloc_id, proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            assert proc.stdout is not None
            proc.stdout.close()
            del alloc_id


class Leader:
    """The leader's side for one slave, in memory; it answers heartbeats throughout."""

    def __init__(self, allocation: Allocation) -> None:
        self.allocation = allocation
        self.heartbeats: list[Heartbeat] = []

    def reply(self) -> httpx.Response:
        body = Assignments(
            term=1, leader_id=1, leader_address="m1:1", version=1, allocations=[self.allocation],
            lease_seconds=1.0, fence_stop_grace=0.5, heartbeat_interval=0.1,
        )
        return httpx.Response(200, content=body.model_dump_json(), headers={"X-Claud-Master-Id": "1"})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/internal/heartbeat":
            self.heartbeats.append(Heartbeat.model_validate_json(request.content))
        else:
            WatchRequest.model_validate_json(request.content)
            await asyncio.sleep(0.5)
        return self.reply()

    def status(self) -> Any:
        beat = self.heartbeats[-1] if self.heartbeats else None
        return next((s for s in beat.allocations), None) if beat else None


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.01)
    return value


def test_an_agent_whose_engine_stops_answering_kills_its_jobs_a_lease_later_and_reports_them_fenced(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    allocation = Allocation(
        alloc_id="a1", job_id="job-a1", attempt=1, desired=DesiredState.RUN, image="claud/busybox",
        resources=Resources(), stop_timeout=30,
    )

    async def scenario() -> None:
        leader = Leader(allocation)
        http = httpx.AsyncClient(transport=httpx.MockTransport(leader.handle))
        runtime = ChildRuntime()
        agent = Agent(
            SlaveSettings(
                id="s1", masters=["m1:1"], runtime="simulated", heartbeat_interval=0.1, reconcile_interval=0.1,
                cluster_secret_file=secret, no_discovery=True, fence_round_trip=0.2, watch_wait=1,
            ),
            runtime, http=http, capacity=Capacity(1, 512, "flag", "flag"),
            usage=UsageProbe("/", limits=CgroupLimits()),
        )
        await agent.start()
        try:
            await _until(lambda: (s := leader.status()) and s.state == "running", 10, "the job running")
            ((_, proc),) = runtime.procs.values()

            runtime.answering = False
            cut = time.clock_gettime(time.CLOCK_BOOTTIME)
            await _until(lambda: proc.poll() is not None, 5, "the job's process killed")
            died = time.clock_gettime(time.CLOCK_BOOTTIME) - cut
            assert proc.returncode == -signal.SIGKILL  # TERM ignored, as by a container's PID 1
            # Lease 1 s from the first failure (within one reconcile pass of the cut), then
            # the kill window (grace 0.5 - round trip 0.2): never granted the job's 30 s.
            assert 1.3 - 0.05 <= died <= 1.3 + 0.1 + 0.5, f"killed {died:.2f}s after the cut"
            assert not agent.fenced  # the lease never ended: the masters answered throughout
            assert not leader.heartbeats[-1].runtime.healthy
            assert leader.status().state == "running"  # unknown, not exited, while the engine is away

            runtime.answering = True
            status = await _until(
                lambda: (s := leader.status()) and s.state == "exited" and s, 5, "the exit reported"
            )
            assert status.fenced and status.exit_code == 137 and "fenced" in (status.message or "")
            await asyncio.sleep(0.3)  # a few passes: the fenced allocation is never started again
            assert runtime.starts == 1
        finally:
            await agent.stop()
            await http.aclose()
            runtime.reap()

    asyncio.run(scenario())
