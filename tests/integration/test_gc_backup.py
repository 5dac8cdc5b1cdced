"""GC and backups on real processes (simulated runtime, no Docker): old
terminal jobs and dead slaves go through the log while running jobs stay; a
backup taken from one cluster restores every job into a fresh one, on every
master; a damaged file is refused by name and changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from claud.api import JobSpec
from claud.api.backup import SnapshotHeader, checksum, encode_backup, parse_backup
from claud.client import Client
from claud.master import ops
from claud.master.state import StateMachine
from support.cluster import FAST_PROFILE, Cluster, wait_until

SIM = ["--runtime", "simulated", "--cpus", "4", "--memory-mb", "4096"]
SMALL = {"cpu": 0.1, "memory_mb": 16}


def claud(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The `claud` CLI through its entry point, as an operator runs it."""
    script = Path(sys.executable).parent / "claud"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]
    env = {**os.environ, "CLAUD_MASTERS": ",".join(m.url for m in cluster.masters),
           "CLAUD_TOKEN_FILE": str(cluster.token_file)}
    env.pop("CLAUD_TOKEN", None)
    return subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=120)


def status(cluster: Cluster, job_id: str) -> int:
    return cluster.http.get(f"/v1/jobs/{job_id}").status_code


def test_gc_removes_old_terminal_jobs_and_dead_slaves_and_keeps_running_ones(cluster: Cluster) -> None:
    cluster.start_master(1, *FAST_PROFILE, "--job-gc-after", "1", "--job-gc-keep", "1", "--node-gc-after", "4",
                         "--gc-interval", "0.5")
    cluster.start_slave("a", *SIM)
    running = cluster.submit(resources=SMALL, name="long", command=["sleep", "600"])["id"]
    service = cluster.submit(resources=SMALL, name="svc", type="service", command=["sleep", "600"])["id"]
    done = []
    for n in range(3):
        done.append(cluster.submit(resources=SMALL, name=f"quick{n}", env={"CLAUD_SIM_SECONDS": "0.1"})["id"])
        cluster.wait_state(done[-1], "completed")
    stopped = cluster.submit(resources=SMALL, name="stopped", command=["sleep", "600"])["id"]
    cluster.wait_state(stopped, "running")
    cluster.http.delete(f"/v1/jobs/{stopped}").raise_for_status()
    cluster.wait_state(stopped, "stopped")
    # The periodic pass removes every terminal job but the most recently finished (keep 1).
    wait_until(lambda: all(status(cluster, j) == 404 for j in done), 20, what="finished jobs collected")
    assert status(cluster, stopped) == 200  # the newest terminal job is kept
    for job_id in (running, service):
        assert cluster.job(job_id)["state"] == "running"
    listed = {j["id"] for j in cluster.http.get("/v1/jobs").json()["jobs"]}
    assert listed == {running, service, stopped}
    # A dead slave goes once silent for --node-gc-after; the live one with jobs stays.
    doomed = cluster.start_slave("b", *SIM)
    doomed.kill()
    wait_until(lambda: cluster.node(doomed.id) is None, 30, what="dead slave collected")
    assert cluster.node(cluster.slave("a").id)["state"] == "alive"
    last = cluster.http.get("/v1/cluster").json()["last_gc"]
    assert last is not None and last["index"] > 0 and {"at", "jobs", "slaves"} <= set(last)
    # `claud system gc` runs a pass now and says what it removed.
    result = claud(cluster, "system", "gc")
    assert result.returncode == 0 and "collected" in result.stdout, result
    with Client(cluster.master.url, cluster.token) as sdk:
        assert sdk.system_gc().jobs == []
        assert sdk.cluster().last_gc is not None
    assert "Last GC" in claud(cluster, "cluster").stdout


