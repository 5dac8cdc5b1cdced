"""The SDK against httpx.MockTransport: no sockets, masters are functions of the request."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from claud.api.jobs import JobSpec, JobState, JobView
from claud.api.protocol import ALLOC_ID_HEADER
from claud.client import (
    AsyncClient,
    ClaudError,
    Client,
    Conflict,
    InvalidSpec,
    JobNotFound,
    NoLeader,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
    Untrusted,
    WaitTimeout,
)
from support import fake_wire
from support.fake_wire import NOW

M1 = "http://m1:8700"
M2 = "http://m2:8700"
SPEC = {"name": "hello", "image": "claud/busybox:latest", "command": ["echo", "hi"]}

Handler = Callable[[httpx.Request], httpx.Response]
job_json = fake_wire.job_json
error_json = fake_wire.error_json


class Masters:
    """A fake cluster: one handler per master host, and every request each one got."""

    def __init__(self, **by_host: Handler) -> None:
        self.by_host = by_host
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.by_host[request.url.host](request)

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.requests]

    def client(self, masters: Any = (M1, M2), **kwargs: Any) -> Client:
        kwargs.setdefault("failover_timeout", 0)
        return Client(masters, token="t0ken", transport=httpx.MockTransport(self), **kwargs)

    def async_client(self, masters: Any = (M1, M2), **kwargs: Any) -> AsyncClient:
        kwargs.setdefault("failover_timeout", 0)
        return AsyncClient(masters, token="t0ken", transport=httpx.MockTransport(self), **kwargs)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def no_leader(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        503, json=error_json("no_leader", "no leader elected"), headers={"Retry-After": "0"}
    )


def answer(status: int, body: Any) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def created(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json=job_json(**json.loads(request.content)))


# --- parsing and requests ---------------------------------------------------------


def test_submit_sends_the_spec_token_and_an_idempotency_key_and_parses_the_job() -> None:
    masters = Masters(m1=created)
    with masters.client() as claud:
        job = claud.submit(SPEC)

    assert isinstance(job, JobView)
    assert (job.id, job.state, job.command) == ("j1", JobState.PENDING, ["echo", "hi"])
    request = masters.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/jobs")
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert request.headers["Idempotency-Key"]
    # Only what the user set goes on the wire: the masters own the defaults.
    assert json.loads(request.content) == SPEC


def test_submit_accepts_a_jobspec_and_an_explicit_idempotency_key() -> None:
    masters = Masters(m1=created)
    with masters.client() as claud:
        claud.submit(JobSpec(**SPEC), idempotency_key="deploy-42")
    assert masters.requests[0].headers["Idempotency-Key"] == "deploy-42"


def test_each_submit_gets_its_own_generated_key() -> None:
    masters = Masters(m1=created)
    with masters.client() as claud:
        claud.submit(SPEC)
        claud.submit(SPEC)
    first, second = (r.headers["Idempotency-Key"] for r in masters.requests)
    assert first != second


def test_submit_validates_a_dict_spec_locally_and_names_the_field() -> None:
    masters = Masters(m1=created)
    with masters.client() as claud, pytest.raises(InvalidSpec) as caught:
        claud.submit({**SPEC, "resources": {"cpu": 0.5, "memroy_mb": 64}})
    assert caught.value.field == "resources.memroy_mb"
    assert masters.requests == []  # refused before any round trip


def test_jobs_lists_with_a_state_filter() -> None:
    listing = {"jobs": [job_json(), job_json(id="j2", state="running")], "index": 7}
    masters = Masters(m1=answer(200, listing))
    with masters.client() as claud:
        jobs = claud.jobs(state="running")
    assert [j.id for j in jobs] == ["j1", "j2"]
    assert jobs[0].events is None
    assert masters.requests[0].url.params["state"] == "running"


def test_job_carries_its_events_and_unknown_fields_are_ignored() -> None:
    events = [{"at": NOW, "state": "pending"}, {"at": NOW, "state": "running", "node_id": "s1"}]
    masters = Masters(m1=answer(200, job_json(state="running", events=events, added_later=1)))
    with masters.client() as claud:
        job = claud.job("j1")
    assert [e.state for e in job.events or []] == [JobState.PENDING, JobState.RUNNING]


def test_ids_cannot_add_path_segments() -> None:
    masters = Masters(m1=answer(200, job_json()))
    with masters.client() as claud:
        claud.job("../nodes")
    assert masters.requests[0].url.raw_path == b"/v1/jobs/..%2Fnodes"


def test_stop_drain_undrain_and_cluster_hit_their_endpoints() -> None:
    node = {"id": "s1", "role": "slave", "address": "10.0.0.2:8701", "state": "draining"}
    cluster = {
        "leader_id": 1,
        "leader_address": "m1:8700",
        "term": 4,
        "commit_index": 99,
        "quorum": 2,
        "masters": [{"id": 1, "address": "m1:8700", "role": "leader"}],
    }

    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/j1":
            return httpx.Response(202, json=job_json(state="stopping"))
        if request.url.path == "/v1/nodes":
            return httpx.Response(200, json={"nodes": [node], "index": 3})
        if request.url.path.startswith("/v1/nodes/s1/"):
            return httpx.Response(200, json=node)
        return httpx.Response(200, json=cluster)

    masters = Masters(m1=route)
    with masters.client() as claud:
        assert claud.stop("j1").state is JobState.STOPPING
        assert [n.id for n in claud.nodes()] == ["s1"]
        assert claud.drain("s1").state == "draining"
        claud.undrain("s1")
        view = claud.cluster()
    assert (view.leader_id, view.term, view.commit_index) == (1, 4, 99)
    assert [(r.method, r.url.path) for r in masters.requests] == [
        ("DELETE", "/v1/jobs/j1"),
        ("GET", "/v1/nodes"),
        ("POST", "/v1/nodes/s1/drain"),
        ("POST", "/v1/nodes/s1/undrain"),
        ("GET", "/v1/cluster"),
    ]


def test_logs_yield_lines_with_their_endings_and_pass_tail() -> None:
    masters = Masters(m1=lambda r: httpx.Response(200, text="one\ntwo\npartial"))
    with masters.client() as claud:
        lines = list(claud.logs("j1", tail=10))
    assert lines == ["one\n", "two\n", "partial"]
    params = masters.requests[0].url.params
    assert (params.get("follow"), params["tail"]) == (None, "10")


class Attempts:
    """A job that restarts: each poll of the job returns the next view, and its
    logs are those of the attempt (allocation) the last view named."""

    def __init__(self, views: list[dict[str, Any]], output: dict[str, Any]) -> None:
        self.views, self.output = views, output
        self.alloc: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/j1":
            view = self.views.pop(0) if len(self.views) > 1 else self.views[0]
            self.alloc = view.get("alloc_id")
            return httpx.Response(200, json=job_json(**view))
        answer = self.output[self.alloc]
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, text=answer, headers={ALLOC_ID_HEADER: str(self.alloc)})


@pytest.fixture
def no_poll_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("claud.client._client.DEFAULT_POLL_INTERVAL", 0)
    monkeypatch.setattr("claud.client._async_client.DEFAULT_POLL_INTERVAL", 0)


RESTARTING = [
    {"state": "pending"},  # not placed yet: follow waits
    {"state": "starting", "alloc_id": "j1-1", "attempts": 1},  # no container output yet
    {"state": "running", "alloc_id": "j1-1", "attempts": 1},
    {"state": "running", "alloc_id": "j1-1", "attempts": 1},  # exited, not yet reported
    {"state": "pending", "alloc_id": "j1-1", "attempts": 1},  # restart backoff
    {"state": "running", "alloc_id": "j1-2", "attempts": 2},
    {"state": "failed", "alloc_id": "j1-2", "attempts": 2, "exit_code": 1},
]


@pytest.mark.usefixtures("no_poll_pause")
def test_logs_follow_waits_for_the_container_and_follows_each_restart() -> None:
    job = Attempts(list(RESTARTING), {"j1-1": "one\ntwo", "j1-2": "three\n"})
    masters = Masters(m1=job)
    with masters.client() as claud:
        lines = list(claud.logs("j1", follow=True, tail=10))
    assert lines == ["one\n", "two", "three\n"]
    streams = [r.url.params for r in masters.requests if r.url.path.endswith("/logs")]
    # tail applies to the first attempt shown; each later one is shown whole.
    assert [(p["follow"], p.get("tail")) for p in streams] == [("true", "10"), ("true", None)]


@pytest.mark.usefixtures("no_poll_pause")
def test_logs_follow_skips_an_attempt_whose_container_is_gone_and_ends_with_the_job() -> None:
    gone = httpx.Response(404, json=error_json("not_found", "the container of job j1 is gone"))
    views = [
        {"state": "pending", "alloc_id": "j1-1", "attempts": 1},
        {"state": "failed", "alloc_id": "j1-2", "attempts": 2},
    ]
    masters = Masters(m1=Attempts(views, {"j1-1": gone, "j1-2": "last words\n"}))
    with masters.client() as claud:
        assert list(claud.logs("j1", follow=True)) == ["last words\n"]


def test_logs_follow_of_an_unknown_job_raises_job_not_found() -> None:
    masters = Masters(m1=answer(404, error_json("not_found", "job j1 not found")))
    with masters.client() as claud, pytest.raises(JobNotFound):
        list(claud.logs("j1", follow=True))


@pytest.mark.usefixtures("no_poll_pause")
def test_async_logs_follow_each_restart_too() -> None:
    job = Attempts(list(RESTARTING), {"j1-1": "one\ntwo", "j1-2": "three\n"})
    masters = Masters(m1=job)

    async def scenario() -> list[str]:
        async with masters.async_client() as claud:
            return [line async for line in claud.logs("j1", follow=True)]

    assert asyncio.run(scenario()) == ["one\n", "two", "three\n"]


def change(kind: str, subject: str, state: str, **fields: Any) -> dict[str, Any]:
    """An event payload as the masters publish it."""
    return {"type": kind, "id": subject, "state": state, "at": NOW, "node_id": None,
            "message": "", "index": 1, **fields}  # fmt: skip


def test_events_are_parsed_from_server_sent_events() -> None:
    stream = (
        ": connected\n\n"
        f"event: job\nid: 5\ndata: {json.dumps(change('job', 'j1', 'running'))}\n\n"
        ": keep-alive\n\n"
        f"event: node\r\ndata: {json.dumps(change('node', 's1', 'dead'))}\r\n\r\n"
        'event: job\ndata: {"id": "j9",\ndata: "state": "failed", "added_later": 1}\n\n'
        "data: not json\n\n"
    )
    masters = Masters(m1=lambda r: httpx.Response(200, text=stream))
    with masters.client() as claud:
        events = list(claud.events())
    assert [e.type for e in events] == ["job", "node", "job", "message"]
    assert (events[0].data["id"], events[0].data["state"], events[0].id) == ("j1", "running", "5")
    assert (events[1].data["id"], events[1].data["state"]) == ("s1", "dead")
    # Multi-line data is joined; fields the SDK does not know are handed over too.
    assert events[2].data == {"id": "j9", "state": "failed", "added_later": 1}
    assert events[3].data == "not json"


class BrokenStream(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b"first\n"
        raise httpx.ReadError("connection reset")


def test_a_stream_cut_midway_raises_unreachable_not_an_httpx_error() -> None:
    masters = Masters(m1=lambda r: httpx.Response(200, stream=BrokenStream()))
    with masters.client() as claud:
        lines = claud.logs("j1")
        assert next(lines) == "first\n"
        with pytest.raises(Unreachable, match="lost the stream"):
            next(lines)


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "call", "expected"),
    [
        (404, error_json("not_found", "no job j1"), lambda c: c.job("j1"), JobNotFound),
        (404, error_json("not_found", "no job j1"), lambda c: c.stop("j1"), JobNotFound),
        (404, error_json("not_found", "no node s9"), lambda c: c.drain("s9"), NotFound),
        (409, error_json("conflict", "job already stopped"), lambda c: c.stop("j1"), Conflict),
        (401, error_json("unauthorized", "bad token"), lambda c: c.jobs(), Unauthorized),
        (403, {"detail": "Forbidden"}, lambda c: c.jobs(), Unauthorized),
        (500, {"detail": "Internal Server Error"}, lambda c: c.jobs(), ServerError),
        (418, "teapot", lambda c: c.jobs(), ClaudError),
    ],
)
def test_error_answers_become_typed_exceptions(
    status: int, body: Any, call: Callable[[Client], Any], expected: type[ClaudError]
) -> None:
    masters = Masters(m1=answer(status, body), m2=answer(500, "must not be asked"))
    with masters.client() as claud, pytest.raises(expected) as caught:
        call(claud)
    assert type(caught.value) is expected
    assert caught.value.status_code == status
    assert masters.hosts() == ["m1"]  # a definite answer is not retried elsewhere


def test_job_not_found_is_a_not_found() -> None:
    masters = Masters(m1=answer(404, error_json("not_found", "no job j1")))
    with masters.client() as claud, pytest.raises(NotFound, match="no job j1"):
        claud.job("j1")


def test_a_422_names_the_field() -> None:
    masters = Masters(
        m1=answer(422, error_json("invalid_spec", "must be > 0", field="resources.cpu"))
    )
    with masters.client() as claud, pytest.raises(InvalidSpec) as caught:
        claud.submit(SPEC)
    assert caught.value.field == "resources.cpu"
    assert str(caught.value) == "resources.cpu: must be > 0"


def test_fastapis_own_validation_error_is_understood_too() -> None:
    body = {
        "detail": [{"loc": ["query", "state"], "msg": "Input should be 'pending'", "type": "enum"}]
    }
    masters = Masters(m1=answer(422, body))
    with masters.client() as claud, pytest.raises(InvalidSpec) as caught:
        claud.jobs()
    assert caught.value.field == "state"


def test_an_answer_that_is_not_the_model_is_a_claud_error() -> None:
    masters = Masters(m1=lambda r: httpx.Response(200, text="<html>proxy login</html>"))
    with masters.client() as claud, pytest.raises(ClaudError, match="unexpected answer"):
        claud.job("j1")


# --- failover ------------------------------------------------------------------------


def test_a_refused_connection_fails_over_to_the_next_master_and_sticks_to_it() -> None:
    masters = Masters(m1=refuse, m2=answer(200, job_json()))
    with masters.client() as claud:
        claud.job("j1")
        claud.job("j1")
    assert masters.hosts() == ["m1", "m2", "m2"]


def test_a_503_fails_over_to_the_next_master() -> None:
    masters = Masters(m1=no_leader, m2=answer(200, {"jobs": [], "index": 1}))
    with masters.client() as claud:
        assert claud.jobs() == []
    assert masters.hosts() == ["m1", "m2"]


def test_a_slave_unreachable_502_is_an_answer_not_a_reason_to_fail_over() -> None:
    slave_down = answer(502, error_json("slave_unreachable", "slave s1 is unreachable"))
    masters = Masters(m1=slave_down, m2=answer(500, "must not be asked"))
    with masters.client() as claud, pytest.raises(ServerError, match="slave s1"):
        list(claud.logs("j1"))
    assert masters.hosts() == ["m1"]


def test_a_proxys_502_fails_over() -> None:
    masters = Masters(m1=lambda r: httpx.Response(502, text="Bad Gateway"), m2=answer(200, job_json()))
    with masters.client() as claud:
        claud.job("j1")
    assert masters.hosts() == ["m1", "m2"]


def test_each_retry_is_logged_once_per_distinct_failure(caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([refuse, refuse, refuse, created])
    masters = Masters(m1=lambda r: next(answers)(r))
    with caplog.at_level("INFO", logger="claud.client"), masters.client(M1, failover_timeout=5) as claud:
        claud.submit(SPEC)
    notes = [r.getMessage() for r in caplog.records if r.name == "claud.client"]
    assert len(masters.requests) == 4
    assert len(notes) == 1 and notes[0].startswith(f"{M1}: [Errno 111] Connection refused; retrying in")


def test_a_retried_submit_reuses_its_idempotency_key() -> None:
    def lost_answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("the request went out, the answer never came", request=request)

    masters = Masters(m1=lost_answer, m2=created)
    with masters.client() as claud:
        claud.submit(SPEC)
    first, second = masters.requests
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.content == second.content


def test_failover_retries_rounds_until_the_deadline() -> None:
    answers = iter([no_leader, no_leader, created])
    masters = Masters(m1=lambda r: next(answers)(r))
    with masters.client(M1, failover_timeout=5) as claud:
        assert claud.submit(SPEC).id == "j1"
    assert masters.hosts() == ["m1", "m1", "m1"]
    assert len({r.headers["Idempotency-Key"] for r in masters.requests}) == 1


def test_no_master_answering_raises_unreachable_naming_each() -> None:
    masters = Masters(m1=refuse, m2=refuse)
    with masters.client() as claud, pytest.raises(Unreachable) as caught:
        claud.jobs()
    assert set(caught.value.reasons) == {M1, M2}
    assert "Connection refused" in str(caught.value)


def untrusted(request: httpx.Request) -> httpx.Response:
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cause.verify_message = "unable to get local issuer certificate"
    raise httpx.ConnectError(str(cause), request=request) from cause


def test_untrusted_masters_raise_untrusted_at_once_whatever_the_failover_time() -> None:
    masters = Masters(m1=untrusted, m2=untrusted)
    with masters.client(failover_timeout=60) as claud, pytest.raises(Untrusted) as caught:
        claud.jobs()
    assert masters.hosts() == ["m1", "m2"]  # one round, no waiting for a certificate to change
    assert set(caught.value.reasons) == {M1, M2}
    assert "unable to get local issuer certificate" in str(caught.value)


def test_one_untrusted_master_is_skipped_for_a_trusted_one() -> None:
    masters = Masters(m1=untrusted, m2=answer(200, job_json()))
    with masters.client() as claud:
        claud.job("j1")
    assert masters.hosts() == ["m1", "m2"]


def test_untrusted_and_unreachable_masters_raise_unreachable() -> None:
    masters = Masters(m1=untrusted, m2=refuse)
    with masters.client() as claud, pytest.raises(Unreachable):
        claud.jobs()


def test_the_async_client_raises_untrusted_too() -> None:
    async def go() -> None:
        async with Masters(m1=untrusted).async_client(M1, failover_timeout=60) as claud:
            with pytest.raises(Untrusted):
                await claud.jobs()

    asyncio.run(go())


def test_masters_without_a_leader_raise_no_leader() -> None:
    masters = Masters(m1=refuse, m2=no_leader)
    with masters.client() as claud, pytest.raises(NoLeader) as caught:
        claud.submit(SPEC)
    assert caught.value.retry_after == 0
    assert caught.value.code == "no_leader"


def test_masters_come_from_the_environment_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUD_MASTERS", raising=False)
    assert Client().masters == ("http://127.0.0.1:8700",)
    monkeypatch.setenv("CLAUD_MASTERS", "10.0.0.1:8700, https://m2.example:443/claud/")
    assert Client().masters == ("http://10.0.0.1:8700", "https://m2.example:443/claud")
    with pytest.raises(ValueError, match="not a master address"):
        Client("ftp://m1")


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUD_TOKEN", "from-env")
    masters = Masters(m1=answer(200, {"jobs": [], "index": 0}))
    with Client(M1, transport=httpx.MockTransport(masters)) as claud:
        claud.jobs()
    assert masters.requests[0].headers["Authorization"] == "Bearer from-env"


# --- wait ----------------------------------------------------------------------------


def states_then(*states: str, exit_code: int | None = None) -> Handler:
    remaining = list(states)

    def poll(request: httpx.Request) -> httpx.Response:
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return httpx.Response(200, json=job_json(state=state, exit_code=exit_code))

    return poll


def test_wait_polls_until_a_terminal_state() -> None:
    masters = Masters(m1=states_then("pending", "running", "running", "completed", exit_code=0))
    with masters.client() as claud:
        job = claud.wait("j1", poll_interval=0)
    assert (job.state, job.exit_code) == (JobState.COMPLETED, 0)
    assert len(masters.requests) == 4


def test_watch_yields_each_change_once() -> None:
    masters = Masters(m1=states_then("pending", "pending", "running", "failed", exit_code=3))
    with masters.client() as claud:
        seen = [job.state.value for job in claud.watch("j1", poll_interval=0)]
    assert seen == ["pending", "running", "failed"]


def test_wait_gives_up_after_its_timeout_with_the_last_view() -> None:
    masters = Masters(m1=states_then("running"))
    with masters.client() as claud, pytest.raises(WaitTimeout) as caught:
        claud.wait("j1", timeout=0.05, poll_interval=0.01)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job is not None and caught.value.job.state is JobState.RUNNING


# --- the async twin ----------------------------------------------------------------------


def test_async_client_does_the_same() -> None:
    masters = Masters(
        m1=refuse,
        m2=lambda r: (
            created(r)
            if r.method == "POST"
            else httpx.Response(200, text="a\nb\n")
            if r.url.path.endswith("/logs")
            else httpx.Response(
                200, text=f"event: job\ndata: {json.dumps(change('job', 'j1', 'running'))}\n\n"
            )
            if r.url.path == "/v1/events"
            else httpx.Response(200, json=job_json(state="completed", exit_code=0))
        ),
    )

    async def scenario() -> None:
        async with masters.async_client() as claud:
            job = await claud.submit(SPEC)
            assert job.id == "j1"
            assert [line async for line in claud.logs("j1")] == ["a\n", "b\n"]
            assert [e.data["id"] async for e in claud.events()] == ["j1"]
            assert (await claud.wait("j1", poll_interval=0)).state is JobState.COMPLETED

    asyncio.run(scenario())
    assert masters.hosts()[:2] == ["m1", "m2"]
    submits = [r for r in masters.requests if r.method == "POST"]
    assert len({r.headers["Idempotency-Key"] for r in submits}) == 1


def test_async_client_raises_the_same_typed_errors() -> None:
    masters = Masters(
        m1=answer(404, error_json("not_found", "no job j1")),
        m2=refuse,
    )

    async def scenario() -> None:
        async with masters.async_client() as claud:
            with pytest.raises(JobNotFound):
                await claud.job("j1")
        async with masters.async_client(M2) as claud:
            with pytest.raises(Unreachable):
                await claud.jobs()

    asyncio.run(scenario())


# --- pagination ----------------------------------------------------------------------


def paged(key: str, items: list[dict[str, Any]]) -> Handler:
    """A master that pages ``items`` as the API does: ``limit``, and ``next`` = index of the next item."""

    def handle(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("next", "0"))
        limit = int(request.url.params.get("limit", len(items) or 1))
        end = start + limit
        cursor = str(end) if end < len(items) else None
        return httpx.Response(200, json={key: items[start:end], "index": 9, "next": cursor})

    return handle


def test_jobs_follows_every_page_and_keeps_the_filter() -> None:
    masters = Masters(m1=paged("jobs", [job_json(id=f"j{i}") for i in range(5)]))
    with masters.client() as claud:
        assert [j.id for j in claud.jobs(state="pending")] == [f"j{i}" for i in range(5)]
        walked = claud.iter_jobs(page_size=2)
        assert next(walked).id == "j0"
        assert len(masters.requests) == 2  # one page so far: pages are fetched as needed
        assert [j.id for j in walked] == ["j1", "j2", "j3", "j4"]
    first = masters.requests[0]
    assert (first.url.params["state"], first.url.params["limit"]) == ("pending", "500")
    assert [r.url.params.get("next") for r in masters.requests[1:]] == [None, "2", "4"]
    assert {r.url.params["limit"] for r in masters.requests[1:]} == {"2"}


def test_pages_may_come_from_different_masters() -> None:
    jobs = [job_json(id=f"j{i}") for i in range(3)]
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return paged("jobs", jobs)(request) if calls["n"] == 1 else no_leader(request)

    masters = Masters(m1=flaky, m2=paged("jobs", jobs))
    with masters.client() as claud:
        assert [j.id for j in claud.iter_jobs(page_size=1)] == ["j0", "j1", "j2"]
    assert masters.hosts()[:3] == ["m1", "m1", "m2"]


def test_a_master_that_repeats_its_cursor_is_an_error_not_a_loop() -> None:
    stuck = answer(200, {"jobs": [job_json()], "index": 1, "next": "same"})
    with Masters(m1=stuck).client() as claud, pytest.raises(ClaudError, match="never end"):
        claud.jobs()


def test_an_answer_without_next_is_the_whole_list() -> None:
    # A master from before pagination ignores ?limit and names no cursor.
    master = {"id": "1", "role": "master", "address": "a", "state": "alive"}
    masters = Masters(m1=answer(200, {"nodes": [master], "index": 1}))
    with masters.client() as claud:
        assert [n.id for n in claud.nodes()] == ["1"]
    assert len(masters.requests) == 1


def test_nodes_and_the_async_client_follow_pages_too() -> None:
    nodes = [{"id": str(i), "role": "master", "address": f"m{i}", "state": "alive"} for i in range(3)]
    masters = Masters(m1=paged("nodes", nodes), m2=paged("jobs", [job_json(id=f"j{i}") for i in range(3)]))
    with masters.client() as claud:
        assert [n.id for n in claud.iter_nodes(page_size=2)] == ["0", "1", "2"]

    async def run() -> tuple[list[str], list[str]]:
        async with masters.async_client(masters=(M1,)) as claud:
            node_ids = [n.id async for n in claud.iter_nodes(page_size=1)]
        async with masters.async_client(masters=(M2,)) as claud:
            job_ids = [j.id for j in await claud.jobs()]
            job_ids += [j.id async for j in claud.iter_jobs(page_size=2)]
        return node_ids, job_ids

    assert asyncio.run(run()) == (["0", "1", "2"], ["j0", "j1", "j2", "j0", "j1", "j2"])


def test_page_size_is_checked_before_any_request() -> None:
    masters = Masters(m1=paged("jobs", []))
    with masters.client() as claud, pytest.raises(ValueError, match="page_size"):
        next(claud.iter_jobs(page_size=0))
    assert masters.requests == []


def test_job_events_follows_every_page_in_both_clients() -> None:
    events = [{"at": f"2026-01-01T00:00:0{i}Z", "state": "pending", "message": f"e{i}"} for i in range(5)]
    masters = Masters(m1=paged("events", events))
    with masters.client() as claud:
        assert [e.message for e in claud.job_events("j1", page_size=2)] == [f"e{i}" for i in range(5)]
    assert {r.url.path for r in masters.requests} == {"/v1/jobs/j1/events"}
    assert [r.url.params.get("next") for r in masters.requests] == [None, "2", "4"]

    async def run() -> list[str]:
        async with masters.async_client(masters=(M1,)) as claud:
            return [e.message for e in await claud.job_events("j1", page_size=3)]

    assert asyncio.run(run()) == [f"e{i}" for i in range(5)]


# --- versions: update, scale, history, revert ------------------------------------------


VERSIONS = {
    "versions": [
        {"version": 2, "at": NOW, "stable": False, "spec": {**SPEC, "count": 3}},
        {"version": 1, "at": NOW, "stable": True, "spec": SPEC},
    ],
    "index": 12,
}


def versioned(request: httpx.Request) -> httpx.Response:
    """A master for one job: each write answers the job at its next version."""
    if request.url.path.endswith("/versions"):
        return httpx.Response(200, json=VERSIONS)
    body = json.loads(request.content)
    fields = body if request.method == "PUT" else {"count": body["count"]} if "count" in body else {}
    return httpx.Response(200, json=job_json(state="running", version=3, desired=fields.get("count", 1), **fields))


def test_update_puts_only_what_the_spec_sets_and_parses_the_new_version() -> None:
    masters = Masters(m1=versioned)
    with masters.client() as claud:
        job = claud.update("j1", {**SPEC, "count": 2, "update": {"max_parallel": 2}})
    assert (job.version, job.count, job.desired) == (3, 2, 2)
    request = masters.requests[0]
    assert (request.method, request.url.path) == ("PUT", "/v1/jobs/j1")
    assert json.loads(request.content) == {**SPEC, "count": 2, "update": {"max_parallel": 2}}
    assert request.headers["Authorization"] == "Bearer t0ken"


def test_update_validates_the_spec_locally_and_names_the_field() -> None:
    masters = Masters(m1=versioned)
    with masters.client() as claud, pytest.raises(InvalidSpec) as caught:
        claud.update("j1", {**SPEC, "count": 0})
    assert caught.value.field == "count"
    assert masters.requests == []


def test_update_with_a_job_view_sends_its_spec_without_where_its_ports_were_published() -> None:
    """get, change, put: the view's ports carry host_port and address, which no spec may."""
    port = {"name": "http", "container": 8080, "host": 0, "host_port": 21417, "address": "10.0.0.5:21417"}
    view = JobView.model_validate(job_json(state="running", type="service", ports=[port], version=2))
    masters = Masters(m1=versioned)
    with masters.client() as claud:
        claud.update("j1", view.model_copy(update={"image": "claud/busybox:1.36"}))
    sent = json.loads(masters.requests[0].content)
    assert sent["ports"] == [{"name": "http", "container": 8080, "host": 0}]
    assert sent["image"] == "claud/busybox:1.36"
    assert not {"id", "state", "version", "created_at"} & set(sent)


