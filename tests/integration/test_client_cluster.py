"""The SDK (claud.client) against real masters: failover while the leader dies
or freezes, exactly-once submits, and wait/logs/events with a real slave."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest

from claud.client import AsyncClient, Client, Event, JobState, JobView, Unreachable
from support.cluster import Cluster, Master, free_port, wait_until

QUICK = {"name": "sdk", "image": "claud/busybox:latest", "command": ["true"],
         "resources": {"cpu": 0.05, "memory_mb": 16}}  # fmt: skip


class SdkSubmitter:
    """Submits through one SDK client, one job after another, and remembers what
    was acknowledged (idempotency key -> job id) and how long each submit took."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.acked: dict[str, str] = {}
        self.latencies: list[tuple[float, float]] = []  # (started, seconds)
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SdkSubmitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(40)
        assert not self._thread.is_alive(), "a submit hung past the SDK's deadlines"

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                job = self.client.submit({"name": "sdk-load", "image": "claud/busybox:latest"})
            except Exception as exc:  # noqa: BLE001 - any failure is a test failure, reported at the end
                self.errors.append(exc)
                continue
            self.latencies.append((started, time.monotonic() - started))
            assert job.idempotency_key is not None
            self.acked[job.idempotency_key] = job.id

    def count(self) -> int:
        return len(self.acked)


def all_urls_starting_with(cluster: Cluster, first: Master) -> list[str]:
    return [first.url, *(m.url for m in cluster.masters if m is not first)]


def assert_acknowledged_exactly_once(cluster: Cluster, load: SdkSubmitter) -> None:
    """Every live master ends up with every acknowledged job, each exactly once."""
    live = [m for m in cluster.masters if m.alive]

    def views() -> list[list[JobView]] | None:
        found = []
        for master in live:
            with Client(master.url, cluster.token, failover_timeout=0) as claud:
                found.append(claud.jobs())
        ids = [sorted(job.id for job in jobs) for jobs in found]
        return found if all(i == ids[0] for i in ids) else None

    for jobs in wait_until(views, 20, what="the masters to converge"):
        by_key: dict[str | None, list[str]] = {}
        for job in jobs:
            by_key.setdefault(job.idempotency_key, []).append(job.id)
        for key, job_id in load.acked.items():
            assert by_key.get(key) == [job_id], f"acknowledged job {job_id} (key {key}) is {by_key.get(key)}"
        duplicated = {key: ids for key, ids in by_key.items() if len(ids) > 1}
        assert not duplicated, f"a retried submit made a second job: {duplicated}"
        # At most the one submit in flight when the load stopped is not acknowledged.
        assert len(jobs) - len(load.acked) <= 1


# --- failover --------------------------------------------------------------------------


def test_submits_keep_succeeding_while_the_leader_is_sigkilled(cluster: Cluster) -> None:
    cluster.start_masters(3)
    leader = cluster.wait_leader()
    # The SDK starts on the leader, so the kill cuts its connection mid-request.
    with Client(all_urls_starting_with(cluster, leader), cluster.token) as claud, SdkSubmitter(claud) as load:
        wait_until(lambda: load.count() >= 20, 20, what="submits before the kill")
        leader.kill()
        killed_at, before = time.monotonic(), load.count()
        cluster.wait_leader(timeout=10, other_than=leader)
        wait_until(lambda: load.count() >= before + 20, 20, what="submits after the kill")
    assert load.errors == [], f"submits failed: {load.errors[:3]}"
    stall = max(seconds for started, seconds in load.latencies if started >= killed_at - 1)
    assert stall < 10, f"a submit took {stall:.1f}s across the failover"
    assert_acknowledged_exactly_once(cluster, load)


def test_a_frozen_leader_costs_one_read_timeout_not_one_per_call(cluster: Cluster) -> None:
    cluster.start_masters(3)
    leader = cluster.wait_leader()
    read_timeout = 2.0
    timeout = httpx.Timeout(read_timeout, connect=1.0)
    with Client(all_urls_starting_with(cluster, leader), cluster.token, timeout=timeout) as claud:
        with SdkSubmitter(claud) as load:
            wait_until(lambda: load.count() >= 10, 20, what="submits before the freeze")
            leader.signal(signal.SIGSTOP)
            try:
                frozen_at, before = time.monotonic(), load.count()
                wait_until(lambda: load.count() >= before + 20, 30, what="submits while the leader is frozen")
                # Reads stick to the master that answered last: none waits for the frozen one.
                for _ in range(5):
                    started = time.monotonic()
                    claud.cluster()
                    assert time.monotonic() - started < read_timeout / 2
            finally:
                leader.signal(signal.SIGCONT)
        assert load.errors == [], f"submits failed: {load.errors[:3]}"
        slow = [seconds for started, seconds in load.latencies
                if started >= frozen_at - 1 and seconds >= read_timeout]  # fmt: skip
        # The call in flight pays a read timeout, and maybe one more on a follower
        # still forwarding to the frozen leader before the election; then the SDK
        # keeps to the master that answered.
        assert len(slow) <= 2, f"{len(slow)} submits waited a read timeout: {slow}"
    cluster.wait_leader(timeout=20)
    assert_acknowledged_exactly_once(cluster, load)


