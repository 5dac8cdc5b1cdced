"""A real slave whose Docker engine does not answer: its socket is a proxy the test
switches off (support.docker_proxy), the engine itself and its containers carry on.

The agent starts anyway, heartbeats with its runtime unhealthy (the masters place
nothing there), and picks up when the engine answers: it adopts the containers
that are still its. An engine that stops answering under running jobs is a
lease that stopped renewing: a lease later the agent kills their processes
itself (pidfds, no engine), before the masters may run those jobs elsewhere,
and reports the exits as fenced once the engine answers.
"""

from __future__ import annotations

import time
from datetime import datetime

import docker
import pytest
from docker.models.containers import Container

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
LEASE = 2.5
QUICK = ["--heartbeat-interval", "0.3", "--suspect-after", "1.5", "--slave-lease", f"{LEASE:g}",
         "--fence-stop-grace", f"{FENCE_GRACE:g}", "--node-dead-after", f"{DEAD_AFTER:g}"]
#: The same, with masters slow to lose a slave's jobs: a loss before then is the slave's own report.
SLOW_DEAD_AFTER = 20.0
SLOW_LOSS = [*QUICK[:-1], f"{SLOW_DEAD_AFTER:g}"]


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


def _stopped_at(container: Container) -> float | None:
    """When Docker itself (not through the proxy) says the container stopped; None while it runs."""
    container.reload()
    state = container.attrs["State"]
    if state["Running"]:
        return None
    head, _, frac = state["FinishedAt"].rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def test_a_slave_whose_engine_stops_answering_kills_its_jobs_itself_before_the_masters_run_them_elsewhere(
    cluster: Cluster,
) -> None:
    """The hole the engine fence closes: masters that hear the slave well lose its jobs
    after node-dead-after of an unhealthy engine and place them on another slave, while the
    first slave's containers run on; the first slave must have killed them by then."""
    cluster.start_master(1, *QUICK)
    engine = docker.from_env(timeout=30)
    with DockerSocketProxy() as proxy:
        proxy.on()
        slave = cluster.start_slave("a", "--docker-host", proxy.url)
        # PID 1 ignores SIGTERM: only the SIGKILL stops it, and the job's 30 s are not granted.
        job_id = cluster.submit(name="stubborn", command=["sleep", "300"], resources=SMALL, stop_timeout=30)["id"]
        first = cluster.wait_state(job_id, "running", timeout=30)
        (old,) = engine.containers.list(filters={"label": f"claud.alloc={first['alloc_id']}"})
        other = cluster.start_slave("b")  # the engine's own socket: where the job goes once lost

        cut = time.time()
        proxy.off()
        died = wait_until(lambda: _stopped_at(old), LEASE + FENCE_GRACE + 10, what="the old container stopped")
        # A lease from the agent's first failed call (within one reconcile pass of the cut), the
        # kill window, Docker's bookkeeping of the exit on a busy machine.
        assert died - cut < 1.0 + LEASE + FENCE_GRACE + 1.5, f"killed {died - cut:.2f}s after the cut"
        assert old.attrs["State"]["ExitCode"] == 137
        assert "event=engine_fence.begun" in slave.log() and "reason=engine-fenced" in slave.log()

        def elsewhere() -> dict | None:
            job = cluster.job(job_id)
            return job if job["state"] == "running" and job["node_id"] == other.id else None

        again = wait_until(elsewhere, DEAD_AFTER + 15, what="the job running on the other slave")
        assert again["alloc_id"] != first["alloc_id"], again
        assert "lost" in states(again) and "failed" not in states(again), states(again)
        intervals = run_intervals(job_id)
        assert len(intervals) == 2 and intervals[0][2] == pytest.approx(died, abs=0.01), intervals
        assert died < intervals[1][1], "the old container died only after the job started elsewhere"
        assert_never_twice(job_id)

        proxy.on()  # back: nothing of the job's restarts on the first slave, nothing fails
        wait_until(lambda: cluster.node(slave.id)["runtime_healthy"], 20, what="the slave healthy again")
        wait_until(lambda: (n := cluster.node(slave.id)) and n["allocations"] == 0, 20, what="nothing left on a")
        final = cluster.job(job_id)
        assert (final["state"], final["alloc_id"], final["node_id"]) == ("running", again["alloc_id"], other.id)
        assert "failed" not in states(final) and len(run_intervals(job_id)) == 2
        assert_never_twice(job_id)
    engine.close()


def test_a_job_its_slave_fenced_while_the_engine_was_away_is_reported_lost_and_runs_again_once(
    cluster: Cluster,
) -> None:
    """The engine answers again before the masters lost the job: the slave's own report of
    the exit it caused must say fenced, so that the job is lost (not failed) and runs again."""
    cluster.start_master(1, *SLOW_LOSS)
    engine = docker.from_env(timeout=30)
    with DockerSocketProxy() as proxy:
        proxy.on()
        slave = cluster.start_slave("a", "--docker-host", proxy.url)
        job_id = cluster.submit(name="stubborn", command=["sleep", "300"], resources=SMALL, stop_timeout=30)["id"]
        first = cluster.wait_state(job_id, "running", timeout=30)
        (old,) = engine.containers.list(filters={"label": f"claud.alloc={first['alloc_id']}"})

        cut = time.time()
        proxy.off()
        died = wait_until(lambda: _stopped_at(old), LEASE + FENCE_GRACE + 10, what="the old container stopped")
        assert died - cut < 1.0 + LEASE + FENCE_GRACE + 1.5, f"killed {died - cut:.2f}s after the cut"
        # The masters, far from node-dead-after, still think it runs: only the slave can tell.
        assert unhealthy(cluster, slave.id) is not None
        assert cluster.job(job_id)["alloc_id"] == first["alloc_id"]

        proxy.on()

        def rerun() -> dict | None:
            job = cluster.job(job_id)
            return job if job["state"] == "running" and job["alloc_id"] != first["alloc_id"] else None

        again = wait_until(rerun, 30, what="the job running again")
        assert time.time() - cut < SLOW_DEAD_AFTER, "lost by the masters' timeout, not by the slave's report"
        events = cluster.job(job_id)["events"]
        lost = [e for e in events if e["state"] == "lost"]
        assert len(lost) == 1 and "fenced" in lost[0]["message"], events
        assert "failed" not in states(again), states(again)
        intervals = run_intervals(job_id)
        assert len(intervals) == 2 and intervals[1][2] == float("inf"), intervals
        assert_never_twice(job_id)
    engine.close()
