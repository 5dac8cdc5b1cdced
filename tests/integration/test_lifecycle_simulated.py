"""The masters' lifecycle decisions end to end, on real processes with the
simulated runtime (no Docker): drains with deadlines, a draining slave that
dies, a service that exits 0, a slave whose engine does not answer."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from claud.api.protocol import CLUSTER_SECRET_HEADER, HEARTBEAT_PATH
from support.cluster import FAST_PROFILE, Cluster, wait_until

SIM = ["--runtime", "simulated", "--cpus", "4", "--memory-mb", "4096"]
SMALL = {"cpu": 0.1, "memory_mb": 16}


def start(cluster: Cluster, *names: str) -> None:
    cluster.start_master(1, *FAST_PROFILE)
    for name in names:
        cluster.start_slave(name, *SIM)


def place_all_on(cluster: Cluster, target: str, others: list[str], specs: list[dict[str, Any]]) -> list[str]:
    """Submit ``specs`` while every other slave is drained, so they all run on ``target``."""
    for other in others:
        cluster.http.post(f"/v1/nodes/{cluster.slave(other).id}/drain").raise_for_status()
    ids = [cluster.submit(resources=SMALL, **spec)["id"] for spec in specs]
    for job_id in ids:
        assert cluster.wait_state(job_id, "running")["node_id"] == cluster.slave(target).id
    for other in others:
        cluster.http.post(f"/v1/nodes/{cluster.slave(other).id}/undrain").raise_for_status()
    return ids


def states(job: dict[str, Any]) -> list[str]:
    return [e["state"] for e in job["events"]]


def test_a_drain_with_a_deadline_lets_batch_jobs_finish_then_moves_the_rest(cluster: Cluster) -> None:
    start(cluster, "a", "b")
    a, b = cluster.slave("a").id, cluster.slave("b").id
    short, long, svc = place_all_on(cluster, "a", ["b"], [
        {"name": "short", "env": {"CLAUD_SIM_SECONDS": "3"}},
        {"name": "long", "command": ["sleep", "600"]},
        {"name": "svc", "type": "service", "command": ["sleep", "600"]},
    ])
    drained = cluster.http.post(f"/v1/nodes/{a}/drain", json={"deadline": 6})
    assert drained.status_code == 200, drained.text
    assert drained.json()["state"] == "draining" and drained.json()["drain_deadline"]
    # The service moves at once; the batch jobs run on.
    wait_until(lambda: (j := cluster.job(svc))["state"] == "running" and j["node_id"] == b, 15, what="service on b")
    assert cluster.job(long)["node_id"] == a and cluster.job(long)["state"] == "running"
    done = cluster.wait_state(short, "completed", "failed", "pending", timeout=15)
    assert done["state"] == "completed" and done["attempts"] == 1  # finished while draining: never run again
    # At the deadline what still runs is forced off, lost, and placed elsewhere.
    moved = wait_until(lambda: (j := cluster.job(long))["state"] == "running" and j["node_id"] == b and j,
                       20, what="long job forced onto b")
    assert moved["attempts"] == 2 and "lost" in states(moved) and "failed" not in states(moved)
    assert cluster.job(short)["state"] == "completed"
    assert cluster.node(a)["allocations"] == 0


def test_the_deadline_can_be_given_in_the_query_and_is_validated(cluster: Cluster) -> None:
    start(cluster, "a")
    a = cluster.slave("a").id
    for bad in ("-1", "nan", "inf", "1e12", "soon"):
        resp = cluster.http.post(f"/v1/nodes/{a}/drain", params={"deadline": bad})
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["code"] == "invalid_spec"
    for body in ({"deadline": -1}, {"deadline": "x"}, {"deadlin": 3}, [1]):
        resp = cluster.http.post(f"/v1/nodes/{a}/drain", json=body)
        assert resp.status_code == 422, (body, resp.text)
    resp = cluster.http.post(f"/v1/nodes/{a}/drain", params={"deadline": "5"}, json={"deadline": 6})
    assert resp.status_code == 422 and "both" in resp.json()["error"]["message"]
    assert cluster.node(a)["state"] == "alive"
    resp = cluster.http.post(f"/v1/nodes/{a}/drain", params={"deadline": "30"})
    assert resp.status_code == 200 and resp.json()["drain_deadline"]
    cluster.http.post(f"/v1/nodes/{a}/undrain").raise_for_status()
    assert cluster.node(a)["drain_deadline"] is None


def test_a_draining_slave_that_dies_has_its_jobs_placed_elsewhere(cluster: Cluster) -> None:
    start(cluster, "a", "b")
    a, b = cluster.slave("a").id, cluster.slave("b").id
    jobs = place_all_on(cluster, "a", ["b"], [
        {"name": f"j{i}", "command": ["sleep", "600"], **({"type": "service"} if i % 2 else {})} for i in range(4)
    ])
    # Frozen, the agent cannot stop anything: the drained jobs stay `stopping` until it dies.
    victim = cluster.slave("a")
    victim.signal(signal.SIGSTOP)
    try:
        cluster.http.post(f"/v1/nodes/{a}/drain").raise_for_status()
        wait_until(lambda: all(cluster.job(j)["state"] == "stopping" for j in jobs), 10, what="jobs stopping")
    finally:
        victim.kill()  # SIGKILL ends a stopped process too

    def all_on_b() -> bool:
        return all((j := cluster.job(job_id))["state"] == "running" and j["node_id"] == b for job_id in jobs)

    wait_until(all_on_b, 30, what="every drained job running on b")
    for job_id in jobs:
        job = cluster.job(job_id)
        assert job["attempts"] == 2 and "lost" in states(job)
        assert not {"stopped", "failed"} & set(states(job))
    assert cluster.node(a)["state"] == "dead"


def test_a_service_that_exits_0_is_restarted(cluster: Cluster) -> None:
    start(cluster, "a")
    svc = cluster.submit(name="svc", type="service", env={"CLAUD_SIM_SECONDS": "0.3"}, resources=SMALL)["id"]
    wait_until(lambda: cluster.job(svc)["attempts"] >= 3, 30, what="three attempts of the service")
    job = cluster.job(svc)
    assert job["state"] not in ("completed", "failed")
    assert "completed" not in states(job) and "failed" not in states(job)
    assert any("restarting the service" in e["message"] for e in job["events"])


@contextmanager
def fake_slave(cluster: Cluster, slave_id: str, healthy: threading.Event) -> Iterator[list[dict[str, Any]]]:
    """A slave that only heartbeats (every 0.25 s), saying whether its engine answers,
    and reports every allocation it is given as running. Yields the last allocations."""
    stop = threading.Event()
    last: list[dict[str, Any]] = []

    def beat() -> None:
        secret = {CLUSTER_SECRET_HEADER: cluster.secret_file.read_text().strip()}
        with httpx.Client(base_url=cluster.master.url, timeout=5, headers=secret) as http:
            while not stop.is_set():
                running = [{"alloc_id": a["alloc_id"], "job_id": a["job_id"], "state": "running",
                            "container_id": f"c-{a['alloc_id']}"} for a in last if a["desired"] == "run"]
                body = {"node_id": slave_id, "address": "127.0.0.1:9", "cpu_total": 2, "memory_mb_total": 1024,
                        "allocations": running,
                        "runtime": {"healthy": healthy.is_set(),
                                    "error": None if healthy.is_set() else "Connection refused"}}
                try:
                    resp = http.post(HEARTBEAT_PATH, json=body)
                    if resp.status_code == 200:
                        last[:] = resp.json()["allocations"]
                except httpx.HTTPError:
                    pass
                stop.wait(0.25)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield last
    finally:
        stop.set()
        thread.join(5)


def test_a_slave_whose_engine_does_not_answer_takes_nothing_and_loses_its_jobs(cluster: Cluster) -> None:
    cluster.start_master(1, *FAST_PROFILE)
    slave_id = f"{cluster.prefix}-fake"
    healthy = threading.Event()
    healthy.set()
    with fake_slave(cluster, slave_id, healthy):
        wait_until(lambda: (n := cluster.node(slave_id)) and n["state"] == "alive", 10, what="fake slave registered")
        first = cluster.submit(name="first", resources=SMALL)["id"]
        assert cluster.wait_state(first, "running")["node_id"] == slave_id
        healthy.clear()
        wait_until(lambda: cluster.node(slave_id)["runtime_healthy"] is False, 10, what="slave marked unhealthy")
        node = cluster.node(slave_id)
        assert node["state"] == "alive" and "Connection refused" in node["runtime_error"]
        second = cluster.submit(name="second", resources=SMALL)["id"]
        # Past node-dead-after (4 s) with the engine away, its job is lost; nothing is placed there.
        lost = cluster.wait_state(first, "pending", timeout=15)
        assert "lost" in states(lost) and "failed" not in states(lost)
        assert cluster.job(second)["state"] == "pending"
        assert cluster.node(slave_id)["allocations"] == 0
        healthy.set()
        for job_id in (first, second):
            assert cluster.wait_state(job_id, "running", timeout=15)["node_id"] == slave_id
        assert cluster.node(slave_id)["runtime_healthy"] is True