def test_the_failover_deadline_bounds_a_call_to_dead_masters() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    started = time.monotonic()
    with Client(dead, "token", failover_timeout=3) as claud, pytest.raises(Unreachable) as caught:
        claud.jobs()
    assert 2.5 <= time.monotonic() - started < 6  # rounds with backoff until the deadline, no longer
    assert set(caught.value.reasons) == {f"http://{address}" for address in dead}


# --- a real cluster with a real slave ------------------------------------------------------


@pytest.fixture
def claud(shared_cluster: Cluster) -> Iterator[Client]:
    with Client([m.url for m in shared_cluster.masters], shared_cluster.token) as client:
        yield client


@pytest.mark.docker
def test_wait_returns_the_finished_job_with_its_exit_code(claud: Client) -> None:
    ok = claud.submit({**QUICK, "command": ["sh", "-c", "echo fine"]})
    failing = claud.submit({**QUICK, "command": ["sh", "-c", "exit 3"]})
    done = claud.wait(ok.id, timeout=30)
    assert (done.state, done.exit_code) == (JobState.COMPLETED, 0)
    assert [e.state for e in done.events or []][-1] is JobState.COMPLETED
    failed = claud.wait(failing.id, timeout=30)
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    assert "".join(claud.logs(ok.id)) == "fine\n"


@pytest.mark.docker
def test_logs_follow_streams_while_the_job_runs_and_ends_with_it(claud: Client) -> None:
    job = claud.submit({**QUICK, "command": ["sh", "-c", "echo start; sleep 1; echo end"]})
    with closing(claud.logs(job.id, follow=True)) as lines:
        assert next(lines) == "start\n"
        # The first line arrived while the container still runs: it is streamed, not replayed.
        assert claud.job(job.id).state in (JobState.RUNNING, JobState.STARTING)
        assert list(lines) == ["end\n"]
    assert claud.wait(job.id, timeout=10).state is JobState.COMPLETED


@pytest.mark.docker
def test_logs_follow_moves_on_to_each_restart(claud: Client) -> None:
    job = claud.submit({**QUICK, "command": ["sh", "-c", "echo attempt on $(hostname); exit 1"],
                        "restart": {"policy": "on-failure", "max_retries": 2}})  # fmt: skip
    lines = list(claud.logs(job.id, follow=True))
    done = claud.job(job.id)
    assert (done.state, done.attempts) == (JobState.FAILED, 3)
    # One line per attempt, each from its own container (hostname = container id).
    assert len(lines) == 3 and all(line.startswith("attempt on ") for line in lines), lines
    assert len(set(lines)) == 3


@pytest.mark.docker
def test_events_stream_a_jobs_transitions(claud: Client, shared_cluster: Cluster) -> None:
    seen: list[Event] = []

    def consume() -> None:
        # Whatever ends the stream, the cluster went away at the end of the module.
        with (
            Client([m.url for m in shared_cluster.masters], shared_cluster.token) as listener,
            contextlib.suppress(Exception),
        ):
            for event in listener.events():  # appended one by one: the test reads them as they come
                seen.append(event)

    threading.Thread(target=consume, daemon=True).start()
    submitted: list[str] = []

    def submitted_since_connected() -> str | None:
        # A job submitted once the stream is open shows up in it from its first state.
        submitted.append(claud.submit(QUICK).id)
        return next((e.data["id"] for e in list(seen)
                     if e.type == "job" and e.data.get("id") in submitted and e.data["state"] == "pending"),
                    None)  # fmt: skip

    target = wait_until(submitted_since_connected, 15, interval=0.2, what="the event stream to connect")

    def states() -> list[str]:
        return [e.data["state"] for e in list(seen) if e.type == "job" and e.data.get("id") == target]

    wait_until(lambda: "completed" in states(), 30, what=f"job {target} to complete in the stream")
    assert states()[0] == "pending"
    assert states().index("scheduled") < states().index("running") < states().index("completed")
    event = next(e for e in seen if e.type == "job" and e.data.get("id") == target)
    assert {"id", "state", "at"} <= set(event.data)


@pytest.mark.docker
def test_async_client_against_the_real_cluster(shared_cluster: Cluster) -> None:
    urls = [m.url for m in shared_cluster.masters]

    async def scenario() -> None:
        async with asyncio.timeout(60), AsyncClient(urls, shared_cluster.token) as claud:
            events: list[Event] = []
            mine: set[str] = set()
            connected = asyncio.Event()

            async def consume() -> None:
                async for event in claud.events():
                    events.append(event)
                    if event.type == "job" and event.data.get("id") in mine:
                        connected.set()

            listener = asyncio.create_task(consume())
            job = None
            while not connected.is_set():  # the stream is open once it shows a job of ours
                job = await claud.submit({**QUICK, "command": ["sh", "-c", "echo async; exit 4"]})
                mine.add(job.id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connected.wait(), 0.3)
            assert job is not None
            done = await claud.wait(job.id, timeout=30)
            assert (done.state, done.exit_code) == (JobState.FAILED, 4)
            assert [line async for line in claud.logs(job.id, follow=True)] == ["async\n"]
            while not any(e.data.get("id") == job.id and e.data.get("state") == "failed" for e in events):
                await asyncio.sleep(0.05)
            listener.cancel()
            assert len(await claud.jobs()) >= 1
            assert (await claud.cluster()).leader_id == 1

    asyncio.run(scenario())
