"""Membership with real master processes: a dead master replaced by a new one
(new id, empty data directory) while writes go on, four masters configured for
three, a wiped data directory refused until an operator takes it back, and a
lone survivor recovered as a one-member cluster."""

from __future__ import annotations

import shutil
from typing import Any

import httpx
from test_masters_cluster import assert_converged_without_loss

from support.cluster import Cluster, Master, wait_until
from support.load import Submitter


def members(master: Master, token: str) -> dict[str, Any]:
    return httpx.get(f"{master.url}/v1/operator/members", headers={"Authorization": f"Bearer {token}"},
                     timeout=5).json()


def roles(master: Master, token: str) -> dict[int, str]:
    return {m["id"]: m["role"] for m in members(master, token)["members"]}


def change(master: Master, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """An operator change, retried while another is in flight (409) or leadership moves (503)."""
    def done() -> httpx.Response | None:
        resp = httpx.request(method, f"{master.url}/v1/operator{path}", json=body,
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
        return None if resp.status_code in (409, 503) else resp

    return wait_until(done, 20, interval=0.2, what=f"{method} {path}")


def test_a_dead_master_is_replaced_by_a_new_one_while_writes_go_on(cluster: Cluster) -> None:
    m1, m2, m3 = cluster.start_masters(3)
    assert roles(m1, cluster.token) == {1: "voter", 2: "voter", 3: "voter"}
    with Submitter(cluster) as submitter:
        wait_until(lambda: submitter.count() >= 20, 20, what="some acknowledged writes")
        m3.kill()
        # The successor: a new id, an empty data directory, told where the others are.
        m4 = cluster.start_master(4, "--peers", f"{m1.address},{m2.address}", "--cluster-size", "3", wait=False)
        added = change(m2, cluster.token, "POST", "/members", {"id": 4, "address": m4.address})  # via a follower
        assert added.status_code == 200, added.text
        wait_until(lambda: roles(m1, cluster.token).get(4) == "voter", 20, what="master 4 promoted")
        removed = change(m1, cluster.token, "DELETE", "/members/3")
        assert removed.status_code == 200, removed.text
        wait_until(lambda: roles(m4, cluster.token) == {1: "voter", 2: "voter", 4: "voter"}, 20,
                   what="master 4 to hold the new configuration")
        before = submitter.count()
        wait_until(lambda: submitter.count() > before + 20, 20, what="writes after the replacement")
        # Master 4 is a real voter: with 1 gone, 2 and 4 are a quorum.
        m1.kill()
        cluster.wait_leader(timeout=15, other_than=m1)
        before = submitter.count()
        wait_until(lambda: submitter.count() > before + 10, 20, what="writes with masters 2 and 4 only")
    assert_converged_without_loss(cluster, submitter)
    answer = change(m2, cluster.token, "DELETE", "/members/9")
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


def test_four_masters_configured_for_three_do_not_split(cluster: Cluster) -> None:
    """The issue's seats: 1 and 2 know {1, 2, 3}, 3 and 4 know {1, 3, 4}."""
    slots = {i: cluster._master_slot(i) for i in (1, 2, 3, 4)}
    address = {i: f"{ip}:{port}" for i, (ip, port) in slots.items()}
    known = {1: (2, 3), 2: (1, 3), 3: (1, 4), 4: (1, 3)}
    for i in (1, 2, 3, 4):
        master = Master(i, *slots[i], cluster.workdir / f"m{i}", cluster.workdir / f"master-{i}.log",
                        ["--token-file", str(cluster.token_file), "--cluster-secret-file", str(cluster.secret_file),
                         "--peers", ",".join(address[j] for j in known[i]), "--cluster-size", "3"])
        cluster.masters.append(master)
        master.start()

    leaders: dict[int, int] = {}

    def one_configuration() -> dict[str, Any] | None:
        views = {m.id: members(m, cluster.token) for m in cluster.masters}
        ids = {v["cluster_id"] for v in views.values() if v["cluster_id"]}
        assert len(ids) <= 1, f"two clusters bootstrapped: {views}"
        for m in cluster.masters:
            view = m.cluster_view(cluster.token)
            if view["leader_id"] == m.id:  # a master that says it leads
                assert leaders.setdefault(view["term"], m.id) == m.id, f"two leaders of term {view['term']}"
        return next((v for v in views.values() if v["cluster_id"]), None)

    configuration = wait_until(one_configuration, 30, what="a configuration")
    voters = {m["id"] for m in configuration["members"] if m["role"] == "voter"}
    assert len(voters) == 3
    leader = cluster.wait_leader(among=[m for m in cluster.masters if m.id in voters])
    (outside,) = [m for m in cluster.masters if m.id not in voters]
    with leader.client(cluster.token) as http:
        for i in range(20):
            assert http.post("/v1/jobs", json={"name": f"n{i}", "image": "claud/busybox"}).status_code in (200, 201)
    # The master outside the configuration never leads, and is reported, not counted.
    for _ in range(20):
        view = outside.cluster_view(cluster.token)
        assert view["leader_id"] != outside.id
        one_configuration()
    assert f"master {outside.id}" in "".join(m.log() for m in cluster.masters if m.id in voters)


def test_a_wiped_data_directory_is_refused_until_removed_and_added_again(cluster: Cluster) -> None:
    m1, _m2, m3 = cluster.start_masters(3)
    with m1.client(cluster.token) as http:
        for i in range(10):
            assert http.post("/v1/jobs", json={"name": f"n{i}", "image": "claud/busybox"}).status_code in (200, 201)
    wait_until(lambda: roles(m1, cluster.token) == {1: "voter", 2: "voter", 3: "voter"}
               and all(m["member_id"] for m in members(m1, cluster.token)["members"]), 10,
               what="every member id known to the leader")
    m3.kill()
    shutil.rmtree(m3.data_dir)
    m3 = cluster.start_master(3, wait=False)
    wait_until(lambda: "member_id_changed" in m1.log(), 15, what="the leader to refuse the wiped master")
    assert m1.log().count("event=peer.refused") == 1  # one clear line, not one per message
    with m1.client(cluster.token) as http:  # 1 and 2 go on committing
        assert http.post("/v1/jobs", json={"name": "while-refused", "image": "claud/busybox"}).status_code in (200, 201)
    assert m1.cluster_view(cluster.token)["leader_id"] == 1
    # The operator takes it back: remove, then add under the same id.
    assert change(m1, cluster.token, "DELETE", "/members/3").status_code == 200
    assert change(m1, cluster.token, "POST", "/members", {"id": 3, "address": m3.address}).status_code == 200
    wait_until(lambda: roles(m1, cluster.token).get(3) == "voter", 20, what="master 3 back as a voter")
    wait_until(lambda: len(httpx.get(f"{m3.url}/v1/jobs", headers={"Authorization": f"Bearer {cluster.token}"},
                                     timeout=5).json()["jobs"]) == 11, 20, what="master 3 to catch up")


def test_the_last_survivor_recovers_as_a_one_member_cluster(cluster: Cluster) -> None:
    m1, m2, m3 = cluster.start_masters(3)
    with m1.client(cluster.token) as http:
        for i in range(10):
            assert http.post("/v1/jobs", json={"name": f"n{i}", "image": "claud/busybox"}).status_code in (200, 201)
    wait_until(lambda: all(v is not None and v >= m1.cluster_view(cluster.token)["commit_index"]
                           for v in [mm["match_index"] for mm in m1.cluster_view(cluster.token)["masters"]]),
               10, what="every master to hold every job")
    for m in (m1, m2, m3):
        m.kill()
    # Masters 1 and 3 are gone for good; 2 is restarted alone with the flag.
    survivor = cluster.start_master(2, "--peers", m1.address, "--recover-from-data-dir", wait=True)
    view = members(survivor, cluster.token)
    assert [(m["id"], m["role"]) for m in view["members"]] == [(2, "voter")]
    jobs = httpx.get(f"{survivor.url}/v1/jobs", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=5)
    assert len(jobs.json()["jobs"]) == 10
    assert "recovery.one_member_cluster" in survivor.log()