def test_scale_and_revert_post_their_request_and_check_it_first() -> None:
    masters = Masters(m1=versioned)
    with masters.client() as claud:
        assert claud.scale("j1", 3).desired == 3
        assert claud.revert("j1", 1).version == 3
        for bad, field in ((lambda: claud.scale("j1", 0), "count"), (lambda: claud.scale("j1", 101), "count"),
                           (lambda: claud.revert("j1", -1), "version")):
            with pytest.raises(InvalidSpec) as caught:
                bad()
            assert caught.value.field == field
    assert [(r.method, r.url.path, json.loads(r.content)) for r in masters.requests] == [
        ("POST", "/v1/jobs/j1/scale", {"count": 3}),
        ("POST", "/v1/jobs/j1/revert", {"version": 1}),
    ]


def test_versions_are_listed_newest_first_with_their_specs() -> None:
    masters = Masters(m1=versioned)
    with masters.client() as claud:
        versions = claud.versions("j1")
    assert [(v.version, v.stable, v.spec.count) for v in versions] == [(2, False, 3), (1, True, 1)]
    assert (masters.requests[0].method, masters.requests[0].url.path) == ("GET", "/v1/jobs/j1/versions")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (404, error_json("not_found", "job j1 keeps no version 7"), JobNotFound),
        (409, error_json("conflict", "job j1 is stopping"), Conflict),
        (422, error_json("invalid_spec", "no slave has 8 cpus", field="resources.cpu"), InvalidSpec),
    ],
)
def test_version_writes_raise_the_typed_errors(status: int, body: Any, expected: type[ClaudError]) -> None:
    masters = Masters(m1=answer(status, body), m2=answer(500, "must not be asked"))
    with masters.client() as claud:
        for call in (lambda: claud.update("j1", SPEC), lambda: claud.scale("j1", 2), lambda: claud.revert("j1", 7)):
            with pytest.raises(expected) as caught:
                call()
            assert type(caught.value) is expected and caught.value.status_code == status
        with pytest.raises(JobNotFound if status == 404 else expected):
            claud.versions("j1")
    assert set(masters.hosts()) == {"m1"}


