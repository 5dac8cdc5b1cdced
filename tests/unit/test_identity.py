"""Cluster and member ids: which master-to-master requests are refused, and
how an operator's remove-and-add lets a master with a new data directory in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from claud.api.protocol import CLUSTER_ID_HEADER, CLUSTER_SECRET_HEADER, MASTER_ID_HEADER, MEMBER_ID_HEADER, RAFT_PATH
from claud.master.api import create_app
from claud.master.identity import Identity
from claud.master.raft_config import Configuration, Member
from claud.master.storage import LogStore
from support.memory_master import memory_master


def config(*ids: int, cluster: str = "c1") -> Configuration:
    return Configuration(tuple(Member(i, f"h{i}:1", True) for i in ids), cluster)


def headers(master_id: int, member: str, cluster: str = "c1") -> dict[bytes, bytes]:
    return {
        MASTER_ID_HEADER.lower().encode(): str(master_id).encode(),
        CLUSTER_ID_HEADER.lower().encode(): cluster.encode(),
        MEMBER_ID_HEADER.lower().encode(): member.encode(),
    }


@pytest.fixture
def identity(tmp_path: Path) -> Identity:
    identity = Identity(1, LogStore(tmp_path / "claud.db"))
    identity.adopt(config(1, 2, 3))
    return identity


def test_the_member_id_is_made_with_the_data_directory(tmp_path: Path) -> None:
    first = LogStore(tmp_path / "a" / "claud.db").member_id()
    assert LogStore(tmp_path / "a" / "claud.db").member_id() == first  # kept across restarts
    assert LogStore(tmp_path / "wiped" / "claud.db").member_id() != first
    ours = Identity(1, LogStore(tmp_path / "a" / "claud.db")).headers()
    assert ours == {MASTER_ID_HEADER: "1", CLUSTER_ID_HEADER: "", MEMBER_ID_HEADER: first}


def test_another_clusters_master_is_refused(identity: Identity) -> None:
    refused = identity.check(headers(2, "m2", cluster="other"))
    assert refused is not None and refused.code == "other_cluster"
    assert identity.check(headers(2, "m2")) is None
    assert identity.check(headers(2, "m2", cluster="")) is None  # not bootstrapped yet: it may be joining
    assert identity.check({}) is None  # an older master sends no identity


def test_a_wiped_member_is_refused_once_logged_until_removed_and_added_again(
    identity: Identity, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert identity.check(headers(2, "first-dir")) is None  # pinned at first contact
    caplog.set_level(logging.ERROR, "claud.master.identity")
    for _ in range(3):
        refused = identity.check(headers(2, "wiped-dir"))
        assert refused is not None and refused.code == "member_id_changed"
        assert "claud operator members remove 2" in refused.message
    assert [r.getMessage().count("peer.refused") for r in caplog.records] == [1]
    # The pin survives a restart of this master.
    restarted = Identity(1, LogStore(tmp_path / "claud.db"))
    restarted.adopt(config(1, 2, 3))
    assert restarted.check(headers(2, "wiped-dir")) is not None
    # The operator removes 2 and adds it again: the new directory is pinned instead.
    restarted.committed(config(1, 3))
    restarted.committed(config(1, 2, 3))
    assert restarted.check(headers(2, "wiped-dir")) is None
    assert restarted.check(headers(2, "first-dir")) is not None


def test_only_members_are_pinned(identity: Identity) -> None:
    assert identity.check(headers(7, "stranger")) is None
    identity.committed(config(1, 2, 3, 7))  # the operator adds 7: its first contact after that counts
    assert identity.check(headers(7, "joined")) is None
    assert identity.check(headers(7, "stranger")) is not None
    assert identity.member_ids()[7] == "joined"


def test_the_internal_routes_refuse_a_stranger_with_403(tmp_path: Path) -> None:
    async def scenario() -> None:
        master, _ = memory_master(tmp_path)
        app = create_app(master.settings, master)
        await master.start()
        try:
            async with asyncio.timeout(10):
                while master.replicated.committed_configuration is None:
                    await asyncio.sleep(0.01)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m1") as client:
                answer = await client.post(
                    RAFT_PATH, content=b'{"messages": []}',
                    headers={CLUSTER_SECRET_HEADER: master.cluster_secret, "Content-Type": "application/json",
                             MASTER_ID_HEADER: "2", CLUSTER_ID_HEADER: "not-this-one", MEMBER_ID_HEADER: "x"},
                )
                assert (answer.status_code, answer.json()["error"]["code"]) == (403, "other_cluster")
        finally:
            await master.stop()

    asyncio.run(scenario())
