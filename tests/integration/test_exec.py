"""``claud exec`` through real master and slave processes: POST /v1/jobs/{id}/exec, the SDK and the CLI.

With Docker (one master, one slave, every container labelled ``claud.test=<uuid>``
and removed afterwards): output, exit codes, 409s. With the simulated runtime:
the route answers its fixed line (no Docker needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from claud.client import Client, Conflict
from support.cluster import Cluster
from support.docker_engine import remove_containers

IMAGE = "claud/busybox:latest"
SMALL = {"cpu": 0.05, "memory_mb": 32}
SLEEPER = ["sleep", "3600"]


@pytest.fixture
def docker_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    test_label = f"claud.test={uuid.uuid4().hex}"
    try:
        cluster.start_master(1)
        cluster.start_slave("s1", "--container-labels", test_label)
        yield cluster
    finally:
        cluster.close()
        remove_containers(test_label)


def running(cluster: Cluster, **spec: object) -> str:
    job = cluster.submit(type="service", image=IMAGE, resources=SMALL, stop_timeout=1, **spec)
    cluster.wait_state(str(job["id"]), "running", timeout=60)
    return str(job["id"])


def sdk(cluster: Cluster) -> Client:
    return Client(cluster.master.url, token=cluster.token)


def cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "claud"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]
    env = {**os.environ, "CLAUD_MASTERS": cluster.master.url, "CLAUD_TOKEN": cluster.token}
    return subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.docker
def test_exec_runs_in_the_jobs_container_and_answers_output_and_exit_code(docker_cluster: Cluster) -> None:
    job_id = running(docker_cluster, name="sleeper", command=SLEEPER)
    view = docker_cluster.job(job_id)
    with sdk(docker_cluster) as claud:
        hi = claud.exec(job_id, ["echo", "hi"])
        assert (hi.exit_code, hi.stdout, hi.stderr, hi.truncated) == (0, "hi\n", "", False)
        assert (hi.job_id, hi.alloc_id, hi.node_id) == (job_id, view["alloc_id"], view["node_id"])
        hostname = claud.exec(job_id, ["cat", "/etc/hostname"], alloc=view["alloc_id"])
        assert hostname.exit_code == 0 and hostname.stdout.strip()
        both = claud.exec(job_id, ["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (both.exit_code, both.stdout, both.stderr) == (3, "out\n", "err\n")
        # Output past 1 MiB per stream is cut, and says so.
        big = claud.exec(job_id, ["sh", "-c", "head -c 1100000 /dev/zero"])
        assert big.exit_code == 0 and big.truncated and len(big.stdout) == 1024 * 1024
        with pytest.raises(Conflict) as wrong:
            claud.exec(job_id, ["true"], alloc=f"{job_id}-99")
        assert wrong.value.code == "alloc_mismatch"
        with pytest.raises(Exception) as slow:
            claud.exec(job_id, ["sleep", "30"], timeout=1)
        assert getattr(slow.value, "code", None) == "exec_timeout"

    # The CLI prints the output and exits with the command's code.
    shown = cli(docker_cluster, "exec", job_id, "--", "echo", "hi")
    assert (shown.returncode, shown.stdout) == (0, "hi\n"), shown.stderr
    three = cli(docker_cluster, "exec", job_id, "--", "sh", "-c", "echo oops >&2; exit 3")
    assert (three.returncode, three.stdout) == (3, "") and "oops" in three.stderr


@pytest.mark.docker
def test_exec_on_a_job_that_is_not_running_is_a_409(docker_cluster: Cluster) -> None:
    job = docker_cluster.submit(name="done", image=IMAGE, resources=SMALL, command=["true"])
    job_id = str(job["id"])
    docker_cluster.wait_state(job_id, "completed", timeout=60)
    answer = docker_cluster.http.post(f"/v1/jobs/{job_id}/exec", json={"command": ["echo", "hi"]})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "not_running"
    refused = cli(docker_cluster, "exec", job_id, "--", "echo", "hi")
    assert refused.returncode == 1 and "no running allocation" in refused.stderr


def test_exec_validates_the_body_and_the_simulated_runtime_answers_a_fixed_line(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        cluster.start_master(1)
        cluster.start_slave("s1", "--runtime", "simulated")
        job_id = str(cluster.submit(name="sim", type="service", image=IMAGE, resources=SMALL)["id"])
        cluster.wait_state(job_id, "running", timeout=30)
        bad = cluster.http.post(f"/v1/jobs/{job_id}/exec", json={"command": [], "timeout": 5})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "command", bad.text
        too_long = cluster.http.post(f"/v1/jobs/{job_id}/exec", json={"command": ["true"], "timeout": 601})
        assert too_long.status_code == 422 and too_long.json()["error"]["field"] == "timeout", too_long.text
        missing = cluster.http.post("/v1/jobs/nosuchjob/exec", json={"command": ["true"]})
        assert missing.status_code == 404
        done = cluster.http.post(f"/v1/jobs/{job_id}/exec", json={"command": ["echo", "hi there"]})
        assert done.status_code == 200, done.text
        assert done.json()["exit_code"] == 0 and done.json()["stdout"] == "simulated exec: echo 'hi there'\n"
    finally:
        cluster.close()
