"""Replicas, scaling and rolling updates through real master and slave processes with the
simulated runtime (no Docker): placement spread over the slaves, a lost slave's replica placed
again elsewhere while the others keep their attempts, a rollout that keeps two of three healthy
throughout, and a broken version that reverts by itself."""

from __future__ import annotations

import time
from typing import Any

from support.cluster import Cluster, wait_until

QUICK = ["--heartbeat-interval", "0.3", "--suspect-after", "1.5", "--slave-lease", "2.5",
         "--fence-stop-grace", "1", "--node-dead-after", "7"]
FOREVER = {"CLAUD_SIM_SECONDS": "inf"}
CHECK = {"command": ["true"], "interval": 0.2, "failures": 2}
UPDATE = {"max_parallel": 1, "min_healthy_time": 1, "healthy_deadline": 6, "auto_revert": True}


def allocations(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    return cluster.job(job_id)["allocations"]


def all_running(cluster: Cluster, job_id: str, count: int, healthy: bool = False) -> list[dict[str, Any]] | None:
    allocs = allocations(cluster, job_id)
    ok = len(allocs) == count and all(
        a["state"] == "running" and (not healthy or a["health"] == "healthy") for a in allocs
    )
    return allocs if ok else None


def test_replicas_spread_and_a_lost_slave_s_replica_comes_back_elsewhere(cluster: Cluster) -> None:
    cluster.start_master(1, *QUICK)
    for name in ("a", "b", "c", "d"):
        cluster.start_slave(name, "--runtime", "simulated")
    job = cluster.submit(name="web", type="service", count=3, env=FOREVER, stop_timeout=0)
    assert job["desired"] == 3 and [a["index"] for a in job["allocations"]] == [0, 1, 2]
    running = wait_until(lambda: all_running(cluster, job["id"], 3), 30, what="three replicas running")
    assert len({a["slave_id"] for a in running}) == 3, running  # spread: one per slave
    view = cluster.job(job["id"])
    assert view["state"] == "running" and (view["running"], view["desired"]) == (3, 3)
    listed = cluster.http.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]  # allocation rows are not jobs

    victim = running[1]
    keep = {a["index"]: (a["id"], a["slave_id"]) for a in running if a["index"] != 1}
    slave = next(s for s in cluster.slaves if s.id == victim["slave_id"])
    slave.kill()

    def moved() -> dict[str, Any] | None:
        allocs = allocations(cluster, job["id"])
        again = allocs[1]
        if again["state"] == "running" and again["slave_id"] != victim["slave_id"]:
            return again
        return None

    again = wait_until(moved, 40, what="replica 1 running on another slave")
    assert again["id"] == f"{job['id']}.1-2" and again["attempt"] == 2
    assert again["slave_id"] not in {slave_id for _, slave_id in keep.values()}  # spread still
    after = {a["index"]: (a["id"], a["slave_id"]) for a in allocations(cluster, job["id"]) if a["index"] != 1}
    assert after == keep  # the other two were never touched


