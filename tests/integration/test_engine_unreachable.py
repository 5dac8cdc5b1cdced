"""A real slave whose Docker engine does not answer: its socket is a proxy the test
switches off (support.docker_proxy), the engine itself and its containers carry on.

The agent starts anyway, heartbeats with its runtime unhealthy (the masters place
nothing there), and picks up when the engine answers: it adopts the containers
that are still its, and kills, as quickly as a fence, those whose job the masters
lost meanwhile (engine away past node-dead-after), before that job runs again.
"""

from __future__ import annotations

import time

import docker
import pytest

from support.cluster import Cluster, wait_until
from support.docker_engine import assert_never_twice, run_intervals
from support.docker_proxy import DockerSocketProxy

pytestmark = pytest.mark.docker

SMALL = {"cpu": 0.1, "memory_mb": 16}
#: node-dead-after well past the slave's restart on a loaded machine: nothing here may be lost by accident.
PATIENT = ["--node-dead-after", "30", "--suspect-after", "10"]
#: The campaign's terms (support.faults.Timing): an engine away 7 s has lost its jobs.
DEAD_AFTER = 7.0
FENCE_GRACE = 1.0
QUICK = ["--heartbeat-interval", "0.3", "--suspect-after", "1.5", "--slave-lease", "2.5",
         "--fence-stop-grace", f"{FENCE_GRACE:g}", "--node-dead-after", f"{DEAD_AFTER:g}"]


def states(job: dict) -> list[str]:
    return [e["state"] for e in job.get("events") or []]


def unhealthy(cluster: Cluster, slave_id: str) -> dict | None:
    node = cluster.node(slave_id)
    return node if node is not None and node["runtime_healthy"] is False else None


def test_a_slave_started_without_its_engine_is_unhealthy_gets_nothing_and_runs_jobs_once_it_answers(
    cluster: Cluster,
) -> None:
    cluster.start_master(1, *PATIENT)
    with DockerSocketProxy() as proxy:  # off: the engine refuses the agent from its first call
        slave = cluster.start_slave("a", "--docker-host", proxy.url)
        node = wait_until(lambda: unhealthy(cluster, slave.id), 20, what="the slave unhealthy in GET /v1/nodes")
        assert node["state"] == "alive" and "refused" in (node["runtime_error"] or "").lower(), node
        assert slave.alive and "event=runtime.unavailable_at_start" in slave.log()

        job_id = cluster.submit(name="waits", command=["sleep", "300"], resources=SMALL)["id"]
        # Several scheduling rounds and heartbeats: still nothing placed on an engine that does not answer.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            job = cluster.job(job_id)
            assert job["state"] == "pending" and job["node_id"] is None, job
            assert cluster.node(slave.id)["allocations"] == 0
            time.sleep(0.2)

        proxy.on()
        wait_until(lambda: cluster.node(slave.id)["runtime_healthy"], 20, what="the slave healthy again")
        job = cluster.wait_state(job_id, "running", timeout=30)
        assert job["node_id"] == slave.id and "failed" not in states(job)
        assert cluster.node(slave.id)["runtime_error"] is None


def test_an_agent_restarted_while_its_engine_is_away_adopts_its_containers_when_it_answers(
    cluster: Cluster,
) -> None:
    cluster.start_master(1, *PATIENT)
    with DockerSocketProxy() as proxy:
        proxy.on()
        slave = cluster.start_slave("a", "--docker-host", proxy.url)
        job_id = cluster.submit(name="adopted", command=["sleep", "300"], resources=SMALL)["id"]
        before = cluster.wait_state(job_id, "running", timeout=30)
        (interval,) = run_intervals(job_id)

        slave.kill()
        proxy.off()
        slave = cluster.start_slave("a", "--docker-host", proxy.url, timeout=30)
        wait_until(lambda: unhealthy(cluster, slave.id), 20, what="the restarted slave unhealthy")
        assert cluster.job(job_id)["state"] == "running"  # unknown is not gone

        proxy.on()
        wait_until(lambda: cluster.node(slave.id)["runtime_healthy"], 20, what="the slave healthy again")
        wait_until(lambda: "event=container.found" in slave.log(), 20, what="the running container found")
        after = cluster.job(job_id)
        assert (after["state"], after["alloc_id"], after["attempts"]) == (
            "running", before["alloc_id"], before["attempts"])
        assert "lost" not in states(after)
        assert run_intervals(job_id) == [interval]  # the same container, never restarted


def test_a_container_whose_job_was_lost_while_the_engine_was_away_is_killed_before_it_runs_again(
    cluster: Cluster,
) -> None:
    cluster.start_master(1, *QUICK)
    engine = docker.from_env(timeout=30)
    with DockerSocketProxy() as proxy:
        proxy.on()
        slave = cluster.start_slave("a", "--docker-host", proxy.url)
        # PID 1 ignores SIGTERM: only the SIGKILL at the end of its grace stops it.
        job_id = cluster.submit(name="stubborn", command=["sleep", "300"], resources=SMALL, stop_timeout=30)["id"]
        first = cluster.wait_state(job_id, "running", timeout=30)

        proxy.off()
        lost = cluster.wait_state(job_id, "pending", timeout=DEAD_AFTER + 15)
        assert "lost" in states(lost) and "failed" not in states(lost), states(lost)
        assert cluster.node(slave.id)["state"] == "alive"
        # The agent cannot stop what it cannot reach: the old container runs on meanwhile.
        (old,) = engine.containers.list(filters={"label": f"claud.alloc={first['alloc_id']}"})

        back = time.time()
        proxy.on()
        again = cluster.wait_state(job_id, "running", timeout=30)
        assert again["alloc_id"] != first["alloc_id"] and again["node_id"] == slave.id
        old.reload()
        assert old.attrs["State"]["Status"] == "exited"
        # Killed as a fence would, not granted the job's 30 s nor the agent's default grace:
        # a reconcile pass (1 s), the fence grace, Docker's bookkeeping on a busy machine.
        died = run_intervals(job_id)[0][2]
        assert died - back < 1.0 + FENCE_GRACE + 2.5, (
            f"the stale container died {died - back:.2f}s after the engine returned")
        assert_never_twice(job_id)
        assert "failed" not in states(cluster.job(job_id))
    engine.close()
