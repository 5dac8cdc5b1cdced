"""Leader tracking among the slave's known master addresses, reply ordering, the lease."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from claud.api import Assignments, Heartbeat
from claud.api.protocol import CLUSTER_SECRET_HEADER, MASTER_ID_HEADER
from claud.slave.fencing import Lease
from claud.slave.masters import MasterClient, MastersUnavailable, ReplyGate

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def assignments(version: int = 1, term: int = 1, leader_id: int | None = 2) -> Assignments:
    return Assignments(
        term=term,
        leader_id=leader_id,
        leader_address=None,
        version=version,
        allocations=[],
        lease_seconds=10,
        heartbeat_interval=1,
    )


def ok(master_id: int, version: int = 1) -> httpx.Response:
    return httpx.Response(
        200,
        content=assignments(version, leader_id=master_id).model_dump_json(),
        headers={MASTER_ID_HEADER: str(master_id)},
    )


def not_leader(master_id: int, leader_id: int | None) -> httpx.Response:
    return httpx.Response(
        421,
        json={
            "error": {"code": "not_leader", "message": "ask the leader"},
            "leader_id": leader_id,
            "leader_address": "10.9.9.9:1" if leader_id else None,  # unreachable from here: never used
            "master_id": master_id,
        },
    )


Handler = Callable[[httpx.Request], httpx.Response]


def client(
    routes: dict[str, Handler], addresses: list[str], calls: list[str], secret: str | None = None
) -> MasterClient:
    def handle(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        calls.append(base)
        if base not in routes:
            raise httpx.ConnectError("connection refused", request=request)
        return routes[base](request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return MasterClient(addresses, http, secret=secret)


HB = Heartbeat(slave_id="s1", address="127.0.0.1:8701", cpu_total=1, memory_mb_total=64)


def test_follows_421_to_the_leader_by_id_and_remembers_it() -> None:
    calls: list[str] = []
    leader = {"id": 2}

    def master(mid: int) -> Handler:
        return lambda _r: ok(mid) if leader["id"] == mid else not_leader(mid, leader["id"])

    mc = client({A: master(1), B: master(2), C: master(3)}, [A, B, C], calls)

    async def scenario() -> None:
        # Leader 2 unknown yet: A names it, the client tries the next address.
        await mc.heartbeat(HB)
        assert calls == [A, B] and mc.current == B
        assert mc.known_ids == {1: A, 2: B}
        calls.clear()
        await mc.heartbeat(HB)
        assert calls == [B]
        # Leadership moves to 1, whose address is known: one hop, straight there.
        leader["id"] = 1
        calls.clear()
        await mc.heartbeat(HB)
        assert calls == [B, A] and mc.current == A
        assert mc.leader == (1, A)

    asyncio.run(scenario())


def test_not_leader_without_a_known_leader_rotates_then_gives_up() -> None:
    calls: list[str] = []
    mc = client({A: lambda _r: not_leader(1, None), B: lambda _r: not_leader(2, None)}, [A, B], calls)
    with pytest.raises(MastersUnavailable, match="not the leader"):
        asyncio.run(mc.heartbeat(HB))
    assert sorted(calls) == [A, B]


def test_connection_errors_and_503_rotate_to_the_next_master() -> None:
    calls: list[str] = []
    mc = client(
        {
            B: lambda _r: httpx.Response(503, json={"error": {"code": "no_leader", "message": "election"}}),
            C: lambda _r: ok(3),
        },
        [A, B, C],
        calls,
    )

    async def scenario() -> None:
        await mc.heartbeat(HB)
        assert calls == [A, B, C] and mc.current == C

    asyncio.run(scenario())


def test_all_masters_down_names_each_problem() -> None:
    mc = client({}, [A, B], [])
    with pytest.raises(MastersUnavailable) as info:
        asyncio.run(mc.heartbeat(HB))
    assert A in str(info.value) and B in str(info.value)


def test_cluster_secret_header_is_sent() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(CLUSTER_SECRET_HEADER))
        assert json.loads(request.content)["node_id"] == "s1"
        return ok(1)

    mc = client({A: handler}, [A], [], secret="s3cret")
    asyncio.run(mc.heartbeat(HB))
    assert seen == ["s3cret"]


def test_reply_gate_refuses_an_older_reply_but_believes_a_persistent_reset() -> None:
    gate = ReplyGate(tolerance=3)
    assert gate.admit(assignments(version=5))
    assert gate.admit(assignments(version=5))  # same version: fresh enough
    assert not gate.admit(assignments(version=4))  # reordered: refused
    assert gate.admit(assignments(version=6))
    assert gate.admit(assignments(version=0, term=2))  # new term: counters may restart
    assert not gate.admit(assignments(version=9, term=1))  # deposed leader
    # A master whose counter really went back repeats itself: within its term,
    # the third time it is believed.
    assert gate.admit(assignments(version=7, term=2))
    assert not gate.admit(assignments(version=1, term=2))
    assert not gate.admit(assignments(version=1, term=2))
    assert gate.admit(assignments(version=1, term=2))
    assert gate.version == 1


def test_lease_counts_from_the_send_time_and_never_moves_back() -> None:
    lease = Lease(10, last_success=100.0)
    assert not lease.expired(109.9) and lease.expired(110.0)
    lease.renew(sent_at=105.0, seconds=3)
    assert lease.deadline == 108.0
    lease.renew(sent_at=101.0, seconds=3)  # a long poll sent earlier, answered later
    assert lease.deadline == 108.0
    assert lease.expired(108.0)
