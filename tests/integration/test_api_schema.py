"""The public API against its own OpenAPI document, on a live master with a simulated slave.

* schemathesis generates requests for every public route from /openapi.json
  (valid and invalid ones) and checks each answer: no 5xx, a documented
  status, a documented content type and headers, a body that matches the
  schema. ``POST /v1/jobs`` also gets valid specs of our own making, so that
  jobs are really created, placed and run.
* Pagination walks the real lists; ``/docs`` needs nothing from the internet.

schemathesis 4 is driven through its Python API, not its pytest plugin: each
operation's case strategy goes into a plain hypothesis test, failures are
collected rather than raised (no shrinking, every distinct finding listed
once), and the run is bounded by ``EXAMPLES`` per operation and mode.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from claud.client import Client
from support.cluster import Cluster, wait_until

schemathesis = pytest.importorskip("schemathesis")
# After importorskip, so that a missing schemathesis skips this file rather than failing it.
from schemathesis import GenerationMode  # noqa: E402
from schemathesis import checks as sc  # noqa: E402

#: Examples per operation and generation mode (26 operations x 2 modes, then 6 with existing
#: ids at half as many): ~1,350 requests, ~50 s on a loaded 2-core machine.
EXAMPLES = 50
#: Streams that never end on their own: not fuzzed (they would hold a request open).
STREAMING = {"GET /v1/events", "GET /v1/cluster/trace"}
#: Every answer is read with this timeout (the logs route streams from the slave).
READ_TIMEOUT = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("api-schema"))
    try:
        c.start_masters(1)
        c.start_slave("s1", "--runtime", "simulated", "--cpus", "64", "--memory-mb", "65536")
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def openapi(cluster: Cluster) -> dict[str, Any]:
    resp = httpx.get(f"{cluster.master.url}/openapi.json", timeout=10)  # open: no token
    assert resp.status_code == 200
    return resp.json()


# --- the document ------------------------------------------------------------------


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_the_document_names_every_operation_and_uses_the_projects_error_body(openapi: dict[str, Any]) -> None:
    ids = {f"{m} {p}": op["operationId"] for m, p, op in operations(openapi)}
    assert ids == {
        "POST /v1/jobs": "submitJob", "POST /v1/jobs:batch": "submitJobsBatch", "GET /v1/jobs": "listJobs",
        "GET /v1/jobs/{job_id}": "getJob",
        "DELETE /v1/jobs/{job_id}": "stopJob", "GET /v1/jobs/{job_id}/events": "jobEvents",
        "GET /v1/jobs/{job_id}/logs": "jobLogs", "POST /v1/jobs/{job_id}/exec": "execJob", "GET /v1/nodes": "listNodes",
        "PUT /v1/jobs/{job_id}": "updateJob", "POST /v1/jobs/{job_id}/scale": "scaleJob",
        "POST /v1/jobs/{job_id}/revert": "revertJob", "GET /v1/jobs/{job_id}/versions": "listJobVersions",
        "POST /v1/nodes/{node_id}/drain": "drainNode", "POST /v1/nodes/{node_id}/undrain": "undrainNode",
        "GET /v1/cluster": "clusterStatus", "GET /v1/cluster/trace": "clusterTrace", "GET /v1/events": "events",
        "GET /healthz": "healthz",
        "GET /readyz": "readyz", "GET /metrics": "metrics", "GET /ui": "dashboard",
        "POST /v1/system/gc": "systemGc", "GET /v1/operator/snapshot": "saveSnapshot",
        "POST /v1/operator/snapshot": "restoreSnapshot", "GET /v1/operator/members": "listMembers",
        "POST /v1/operator/members": "addMember", "DELETE /v1/operator/members/{member_id}": "removeMember",
        "POST /v1/chaos": "chaos",
    }
    text = str(openapi)
    assert "HTTPValidationError" not in text and "'ValidationError'" not in text
    open_routes = {"/healthz", "/readyz", "/ui"}  # /ui is a page with no data in it
    for method, path, op in operations(openapi):
        responses = op["responses"]
        for status, response in responses.items():
            if status >= "400":
                error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                assert response["content"] == error_body, (method, path, status)
        if path not in open_routes:
            assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in responses, (method, path)
        if op.get("requestBody"):
            assert "413" in responses, (method, path)
    for method, path in [("POST", "/v1/jobs"), ("DELETE", "/v1/jobs/{job_id}"), ("POST", "/v1/nodes/{node_id}/drain"),
                         ("GET", "/readyz")]:
        assert "Retry-After" in openapi["paths"][path][method.lower()]["responses"]["503"]["headers"]
    media = {(m, p): list(op["responses"][min(op["responses"])]["content"]) for m, p, op in operations(openapi)}
    assert media[("GET", "/v1/jobs/{job_id}/logs")] == ["text/plain"]
    assert media[("GET", "/v1/events")] == ["text/event-stream"]
    assert media[("GET", "/metrics")] == ["text/plain"]
    assert "502" in openapi["paths"]["/v1/jobs/{job_id}/logs"]["get"]["responses"]
    # The models' limits reach the schema.
    spec = openapi["components"]["schemas"]["JobSpec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["command"]["maxItems"] == 1024
    assert openapi["components"]["schemas"]["Resources"]["properties"]["cpu"]["minimum"] == 0.001


def test_docs_work_offline(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.master.url, timeout=10) as http:  # no token: the docs are open
        page = http.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "://" not in page.text  # no CDN, no external favicon
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 3
        for asset in assets:
            resp = http.get(asset)
            assert resp.status_code == 200 and len(resp.content) > 1000, asset
        assert "SwaggerUIBundle" in http.get("/docs/static/swagger-ui-bundle.js").text
        assert http.get("/docs/static/nope.js").status_code == 404
        assert http.get("/v1/jobs").status_code == 401  # the open prefix opens nothing else


# --- pagination ----------------------------------------------------------------------


def test_lists_page_in_a_stable_order_and_the_sdk_follows_the_pages(cluster: Cluster) -> None:
    made = [cluster.submit(name=f"page-{i}")["id"] for i in range(7)]
    http = cluster.http
    whole = http.get("/v1/jobs").json()
    assert whole["next"] is None
    ids = [j["id"] for j in whole["jobs"]]
    assert ids[-7:] == made  # oldest first
    walked, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 3, **({"next": cursor} if cursor else {})}
        page = http.get("/v1/jobs", params=params).json()
        assert len(page["jobs"]) <= 3
        walked += [j["id"] for j in page["jobs"]]
        pages += 1
        if pages == 1:
            made.append(cluster.submit(name="between-pages")["id"])  # sorts last: still listed
        if (cursor := page["next"]) is None:
            break
    assert walked == ids + made[-1:]
    assert http.get("/v1/jobs", params={"limit": 0}).status_code == 422
    assert http.get("/v1/jobs", params={"limit": 1001}).status_code == 422
    bad = http.get("/v1/jobs", params={"limit": 2, "next": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "next"
    pending = http.get("/v1/jobs", params={"state": "completed", "limit": 1}).json()
    assert all(j["state"] == "completed" for j in pending["jobs"])

    nodes = http.get("/v1/nodes", params={"limit": 1}).json()
    assert [n["role"] for n in nodes["nodes"]] == ["master"] and nodes["next"] is not None
    rest = http.get("/v1/nodes", params={"limit": 1, "next": nodes["next"]}).json()
    assert [n["id"] for n in rest["nodes"]] == [cluster.slaves[0].id] and rest["next"] is None

    events = http.get(f"/v1/jobs/{made[0]}/events", params={"limit": 1}).json()
    assert events["events"][0]["state"] == "pending"
    all_events = http.get(f"/v1/jobs/{made[0]}/events").json()["events"]
    paged_events, cursor = list(events["events"]), events["next"]
    while cursor is not None:
        page = http.get(f"/v1/jobs/{made[0]}/events", params={"limit": 1, "next": cursor}).json()
        paged_events += page["events"]
        cursor = page["next"]
    assert paged_events == all_events[: len(paged_events)] and len(paged_events) >= len(all_events) - 1

    with Client(cluster.master.url, token=cluster.token) as claud:
        assert [j.id for j in claud.iter_jobs(page_size=2)] == walked
        assert [j.id for j in claud.jobs()] == walked
        assert [n.id for n in claud.nodes()] == ["1", cluster.slaves[0].id]


# --- schemathesis ---------------------------------------------------------------------


IMAGES = ["claud/busybox:latest", "claud/busybox", "busybox:1.36", "registry.example:5000/team/app:v1"]


def valid_specs() -> st.SearchStrategy[dict[str, Any]]:
    """Job specs the masters accept: what a user would submit, in all its variety."""
    text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=20)
    return st.fixed_dictionaries(
        {"name": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z"), "image": st.sampled_from(IMAGES)},
        optional={
            "command": st.lists(text, max_size=4),
            "env": st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,10}\Z"), text, max_size=3),
            "resources": st.fixed_dictionaries(
                {}, optional={"cpu": st.floats(0.001, 0.5), "memory_mb": st.integers(6, 256)}
            ),
            "restart": st.fixed_dictionaries(
                {}, optional={"policy": st.sampled_from(["never", "on-failure", "always"]),
                              "max_retries": st.integers(0, 3)}
            ),
            "type": st.sampled_from(["batch", "service"]),
            "stop_timeout": st.floats(0, 5),
            "idempotency_key": st.text(st.characters(codec="ascii", exclude_characters="\x00"),
                                       min_size=1, max_size=40),
        },
    )


def with_valid_spec(case: Any, spec: dict[str, Any]) -> Any:
    case.body = spec
    if case.headers:
        case.headers = {k: v for k, v in case.headers.items() if k.lower() != "idempotency-key"}
    return case


CHECKS = [
    sc.not_a_server_error,
    sc.status_code_conformance,
    sc.content_type_conformance,
    sc.response_headers_conformance,
    sc.response_schema_conformance,
]


def describe(case: Any, error: BaseException) -> str:
    request = case.as_curl_command(headers={"Authorization": "Bearer ..."})
    return f"{request}\n    -> {type(error).__name__}: {str(error).strip()[:1500]}"


def test_every_public_route_answers_as_its_schema_says(cluster: Cluster, openapi: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(openapi)
    base_url, auth = cluster.master.url, {"Authorization": f"Bearer {cluster.token}"}
    findings: dict[str, str] = {}  # one per (operation, kind of failure)
    calls = {"n": 0}
    statuses: Counter[str] = Counter()
    started = time.monotonic()

    def batches() -> Any:
        """(label, mode, strategy, examples) per operation; then, for the routes of one job or node,
        the same with ids that exist (random ids only ever meet a 404)."""
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            if label in STREAMING:
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)
                if label == "POST /v1/jobs" and mode is GenerationMode.POSITIVE:
                    with_spec = st.tuples(strategy, valid_specs()).map(lambda t: with_valid_spec(*t))
                    strategy = st.one_of(strategy, with_spec)
                yield operation, label, mode, strategy, EXAMPLES
        job_ids = [job["id"] for job in cluster.http.get("/v1/jobs").json()["jobs"][-5:]]
        known = {"job_id": job_ids, "node_id": [cluster.slaves[0].id, "1"]}
        for operation in operations:
            label = f"{operation.method.upper()} {operation.path}"
            name = next((n for n in known if "{" + n + "}" in operation.path), None)
            if name is None or label in STREAMING:
                continue
            strategy = st.one_of(*(operation.as_strategy(path_parameters={name: value}) for value in known[name]))
            yield operation, f"{label} (existing {name})", GenerationMode.POSITIVE, strategy, EXAMPLES // 2

    for operation, label, mode, strategy, examples in batches():
        @settings(
            max_examples=examples, deadline=None, database=None, derandomize=True,
            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            calls["n"] += 1
            try:
                response = case.call(base_url=base_url, headers=auth, timeout=READ_TIMEOUT)
                statuses[f"{label} {response.status_code}"] += 1
                case.validate_response(response, checks=CHECKS, headers=auth)
            except Exception as error:  # noqa: BLE001 - every finding is collected and reported
                text = str(error)
                kind = re.sub(r"\d+", "N", text.strip().splitlines()[0] if text.strip() else type(error).__name__)
                findings.setdefault(f"{label} [{mode.value}] {kind[:120]}", describe(case, error))

        try:
            run()
        except Unsatisfiable:
            # Nothing invalid to send: the operation takes no parameters and no body.
            assert mode is GenerationMode.NEGATIVE and not operation.definition.raw.get("parameters"), label

    elapsed = time.monotonic() - started
    print(f"\nschemathesis {schemathesis.__version__}: {calls['n']} requests in {elapsed:.1f}s")
    print("answers:", dict(sorted(statuses.items())))
    assert not findings, f"{len(findings)} finding(s):\n\n" + "\n\n".join(f"{k}\n    {v}" for k, v in findings.items())


def test_after_the_fuzzing_the_cluster_still_commits(cluster: Cluster) -> None:
    before = cluster.http.get("/v1/cluster").json()["commit_index"]
    job = cluster.submit(name="after-fuzz", command=["true"])
    assert job["state"] == "pending"
    wait_until(lambda: cluster.http.get("/v1/cluster").json()["commit_index"] > before, 10, what="a commit")
    assert cluster.wait_state(job["id"], "scheduled", "starting", "running", "completed", timeout=30)
    assert httpx.get(f"{cluster.master.url}/readyz", timeout=5).status_code == 200


# --- odd requests schemathesis does not send ------------------------------------------

JSON = {"Content-Type": "application/json"}
SPEC = b'{"name": "odd", "image": "claud/busybox"'
#: (what, method, path, body, headers): each must get a documented 4xx with the error
#: body, and none may stop the cluster from committing (the last one used to poison the log).
ODD_REQUESTS = [
    ("NaN in a number", "POST", "/v1/jobs", SPEC + b', "resources": {"cpu": NaN}}', JSON),
    ("Infinity in a number", "POST", "/v1/jobs", SPEC + b', "stop_timeout": Infinity}', JSON),
    ("a lone surrogate in command", "POST", "/v1/jobs", SPEC + b', "command": ["\\ud800"]}', JSON),
    ("a lone surrogate in an env value", "POST", "/v1/jobs", SPEC + b', "env": {"A": "\\udfff"}}', JSON),
    ("a lone surrogate in the name", "POST", "/v1/jobs", b'{"name": "\\ud800", "image": "claud/busybox"}', JSON),
    ("a lone surrogate in idempotency_key", "POST", "/v1/jobs", SPEC + b', "idempotency_key": "\\ud800"}', JSON),
    ("invalid UTF-8", "POST", "/v1/jobs", b'{"name": "\xff", "image": "claud/busybox"}', JSON),
    ("deeply nested JSON", "POST", "/v1/jobs", SPEC + b', "env": ' + b"[" * 5000 + b"]" * 5000 + b"}", JSON),
    ("a 16 MiB body", "POST", "/v1/jobs", SPEC + b', "command": ["' + b"a" * (16 << 20) + b'"]}', JSON),
    ("a NUL in a job id", "GET", "/v1/jobs/%00", b"", {}),
    ("a NUL in a cursor", "GET", "/v1/jobs?limit=1&next=%00", b"", {}),
    ("an empty Idempotency-Key", "POST", "/v1/jobs", SPEC + b"}", {**JSON, "Idempotency-Key": ""}),
]


def test_odd_requests_get_a_documented_refusal_and_the_cluster_still_commits(
    cluster: Cluster, openapi: dict[str, Any]
) -> None:
    problems = []
    auth = {"Authorization": f"Bearer {cluster.token}"}
    with httpx.Client(base_url=cluster.master.url, headers=auth, timeout=15) as http:
        for what, method, path, body, headers in ODD_REQUESTS:
            route = path.split("?")[0]
            template = next(p for p in openapi["paths"] if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), route))
            documented = set(openapi["paths"][template][method.lower()]["responses"])
            try:
                resp = http.request(method, path, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problems.append(f"{what}: {method} {path} -> no answer ({exc!r})")
                continue
            error = None
            with contextlib.suppress(ValueError):
                error = resp.json().get("error")
            documented_error = str(resp.status_code) in documented and isinstance(error, dict)
            if not 400 <= resp.status_code < 500 or not documented_error:
                problems.append(f"{what}: {method} {path} -> {resp.status_code} "
                                f"{resp.headers.get('content-type')} {resp.text[:200]!r}")
        # No request, however odd, stops the cluster from committing.
        after = http.post("/v1/jobs", json={"name": "after-odd", "image": "claud/busybox"})
        if after.status_code != 201:
            problems.append(f"then an ordinary submit -> {after.status_code} {after.text[:200]!r}")
    assert not problems, "\n".join(problems)
