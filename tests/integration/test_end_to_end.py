"""One master, real slaves, real Docker: jobs from submission to their end."""

from __future__ import annotations

import signal
import time

import docker
import pytest

from support.cluster import Cluster, wait_until

pytestmark = pytest.mark.docker


def containers_of(job_id: str, running_only: bool = False) -> list:
    client = docker.from_env()
    try:
        return client.containers.list(all=not running_only, filters={"label": f"claud.job={job_id}"})
    finally:
        client.close()


@pytest.fixture
def one_slave(cluster: Cluster) -> Cluster:
    cluster.start_master(1)
    cluster.start_slave("s1")
    return cluster


def test_batch_job_completes_and_its_logs_are_served(one_slave: Cluster) -> None:
    c = one_slave
    job = c.submit(name="hello", command=["sh", "-c", "echo hello from claud; echo err >&2"],
                   env={"GREETING": "hi"}, resources={"cpu": 0.25, "memory_mb": 32})
    assert job["state"] == "pending"
    done = c.wait_state(job["id"], "completed", "failed")
    assert done["state"] == "completed" and done["exit_code"] == 0
    states = [e["state"] for e in done["events"]]
    assert states[0] == "pending" and states[-1] == "completed"
    assert {"scheduled", "running"} <= set(states)
    logs = c.http.get(f"/v1/jobs/{job['id']}/logs").text
    assert "hello from claud" in logs and "err" in logs
    (container,) = containers_of(job["id"])
    labels = container.labels
    assert labels["claud.job"] == job["id"]
    assert labels["claud.alloc"] == done["alloc_id"]
    assert labels["claud.slave"] == c.slave("s1").id
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 250_000_000 and host_config["Memory"] == 32 * 1024 * 1024


def test_failing_job_reports_its_exit_code(one_slave: Cluster) -> None:
    job = one_slave.submit(name="fails", command=["sh", "-c", "exit 3"])
    done = one_slave.wait_state(job["id"], "completed", "failed")
    assert (done["state"], done["exit_code"]) == ("failed", 3)


def test_missing_image_fails_with_the_reason_not_a_hang(one_slave: Cluster) -> None:
    job = one_slave.submit(name="noimage", image="claud/does-not-exist:1")
    done = one_slave.wait_state(job["id"], "failed", "completed", timeout=30)
    assert done["state"] == "failed"
    assert "does-not-exist" in done["message"]


def test_job_too_big_stays_pending_with_a_reason(one_slave: Cluster) -> None:
    job = one_slave.submit(name="big", resources={"cpu": 512, "memory_mb": 64})
    pending = wait_until(lambda: (j := one_slave.job(job["id"]))["pending_reason"] and j, 10, what="a pending reason")
    assert pending["state"] == "pending"
    assert "512" in pending["pending_reason"]


def test_on_failure_restarts_then_fails_and_each_attempts_logs_are_kept(one_slave: Cluster) -> None:
    job = one_slave.submit(name="flaky", command=["sh", "-c", "echo ran in $(hostname); exit 1"],
                           restart={"policy": "on-failure", "max_retries": 2})
    done = one_slave.wait_state(job["id"], "failed", timeout=40)
    assert done["attempts"] == 3
    containers = containers_of(job["id"])
    assert len(containers) == 3  # one container per attempt, none reused
    # Each attempt's own output (a container's hostname is its id's first 12 characters).
    by_alloc = {c.labels["claud.alloc"]: c.id[:12] for c in containers}
    for attempt in (1, 2, 3):
        answer = one_slave.http.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": attempt})
        assert answer.status_code == 200, answer.text
        alloc_id = f"{job['id']}-{attempt}"
        assert answer.text.strip() == f"ran in {by_alloc[alloc_id]}"
        assert answer.headers["x-claud-alloc-id"] == alloc_id
    latest = one_slave.http.get(f"/v1/jobs/{job['id']}/logs")
    assert latest.text == one_slave.http.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 3}).text
    beyond = one_slave.http.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 4})
    assert beyond.status_code == 404 and beyond.json()["error"]["field"] == "attempt"
    assert one_slave.http.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 0}).status_code == 422


def test_stop_a_running_service(one_slave: Cluster) -> None:
    c = one_slave
    job = c.submit(name="svc", type="service", restart={"policy": "always"}, command=["sleep", "300"], stop_timeout=1)
    c.wait_state(job["id"], "running")
    resp = c.http.delete(f"/v1/jobs/{job['id']}")
    assert resp.status_code == 202
    done = c.wait_state(job["id"], "stopped", timeout=20)
    assert done["state"] == "stopped"
    assert containers_of(job["id"], running_only=True) == []
    assert c.http.delete("/v1/jobs/nope").status_code == 404


