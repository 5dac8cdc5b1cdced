"""``POST /v1/jobs:batch`` on three masters: a batch sent to a follower is one
entry, every job on every master exactly once, and a retry makes nothing twice."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from claud.client import Client
from claud.client.errors import InvalidSpec
from support.cluster import Cluster, wait_until


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("submit-batch"))
    try:
        c.start_masters(3)
        yield c
    finally:
        c.close()


def _jobs(master_url: str, token: str) -> list[dict]:
    resp = httpx.get(f"{master_url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    resp.raise_for_status()
    return resp.json()["jobs"]


def test_a_batch_sent_to_a_follower_is_on_every_master_once(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(m for m in cluster.masters if m is not leader)
    specs = [{"name": f"b{i}", "image": "claud/busybox", "command": ["echo", str(i)]} for i in range(250)]
    index_before = leader.cluster_view(cluster.token)["commit_index"]
    with Client(follower.url, token=cluster.token) as claud:
        result = claud.submit_batch(specs, idempotency_key="batch-1")
        # One entry, not 250 (the leader's scheduler may add a plan or two: no slave can take them).
        assert result.index - index_before <= 3
        assert result.created == 250 and len(result.ids) == len(set(result.ids)) == 250
        # Read your writes on the follower that answered.
        mine = {j["id"]: j for j in _jobs(follower.url, cluster.token) if j["id"] in set(result.ids)}
        assert [mine[job_id]["name"] for job_id in result.ids] == [s["name"] for s in specs]
        assert [mine[job_id]["idempotency_key"] for job_id in result.ids] == [f"batch-1/{i}" for i in range(250)]
        # The same batch again (a client retrying after a lost answer), through another master.
        with Client(leader.url, token=cluster.token) as direct:
            again = direct.submit_batch(specs, idempotency_key="batch-1")
        assert again.ids == result.ids and again.created == 0

    def everywhere() -> bool:
        for master in cluster.masters:
            ids = [j["id"] for j in _jobs(master.url, cluster.token) if j["name"].startswith("b")]
            if sorted(ids) != sorted(result.ids):
                return False
        return True

    wait_until(everywhere, 10, what="the batch on every master, each job once")


def test_an_invalid_job_refuses_the_whole_batch(cluster: Cluster) -> None:
    before = len(_jobs(cluster.master.url, cluster.token))
    body = {"jobs": [{"name": "fine", "image": "claud/busybox"}] * 5 + [{"name": "x", "image": "BAD IMAGE"}]}
    resp = cluster.http.post("/v1/jobs:batch", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "jobs.5.image"
    # A job keyed by itself in a batch keyed by its header.
    keyed = {"jobs": [{"name": "a", "image": "claud/busybox"}, {"name": "b", "image": "claud/busybox",
                                                                  "idempotency_key": "own"}]}
    resp = cluster.http.post("/v1/jobs:batch", json=keyed, headers={"Idempotency-Key": "hdr"})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "jobs.1.idempotency_key"
    # The same key with another job at index 1: a conflict naming it, nothing made.
    first = cluster.http.post("/v1/jobs:batch", json={"jobs": [{"name": "c0", "image": "claud/busybox"}]},
                              headers={"Idempotency-Key": "conflict"})
    assert first.status_code == 201, first.text
    clash = {"jobs": [{"name": "n0", "image": "claud/busybox"}, {"name": "n1", "image": "claud/busybox"}]}
    resp = cluster.http.post("/v1/jobs:batch", json=clash, headers={"Idempotency-Key": "conflict"})
    assert resp.status_code == 409 and resp.json()["error"]["field"] == "jobs.0", resp.text
    assert len(_jobs(cluster.master.url, cluster.token)) == before + 1
    with Client(cluster.master.url, token=cluster.token) as claud, pytest.raises(InvalidSpec) as refused:
        claud.submit_batch([{"name": "ok", "image": "claud/busybox"}, {"name": "no", "image": "claud/busybox",
                                                                        "memroy_mb": 1}])
    assert refused.value.field == "jobs.1.memroy_mb"


def test_the_async_client_submits_a_batch(cluster: Cluster) -> None:
    import asyncio

    from claud.client import AsyncClient

    async def go() -> list[str]:
        async with AsyncClient([m.url for m in cluster.masters], token=cluster.token) as claud:
            result = await claud.submit_batch([{"name": "async", "image": "claud/busybox"}] * 3)
            return result.ids

    ids = asyncio.run(go())
    assert len(set(ids)) == 3
