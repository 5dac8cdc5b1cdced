"""Real master processes as a cluster: the lowest id leads, writes go through
any master, and kills, pauses and partitions lose nothing acknowledged."""

from __future__ import annotations

import signal

import httpx
import pytest

from support.cluster import Cluster, Master, wait_until
from support.firewall import LoopbackFirewall, firewall_available
from support.load import Submitter


def jobs_on(master: Master, token: str) -> tuple[int, dict[str, str]]:
    resp = httpx.get(f"{master.url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
    return resp["index"], {j["id"]: j.get("idempotency_key") for j in resp["jobs"]}


def assert_converged_without_loss(cluster: Cluster, submitter: Submitter) -> None:
    """Every live master reaches the same history, holding every acknowledged job exactly once."""
    live = [m for m in cluster.masters if m.alive]

    def same_view() -> dict[str, str] | None:
        views = [jobs_on(m, cluster.token) for m in live]
        indexes = {index for index, _ in views}
        return views[0][1] if len(indexes) == 1 and all(v[1] == views[0][1] for v in views) else None

    jobs = wait_until(same_view, 20, what="all masters to converge")
    by_key: dict[str, list[str]] = {}
    for job_id, key in jobs.items():
        by_key.setdefault(key, []).append(job_id)
    for key, job_id in submitter.acked.items():
        assert by_key.get(key) == [job_id], f"acknowledged job {job_id} (key {key}) is {by_key.get(key)}"
    assert all(len(ids) == 1 for ids in by_key.values()), "a retried submit made a second job"


def test_lowest_id_leads_and_any_master_takes_writes(cluster: Cluster) -> None:
    masters = cluster.start_masters(3)
    # Whoever wins the very first election (masters learn each other's ids as
    # they start), leadership settles on the lowest id.
    wait_until(lambda: cluster.wait_leader().id == 1, 15, what="master 1 to lead")
    view = masters[2].cluster_view(cluster.token)
    assert view["quorum"] == 2 and {m["id"] for m in view["masters"]} == {1, 2, 3}
    with masters[2].client(cluster.token) as follower:
        # A 503 is a legitimate answer while leadership moves; a client retries with the same key.
        created = wait_until(
            lambda: (r := follower.post("/v1/jobs", json={"name": "via-follower", "image": "claud/busybox"},
                                        headers={"Idempotency-Key": "via-follower"})).status_code in (200, 201) and r,
            10, what="a write through a follower",
        )
        # Read-your-writes on the follower that forwarded it.
        assert follower.get(f"/v1/jobs/{created.json()['id']}").status_code == 200
    wait_until(
        lambda: {m["id"]: m["match_index"] for m in masters[0].cluster_view(cluster.token)["masters"]}[3] is not None,
        10, what="the leader to report follower 3's match index",
    )


def test_leader_sigkill_loses_nothing_and_it_rejoins_and_leads_again(cluster: Cluster) -> None:
    cluster.start_masters(3)
    with Submitter(cluster) as submitter:
        wait_until(lambda: submitter.count() >= 20, 20, what="some acknowledged writes")
        old = cluster.wait_leader()
        old.kill()
        before = submitter.count()
        cluster.wait_leader(timeout=10, other_than=old)
        wait_until(lambda: submitter.count() > before + 10, 15, what="writes after failover")
        cluster.start_master(old.id, wait=True)
        wait_until(lambda: cluster.wait_leader().id == 1, 20, what="master 1 to lead again")
        wait_until(lambda: submitter.count() > before + 30, 15, what="writes after the transfer")
    assert_converged_without_loss(cluster, submitter)


def test_leader_sigstop_and_resume(cluster: Cluster) -> None:
    cluster.start_masters(3)
    with Submitter(cluster) as submitter:
        wait_until(lambda: submitter.count() >= 10, 20, what="some acknowledged writes")
        old = cluster.wait_leader()
        old.signal(signal.SIGSTOP)
        try:
            others = [m for m in cluster.masters if m is not old]
            cluster.wait_leader(among=others, timeout=10, other_than=old)
            before = submitter.count()
            wait_until(lambda: submitter.count() > before + 10, 15, what="writes while the old leader is frozen")
        finally:
            old.signal(signal.SIGCONT)
        cluster.wait_leader(timeout=20)
    assert_converged_without_loss(cluster, submitter)


@pytest.mark.skipif(not firewall_available(), reason="iptables is needed to cut links on loopback")
def test_partitioned_leader_steps_down_refuses_writes_and_rejoins(cluster: Cluster) -> None:
    cluster.start_masters(3)
    firewall = LoopbackFirewall()
    try:
        with Submitter(cluster) as submitter:
            wait_until(lambda: submitter.count() >= 10, 20, what="some acknowledged writes")
            old = cluster.wait_leader()
            others = [m for m in cluster.masters if m is not old]
            firewall.isolate(old.ip, [m.ip for m in others])
            cluster.wait_leader(among=others, timeout=10, other_than=old)
            # The cut-off master is on the minority side: it steps down and refuses writes.
            wait_until(lambda: old.cluster_view(cluster.token)["leader_id"] is None, 10,
                       what="the old leader to step down")
            with old.client(cluster.token) as cut_off:
                refused = cut_off.post("/v1/jobs", json={"name": "refused", "image": "claud/busybox"})
                assert refused.status_code == 503 and refused.headers.get("Retry-After")
                assert cut_off.get("/v1/jobs").status_code == 200  # reads still work
                assert httpx.get(f"{old.url}/readyz").status_code == 503
            before = submitter.count()
            wait_until(lambda: submitter.count() > before + 10, 15, what="writes on the majority side")
            firewall.heal()
            wait_until(lambda: cluster.wait_leader().id == 1, 20, what="master 1 to lead again after healing")
        assert_converged_without_loss(cluster, submitter)
    finally:
        firewall.close()


@pytest.mark.skipif(not firewall_available(), reason="iptables is needed to cut links on loopback")
def test_follower_cut_off_catches_up_after_healing(cluster: Cluster) -> None:
    cluster.start_masters(3)
    firewall = LoopbackFirewall()
    try:
        with Submitter(cluster) as submitter:
            leader = cluster.wait_leader()
            follower = next(m for m in cluster.masters if m is not leader)
            firewall.isolate(follower.ip, [m.ip for m in cluster.masters if m is not follower])
            before = submitter.count()
            wait_until(lambda: submitter.count() > before + 20, 15, what="writes without the follower")
            firewall.heal()
        assert_converged_without_loss(cluster, submitter)
    finally:
        firewall.close()


def test_five_masters_survive_two_failures(cluster: Cluster) -> None:
    cluster.start_masters(5)
    with Submitter(cluster) as submitter:
        wait_until(lambda: submitter.count() >= 10, 20, what="some acknowledged writes")
        leader = cluster.wait_leader()
        leader.kill()
        next(m for m in cluster.masters if m.alive and m.id != leader.id).kill()
        cluster.wait_leader(timeout=10, other_than=leader)
        before = submitter.count()
        wait_until(lambda: submitter.count() > before + 10, 15, what="writes with 3 of 5 masters")
    assert_converged_without_loss(cluster, submitter)


def test_a_master_stopped_by_sigterm_exits_0_and_keeps_what_it_had(cluster: Cluster) -> None:
    cluster.start_masters(3)
    with cluster.masters[0].client(cluster.token) as http:
        ids = [http.post("/v1/jobs", json={"name": f"k{i}", "image": "claud/busybox"}).json()["id"] for i in range(5)]
    for master in cluster.masters:
        # SIGTERM is a clean stop: exit status 0, not the signal's 143.
        assert master.terminate() == 0, master.log()[-2000:]
    for master in list(cluster.masters):
        cluster.start_master(master.id, wait=False)
    cluster.wait_leader(timeout=20)
    for master in cluster.masters:
        wait_until(lambda: (v := jobs_on(master, cluster.token)) and set(ids) <= v[1].keys() and v, 10,
                   what=f"master {master.id} to list the jobs")


@pytest.mark.skipif(not firewall_available(), reason="iptables is needed to cut links on loopback")
def test_far_behind_follower_catches_up_from_a_snapshot(cluster: Cluster) -> None:
    cluster.start_masters(3, "--snapshot-every", "20")
    firewall = LoopbackFirewall()
    try:
        leader = cluster.wait_leader()
        follower = next(m for m in cluster.masters if m is not leader)
        firewall.isolate(follower.ip, [m.ip for m in cluster.masters if m is not follower])
        with Submitter(cluster) as submitter:
            wait_until(lambda: submitter.count() > 100, 30, what="writes past several snapshots")
        # The leader compacted its log past what the follower has: only a snapshot can bring it up.
        assert "snapshot.taken" in leader.log()
        firewall.heal()
        assert_converged_without_loss(cluster, submitter)
        assert "snapshot.installed" in follower.log()
    finally:
        firewall.close()
