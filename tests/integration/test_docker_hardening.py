"""Job confinement on the real engine: what Docker was told, and what a job can
then not do (raw sockets, device nodes, new privileges, unbounded forks)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from claud.api import Allocation, DesiredState, Resources
from claud.slave.runtime import Phase
from claud.slave.runtime.docker import DockerRuntime
from claud.slave.runtime.hardening import Hardening

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"


def make_alloc(ids: Any, name: str, command: list[str], **kw: Any) -> Allocation:
    return Allocation(
        alloc_id=ids.alloc(name), job_id=f"job-{name}", attempt=1, desired=DesiredState.RUN, image=IMAGE,
        command=command, resources=kw.pop("resources", Resources(cpu=0.25, memory_mb=32)), **kw,
    )


def new_runtime(ids: Any, hardening: Hardening | None = None) -> DockerRuntime:
    rt = DockerRuntime(ids.slave_id, extra_labels={"claud.test": ids.token}, hardening=hardening)
    rt.ping()
    return rt


@pytest.fixture
def runtime(slave_ids: Any) -> Iterator[DockerRuntime]:
    rt = new_runtime(slave_ids)
    yield rt
    asyncio.run(rt.aclose())


def run_to_exit(rt: DockerRuntime, docker: Any, alloc: Allocation, timeout: float = 30) -> tuple[int, str]:
    """Start ``alloc``, wait for its exit; (exit code, output)."""

    async def scenario() -> Any:
        await rt.start(alloc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await rt.find(alloc.alloc_id)
            if found is not None and found.phase is Phase.EXITED:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"{alloc.alloc_id} still runs after {timeout}s")

    exited = asyncio.run(scenario())
    output = docker.api.logs(exited.container_id, stdout=True, stderr=True).decode(errors="replace")
    return exited.exit_code, output


def test_job_containers_are_confined_by_default(runtime: DockerRuntime, slave_ids: Any, slave_docker: Any) -> None:
    alloc = make_alloc(slave_ids, "confined", ["sleep", "300"], resources=Resources(cpu=0.25, memory_mb=48))
    observed = asyncio.run(runtime.start(alloc))
    host = slave_docker.api.inspect_container(observed.container_id)["HostConfig"]
    assert host["PidsLimit"] == 1024
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert set(host["CapDrop"]) == {"NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP"}
    assert not host["CapAdd"] and not host["Privileged"]
    assert host["Memory"] == host["MemorySwap"] == 48 * 1024 * 1024
    assert host["PidMode"] in ("", None)  # its own PID namespace: it sees no other container's processes


def test_a_job_cannot_open_raw_sockets_make_devices_or_gain_privileges(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    probe = (
        "grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status; "
        "ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping=ok || echo ping=refused; "
        "mknod /tmp/null c 1 3 2>/dev/null && echo mknod=ok || echo mknod=refused"
    )
    code, out = run_to_exit(runtime, slave_docker, make_alloc(slave_ids, "probe", ["sh", "-c", probe]))
    assert code == 0, out
    assert "ping=refused" in out and "mknod=refused" in out, out
    assert "NoNewPrivs:\t1" in out, out
    bounding = int(next(line for line in out.splitlines() if line.startswith("CapBnd")).split()[1], 16)
    net_raw, mknod, setfcap, audit_write = 13, 27, 31, 29
    for bit in (net_raw, mknod, setfcap, audit_write):
        assert not bounding & (1 << bit), f"capability {bit} is still in the bounding set: {out}"

    # The same probe on a slave whose operator gave it all back: the flags are what decide.
    lax = new_runtime(slave_ids, Hardening(cap_drop=(), no_new_privileges=False))
    try:
        code, out = run_to_exit(lax, slave_docker, make_alloc(slave_ids, "lax", ["sh", "-c", probe]))
    finally:
        asyncio.run(lax.aclose())
    assert "ping=ok" in out and "mknod=ok" in out and "NoNewPrivs:\t0" in out, out


def test_a_fork_bomb_stops_at_the_pids_limit_and_the_slave_carries_on(
    runtime: DockerRuntime, slave_ids: Any, slave_docker: Any
) -> None:
    # Each child sleeps on, so the bomb only grows until the kernel refuses a fork. Each process
    # costs its kernel stack and page tables in the container's memory cgroup (about 120 KiB on
    # some kernels): 1024 of them would reach a 128 MiB limit first, and the OOM killer, not the
    # pids limit, would end the bomb. 512 MiB leaves the pids limit the only one it can meet.
    bomb = make_alloc(
        slave_ids, "bomb", ["sh", "-c", "n=0; while true; do sleep 600 & n=$((n+1)); echo $n; done"],
        resources=Resources(cpu=0.5, memory_mb=512),
    )
    code, out = run_to_exit(runtime, slave_docker, bomb, timeout=60)
    lines = out.split()
    assert "fork" in out and code != 0, (code, out[-500:])
    spawned = max(int(x) for x in lines if x.isdigit())
    # The shell and its children share the 1024: it stopped there, not at the memory limit.
    assert 1000 <= spawned < 1024, spawned

    # The slave's side is untouched: this process forks, the runtime starts another job.
    assert subprocess.run(["true"], check=False).returncode == 0
    code, out = run_to_exit(runtime, slave_docker, make_alloc(slave_ids, "after", ["echo", "still here"]))
    assert (code, out.strip()) == (0, "still here")


def test_user_runs_the_job_as_that_uid_and_gid(runtime: DockerRuntime, slave_ids: Any, slave_docker: Any) -> None:
    alloc = make_alloc(slave_ids, "user", ["sh", "-c", "id -u; id -g"], user="1234:2345")
    code, out = run_to_exit(runtime, slave_docker, alloc)
    assert (code, out.split()) == (0, ["1234", "2345"])
    container = slave_docker.api.inspect_container(f"claud-{alloc.alloc_id}")
    assert container["Config"]["User"] == "1234:2345"

    # Without one, the image's user (root for busybox).
    code, out = run_to_exit(runtime, slave_docker, make_alloc(slave_ids, "nouser", ["id", "-u"]))
    assert (code, out.strip()) == (0, "0")
