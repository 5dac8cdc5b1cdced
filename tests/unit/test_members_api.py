"""The operator's membership routes on one master in memory: the configuration
as the API shows it, a learner added, and each refusal with its status and code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from claud.api import ClusterView, MemberList
from claud.master.api import create_app
from claud.master.master import Master
from claud.master.raft_config import ChangeKind, ConfChange
from support.memory_master import memory_master

DEADLINE = 10.0


async def _leading(master: Master) -> None:
    await master.start()
    async with asyncio.timeout(DEADLINE):
        while not (master.replicated.leader_ready and master.replicated.configuration is not None):
            await asyncio.sleep(0.01)


Api = tuple[httpx.AsyncClient, Master]


def run(tmp_path: Path, scenario: Callable[[Api], Awaitable[None]]) -> None:
    """``scenario`` against a leading lone master's app (its routes, not its sockets)."""

    async def main() -> None:
        master, _ = memory_master(tmp_path)
        app = create_app(master.settings, master)
        await _leading(master)
        headers = {"Authorization": f"Bearer {master.token}"}
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m1",
                                         headers=headers) as client:
                await scenario((client, master))
        finally:
            await master.stop()

    asyncio.run(main())


def test_a_lone_master_bootstraps_a_configuration_of_itself(tmp_path: Path) -> None:
    run(tmp_path, _bootstraps)


async def _bootstraps(api: Api) -> None:
    client, master = api
    found = MemberList.model_validate((await client.get("/v1/operator/members")).json())
    assert found.cluster_id and [(m.id, m.role.value) for m in found.members] == [(1, "voter")]
    assert found.members[0].address == master.address and found.members[0].match_index is not None
    cluster = ClusterView.model_validate((await client.get("/v1/cluster")).json())
    assert cluster.cluster_id == found.cluster_id and cluster.members == found.members and cluster.quorum == 1


def test_adding_and_removing_a_member(tmp_path: Path) -> None:
    run(tmp_path, _add_remove)


async def _add_remove(api: Api) -> None:
    client, master = api
    added = await client.post("/v1/operator/members", json={"id": 2, "address": "127.0.0.1:18702"})
    assert added.status_code == 200, added.text
    roles = {m.id: m.role.value for m in MemberList.model_validate(added.json()).members}
    assert roles == {1: "voter", 2: "learner"}  # it cannot catch up: nothing reaches it here
    assert master.directory.address(2) == "127.0.0.1:18702"  # the configuration tells addresses
    again = await client.post("/v1/operator/members", json={"id": 2, "address": "127.0.0.1:18702"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    removed = await client.delete("/v1/operator/members/2")
    assert removed.status_code == 200 and [m.id for m in MemberList.model_validate(removed.json()).members] == [1]


@pytest.mark.parametrize(
    ("call", "status", "code", "field"),
    [
        (("DELETE", "/v1/operator/members/9", None), 404, "not_found", None),
        (("DELETE", "/v1/operator/members/1", None), 422, "invalid_spec", "id"),  # the last voter
        (("POST", "/v1/operator/members", {"id": 3, "address": "0.0.0.0:8700"}), 422, "invalid_spec", "address"),
        (("POST", "/v1/operator/members", {"id": 3, "address": "no port"}), 422, "invalid_spec", "address"),
        (("POST", "/v1/operator/members", {"id": 0, "address": "h:1"}), 422, "invalid_spec", "id"),
    ],
)
def test_refusals_say_why_and_name_the_field(
    tmp_path: Path, call: tuple[str, str, object], status: int, code: str, field: str | None
) -> None:
    async def scenario(api: Api) -> None:
        client, _ = api
        method, path, body = call
        answer = await client.request(method, path, json=body)
        error = answer.json()["error"]
        assert (answer.status_code, error["code"], error["field"]) == (status, code, field), answer.text

    run(tmp_path, scenario)


def test_a_change_while_another_is_uncommitted_is_a_conflict(tmp_path: Path) -> None:
    run(tmp_path, _in_flight)


async def _in_flight(api: Api) -> None:
    client, master = api
    # Appended but not yet committed: the core has not been handed a Ready since.
    master.replicated.core.propose_config_change(ConfChange(ChangeKind.ADD_LEARNER, 5, "127.0.0.1:18705"))
    answer = await client.post("/v1/operator/members", json={"id": 6, "address": "127.0.0.1:18706"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "conflict")
    assert answer.headers.get("Retry-After") == "1"
