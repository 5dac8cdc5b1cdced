"""`claud verify` through its real entry point, against one master and one Docker slave:
a clean run passes, a second container planted by hand beside a running job's
is an overlap, and an acknowledged id the masters never heard of is missing.

Every verdict is restricted to this test's jobs (``--job``): the engine is shared
with whatever else runs on the machine, and its other containers are not ours to judge.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from support.cluster import Cluster, wait_until

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"
TEST_LABEL = "claud.test"
SMALL = {"cpu": 0.05, "memory_mb": 16}


def verify(cluster: Cluster, *args: str) -> tuple[int, dict[str, Any], str]:
    """``claud -o json verify ARGS`` as a user runs it: (exit code, verdict, stderr)."""
    script = Path(sys.executable).parent / "claud"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]
    env = {**os.environ, "CLAUD_MASTERS": cluster.master.url, "CLAUD_TOKEN": cluster.token}
    done = subprocess.run([*argv, "-o", "json", "verify", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    try:
        verdict = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON verdict (exit {done.returncode}): {done.stdout!r} {done.stderr!r}") from None
    return done.returncode, verdict, done.stderr


def since(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture
def planted_label(engine: docker.DockerClient) -> Iterator[str]:
    """The label every container this test starts by hand carries; they are removed afterwards."""
    label = f"{TEST_LABEL}={uuid.uuid4().hex}"
    yield label
    for container in engine.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def test_a_clean_run_passes_and_an_unknown_acknowledged_id_is_missing(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master(1)
    cluster.start_slave("s1")
    began = datetime.now(UTC) - timedelta(seconds=1)
    ids = [cluster.submit(name=f"clean{i}", command=["sh", "-c", f"echo {i}"], resources=SMALL)["id"]
           for i in range(3)]
    for job_id in ids:
        assert cluster.wait_state(job_id, "completed", "failed")["state"] == "completed"
    acked = tmp_path / "acknowledged"
    acked.write_text("".join(f"{job_id}\n" for job_id in ids))
    only = [arg for job_id in ids for arg in ("--job", job_id)]

    code, verdict, stderr = verify(cluster, "--since", since(began), "--acknowledged", str(acked), *only)
    assert (code, verdict["ok"], verdict["findings"]) == (0, True, []), stderr
    assert verdict["jobs"] == 3 and verdict["containers"] == 3  # each job's one container, from the engine

    ghost = "feedfacecafe"  # 12 hex digits, like the masters' ids: but no master ever gave it
    acked.write_text(acked.read_text() + ghost + "\n")
    code, verdict, stderr = verify(cluster, "--since", since(began), "--acknowledged", str(acked), *only,
                                   "--job", ghost)
    assert code == 6, stderr
    assert verdict["findings"] == [{"job_id": ghost, "kind": "missing"}]


def test_a_second_container_of_a_running_job_is_an_overlap(
    cluster: Cluster, engine: docker.DockerClient, planted_label: str
) -> None:
    cluster.start_master(1)
    cluster.start_slave("s1")
    began = datetime.now(UTC) - timedelta(seconds=1)
    job_id = cluster.submit(name="svc", type="service", restart={"policy": "always"}, command=["sleep", "300"],
                            resources=SMALL, stop_timeout=1)["id"]
    cluster.wait_state(job_id, "running")
    (original,) = wait_until(lambda: engine.containers.list(filters={"label": f"claud.job={job_id}"}), 20,
                             what="the job's container")
    labels = {k: v for k, v in original.labels.items() if k in ("claud.job", "claud.alloc", "claud.slave")}
    assert labels["claud.job"] == job_id and len(labels) == 3
    key, value = planted_label.split("=", 1)
    copy = engine.containers.run(IMAGE, ["sleep", "300"], detach=True, labels={**labels, key: value},
                                 mem_limit="16m", stop_signal="SIGKILL")

    code, verdict, stderr = verify(cluster, "--since", since(began), "--job", job_id)
    assert code == 6, stderr
    # The agent may well notice the stray copy of its allocation and act on it; whatever it
    # does, the copy ran beside the original, and that is in the engine's record for good.
    assert {(f["job_id"], f["kind"]) for f in verdict["findings"]} == {(job_id, "overlap")}
    [finding] = [f for f in verdict["findings"]
                 if {c["container_id"] for c in f["containers"]} == {original.id, copy.id}]
    assert finding["seconds"] > 0
    # A human gets the same finding in a table, with the same exit code.
    script = Path(sys.executable).parent / "claud"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]
    env = {**os.environ, "CLAUD_MASTERS": cluster.master.url, "CLAUD_TOKEN": cluster.token}
    human = subprocess.run([*argv, "verify", "--since", since(began), "--job", job_id], env=env,
                           capture_output=True, text=True, timeout=120)
    assert human.returncode == 6 and "1 overlap" in human.stdout and copy.id[:12] in human.stdout