def test_a_backup_restores_every_job_into_a_fresh_cluster(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_master(1, *FAST_PROFILE)
    cluster.start_slave("a", *SIM)
    ids = [cluster.submit(resources=SMALL, name=f"q{n}", env={"CLAUD_SIM_SECONDS": "0.1"},
                          idempotency_key=f"key-{n}")["id"] for n in range(12)]
    running = cluster.submit(resources=SMALL, name="long", command=["sleep", "600"])["id"]
    for job_id in ids:
        cluster.wait_state(job_id, "completed")
    cluster.wait_state(running, "running")
    before = {j["id"]: j for j in cluster.http.get("/v1/jobs").json()["jobs"]}
    backup = tmp_path / "backup.snap"
    saved = claud(cluster, "operator", "snapshot", "save", str(backup))
    assert saved.returncode == 0, saved
    header, _ = parse_backup(backup.read_bytes())
    assert header.jobs == len(before) and header.slaves == 1
    assert f"index {header.index}" in saved.stdout and header.sha256 in saved.stdout
    assert backup.stat().st_mode & 0o777 == 0o600
    # Restored into the same cluster: a job made since is gone; the running one runs on, untouched.
    later = cluster.submit(resources=SMALL, name="later", command=["sleep", "600"])["id"]
    cluster.wait_state(later, "running")
    alloc = cluster.job(running)["alloc_id"]
    with Client(cluster.master.url, cluster.token) as sdk:
        result = sdk.restore_snapshot(backup)
        assert (result.jobs, result.source_index) == (len(before), header.index)
        restored_at = sdk.cluster().commit_index
    assert status(cluster, later) == 404
    slave_id = cluster.slave("a").id
    seen = cluster.node(slave_id)["last_heartbeat"]
    wait_until(lambda: cluster.node(slave_id)["last_heartbeat"] != seen, 10, what="a heartbeat after the restore")
    job = cluster.job(running)
    assert (job["state"], job["alloc_id"]) == ("running", alloc), job
    assert cluster.http.get("/v1/jobs").json()["index"] >= restored_at
    cluster.close()  # the first cluster is gone, with its data directories
    for master in cluster.masters:
        shutil.rmtree(master.data_dir)

    (tmp_path / "fresh").mkdir()
    fresh = Cluster(tmp_path / "fresh")
    try:
        fresh.start_masters(3, *FAST_PROFILE, "--max-restore-bytes", str(1024 * 1024))
        leader = fresh.wait_leader()
        refusals = {
            b"": "no header line",
            b"PK\x03\x04 a zip file\n": "not a CLAUD snapshot",
            backup.read_bytes()[:-20]: "truncated",
            backup.read_bytes()[:-2] + b"!}": "corrupt",
        }
        for body, named in refusals.items():
            answer = fresh.http.post("/v1/operator/snapshot", content=body)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["code"] == "invalid_snapshot" and named in answer.json()["error"]["message"]
        too_big = fresh.http.post("/v1/operator/snapshot", content=b"x" * (1024 * 1024 + 1))
        assert too_big.status_code == 413
        unauthenticated = httpx.post(f"{leader.url}/v1/operator/snapshot", content=backup.read_bytes())
        assert unauthenticated.status_code == 401
        assert fresh.http.get("/v1/jobs").json()["jobs"] == []  # nothing changed
        damaged = tmp_path / "damaged.snap"
        damaged.write_bytes(backup.read_bytes()[:-20])
        refused = claud(fresh, "operator", "snapshot", "restore", str(damaged))
        assert refused.returncode != 0 and "truncated" in refused.stderr, refused

        restored = claud(fresh, "operator", "snapshot", "restore", str(backup))
        assert restored.returncode == 0, restored
        assert f"{len(before)} jobs" in restored.stdout
        # Every master holds every job, as it was when the backup was taken.
        for master in fresh.masters:
            with master.client(fresh.token) as http:
                def has_all(http: httpx.Client = http) -> bool:
                    return {j["id"] for j in http.get("/v1/jobs").json()["jobs"]} == set(before)

                wait_until(has_all, 15, what=f"master {master.id} restored")
                for job_id in ids:
                    job = http.get(f"/v1/jobs/{job_id}").json()
                    assert (job["state"], job["attempts"], job["name"]) == (
                        before[job_id]["state"], before[job_id]["attempts"], before[job_id]["name"])
        # The restored idempotency keys still name their jobs.
        again = fresh.http.post("/v1/jobs", json={"image": "claud/busybox:latest", "name": "q0",
                                                  "env": {"CLAUD_SIM_SECONDS": "0.1"}, "idempotency_key": "key-0",
                                                  "resources": SMALL})
        assert again.status_code == 200 and again.json()["id"] == ids[0], again.text
        # The running job's slave is gone with the old cluster: declared dead, the job waits for room.
        fresh.wait_state(running, "pending", timeout=30)
        assert json.loads(backup.read_bytes().split(b"\n", 1)[0])["format"] == "claud-snapshot"
    finally:
        fresh.close()


def synthetic_backup(jobs: int) -> bytes:
    """A backup of ``jobs`` stopped jobs, made by applying their history to a state machine."""
    sm = StateMachine()
    at = ops.utcnow()
    index = 0
    for n in range(jobs):
        spec = JobSpec(name=f"b{n}", image="claud/busybox:latest", env={"K": "v" * 40}, idempotency_key=f"bk-{n}")
        for op in (ops.SubmitJob(at=at, job_id=f"big-{n:05d}", spec=spec), ops.StopJob(at=at, job_id=f"big-{n:05d}")):
            index += 1
            sm.apply(index, op)
    body = sm.to_snapshot().encode()
    header = SnapshotHeader(index=index, term=1, size=len(body), sha256=checksum(body), jobs=jobs, slaves=0,
                            taken_at=at)
    return encode_backup(header) + body


def test_a_large_backup_restores_on_every_master_through_the_cli(cluster: Cluster, tmp_path: Path) -> None:
    """Applying it holds each master for seconds (elections may follow): the CLI still
    answers with the restore, and every master ends with every job."""
    backup = tmp_path / "big.snap"
    backup.write_bytes(synthetic_backup(5_000))
    cluster.start_masters(3)
    restored = claud(cluster, "--failover-timeout", "60", "operator", "snapshot", "restore", str(backup))
    assert restored.returncode == 0, restored
    assert "5000 jobs" in restored.stdout
    for master in cluster.masters:
        with master.client(cluster.token) as http:
            def count(http: httpx.Client = http) -> bool:
                return len(http.get("/v1/jobs", timeout=30).json()["jobs"]) == 5_000

            wait_until(count, 60, interval=0.5, what=f"master {master.id} holds every job")
    saved = claud(cluster, "--failover-timeout", "60", "operator", "snapshot", "save", str(tmp_path / "again.snap"))
    assert saved.returncode == 0, saved
    assert parse_backup((tmp_path / "again.snap").read_bytes())[0].jobs == 5_000
