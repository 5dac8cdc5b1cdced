"""`make demo`'s script, as a newcomer runs it: three masters elect a leader, three
slaves join, the sample jobs settle, and killing the leader leaves a cluster that
elects another and still runs jobs. It runs beside any demo already up (its own
directory, port and slave ids), and `down` leaves no process or container behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from support.cluster import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "demo.sh"
FAULTS = REPO / "deploy" / "demo-faults.sh"
BIN = Path(sys.executable).parent


@pytest.fixture
def demo(tmp_path: Path) -> Any:
    port = free_port()
    name = "t" + uuid.uuid4().hex[:8]
    env = {**os.environ, "CLAUD_DEMO_DIR": str(tmp_path / "demo"), "CLAUD_DEMO_PORT": str(port),
           "CLAUD_DEMO_NAME": name}
    env.pop("CLAUD_TOKEN", None)
    try:
        yield env, port, name
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, timeout=60, check=False)


def claud(env: dict[str, str], *args: str) -> Any:
    cli_env = {**env, "CLAUD_MASTERS": ",".join(f"127.0.0.{11 + i}:{env['CLAUD_DEMO_PORT']}" for i in range(3)),
               "CLAUD_TOKEN_FILE": str(Path(env["CLAUD_DEMO_DIR"]) / "token")}
    done = subprocess.run([str(BIN / "claud"), "--output", "json", *args], env=cli_env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def demo_processes(env: dict[str, str]) -> list[int]:
    """The masters and slaves this demo started (each names its directory on its command line)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_bytes().lower()
        except OSError:
            continue
        named = any(env["CLAUD_DEMO_DIR"].encode() in arg for arg in argv)
        if proc.name.isdigit() and named and any(arg.endswith((b"claud-master", b"claud-slave")) for arg in argv[:2]) \
                and b"zombie" not in status:
            found.append(int(proc.name))
    return found


def test_the_demo_starts_three_masters_and_three_slaves_and_survives_the_guided_faults(demo: Any) -> None:
    env, port, name = demo
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=240,
                        check=False)
    assert up.returncode == 0, up.stderr[-3000:]
    assert f"http://127.0.0.11:{port}/ui" in up.stderr

    cluster = claud(env, "cluster")
    assert len(cluster["masters"]) == 3 and cluster["leader_id"] is not None
    assert sorted(m["role"] for m in cluster["members"]) == ["voter"] * 3
    slaves = [n for n in claud(env, "nodes") if n["role"] == "slave"]
    assert sorted(s["id"] for s in slaves) == [f"{name}-s{i}" for i in (1, 2, 3)]
    jobs = claud(env, "jobs")
    states = {j["name"]: j["state"] for j in jobs}
    assert states == {"hello": "completed", "oops": "failed", "huge": "pending", "quick": "completed",
                      "web": "running"}
    web = claud(env, "job", next(j["id"] for j in jobs if j["name"] == "web"))
    assert (web["running"], web["desired"]) == (3, 3)
    assert len({a["slave_id"] for a in web["allocations"]}) == 3  # spread over the three slaves
    for allocation in web["allocations"]:  # each was reached by the script on its printed address
        assert f"http://{allocation['ports'][0]['address']}/ -> hello from version 0" in up.stdout

    # The guided tour of `make demo-faults` on it: the leader killed, a job's slave cut off,
    # a follower paused, and claud verify's verdict on the run, which must be clean.
    leader = cluster["leader_id"]
    assert f"claud chaos kill {leader}" in up.stderr
    tour = subprocess.run(["bash", str(FAULTS)], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert tour.returncode == 0, tour.stderr[-4000:]
    assert "nothing found" in tour.stdout + tour.stderr
    log = Path(env["CLAUD_DEMO_DIR"], f"master-{leader}.log")
    assert "restarting in 2 s" in log.read_text()  # the killed leader came back through the restart loop

    loops = Path(env["CLAUD_DEMO_DIR"], "pids").read_text().split()
    assert len(loops) == 6
    assert len(demo_processes(env)) == 6
    subprocess.run(["bash", str(SCRIPT), "down"], env=env, timeout=60, check=True)
    for pid in loops:
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()
    assert demo_processes(env) == []
    engine = docker.from_env()
    try:
        for i in (1, 2, 3):
            assert not engine.containers.list(all=True, filters={"label": f"claud.slave={name}-s{i}"})
    finally:
        engine.close()
