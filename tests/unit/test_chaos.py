"""``claud chaos``: the request models, the pure fault state, the process's faults, the middleware,
the partitioned transport, and the CLI and SDK (with an httpx.MockTransport). No sockets."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.api.chaos import (
    DEFAULT_PAUSE_SECONDS,
    MAX_FAULT_SECONDS,
    TIMED_ACTIONS,
    ChaosAction,
    ChaosRequest,
    FaultRequest,
)
from claud.client import ClaudError, Client, InvalidSpec, NotFound
from claud.client.cli import CliConfig, ExitCode, cli
from claud.daemon.faults import FaultMiddleware, Faults, FaultState, describe
from claud.master.partition import PartitionedTransport
from claud.master.transport import LeaderUnavailable

ACTIONS = st.sampled_from(list(ChaosAction))
SECONDS = st.none() | st.floats(min_value=0.001, max_value=MAX_FAULT_SECONDS)


# --- the request models ------------------------------------------------------------------


@given(action=ACTIONS, seconds=SECONDS)
def test_only_pause_and_partition_take_seconds(action: ChaosAction, seconds: float | None) -> None:
    body = {"action": action.value, "target": "demo-s2", **({} if seconds is None else {"seconds": seconds})}
    if seconds is not None and action not in TIMED_ACTIONS:
        with pytest.raises(ValidationError) as caught:
            ChaosRequest.model_validate(body)
        assert caught.value.errors()[0]["loc"] == ("seconds",)
        assert "takes no seconds" in caught.value.errors()[0]["msg"]
    else:
        request = ChaosRequest.model_validate(body)
        assert (request.action, request.seconds, request.target) == (action, seconds, "demo-s2")


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "explode", "target": "1"}, "action"),
    ({"target": "1"}, "action"),
    ({"action": "kill"}, "target"),
    ({"action": "kill", "target": ""}, "target"),
    ({"action": "kill", "target": "../1"}, "target"),
    ({"action": "kill", "target": "a\n"}, "target"),
    ({"action": "kill", "target": "x" * 64}, "target"),
    ({"action": "pause", "target": "1", "seconds": 0}, "seconds"),
    ({"action": "pause", "target": "1", "seconds": -1}, "seconds"),
    ({"action": "pause", "target": "1", "seconds": MAX_FAULT_SECONDS + 1}, "seconds"),
    ({"action": "pause", "target": "1", "seconds": math.nan}, "seconds"),
    ({"action": "pause", "target": "1", "seconds": "soon"}, "seconds"),
    ({"action": "kill", "target": "1", "signal": 9}, "signal"),
])  # fmt: skip
def test_a_bad_request_names_its_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChaosRequest.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == field


def test_the_internal_request_names_no_target() -> None:
    with pytest.raises(ValidationError):
        FaultRequest.model_validate({"action": "kill", "target": "1"})
    assert FaultRequest.model_validate({"action": "heal"}).seconds is None


# --- the pure state -----------------------------------------------------------------------


@given(steps=st.lists(st.tuples(ACTIONS, SECONDS, st.floats(0, 400)), max_size=12))
def test_the_state_follows_each_action_and_faults_run_out_on_time(
    steps: list[tuple[ChaosAction, float | None, float]],
) -> None:
    state, now = FaultState(), 0.0
    for action, seconds, later in steps:
        if seconds is not None and action not in TIMED_ACTIONS:
            seconds = None
        before = state
        state = state.after(action, seconds, now)
        if action is ChaosAction.PAUSE:
            length = DEFAULT_PAUSE_SECONDS if seconds is None else seconds
            assert state.paused_at(now) and state.paused_at(now + length * 0.999)
            assert not state.paused_at(now + length)
        elif action is ChaosAction.RESUME:
            assert not state.paused_at(now)
        elif action is ChaosAction.PARTITION:
            assert state.partitioned_at(now)
            assert state.partitioned_at(now + 10**9) == (seconds is None)
        elif action is ChaosAction.HEAL:
            assert not state.partitioned_at(now)
        # Each action touches its own fault only.
        if action in (ChaosAction.PAUSE, ChaosAction.RESUME, ChaosAction.KILL):
            assert state.partitioned_at(now) == before.partitioned_at(now)
        if action in (ChaosAction.PARTITION, ChaosAction.HEAL, ChaosAction.KILL):
            assert state.paused_at(now) == before.paused_at(now)
        # Settling changes no fault that holds, and the next expiry is the first end.
        settled = state.settled(now + later)
        assert settled.paused_at(now + later) == state.paused_at(now + later)
        assert settled.partitioned_at(now + later) == state.partitioned_at(now + later)
        assert settled.settled(now + later) == settled
        expiry = state.next_expiry()
        if expiry is not None:
            assert expiry >= now
            assert state.settled(expiry) != state
        now += later


def test_describe_says_what_was_done() -> None:
    idle = FaultState()
    paused = idle.after(ChaosAction.PAUSE, None, 0)
    cut = idle.after(ChaosAction.PARTITION, None, 0)
    assert describe(ChaosAction.KILL, idle, None, 0) == "killed: exits with status 137 now"
    assert describe(ChaosAction.PAUSE, idle, None, 0) == "paused for 15s"
    assert describe(ChaosAction.PAUSE, paused, 3, 1) == "paused for 3s (it was paused already)"
    assert describe(ChaosAction.RESUME, paused, None, 1) == "resumed"
    assert describe(ChaosAction.RESUME, paused, None, 16) == "was not paused"
    assert describe(ChaosAction.PARTITION, idle, None, 0) == "partitioned until heal"
    assert describe(ChaosAction.PARTITION, idle, 2.5, 0) == "partitioned for 2.5s"
    assert describe(ChaosAction.HEAL, cut, None, 5) == "healed"
    assert describe(ChaosAction.HEAL, idle, None, 5) == "was not partitioned"


# --- one process's faults ----------------------------------------------------------------


def test_faults_set_and_clear_the_events_and_a_timed_fault_ends_itself() -> None:
    async def scenario() -> None:
        faults = Faults(enabled=True)
        assert faults.running.is_set() and faults.connected.is_set()
        result = faults.take(FaultRequest(action=ChaosAction.PAUSE), "2", "master")
        assert (result.seconds, result.message) == (DEFAULT_PAUSE_SECONDS, "master 2 paused for 15s")
        assert faults.paused and not faults.partitioned
        faults.apply(FaultRequest(action=ChaosAction.RESUME))
        assert not faults.paused
        faults.apply(FaultRequest(action=ChaosAction.PARTITION))
        assert faults.partitioned
        waiter = asyncio.create_task(faults.wait_connected())
        await asyncio.sleep(0)
        assert not waiter.done()
        faults.apply(FaultRequest(action=ChaosAction.HEAL))
        await asyncio.wait_for(waiter, 2)
        # A timed pause and partition end on their own (the timer, not a poll).
        faults.apply(FaultRequest(action=ChaosAction.PAUSE, seconds=0.05))
        faults.apply(FaultRequest(action=ChaosAction.PARTITION, seconds=0.1))
        assert faults.paused and faults.partitioned
        await asyncio.wait_for(faults.running.wait(), 2)
        assert faults.partitioned
        await asyncio.wait_for(faults.connected.wait(), 2)

    asyncio.run(scenario())


def test_faults_that_are_not_enabled_take_nothing() -> None:
    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            Faults(enabled=False).apply(FaultRequest(action=ChaosAction.PAUSE))

    asyncio.run(scenario())


def test_a_kill_only_arms_the_fallback_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        faults = Faults(enabled=True)
        delays: list[float] = []
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "call_later", lambda delay, *_: delays.append(delay))
        assert faults.apply(FaultRequest(action=ChaosAction.KILL)).startswith("killed")
        assert delays == [1.0] and not faults.paused and not faults.partitioned

    asyncio.run(scenario())


# --- the middleware ---------------------------------------------------------------------------


class Recorder:
    """An ASGI app that answers 200 and records the paths it served."""

    def __init__(self) -> None:
        self.served: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.served.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    return sent


def test_the_middleware_holds_requests_while_paused_and_refuses_peers_while_partitioned() -> None:
    async def scenario() -> None:
        faults, inner = Faults(enabled=True), Recorder()
        app = FaultMiddleware(inner, faults, exempt=frozenset({"/chaos"}),
                              cut_off=lambda path: path.startswith("/internal/"), who="master 3")
        assert (await call(app, "/internal/raft"))[0]["status"] == 200
        faults.apply(FaultRequest(action=ChaosAction.PAUSE))
        held = asyncio.create_task(call(app, "/v1/jobs"))
        await asyncio.sleep(0.01)
        assert not held.done()
        assert (await call(app, "/chaos"))[0]["status"] == 200  # resume always gets through
        faults.apply(FaultRequest(action=ChaosAction.RESUME))
        assert (await asyncio.wait_for(held, 2))[0]["status"] == 200
        faults.apply(FaultRequest(action=ChaosAction.PARTITION))
        refused = await call(app, "/internal/raft")
        assert refused[0]["status"] == 503
        body = json.loads(refused[1]["body"])
        assert body["error"]["code"] == "partitioned" and "master 3" in body["error"]["message"]
        assert (await call(app, "/v1/cluster"))[0]["status"] == 200  # the public API still answers
        assert "/internal/raft" not in inner.served[1:]

    asyncio.run(scenario())


# --- the partitioned transport ------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)

    def reachable(self, peer_id: int) -> bool:
        return True

    async def forward(self, leader_id: int, batch: list[Any], timeout: float) -> tuple[list[Any], int]:
        return [], 7

    async def forward_conf_change(self, leader_id: int, change: Any, timeout: float) -> int:
        return 8

    async def resolve_peers(self, addresses: list[str]) -> None:
        return None

    async def close(self) -> None:
        return None


def test_a_partitioned_transport_drops_and_refuses_until_healed() -> None:
    async def scenario() -> None:
        faults, inner = Faults(enabled=True), FakeTransport()
        transport = PartitionedTransport(inner, faults)
        transport.send("m1")  # type: ignore[arg-type]
        assert transport.reachable(2) and await transport.forward(2, [], 1) == ([], 7)
        faults.apply(FaultRequest(action=ChaosAction.PARTITION))
        transport.send("m2")  # type: ignore[arg-type]
        assert not transport.reachable(2)
        with pytest.raises(LeaderUnavailable):
            await transport.forward(2, [], 1)
        with pytest.raises(LeaderUnavailable):
            await transport.forward_conf_change(2, None, 1)  # type: ignore[arg-type]
        faults.apply(FaultRequest(action=ChaosAction.HEAL))
        transport.send("m3")  # type: ignore[arg-type]
        assert inner.sent == ["m1", "m3"]

    asyncio.run(scenario())


# --- the SDK and the CLI ----------------------------------------------------------------------


def chaos_master(requests: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        body = json.loads(request.content)
        if body["target"] == "9":
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no master or slave has id '9'",
                                                       "field": "target"}})
        if body["target"] == "off":
            return httpx.Response(403, json={"error": {"code": "chaos_disabled", "message": "master 1 takes no faults",
                                                       "field": None}})
        if body["target"] == "gone":
            return httpx.Response(502, json={"error": {"code": "target_unreachable", "message": "slave gone is down",
                                                       "field": None}})
        return httpx.Response(202, json={
            "target": body["target"], "role": "master", "action": body["action"], "seconds": body.get("seconds"),
            "message": f"master {body['target']} {body['action']}ed",
        })

    return httpx.MockTransport(handle)


def test_the_sdk_sends_the_fault_once_and_types_the_refusals() -> None:
    requests: list[httpx.Request] = []
    with Client(["http://a:8700", "http://b:8700"], token="t", transport=chaos_master(requests),
                failover_timeout=0) as claud:
        result = claud.chaos("pause", "2", 3)
        assert (result.action, result.seconds) == (ChaosAction.PAUSE, 3)
        assert json.loads(requests[-1].content) == {"action": "pause", "seconds": 3.0, "target": "2"}
        assert requests[-1].url.path == "/v1/chaos"
        with pytest.raises(NotFound):
            claud.chaos("kill", "9")
        with pytest.raises(ClaudError) as disabled:
            claud.chaos("kill", "off")
        assert disabled.value.code == "chaos_disabled" and type(disabled.value) is ClaudError
        sent = len(requests)
        with pytest.raises(ClaudError) as gone:
            claud.chaos("kill", "gone")
        assert gone.value.code == "target_unreachable"
        assert len(requests) == sent + 1  # not retried on the other master: a fault is taken once
        with pytest.raises(InvalidSpec) as bad:
            claud.chaos("kill", "2", 5)
        assert bad.value.field == "seconds" and len(requests) == sent + 1


def test_the_cli_prints_one_line_and_maps_errors_to_exit_codes() -> None:
    requests: list[httpx.Request] = []

    def invoke(*args: str) -> Any:
        config = CliConfig(transport=chaos_master(requests), poll_interval=0, failover_timeout=0)
        return CliRunner().invoke(cli, list(args), obj=config)

    done = invoke("chaos", "partition", "2", "--seconds", "10")
    assert (done.exit_code, done.stdout.strip()) == (0, "master 2 partitioned")
    assert json.loads(requests[-1].content) == {"action": "partition", "seconds": 10.0, "target": "2"}
    as_json = invoke("chaos", "kill", "1", "-o", "json")
    assert json.loads(as_json.stdout)["action"] == "kill"
    assert invoke("chaos", "heal", "9").exit_code == ExitCode.NOT_FOUND
    disabled = invoke("chaos", "resume", "off")
    assert disabled.exit_code == ExitCode.FAILED and "takes no faults" in disabled.stderr
    assert "--token" not in disabled.stderr
    sent = len(requests)
    for bad in (["pause", "1", "--seconds", "0"], ["pause", "1", "--seconds", "nan"],
                ["partition", "1", "--seconds", "301"], ["kill"], ["kill", "1", "--seconds", "3"]):
        assert invoke("chaos", *bad).exit_code == ExitCode.USAGE, bad
    assert len(requests) == sent
