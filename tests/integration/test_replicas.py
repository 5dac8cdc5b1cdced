"""Replicas and rolling updates with real Docker (issue 17): a three-replica httpd reached on each
address CLAUD prints; a slave's machine dies (its agent killed, its containers gone) and its
replica comes back elsewhere while the other two keep serving; a rollout to a new command keeps
at least two replicas answering throughout; a broken version reverts by itself.

One master, four Docker slaves on one engine, each with a port range of its own (like the compose
cluster); every container carries ``claud.test=<uuid>`` and is removed afterwards.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, wait_until
from support.docker_engine import remove_containers

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"
SMALL = {"cpu": 0.05, "memory_mb": 32}
#: Slave ``name`` publishes from its own range: the slaves share one engine, so one host's ports.
RANGES = {"a": "22000-22299", "b": "22300-22599", "c": "22600-22899", "d": "22900-23199"}
QUICK = ["--heartbeat-interval", "0.3", "--suspect-after", "1.5", "--slave-lease", "2.5",
         "--fence-stop-grace", "1", "--node-dead-after", "7"]
CHECK = {"http": "/", "port": "http", "interval": 0.5, "timeout": 1, "failures": 2}
UPDATE = {"max_parallel": 1, "min_healthy_time": 1, "healthy_deadline": 15, "auto_revert": True}


def httpd(text: str) -> list[str]:
    """An httpd answering ``text`` on port 8080, in the foreground."""
    return ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"]


@pytest.fixture
def four(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    cluster = Cluster(tmp_path)
    label = f"claud.test={uuid.uuid4().hex}"
    try:
        cluster.start_master(1, *QUICK)
        for name, ports in RANGES.items():
            cluster.start_slave(name, "--port-range", ports, "--container-labels", label)
        yield cluster, label
    finally:
        cluster.close()
        remove_containers(label)


def web(cluster: Cluster, text: str = "one", **extra: Any) -> dict[str, Any]:
    return {"name": "web", "image": IMAGE, "type": "service", "count": 3, "resources": SMALL, "stop_timeout": 1,
            "command": httpd(text), "ports": [{"name": "http", "container": 8080}], "check": CHECK,
            "update": UPDATE, **extra}


def healthy_addresses(cluster: Cluster, job_id: str) -> list[str]:
    return [a["ports"][0]["address"] for a in cluster.job(job_id)["allocations"]
            if a["health"] == "healthy" and a["ports"] and a["ports"][0]["address"]]


def answer(address: str) -> str | None:
    try:
        got = httpx.get(f"http://{address}/", timeout=1)
    except httpx.HTTPError:
        return None
    return got.text.strip() if got.status_code == 200 else None


class Prober:
    """Counts, every 0.2 s while it runs, how many of the job's healthy replicas answer."""

    def __init__(self, cluster: Cluster, job_id: str) -> None:
        self._http = httpx.Client(base_url=cluster.master.url, headers={"Authorization": f"Bearer {cluster.token}"})
        self._job_id = job_id
        self.answering: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            allocs = self._http.get(f"/v1/jobs/{self._job_id}").json()["allocations"]
            addresses = [a["ports"][0]["address"] for a in allocs if a["state"] == "running" and a["ports"]]
            self.answering.append(sum(1 for address in addresses if address and answer(address)))
            self._stop.wait(0.2)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._http.close()


def test_three_replicas_are_reached_and_a_dead_slave_s_one_comes_back_elsewhere(four: tuple[Cluster, str]) -> None:
    cluster, _ = four
    job_id = cluster.submit(**web(cluster))["id"]
    addresses = wait_until(lambda: len(a := healthy_addresses(cluster, job_id)) == 3 and a, 90,
                           what="three healthy replicas")
    assert len({address for address in addresses}) == 3
    for address in addresses:
        assert wait_until(lambda address=address: answer(address), 20, what=f"httpd on {address}") == "one"
    allocs = cluster.job(job_id)["allocations"]
    assert len({a["slave_id"] for a in allocs}) == 3  # spread
    ran = cluster.http.post(f"/v1/jobs/{job_id}/exec", json={"command": ["cat", "/www/index.html"],
                                                              "alloc": allocs[2]["id"]})
    assert ran.status_code == 200 and ran.json()["stdout"] == "one\n", ran.text
    assert ran.json()["alloc_id"] == allocs[2]["id"] and ran.json()["node_id"] == allocs[2]["slave_id"]

    victim = allocs[1]
    others = {a["index"]: a["ports"][0]["address"] for a in allocs if a["index"] != 1}
    slave = next(s for s in cluster.slaves if s.id == victim["slave_id"])
    slave.kill()  # its machine dies: the agent, and then its containers
    remove_containers(f"claud.slave={slave.id}")
    with Prober(cluster, job_id) as probe:
        def back() -> dict[str, Any] | None:
            again = cluster.job(job_id)["allocations"][1]
            ok = again["health"] == "healthy" and again["slave_id"] != victim["slave_id"]
            return again if ok else None

        again = wait_until(back, 90, what="replica 1 healthy on another slave")
    address = again["ports"][0]["address"]
    assert address != victim["ports"][0]["address"] and answer(address) == "one"
    assert min(probe.answering) >= 2, probe.answering  # the other two kept serving
    for index, kept in others.items():
        assert cluster.job(job_id)["allocations"][index]["ports"][0]["address"] == kept
        assert answer(kept) == "one"


def test_a_rollout_keeps_two_serving_and_a_broken_version_reverts_by_itself(four: tuple[Cluster, str]) -> None:
    cluster, _ = four
    job_id = cluster.submit(**web(cluster))["id"]
    wait_until(lambda: len(healthy_addresses(cluster, job_id)) == 3, 90, what="three healthy replicas")

    with Prober(cluster, job_id) as probe:
        assert cluster.http.put(f"/v1/jobs/{job_id}", json=web(cluster, "two")).status_code == 200
        wait_until(lambda: (r := cluster.job(job_id)["rollout"]) and r["state"] == "complete", 120,
                   what="the rollout of version 1 complete")
    assert min(probe.answering) >= 2, probe.answering
    addresses = healthy_addresses(cluster, job_id)
    assert sorted(answer(a) or "" for a in addresses) == ["two", "two", "two"]
    view = cluster.job(job_id)
    assert [a["version"] for a in view["allocations"]] == [1, 1, 1]

    broken = web(cluster, "three", check={**CHECK, "http": "/missing"})  # never healthy
    with Prober(cluster, job_id) as probe:
        assert cluster.http.put(f"/v1/jobs/{job_id}", json=broken).status_code == 200

        def reverted() -> dict[str, Any] | None:
            view = cluster.job(job_id)
            rollout = view["rollout"]
            return view if view["version"] == 3 and rollout and rollout["state"] == "complete" else None

        view = wait_until(reverted, 150, what="the broken version reverted and rolled out")
    assert min(probe.answering) >= 2, probe.answering
    assert re.search(r"version 2 failed: allocation \d not healthy", " ".join(e["message"] for e in view["events"]))
    assert sorted(answer(a) or "" for a in healthy_addresses(cluster, job_id)) == ["two", "two", "two"]