def test_a_rollout_keeps_two_of_three_healthy_and_a_broken_version_reverts(cluster: Cluster) -> None:
    cluster.start_master(1, *QUICK)
    for name in ("a", "b", "c"):
        cluster.start_slave(name, "--runtime", "simulated")
    spec = {"name": "web", "image": "claud/busybox:latest", "type": "service", "count": 3, "stop_timeout": 0,
            "env": {**FOREVER, "VERSION": "one"}, "check": CHECK, "update": UPDATE}
    job_id = cluster.submit(**spec)["id"]
    wait_until(lambda: all_running(cluster, job_id, 3, healthy=True), 30, what="three healthy replicas")

    def roll_out(new: dict[str, Any], until: Any) -> list[int]:
        answer = cluster.http.put(f"/v1/jobs/{job_id}", json=new)
        assert answer.status_code == 200, answer.text
        healthy_counts = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = cluster.job(job_id)
            healthy_counts.append(sum(1 for a in view["allocations"] if a["health"] == "healthy"))
            if until(view):
                return healthy_counts
            time.sleep(0.1)
        raise AssertionError(f"rollout did not end: {cluster.job(job_id)}")

    good = {**spec, "env": {**FOREVER, "VERSION": "two"}}
    counts = roll_out(good, lambda v: v["rollout"] and v["rollout"]["state"] == "complete")
    assert min(counts) >= 2, counts
    view = cluster.job(job_id)
    assert view["version"] == 1 and view["env"]["VERSION"] == "two"
    assert all(a["version"] == 1 and a["attempt"] == 2 for a in view["allocations"]), view["allocations"]

    broken = {**spec, "env": {**FOREVER, "VERSION": "three", "CLAUD_SIM_HEALTHY": "0"}}
    counts = roll_out(broken, lambda v: v["version"] == 3 and v["rollout"]["state"] == "complete")
    assert min(counts) >= 2, counts
    view = cluster.job(job_id)
    assert view["env"]["VERSION"] == "two"  # back to the last version that rolled out whole
    versions = cluster.http.get(f"/v1/jobs/{job_id}/versions").json()["versions"]
    assert [(v["version"], v["stable"]) for v in versions] == [(3, True), (2, False), (1, True), (0, True)]
    assert any("version 2 failed" in e["message"] for e in view["events"]), view["events"]


def test_scale_and_the_refusals_name_their_field(cluster: Cluster) -> None:
    cluster.start_master(1, *QUICK)
    cluster.start_slave("a", "--runtime", "simulated")
    cluster.start_slave("b", "--runtime", "simulated")
    job_id = cluster.submit(name="web", type="service", env=FOREVER, stop_timeout=0)["id"]
    wait_until(lambda: all_running(cluster, job_id, 1), 30, what="one running")
    first = cluster.job(job_id)["allocations"][0]["id"]
    scaled = cluster.http.post(f"/v1/jobs/{job_id}/scale", json={"count": 3})
    assert scaled.status_code == 200 and scaled.json()["desired"] == 3, scaled.text
    running = wait_until(lambda: all_running(cluster, job_id, 3), 30, what="three running")
    assert running[0]["id"] == first  # a scale replaces nothing
    assert cluster.http.post(f"/v1/jobs/{job_id}/scale", json={"count": 1}).status_code == 200
    wait_until(lambda: len(allocations(cluster, job_id)) == 1, 30, what="scaled down to one")
    assert allocations(cluster, job_id)[0]["id"] == first

    bad = cluster.http.post(f"/v1/jobs/{job_id}/scale", json={"count": 0})
    assert bad.status_code == 422 and "count" in bad.json()["error"]["message"], bad.text
    bad = cluster.http.put(f"/v1/jobs/{job_id}", json={"name": "web", "image": "claud/busybox", "count": "x"})
    assert bad.status_code == 422 and "count" in bad.json()["error"]["message"], bad.text
    missing = cluster.http.post("/v1/jobs/0123456789ab/scale", json={"count": 2})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    no_version = cluster.http.post(f"/v1/jobs/{job_id}/revert", json={"version": 7})
    assert no_version.status_code == 404, no_version.text
    assert cluster.http.get(f"/v1/jobs/{job_id}.1").status_code == 404
    assert cluster.http.delete(f"/v1/jobs/{job_id}").status_code == 202
    stopped = cluster.http.post(f"/v1/jobs/{job_id}/scale", json={"count": 2})
    assert stopped.status_code == 409 and stopped.json()["error"]["code"] == "conflict", stopped.text


def test_packed_replicas_run_side_by_side_on_one_slave(cluster: Cluster) -> None:
    cluster.start_master(1, *QUICK)
    cluster.start_slave("a", "--runtime", "simulated")
    job_id = cluster.submit(name="packed", type="service", count=3, spread=False, env=FOREVER, stop_timeout=0)["id"]
    running = wait_until(lambda: all_running(cluster, job_id, 3), 30, what="three replicas on one slave")
    assert {a["slave_id"] for a in running} == {cluster.slave("a").id}
    assert [a["id"] for a in running] == [f"{job_id}-1", f"{job_id}.1-1", f"{job_id}.2-1"]
