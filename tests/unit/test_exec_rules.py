"""``claud exec``: what a request may hold (422 naming the field), and how the SDK sends it once."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.api.jobs import DEFAULT_EXEC_TIMEOUT, MAX_EXEC_TIMEOUT, ExecRequest, ExecResult
from claud.client import AsyncClient, ClaudError, Client, Conflict, InvalidSpec, ServerError
from support.fake_wire import error_json

M1 = "http://m1:8700"
M2 = "http://m2:8700"
RESULT = {"job_id": "j1", "alloc_id": "j1-1", "node_id": "s1", "exit_code": 3, "stdout": "hi\n", "stderr": ""}


def field_of(exc: ValidationError) -> str:
    return ".".join(str(part) for part in exc.errors()[0]["loc"])


def test_a_request_needs_only_a_command_and_defaults_the_timeout() -> None:
    request = ExecRequest.model_validate({"command": ["echo", "hi"]})
    assert (request.command, request.alloc, request.timeout) == (["echo", "hi"], None, DEFAULT_EXEC_TIMEOUT)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "command"),
        ({"command": []}, "command"),
        ({"command": "echo hi"}, "command"),
        ({"command": ["a\x00b"]}, "command"),
        ({"command": ["true"], "timeout": 0}, "timeout"),
        ({"command": ["true"], "timeout": -1}, "timeout"),
        ({"command": ["true"], "timeout": MAX_EXEC_TIMEOUT + 1}, "timeout"),
        ({"command": ["true"], "timeout": "soon"}, "timeout"),
        ({"command": ["true"], "alloc": "../etc"}, "alloc"),
        ({"command": ["true"], "alloc": ""}, "alloc"),
        ({"command": ["true"], "tty": True}, "tty"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ExecRequest.model_validate(body)
    assert field_of(caught.value) == field


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_only_a_finite_timeout_in_0_to_the_maximum_is_accepted(timeout: float) -> None:
    valid = math.isfinite(timeout) and 0 < timeout <= MAX_EXEC_TIMEOUT
    try:
        ExecRequest.model_validate({"command": ["true"], "timeout": timeout})
    except ValidationError as exc:
        assert not valid and field_of(exc) == "timeout"
    else:
        assert valid


def test_the_sdk_checks_the_request_before_sending_it() -> None:
    sent: list[httpx.Request] = []
    with Client(M1, token="t", transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))) as claud:
        with pytest.raises(InvalidSpec) as caught:
            claud.exec("j1", [], timeout=1)
        assert caught.value.field == "command"
        with pytest.raises(InvalidSpec) as caught:
            claud.exec("j1", ["true"], timeout=601)
        assert caught.value.field == "timeout"
    assert sent == []


def test_exec_posts_the_argv_and_parses_the_result() -> None:
    sent: list[httpx.Request] = []

    def master(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=RESULT)

    with Client(M1, token="t", transport=httpx.MockTransport(master)) as claud:
        result = claud.exec("j1", ["sh", "-c", "exit 3"], alloc="j1-1", timeout=5)
    assert result == ExecResult.model_validate(RESULT)
    [request] = sent
    assert (request.method, request.url.path) == ("POST", "/v1/jobs/j1/exec")
    assert json.loads(request.content) == {"command": ["sh", "-c", "exit 3"], "alloc": "j1-1", "timeout": 5}
    # The answer may take as long as the command: the read timeout covers it.
    assert request.extensions["timeout"]["read"] > 5


def test_the_async_client_execs_too() -> None:
    async def scenario() -> ExecResult:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=RESULT))
        async with AsyncClient(M1, token="t", transport=transport) as claud:
            return await claud.exec("j1", ["true"])

    assert asyncio.run(scenario()).exit_code == 3


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(504, "exec_timeout", ServerError), (409, "not_running", Conflict), (502, "slave_unreachable", ClaudError)],
)
def test_a_command_that_may_have_run_is_never_sent_to_another_master(
    status: int, code: str, error: type[ClaudError]
) -> None:
    hosts: list[str] = []

    def masters(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return httpx.Response(status, json=error_json(code, "no"))

    claud = Client([M1, M2], token="t", transport=httpx.MockTransport(masters), failover_timeout=0)
    with claud, pytest.raises(error) as caught:
        claud.exec("j1", ["true"])
    assert caught.value.code == code
    assert hosts == ["m1"]


def test_a_lost_answer_is_an_error_not_a_second_run() -> None:
    hosts: list[str] = []

    def masters(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        raise httpx.ReadTimeout("timed out", request=request)

    claud = Client([M1, M2], token="t", transport=httpx.MockTransport(masters), failover_timeout=0)
    with claud, pytest.raises(ClaudError, match="not sent again"):
        claud.exec("j1", ["true"])
    assert hosts == ["m1"]


def test_a_master_that_cannot_be_reached_is_skipped_as_for_any_call() -> None:
    def masters(request: httpx.Request) -> httpx.Response:
        if request.url.host == "m1":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=RESULT)

    with Client([M1, M2], token="t", transport=httpx.MockTransport(masters), failover_timeout=0) as claud:
        assert claud.exec("j1", ["true"]).node_id == "s1"


# --- GC and volumes (claud.master.volume_gc) ---------------------------------------


def test_gc_asks_every_slave_a_job_with_named_volumes_ran_on_and_none_for_others() -> None:
    from datetime import UTC, datetime

    from claud.api.jobs import JobEvent, JobSpec, JobState
    from claud.master.state import JobRecord, StateMachine
    from claud.master.volume_gc import volume_homes, volumes_url

    now = datetime.now(UTC)

    def job(job_id: str, volumes: list[dict[str, object]], slave: str | None, *placed: str) -> JobRecord:
        spec = JobSpec.model_validate({"name": job_id, "image": "claud/busybox:latest", "volumes": volumes})
        events = [JobEvent(at=now, state=JobState.SCHEDULED, node_id=s, attempt=i + 1) for i, s in enumerate(placed)]
        return JobRecord(id=job_id, spec=spec, state=JobState.COMPLETED, node_id=slave, created_at=now,
                         updated_at=now, events=events)

    jobs = {
        "named": job("named", [{"name": "data", "path": "/data"}], "s2", "s1", "s2"),
        "host": job("host", [{"host_path": "/srv/x", "path": "/x"}], "s1", "s1"),
        "none": job("none", [], "s1", "s1"),
    }
    assert volume_homes(StateMachine(jobs=jobs), ["named", "host", "none", "gone"]) == {"named": {"s1", "s2"}}
    assert str(volumes_url("10.0.0.5:8701", "named", "http")) == "http://10.0.0.5:8701/v1/jobs/named/volumes"
    for address, job_id in [("0.0.0.0:8701", "named"), ("10.0.0.5:8701/x", "named"), ("10.0.0.5:8701", "../x")]:
        with pytest.raises(ValueError):
            volumes_url(address, job_id, "http")
