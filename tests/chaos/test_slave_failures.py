"""Slaves that die, freeze, restart or are cut off: their jobs run again
elsewhere, fast, and never on two slaves at once (checked with Docker's own
container start and stop times)."""

from __future__ import annotations

import signal
import time

import docker
import pytest

from support.cluster import Cluster, wait_until
from support.docker_engine import assert_never_twice
from support.firewall import LoopbackFirewall, firewall_available

pytestmark = pytest.mark.docker

#: Short timeouts keep the suite fast; the invariant the master checks at start
#: (dead-after >= lease + 2 election timeouts + a heartbeat + the grace rounded up
#: + the stop fan-out margin: 2.5 + 1.2 + 0.3 + 1 + 1) holds as with the defaults.
DEAD_AFTER = 6.0  # the least the masters' fencing invariant allows with the terms below
FAST = ["--heartbeat-interval", "0.3", "--suspect-after", "1.5", "--slave-lease", "2.5",
        "--fence-stop-grace", "0.5", "--node-dead-after", str(DEAD_AFTER)]


def service(cluster: Cluster, name: str) -> str:
    return cluster.submit(name=name, type="service", restart={"policy": "always"}, command=["sleep", "300"],
                          stop_timeout=1, resources={"cpu": 0.1, "memory_mb": 16})["id"]


def running_on(cluster: Cluster, job_id: str, slave_id: str) -> bool:
    job = cluster.job(job_id)
    return job["state"] == "running" and job["node_id"] == slave_id


def machine_dies(cluster: Cluster, name: str) -> None:
    """The agent and its containers vanish at once, as when the machine loses power."""
    slave = cluster.slave(name)
    slave.kill()
    client = docker.from_env()
    try:
        for container in client.containers.list(filters={"label": f"claud.slave={slave.id}"}):
            container.kill()
    finally:
        client.close()


def test_machine_death_reschedules_its_jobs_elsewhere(cluster: Cluster) -> None:
    cluster.start_master(1, *FAST)
    a = cluster.start_slave("a", "--labels", "zone=x")
    b = cluster.start_slave("b", "--labels", "zone=x")
    cluster.http.post(f"/v1/nodes/{b.id}/drain").raise_for_status()  # everything starts on a
    jobs = [service(cluster, f"svc{i}") for i in range(3)]
    for job_id in jobs:
        wait_until(lambda: running_on(cluster, job_id, a.id), 30, what=f"{job_id} running on a")
    cluster.http.post(f"/v1/nodes/{b.id}/undrain").raise_for_status()
    died = time.monotonic()
    machine_dies(cluster, "a")
    for job_id in jobs:
        wait_until(lambda: running_on(cluster, job_id, b.id), 15, what=f"{job_id} running on b")
    elapsed = time.monotonic() - died
    assert elapsed < DEAD_AFTER + 2, f"rescheduling took {elapsed:.1f}s"
    assert cluster.node(a.id)["state"] == "dead"
    for job_id in jobs:
        job = cluster.job(job_id)
        assert job["attempts"] == 2
        assert [e["state"] for e in job["events"]].count("lost") == 1
        assert_never_twice(job_id)


@pytest.mark.skipif(not firewall_available(), reason="iptables is needed to cut links on loopback")
def test_cut_off_slave_fences_itself_before_any_copy_starts(cluster: Cluster) -> None:
    master = cluster.start_master(1, *FAST)
    a = cluster.start_slave("a")
    b = cluster.start_slave("b")
    cluster.http.post(f"/v1/nodes/{b.id}/drain").raise_for_status()
    jobs = [service(cluster, f"svc{i}") for i in range(2)]
    for job_id in jobs:
        wait_until(lambda: running_on(cluster, job_id, a.id), 30, what=f"{job_id} running on a")
    cluster.http.post(f"/v1/nodes/{b.id}/undrain").raise_for_status()
    firewall = LoopbackFirewall()
    try:
        firewall.cut(a.ip, master.ip)
        # The agent is alive but hears no leader: it stops its containers within its lease...
        def a_stopped() -> bool:
            client = docker.from_env()
            try:
                return not client.containers.list(filters={"label": f"claud.slave={a.id}"})
            finally:
                client.close()

        wait_until(a_stopped, 2.5 + 0.5 + 2, what="the cut-off slave to stop its containers")
        # ...and only after node-dead-after do the copies start elsewhere.
        for job_id in jobs:
            wait_until(lambda: running_on(cluster, job_id, b.id), 15, what=f"{job_id} running on b")
        for job_id in jobs:
            assert_never_twice(job_id)
        firewall.heal()
        # Back in touch: alive again, with no stale work.
        wait_until(lambda: cluster.node(a.id)["state"] == "alive", 10, what="slave a alive again")
        assert cluster.node(a.id)["allocations"] == 0
        for job_id in jobs:
            assert running_on(cluster, job_id, b.id)
            assert_never_twice(job_id)
    finally:
        firewall.close()


