"""``claud chaos`` on real processes: three masters and a simulated slave started with
--demo-faults, broken on purpose and watched recovering; and a cluster without the
flag, which takes no fault at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from claud.api.protocol import CHAOS_PATH, CLUSTER_SECRET_HEADER, RAFT_PATH
from claud.client import ClaudError, Client, NotFound
from claud.client.cli import CliConfig, cli
from support.cluster import Cluster, Master, wait_until

DEMO = "--demo-faults"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("chaos"))
    try:
        c.start_masters(3, DEMO)
        c.start_slave("s1", "--runtime", "simulated", DEMO)
        yield c
    finally:
        c.close()


def sdk(c: Cluster) -> Client:
    return Client([m.url for m in c.masters], token=c.token, failover_timeout=5)


def chaos_cli(c: Cluster, *args: str) -> str:
    config = CliConfig(masters=",".join(m.url for m in c.masters), token=c.token)
    result = CliRunner().invoke(cli, ["chaos", *args], obj=config)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout.strip()


def view_of(c: Cluster, master: Master, about: int) -> dict[str, Any]:
    return next(m for m in master.cluster_view(c.token)["masters"] if m["id"] == about)


def internal_post(c: Cluster, address: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"http://{address}{path}", json=body, headers={CLUSTER_SECRET_HEADER: c.secret}, timeout=5)


def test_a_partitioned_leader_loses_the_lead_and_rejoins_as_a_follower(demo: Cluster) -> None:
    old = demo.wait_leader()
    assert old.cluster_view(demo.token)["demo_faults"] is True
    assert chaos_cli(demo, "partition", str(old.id)) == f"master {old.id} partitioned until heal"
    others = [m for m in demo.masters if m is not old]
    new = demo.wait_leader(among=others, other_than=old, timeout=20)
    # Its public API still answers, and shows it lost the leader; its peers' routes answer 503.
    wait_until(lambda: old.cluster_view(demo.token)["leader_id"] != old.id, 10, what="the old leader stepping down")
    refused = internal_post(demo, old.address, RAFT_PATH, {"messages": []})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "partitioned"
    # Writes still commit through the two that lead now.
    job = new.client(demo.token).post("/v1/jobs", json={"name": "during-partition", "image": "claud/busybox"})
    assert job.status_code == 201, job.text
    committed = new.cluster_view(demo.token)["commit_index"]

    before_heal = len(old.log())
    assert chaos_cli(demo, "heal", str(old.id)) == f"master {old.id} healed"
    assert internal_post(demo, old.address, RAFT_PATH, {"messages": []}).status_code == 204

    def followed_the_new_leader() -> bool:
        return any("event=raft.role" in line and "role=follower" in line and f"leader={new.id} " in line + " "
                   for line in old.log()[before_heal:].splitlines())

    # It hears the new leader's term and follows it (the lowest id may then take the lead
    # back by a transfer, once caught up: either way one leader, and its history is the majority's).
    wait_until(followed_the_new_leader, 20, what="the old leader following the new one")
    demo.wait_leader(timeout=20)
    wait_until(lambda: old.cluster_view(demo.token)["commit_index"] >= committed, 20, what="the old leader caught up")
    assert old.client(demo.token).get(f"/v1/jobs/{job.json()['id']}").status_code == 200


def test_a_paused_follower_is_unreachable_then_catches_up(demo: Cluster) -> None:
    leader = demo.wait_leader()
    follower = next(m for m in demo.masters if m is not leader)
    with sdk(demo) as claud:
        result = claud.chaos("pause", str(follower.id), 3)
    assert (result.role, result.seconds) == ("master", 3)
    # It answers nothing while paused: not even its public API.
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{follower.url}/v1/cluster", headers={"Authorization": f"Bearer {demo.token}"}, timeout=0.5)
    wait_until(lambda: not view_of(demo, leader, follower.id)["reachable"], 3, interval=0.05,
               what="the leader seeing the paused follower unreachable")
    job = leader.client(demo.token).post("/v1/jobs", json={"name": "during-pause", "image": "claud/busybox"})
    assert job.status_code == 201, job.text
    committed = leader.cluster_view(demo.token)["commit_index"]
    wait_until(lambda: view_of(demo, leader, follower.id)["reachable"]
               and (view_of(demo, leader, follower.id)["match_index"] or 0) >= committed, 20,
               what="the follower back and caught up")
    assert follower.cluster_view(demo.token)["commit_index"] >= committed
    assert "event=chaos.resume" in follower.log()  # the pause ran out by itself


def test_a_partitioned_slave_goes_suspect_and_comes_back_when_healed(demo: Cluster) -> None:
    slave = demo.slaves[0]
    with sdk(demo) as claud:
        assert claud.chaos("partition", slave.id).message == f"slave {slave.id} partitioned until heal"
        refused = httpx.get(f"http://{slave.address}/v1/status", headers={CLUSTER_SECRET_HEADER: demo.secret},
                            timeout=5)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "partitioned"
        wait_until(lambda: demo.node(slave.id)["state"] == "suspect", 15, what="the slave suspect")  # type: ignore[index]
        assert claud.chaos("heal", slave.id).message == f"slave {slave.id} healed"
    wait_until(lambda: demo.node(slave.id)["state"] == "alive", 15, what="the slave alive again")  # type: ignore[index]


def test_an_unknown_target_is_404_naming_it(demo: Cluster) -> None:
    with sdk(demo) as claud, pytest.raises(NotFound) as caught:
        claud.chaos("kill", "nobody")
    assert "'nobody'" in str(caught.value)
    answer = demo.http.post("/v1/chaos", json={"action": "kill", "target": "1", "seconds": 2})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "seconds"


def test_kill_crashes_a_master_and_a_slave(demo: Cluster) -> None:
    leader = demo.wait_leader()
    victim = next(m for m in demo.masters if m is not leader)
    with sdk(demo) as claud:
        assert claud.chaos("kill", str(victim.id)).message.startswith(f"master {victim.id} killed")
        slave = demo.slaves[0]
        assert claud.chaos("kill", slave.id).role == "slave"
    for process in (victim, slave):
        assert process.popen is not None
        assert process.popen.wait(10) == 137
        assert "event=chaos.kill" in process.log()
    assert demo.wait_leader() is leader  # two of three still lead


def test_a_cluster_without_demo_faults_takes_none(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    try:
        c.start_masters(1)
        slave = c.start_slave("s1", "--runtime", "simulated")
        master = c.master
        assert master.cluster_view(c.token)["demo_faults"] is False
        for target in ("1", slave.id, "nobody"):
            answer = c.http.post("/v1/chaos", json={"action": "kill", "target": target})
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"]["code"] == "chaos_disabled"
            assert "--demo-faults" in answer.json()["error"]["message"]
        for address in (master.address, slave.address):
            refused = internal_post(c, address, CHAOS_PATH, {"action": "kill"})
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "chaos_disabled"
        with Client(master.url, token=c.token) as claud, pytest.raises(ClaudError) as caught:
            claud.chaos("pause", "1")
        assert caught.value.code == "chaos_disabled"
        assert master.alive and slave.alive
        assert c.node(slave.id)["state"] == "alive"  # type: ignore[index]
    finally:
        c.close()
