"""POST /v1/jobs has a fast path below FastAPI; it must answer exactly as the route does.

A JSON body with ``Content-Type: application/json`` takes the fast path; the
same body as ``application/x-claud-test+json`` is parsed as JSON by the FastAPI
route only (FastAPI reads any ``+json`` type as JSON). So each case is sent
both ways and the answers compared.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from support.cluster import Cluster

JSON = {"Content-Type": "application/json"}
ROUTE_ONLY_JSON = {"Content-Type": "application/x-claud-test+json"}
#: Differ between any two jobs, whichever path made them.
PER_JOB = {"id", "created_at", "updated_at", "events"}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory):
    """One master for the module: each test looks only at the jobs it made."""
    c = Cluster(tmp_path_factory.mktemp("submit-paths"))
    try:
        c.start_masters(1)
        yield c.http
    finally:
        c.close()


def job_ids(http: httpx.Client) -> list[str]:
    return [j["id"] for j in http.get("/v1/jobs").json()["jobs"]]


def post(http: httpx.Client, spec: Any, fast: bool, **headers: str) -> httpx.Response:
    body = json.dumps(spec).encode()
    return http.post("/v1/jobs", content=body, headers={**(JSON if fast else ROUTE_ONLY_JSON), **headers})


def comparable(resp: httpx.Response) -> tuple[int, dict[str, Any]]:
    body = resp.json()
    kept = {k: v for k, v in body.items() if k not in PER_JOB}
    kept["allocations"] = [{k: v for k, v in a.items() if k not in PER_JOB} for a in body["allocations"]]
    return resp.status_code, kept


def test_a_valid_spec_gets_the_same_answer_on_both_paths(http: httpx.Client) -> None:
    spec = {
        "name": "same", "image": "claud/busybox", "command": ["sh", "-c", "true"], "env": {"A": "1"},
        "resources": {"cpu": 0.5, "memory_mb": 64}, "restart": {"policy": "on-failure", "max_retries": 2},
        "type": "service", "constraints": {"labels": {"zone": "a"}}, "stop_timeout": 3,
    }
    fast, slow = post(http, spec, fast=True), post(http, spec, fast=False)
    assert fast.status_code == 201, fast.text
    assert comparable(fast) == comparable(slow)
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert fast.json()["events"][0]["message"] == slow.json()["events"][0]["message"]


def test_an_idempotency_key_means_one_job_whichever_path_repeats_it(http: httpx.Client) -> None:
    spec = {"name": "once", "image": "claud/busybox"}
    before = job_ids(http)
    first = post(http, spec, fast=True, **{"Idempotency-Key": "k-1"})
    again = post(http, spec, fast=False, **{"Idempotency-Key": "k-1"})
    third = post(http, spec, fast=True, **{"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code, third.status_code) == (201, 200, 200)
    assert first.json()["id"] == again.json()["id"] == third.json()["id"]
    for fast in (True, False):
        other = post(http, {**spec, "name": "twice"}, fast=fast, **{"Idempotency-Key": "k-1"})
        assert other.status_code == 409 and "k-1" in other.json()["error"]["message"]
    assert job_ids(http) == [*before, first.json()["id"]]


@pytest.mark.parametrize(
    ("spec", "headers", "status", "field"),
    [
        ({"name": "x", "image": "claud/busybox", "idempotency_key": "a"}, {"Idempotency-Key": "b"}, 422,
         "idempotency_key"),
        ({"name": "x", "image": "claud/busybox"}, {"Idempotency-Key": "k" * 201}, 422, "idempotency-key"),
        ({"name": "x", "image": "claud/busybox", "memroy_mb": 1}, {}, 422, "memroy_mb"),
        ({"image": "claud/busybox"}, {}, 422, "name"),
        ([1, 2], {}, 422, None),
    ],
)
def test_refusals_are_the_same_on_both_paths(
    http: httpx.Client, spec: Any, headers: dict[str, str], status: int, field: str | None
) -> None:
    before = job_ids(http)
    answers = [post(http, spec, fast=fast, **headers) for fast in (True, False)]
    for resp in answers:
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["field"] == field
    assert answers[0].json() == answers[1].json()
    assert job_ids(http) == before


def test_bodies_the_fast_path_does_not_take_still_get_the_routes_answer(http: httpx.Client) -> None:
    malformed = http.post("/v1/jobs", content=b'{"name": "x",', headers=JSON)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"
    as_text = http.post(
        "/v1/jobs", content=b'{"name": "x", "image": "claud/busybox"}', headers={"Content-Type": "text/plain"}
    )
    assert as_text.status_code == 422 and "JSON object" in as_text.json()["error"]["message"]
    with_charset = http.post(
        "/v1/jobs", content=b'{"name": "x", "image": "claud/busybox"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert with_charset.status_code == 201