def test_constraints_pick_the_matching_slave(cluster: Cluster) -> None:
    cluster.start_master(1)
    cluster.start_slave("a", "--labels", "zone=a")
    cluster.start_slave("b", "--labels", "zone=b")
    job = cluster.submit(name="zoned", command=["true"], constraints={"labels": {"zone": "b"}})
    done = cluster.wait_state(job["id"], "completed")
    assert done["node_id"] == cluster.slave("b").id
    nowhere = cluster.submit(name="nowhere", command=["true"], constraints={"labels": {"zone": "c"}})
    pending = wait_until(lambda: (j := cluster.job(nowhere["id"]))["pending_reason"] and j, 10, what="a reason")
    assert "zone=c" in pending["pending_reason"]


def test_master_restart_keeps_every_job(one_slave: Cluster) -> None:
    c = one_slave
    ids = [c.submit(name=f"keep{i}", command=["true"])["id"] for i in range(5)]
    for job_id in ids:
        c.wait_state(job_id, "completed")
    c.master.terminate()
    c.start_master(1)
    c.reconnect()
    listed = {j["id"]: j for j in c.http.get("/v1/jobs").json()["jobs"]}
    assert all(listed[job_id]["state"] == "completed" for job_id in ids)
    # And it keeps working after the restart.
    job = c.submit(name="after", command=["true"])
    c.wait_state(job["id"], "completed")


def test_slave_sigkill_and_restart_neither_duplicates_nor_orphans(one_slave: Cluster) -> None:
    c = one_slave
    jobs = [c.submit(name=f"svc{i}", type="service", command=["sleep", "300"], stop_timeout=1)["id"] for i in range(3)]
    for job_id in jobs:
        c.wait_state(job_id, "running")
    before = {job_id: containers_of(job_id)[0].id for job_id in jobs}
    c.slave("s1").kill()
    c.start_slave("s1")
    # A heartbeat round trip later the agent has reconciled; nothing new may start.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for job_id in jobs:
            found = containers_of(job_id)
            assert [x.id for x in found] == [before[job_id]], f"job {job_id}: {found}"
        time.sleep(0.2)
    assert all(c.job(job_id)["state"] == "running" for job_id in jobs)


def test_sigterm_of_the_slave_leaves_containers_running(one_slave: Cluster) -> None:
    c = one_slave
    job = c.submit(name="svc", type="service", command=["sleep", "300"], stop_timeout=1)
    c.wait_state(job["id"], "running")
    c.slave("s1").signal(signal.SIGTERM)
    assert c.slave("s1").popen.wait(15) == 0
    assert len(containers_of(job["id"], running_only=True)) == 1


def test_bad_input_is_refused_and_loses_nothing(one_slave: Cluster) -> None:
    c = one_slave
    kept = c.submit(name="kept", command=["true"])
    cases = [
        (b'{"name": "x",', 400, None),
        (b'{"name": "x", "image": "claud/busybox", "memroy_mb": 1}', 422, "memroy_mb"),
        (b'{"name": "x", "image": "claud/busybox", "resources": {"cpu": -1}}', 422, "resources.cpu"),
        (b'{"name": "x", "image": "claud/busybox", "resources": {"memory_mb": 99999999999}}', 422,
         "resources.memory_mb"),
        (b'{"name": "x", "image": "Not An Image!"}', 422, "image"),
        (b'{"image": "claud/busybox"}', 422, "name"),
        (b'[1, 2]', 422, None),
    ]
    for body, status, field in cases:
        resp = c.http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, (body, resp.text)
        error = resp.json()["error"]
        assert error["message"]
        if field:
            assert error["field"] == field and field in error["message"]
    assert c.http.get("/v1/jobs/nope").status_code == 404
    assert c.http.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert [j["id"] for j in c.http.get("/v1/jobs").json()["jobs"]] == [kept["id"]]


def test_idempotent_submit_returns_the_same_job(one_slave: Cluster) -> None:
    c = one_slave
    spec = {"name": "once", "image": "claud/busybox:latest", "command": ["true"]}
    first = c.http.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "abc"})
    again = c.http.post("/v1/jobs", json=spec, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    other = c.http.post("/v1/jobs", json={**spec, "name": "twice"}, headers={"Idempotency-Key": "abc"})
    assert other.status_code == 409


def test_api_needs_the_token_but_health_checks_do_not(one_slave: Cluster) -> None:
    import httpx

    url = one_slave.master.url
    for path in ("/v1/jobs", "/v1/nodes", "/v1/cluster", "/metrics"):
        assert httpx.get(url + path).status_code == 401, path
    assert httpx.post(url + "/v1/jobs", content=b"{").status_code == 401
    # The dashboard's page holds no data: it asks for the token and reads /v1 with it.
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json", "/ui"):
        assert httpx.get(url + path).status_code == 200, path
    cluster_view = one_slave.http.get("/v1/cluster").json()
    assert cluster_view["leader_id"] == 1 and cluster_view["quorum"] == 1
    nodes = one_slave.http.get("/v1/nodes").json()
    roles = {n["role"] for n in nodes["nodes"]}
    assert roles == {"master", "slave"} and nodes["index"] > 0
    slave = one_slave.node(one_slave.slave("s1").id)
    assert slave["resources"]["cpu_total"] > 0 and slave["last_heartbeat"]