VERSION_WRITES: list[Callable[[Client], Any]] = [
    lambda c: c.update("j1", SPEC),
    lambda c: c.scale("j1", 2),
    lambda c: c.revert("j1", 1),
]


@pytest.mark.parametrize("write", VERSION_WRITES)
def test_a_version_write_goes_to_another_master_only_if_none_took_it(write: Callable[[Client], Any]) -> None:
    # Never sent (the connection was refused), or refused unapplied (503 no_leader, not_committed): resent.
    not_committed = answer(503, error_json("not_committed", "overwritten by another leader's entry"))
    for first in (refuse, no_leader, not_committed):
        masters = Masters(m1=first, m2=versioned)
        with masters.client() as claud:
            assert write(claud).version == 3
        assert masters.hosts() == ["m1", "m2"]


def lost_answer(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("the request went out, the answer never came", request=request)


@pytest.mark.parametrize("write", VERSION_WRITES)
@pytest.mark.parametrize(
    ("first", "expected", "code"),
    [
        (lost_answer, ClaudError, None),
        (answer(503, error_json("outcome_unknown", "no answer from leader 1 after forwarding; "
                                "retry with the same idempotency key")), ServerError, "outcome_unknown"),
        (lambda r: httpx.Response(504, text="Gateway Timeout"), ServerError, None),  # a proxy's: a master may have it
        (lambda r: httpx.Response(502, text="Bad Gateway"), ServerError, None),
    ],
)
def test_a_version_write_that_may_have_been_applied_is_not_sent_again(
    write: Callable[[Client], Any], first: Handler, expected: type[ClaudError], code: str | None
) -> None:
    """Each write makes a version (and may start a rollout) and carries no idempotency key:
    sent twice, it could be applied twice."""
    masters = Masters(m1=first, m2=versioned)
    with masters.client(failover_timeout=5) as claud, pytest.raises(expected) as caught:
        write(claud)
    assert type(caught.value) is expected and caught.value.code == code
    assert masters.hosts() == ["m1"]
    if code == "outcome_unknown":
        assert "may have taken effect" in str(caught.value)
        assert "idempotency key" not in str(caught.value)  # this call has none to retry with
    if first is lost_answer:
        assert "not sent again" in str(caught.value)


def test_a_submit_whose_outcome_is_unknown_is_still_retried_with_its_key() -> None:
    unknown = answer(503, error_json("outcome_unknown", "no answer from leader 1 after forwarding"))
    masters = Masters(m1=unknown, m2=created)
    with masters.client() as claud:
        assert claud.submit(SPEC).id == "j1"
    assert masters.hosts() == ["m1", "m2"]
    assert len({r.headers["Idempotency-Key"] for r in masters.requests}) == 1


def test_the_async_client_updates_scales_lists_and_reverts_too() -> None:
    masters = Masters(m1=refuse, m2=versioned)

    async def scenario() -> None:
        async with masters.async_client() as claud:
            assert (await claud.update("j1", SPEC)).version == 3
            assert (await claud.scale("j1", 4)).desired == 4
            assert [v.version for v in await claud.versions("j1")] == [2, 1]
            assert (await claud.revert("j1", 1)).version == 3
        async with Masters(m1=lost_answer, m2=versioned).async_client() as claud:
            with pytest.raises(ClaudError, match="not sent again"):
                await claud.scale("j1", 2)

    asyncio.run(scenario())
    assert [(r.method, r.url.path) for r in masters.requests if r.url.host == "m2"] == [
        ("PUT", "/v1/jobs/j1"), ("POST", "/v1/jobs/j1/scale"), ("GET", "/v1/jobs/j1/versions"),
        ("POST", "/v1/jobs/j1/revert"),
    ]


def test_watch_reports_a_rollout_progressing_while_the_state_stays_running() -> None:
    rollout = {"version": 2, "state": "running", "updated_at": NOW}
    views = [
        job_json(state="running", version=2, running=2, desired=3, rollout=rollout),
        job_json(state="running", version=2, running=2, desired=3, rollout=rollout),
        job_json(state="running", version=2, running=3, desired=3, rollout=rollout),
        job_json(state="running", version=2, running=3, desired=3, rollout={**rollout, "state": "complete"}),
        job_json(state="stopped", version=2, running=0, desired=3),
    ]
    masters = Masters(m1=lambda r: httpx.Response(200, json=views.pop(0) if len(views) > 1 else views[0]))
    with masters.client() as claud:
        seen = [(v.running, v.rollout.state.value if v.rollout else None) for v in claud.watch("j1", poll_interval=0)]
    assert seen == [(2, "running"), (3, "running"), (3, "complete"), (0, None)]
