"""The Docker runtime against the real engine: labels, limits, exits, failures, stops, logs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from claud.api import Allocation, DesiredState, Resources
from claud.slave.runtime import Phase, StartFailed
from claud.slave.runtime.docker import DockerRuntime

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"


def make_alloc(ids: Any, name: str, command: list[str], **kw: Any) -> Allocation:
    return Allocation(
        alloc_id=ids.alloc(name),
        job_id=f"job-{name}",
        attempt=1,
        desired=DesiredState.RUN,
        image=kw.pop("image", IMAGE),
        command=command,
        env=kw.pop("env", {}),
        resources=kw.pop("resources", Resources(cpu=0.25, memory_mb=32)),
        **kw,
    )


@pytest.fixture
def runtime(slave_ids: Any) -> Iterator[DockerRuntime]:
    rt = new_runtime(slave_ids)
    yield rt
    asyncio.run(rt.aclose())


def new_runtime(ids: Any) -> DockerRuntime:
    rt = DockerRuntime(ids.slave_id, extra_labels={"claud.test": ids.token}, pull_timeout=10)
    rt.ping()
    return rt


async def wait_phase(rt: DockerRuntime, alloc_id: str, phase: Phase, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await rt.find(alloc_id)
        if found is not None and found.phase is phase:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{alloc_id} not {phase} after {timeout}s (last: {found})")


def test_start_applies_labels_limits_env_and_command(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    alloc = make_alloc(
        slave_ids,
        "full",
        ["sh", "-c", "echo $GREETING; sleep 300"],
        env={"GREETING": "hello"},
        resources=Resources(cpu=0.5, memory_mb=48),
    )
    observed = asyncio.run(runtime.start(alloc))
    assert observed.phase is Phase.RUNNING and observed.started_at is not None

    info = slave_docker.api.inspect_container(observed.container_id)
    assert info["Name"] == f"/claud-{alloc.alloc_id}"
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["Memory"] == 48 * 1024 * 1024
    assert info["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    labels = info["Config"]["Labels"]
    assert labels["claud.slave"] == slave_ids.slave_id
    assert labels["claud.job"] == "job-full"
    assert labels["claud.alloc"] == alloc.alloc_id
    assert labels["claud.index"] == "0" and labels["claud.version"] == "0"
    assert labels["claud.test"] == slave_ids.token
    assert "GREETING=hello" in info["Config"]["Env"]
    assert info["Config"]["Cmd"] == ["sh", "-c", "echo $GREETING; sleep 300"]

    listed = asyncio.run(runtime.list())
    assert [(o.alloc_id, o.phase) for o in listed] == [(alloc.alloc_id, Phase.RUNNING)]


def test_replicas_of_one_job_are_containers_labelled_with_their_index_and_version(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    """Two allocations of one job on one slave: two containers, each read back as its own slot."""
    job = f"job-{slave_ids.token[:10]}"
    first = make_alloc(slave_ids, "r0", ["sleep", "300"], version=3).model_copy(
        update={"job_id": job, "alloc_id": f"{job}-1"})
    second = make_alloc(slave_ids, "r2", ["sleep", "300"], index=2, version=3).model_copy(
        update={"job_id": job, "alloc_id": f"{job}.2-1"})

    async def scenario() -> list[Any]:
        await asyncio.gather(runtime.start(first), runtime.start(second))
        return await runtime.list()

    listed = {o.alloc_id: o for o in asyncio.run(scenario())}
    assert {a: (o.job_id, o.index, o.version, o.phase) for a, o in listed.items()} == {
        first.alloc_id: (job, 0, 3, Phase.RUNNING),
        second.alloc_id: (job, 2, 3, Phase.RUNNING),
    }
    labels = slave_docker.api.inspect_container(listed[second.alloc_id].container_id)["Config"]["Labels"]
    assert (labels["claud.job"], labels["claud.index"], labels["claud.version"]) == (job, "2", "3")
    fenced = {o.alloc_id: o.index for o in asyncio.run(runtime.running())}
    assert fenced == {first.alloc_id: 0, second.alloc_id: 2}


def test_empty_command_runs_the_image_default(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    observed = asyncio.run(runtime.start(make_alloc(slave_ids, "default", [])))
    info = slave_docker.api.inspect_container(observed.container_id)
    image_cmd = slave_docker.api.inspect_image(IMAGE)["Config"]["Cmd"]
    assert info["Config"]["Cmd"] == image_cmd


def test_exit_code_and_times_are_reported(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(slave_ids, "exit3", ["sh", "-c", "exit 3"])

    async def scenario() -> Any:
        await runtime.start(alloc)
        return await wait_phase(runtime, alloc.alloc_id, Phase.EXITED)

    exited = asyncio.run(scenario())
    assert exited.exit_code == 3 and exited.error is None
    assert exited.finished_at is not None and exited.started_at is not None
    # Docker stamps a process that exits at once a fraction of a ms before its start.
    assert exited.finished_at >= exited.started_at - timedelta(seconds=1)


def test_missing_image_fails_quickly_with_the_reason(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(slave_ids, "noimage", ["true"], image="claud/nosuch:1")
    began = time.monotonic()
    with pytest.raises(StartFailed) as info:
        asyncio.run(runtime.start(alloc))
    assert time.monotonic() - began < 5
    message = info.value.message
    assert "claud/nosuch:1" in message and "could not be pulled" in message and slave_ids.slave_id in message
    assert asyncio.run(runtime.find(alloc.alloc_id)) is None


def test_bad_command_fails_and_the_container_says_why(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(slave_ids, "badcmd", ["no-such-binary"])
    with pytest.raises(StartFailed, match="no-such-binary"):
        asyncio.run(runtime.start(alloc))
    # After an agent restart the failure is still visible on the container itself.
    left = asyncio.run(runtime.find(alloc.alloc_id))
    assert left is not None and left.phase is Phase.CREATED and "no-such-binary" in (left.error or "")


def test_stop_honours_the_grace_period(runtime: DockerRuntime, slave_ids: Any) -> None:
    polite = make_alloc(
        slave_ids, "polite", ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done"]
    )
    stubborn = make_alloc(slave_ids, "stubborn", ["sleep", "300"])  # PID 1 ignores SIGTERM

    async def scenario() -> tuple[float, float]:
        a, b = await asyncio.gather(runtime.start(polite), runtime.start(stubborn))
        began = time.monotonic()
        await runtime.stop(a.container_id, grace=10)
        polite_took = time.monotonic() - began
        began = time.monotonic()
        await runtime.stop(b.container_id, grace=1)
        stubborn_took = time.monotonic() - began
        await runtime.stop(b.container_id, grace=1)  # stopping twice is fine
        return polite_took, stubborn_took

    polite_took, stubborn_took = asyncio.run(scenario())
    assert polite_took < 5, "a container that exits on SIGTERM must not wait for the grace"
    assert 0.8 <= stubborn_took < 6, "SIGKILL comes after the grace, not before"
    codes = {o.alloc_id: o.exit_code for o in asyncio.run(runtime.list())}
    assert codes == {polite.alloc_id: 0, stubborn.alloc_id: 137}


def test_logs_all_tail_and_follow(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(
        slave_ids, "logs", ["sh", "-c", "echo one; echo two >&2; sleep 0.2; echo three; sleep 300"]
    )

    async def collect(follow: bool, tail: int | None, until: bytes | None = None) -> bytes:
        found = await runtime.find(alloc.alloc_id)
        assert found is not None
        out = b""
        stream = runtime.logs(found.container_id, follow=follow, tail=tail)
        try:
            async for chunk in stream:
                out += chunk
                if until is not None and until in out:
                    break
        finally:
            await stream.aclose()
        return out

    async def scenario() -> tuple[bytes, bytes, bytes, float]:
        await runtime.start(alloc)
        deadline = time.monotonic() + 10
        while b"three" not in (everything := await collect(False, None)):
            assert time.monotonic() < deadline, everything
            await asyncio.sleep(0.05)
        last = await collect(False, 1)
        threads_before = threading.active_count()
        began = time.monotonic()
        followed = await asyncio.wait_for(collect(True, None, until=b"three"), 10)
        took = time.monotonic() - began
        # The reader thread must end once the consumer is gone, not linger forever.
        deadline = time.monotonic() + 5
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert threading.active_count() <= threads_before
        return everything, last, followed, took

    everything, last, followed, took = asyncio.run(scenario())
    # stdout and stderr are separate pipes: their relative order is not kept.
    assert sorted(everything.split()) == [b"one", b"three", b"two"]
    assert last.split() == [b"three"]
    assert b"one" in followed and took < 5


def test_a_new_runtime_finds_and_adopts_existing_containers(slave_ids: Any, slave_docker: Any) -> None:
    alloc = make_alloc(slave_ids, "adopt", ["sleep", "300"])
    first = new_runtime(slave_ids)
    try:
        started = asyncio.run(first.start(alloc))
    finally:
        asyncio.run(first.aclose())

    second = new_runtime(slave_ids)
    try:
        listed = asyncio.run(second.list())
        assert [o.container_id for o in listed] == [started.container_id]
        again = asyncio.run(second.start(alloc))  # idempotent: adopts, never duplicates
        assert again.container_id == started.container_id
        # A container created but never started (agent died in between) is started, not duplicated.
        orphan = make_alloc(slave_ids, "created-only", ["sleep", "300"])
        created = slave_docker.api.create_container(
            IMAGE,
            command=["sleep", "300"],
            name=f"claud-{orphan.alloc_id}",
            labels={
                "claud.slave": slave_ids.slave_id,
                "claud.job": orphan.job_id,
                "claud.alloc": orphan.alloc_id,
                "claud.test": slave_ids.token,
            },
        )
        adopted = asyncio.run(second.start(orphan))
        assert adopted.container_id == created["Id"] and adopted.phase is Phase.RUNNING
    finally:
        asyncio.run(second.aclose())
    everything = slave_docker.containers.list(all=True, filters={"label": slave_ids.label})
    assert len(everything) == 2


def test_concurrent_starts_of_one_allocation_make_one_container(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    alloc = make_alloc(slave_ids, "race", ["sleep", "300"])

    async def scenario() -> set[str]:
        results = await asyncio.gather(*(runtime.start(alloc) for _ in range(4)))
        return {r.container_id for r in results}

    assert len(asyncio.run(scenario())) == 1
    assert len(slave_docker.containers.list(all=True, filters={"label": slave_ids.label})) == 1


def _count_engine_calls(monkeypatch: pytest.MonkeyPatch, *names: str) -> Counter[str]:
    """Counts the SDK calls named, on every client of this process (the runtime's threads' included)."""
    import docker

    calls: Counter[str] = Counter()
    for name in names:
        original = getattr(docker.APIClient, name)

        def counted(self: Any, *args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls[_name] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(docker.APIClient, name, counted)
    return calls


def test_a_start_is_a_create_a_start_and_one_inspect(
    runtime: DockerRuntime, slave_ids: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The container it just created is its own and never started: asking the engine would add a round trip.
    calls = _count_engine_calls(monkeypatch, "create_container", "start", "inspect_container")
    observed = asyncio.run(runtime.start(make_alloc(slave_ids, "trips", ["sleep", "300"])))
    assert observed.phase is Phase.RUNNING and observed.pid
    assert calls == {"create_container": 1, "start": 1, "inspect_container": 1}


def test_a_list_does_not_inspect_a_container_whose_start_is_in_flight(
    runtime: DockerRuntime, slave_ids: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created, release = threading.Event(), threading.Event()
    asked: list[int] = []

    def held_after_create() -> bool:
        # Asked before the create and again between create and start (in the worker thread).
        asked.append(1)
        if len(asked) == 2:
            created.set()
            release.wait(15)
        return True

    alloc = make_alloc(slave_ids, "inflight", ["sleep", "300"])

    async def scenario() -> tuple[Any, Any, Any]:
        start = asyncio.create_task(runtime.start(alloc, held_after_create))
        await asyncio.to_thread(created.wait, 15)
        calls = _count_engine_calls(monkeypatch, "inspect_container")
        during = await runtime.list()
        inspected = calls["inspect_container"]
        release.set()
        started = await start
        return during, inspected, started

    during, inspected, started = asyncio.run(scenario())
    assert [(o.alloc_id, o.phase, o.container_id) for o in during] == [
        (alloc.alloc_id, Phase.CREATED, started.container_id)
    ]
    assert during[0].created_at is not None and during[0].error is None
    assert inspected == 0
    assert started.phase is Phase.RUNNING
    listed = asyncio.run(runtime.list())
    assert [(o.alloc_id, o.phase) for o in listed] == [(alloc.alloc_id, Phase.RUNNING)]


def test_changes_signal_a_start_and_a_death(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(slave_ids, "events", ["sh", "-c", "sleep 0.5"])

    async def scenario() -> int:
        seen = 0
        changes = runtime.changes()
        try:
            await asyncio.wait_for(changes.__anext__(), 10)  # the "connected" signal
            await runtime.start(alloc)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                await asyncio.wait_for(changes.__anext__(), 10)
                seen += 1
                found = await runtime.find(alloc.alloc_id)
                if found is not None and found.phase is Phase.EXITED:
                    return seen
        finally:
            await changes.aclose()
        raise AssertionError("no event for the container's death")

    assert asyncio.run(scenario()) >= 1


def test_remove_deletes_an_exited_container(runtime: DockerRuntime, slave_ids: Any) -> None:
    alloc = make_alloc(slave_ids, "gc", ["true"])

    async def scenario() -> Any:
        await runtime.start(alloc)
        exited = await wait_phase(runtime, alloc.alloc_id, Phase.EXITED)
        await runtime.remove(exited.container_id)
        await runtime.remove(exited.container_id)  # already gone: fine
        return await runtime.find(alloc.alloc_id)

    assert asyncio.run(scenario()) is None


def test_a_start_whose_lease_ends_during_create_gives_up_and_leaves_nothing(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    from claud.slave.runtime import StartAborted

    asked: list[int] = []

    def lease_ends_after_create() -> bool:
        asked.append(1)
        return len(asked) == 1  # yes before the create, no just before the start

    alloc = make_alloc(slave_ids, "late", ["sleep", "300"])
    with pytest.raises(StartAborted):
        asyncio.run(runtime.start(alloc, lease_ends_after_create))
    assert len(asked) == 2
    assert slave_docker.containers.list(all=True, filters={"label": f"claud.alloc={alloc.alloc_id}"}) == []


def test_fence_kills_at_the_deadline_containers_that_ignore_sigterm(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    allocs = [make_alloc(slave_ids, f"stubborn{i}", ["sh", "-c", 'trap "" TERM; sleep 300']) for i in range(3)]
    # sleep as PID 1 of its namespace has no handler, so SIGTERM does nothing to it either.
    polite = make_alloc(slave_ids, "polite", ["sleep", "300"])

    async def scenario() -> tuple[float, list[Any]]:
        started = [await runtime.start(a) for a in [*allocs, polite]]
        await runtime.list()  # what the agent would know: ids and PIDs
        began = time.time()
        await runtime.fence({o.container_id: 1.0 for o in started})
        return began, started

    began, started = asyncio.run(scenario())
    from claud.slave.runtime.docker import parse_docker_time

    for o in started:
        state = slave_docker.api.inspect_container(o.container_id)["State"]
        assert not state["Running"]
        finished = parse_docker_time(state["FinishedAt"])
        assert finished is not None
        # Killed at the deadline (1 s), not a whole-second-rounded stop later.
        assert 0.9 <= finished.timestamp() - began <= 1.0 + 2.0, finished.timestamp() - began
        assert state["ExitCode"] == 137