def test_agent_crash_shorter_than_dead_after_moves_nothing(cluster: Cluster) -> None:
    cluster.start_master(1, *FAST)
    a = cluster.start_slave("a")
    cluster.start_slave("b")
    job_id = service(cluster, "svc")
    wait_until(lambda: cluster.job(job_id)["state"] == "running", 30, what="running")
    where = cluster.job(job_id)["node_id"]
    name = "a" if where == a.id else "b"
    cluster.slave(name).kill()
    cluster.start_slave(name)
    job = cluster.job(job_id)
    assert (job["node_id"], job["attempts"], job["state"]) == (where, 1, "running")
    assert_never_twice(job_id)


def test_agent_back_after_dead_after_stops_what_runs_elsewhere(cluster: Cluster) -> None:
    cluster.start_master(1, *FAST)
    a = cluster.start_slave("a")
    b = cluster.start_slave("b")
    cluster.http.post(f"/v1/nodes/{b.id}/drain").raise_for_status()
    job_id = service(cluster, "svc")
    wait_until(lambda: running_on(cluster, job_id, a.id), 30, what="running on a")
    cluster.http.post(f"/v1/nodes/{b.id}/undrain").raise_for_status()
    a.signal(signal.SIGSTOP)  # frozen agent: its container keeps running, it cannot fence
    try:
        wait_until(lambda: running_on(cluster, job_id, b.id), 15, what="the job to move to b")
    finally:
        a.signal(signal.SIGCONT)
    # The thawed agent learns at once that its container's job runs elsewhere, and stops it.
    client = docker.from_env()
    try:
        wait_until(lambda: not client.containers.list(filters={"label": f"claud.slave={a.id}"}), 10,
                   what="the stale container on a to stop")
    finally:
        client.close()
    assert cluster.node(a.id)["allocations"] == 0


def test_leader_killed_while_a_slave_dies_reschedules_exactly_once(cluster: Cluster) -> None:
    cluster.start_masters(3, *FAST)
    a = cluster.start_slave("a")
    b = cluster.start_slave("b")
    cluster.http.post(f"/v1/nodes/{b.id}/drain").raise_for_status()
    jobs = [service(cluster, f"svc{i}") for i in range(3)]
    for job_id in jobs:
        wait_until(lambda: running_on(cluster, job_id, a.id), 30, what=f"{job_id} running on a")
    cluster.http.post(f"/v1/nodes/{b.id}/undrain").raise_for_status()
    machine_dies(cluster, "a")
    time.sleep(1.0)  # deliberately mid-way through the failure detector's wait, not a synchronisation
    leader = cluster.wait_leader()
    leader.kill()
    cluster.wait_leader(other_than=leader, timeout=10)
    cluster.reconnect()
    for job_id in jobs:
        wait_until(lambda: running_on(cluster, job_id, b.id), 25, what=f"{job_id} running on b")
    for job_id in jobs:
        job = cluster.job(job_id)
        assert job["attempts"] == 2, job["events"]
        assert_never_twice(job_id)


def test_leader_failover_is_not_slave_death(cluster: Cluster) -> None:
    cluster.start_masters(3, *FAST)
    cluster.start_slave("a")
    job_id = service(cluster, "svc")
    wait_until(lambda: cluster.job(job_id)["state"] == "running", 30, what="running")
    leader = cluster.wait_leader()
    leader.kill()
    cluster.wait_leader(other_than=leader, timeout=10)
    cluster.reconnect()
    # Longer than dead-after: the slave re-heartbeats to the new leader, nothing moves.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        job = cluster.job(job_id)
        assert (job["state"], job["attempts"]) == ("running", 1), job["events"]
        time.sleep(0.5)
