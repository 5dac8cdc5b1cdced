"""Access control on real masters and slaves: the API token on every public
route, the cluster secret on every internal one (and on every route of a
slave), in every configuration; neither ever in a log, at rest only 0600.

Routes are enumerated from the apps' own route tables, so a route added
later is covered without touching this file.
"""

from __future__ import annotations

import inspect
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route

from claud.api.protocol import (
    CLUSTER_SECRET_HEADER,
    HEARTBEAT_PATH,
    INTERNAL_PREFIX,
    PROPOSE_PATH,
    RAFT_PATH,
    SNAPSHOT_CHUNK_PATH,
    SNAPSHOT_CONTENT_TYPE,
    WATCH_PATH,
    WHOAMI_PATH,
)
from claud.client import Client, JobState
from support.cluster import Cluster, Master, Slave, free_port, wait_until

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
#: Open by design on a master: liveness, readiness, the API's documentation, and
#: the dashboard's page, script, style and icon (they hold no data; the page reads /v1 with the token).
MASTER_OPEN = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc",
               "/ui", "/ui/dashboard.js", "/ui/dashboard.css", "/ui/favicon.svg"}  # fmt: skip
#: Open on a slave: liveness only.
SLAVE_OPEN = {"/healthz"}
#: What a web page can send to any origin without a CORS preflight: no custom
#: header, one of these content types.
SIMPLE_CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
REFUSE_LOG_EVERY = 1.0


def master_routes(tmp_path: Path) -> dict[str, set[str]]:
    """path -> methods of every route of a master app, and of the paths answered below the router."""
    from claud.master.api import RaftReceiver, SubmitFastPath, create_app
    from claud.master.settings import MasterSettings

    app = create_app(MasterSettings(id=1, data_dir=tmp_path / "routes", no_discovery=True))
    try:
        routes = _routes(app)
    finally:
        app.state.master.store.close()
    for fast in (RaftReceiver, SubmitFastPath):
        routes.setdefault(fast.PATH, set()).add("POST")
    return routes


def slave_routes(tmp_path: Path) -> dict[str, set[str]]:
    from claud.slave.api import create_app
    from claud.slave.runtime.simulated import SimulatedRuntime
    from claud.slave.settings import SlaveSettings

    secret = tmp_path / "routes-secret"
    secret.write_text("x\n")
    settings = SlaveSettings(id="routes", masters=["127.0.0.1:1"], runtime="simulated", cluster_secret_file=secret)
    return _routes(create_app(settings, runtime=SimulatedRuntime(settings.id)))


def _routes(app: object) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}

    def walk(entries: list[object], prefix: str) -> None:
        for route in entries:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165 keeps included routers whole
            if included is not None:
                walk(included.routes, prefix + route.include_context.prefix)
                continue
            if isinstance(route, Mount) and route.path == "/docs/static":
                continue  # the docs page's own files: open by design, like /docs
            assert isinstance(route, Route), f"a kind of route this test does not enumerate: {route!r}"
            routes.setdefault(prefix + route.path, set()).update(route.methods or {"GET"})

    walk(app.routes, "")
    return routes


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "dummy", path)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One master and one (simulated) slave sharing the cluster's secret."""
    c = Cluster(tmp_path_factory.mktemp("auth"))
    try:
        c.start_master(1, "--refused-log-every", str(REFUSE_LOG_EVERY))
        c.start_slave("a", "--runtime", "simulated", "--refused-log-every", str(REFUSE_LOG_EVERY))
        yield c
    finally:
        c.close()


def status_of(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    """The answer's status and headers without reading a body (a stream would never end)."""
    with http.stream(method, url, **kwargs) as response:
        if response.status_code != 200:
            response.read()
        return response


def no_cors(response: httpx.Response) -> None:
    leaked = [name for name in response.headers if name.lower().startswith("access-control-")]
    assert not leaked, (response.request.method, response.request.url, leaked)


def wrong_credentials(token: str, secret: str, internal: bool) -> list[dict[str, str]]:
    """Every way of knocking that must not open the door."""
    knocks = [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": "Bearer"},
        {CLUSTER_SECRET_HEADER: "wrong-secret"},
        {"Origin": "https://evil.example"},
    ]
    # The token is no cluster secret, and the secret is no token.
    knocks.append({"Authorization": f"Bearer {token}"} if internal else {CLUSTER_SECRET_HEADER: secret})
    knocks.append({"Authorization": f"Bearer {secret}"} if not internal else {CLUSTER_SECRET_HEADER: token})
    return knocks


def test_every_route_of_a_master_is_refused_without_its_credential(secured: Cluster, tmp_path: Path) -> None:
    master = secured.master
    routes = master_routes(tmp_path)
    schema_paths = set(httpx.get(f"{master.url}/openapi.json", timeout=5).json()["paths"])
    assert schema_paths <= set(routes), schema_paths - set(routes)
    assert {"/v1/jobs", "/v1/jobs/{job_id}/logs", "/v1/events", "/v1/cluster/trace", "/metrics", RAFT_PATH,
            PROPOSE_PATH, HEARTBEAT_PATH, WATCH_PATH} <= set(routes)  # fmt: skip
    refused = 0
    with httpx.Client(timeout=5) as http:
        for path, methods in sorted(routes.items()):
            url = master.url + concrete(path)
            if path in MASTER_OPEN:
                response = status_of(http, "GET", url)
                assert response.status_code == 200, path
                no_cors(response)
                continue
            internal = path.startswith(INTERNAL_PREFIX)
            # Each routed method and the others too: nothing is routed before the check.
            for method in sorted(methods | set(ALL_METHODS)):
                for headers in wrong_credentials(secured.token, secured.secret, internal):
                    response = status_of(http, method, url, headers=headers)
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    if method != "HEAD":
                        assert response.json()["error"]["code"] == "unauthorized"
                    no_cors(response)
                    refused += 1
                # A web page's simple request (no preflight): no credential can ride on it.
                for content_type in SIMPLE_CONTENT_TYPES:
                    response = status_of(http, method, url, content=b'{"ops": []}',
                                         headers={"Content-Type": content_type, "Origin": "https://evil.example"})
                    assert response.status_code == 401, (method, path, content_type)
                    no_cors(response)
                # The preflight a browser sends before anything else finds no CORS either.
                preflight = status_of(http, "OPTIONS", url, headers={
                    "Origin": "https://evil.example", "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "authorization, x-claud-cluster-secret, content-type",
                })  # fmt: skip
                assert preflight.status_code == 401, (path, preflight.status_code)
                no_cors(preflight)
            # The one content type each route takes: JSON, or a snapshot chunk's bytes.
            expected = SNAPSHOT_CONTENT_TYPE if path == SNAPSHOT_CHUNK_PATH else "application/json"
            if internal:
                # Even with the secret, a body of another content type never reaches a route.
                others = {"application/json"} - {expected}
                for content_type in [*SIMPLE_CONTENT_TYPES, "", f"{expected}x", *others]:
                    response = http.post(url, content=b'{"ops": []}',
                                         headers={CLUSTER_SECRET_HEADER: secured.secret, "Content-Type": content_type})
                    assert response.status_code == 415, (path, content_type, response.text)
                    assert response.json()["error"]["code"] == "unsupported_media_type"
            # With the right credential, every routed method gets past authentication.
            good = {CLUSTER_SECRET_HEADER: secured.secret} if internal else {"Authorization": f"Bearer {secured.token}"}
            for method in methods - {"HEAD"}:
                response = status_of(http, method, url, headers={**good, "Content-Type": expected},
                                     content=b"{}" if method != "GET" else None)
                assert response.status_code not in (401, 415), (method, path, response.status_code)
                no_cors(response)
    closed = [path for path in routes if path not in MASTER_OPEN]
    assert refused >= len(closed) * len(ALL_METHODS) * 8


def test_every_route_of_a_slave_needs_the_cluster_secret(secured: Cluster, tmp_path: Path) -> None:
    slave = secured.slaves[0]
    routes = slave_routes(tmp_path)
    assert {"/v1/allocations/{alloc_id}/logs", "/v1/status", "/docs", "/openapi.json"} <= set(routes)
    with httpx.Client(timeout=5, base_url=f"http://{slave.address}") as http:
        for path, methods in sorted(routes.items()):
            if path in SLAVE_OPEN:
                assert http.get(path).status_code == 200
                continue
            for method in sorted(methods | set(ALL_METHODS)):
                for headers in wrong_credentials(secured.token, secured.secret, internal=True):
                    response = status_of(http, method, concrete(path), headers=headers)
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    no_cors(response)
                for content_type in SIMPLE_CONTENT_TYPES:
                    response = status_of(http, method, concrete(path), content=b"x",
                                         headers={"Content-Type": content_type})
                    assert response.status_code == 401, (method, path, content_type)
            for method in methods - {"HEAD"}:
                response = status_of(http, method, concrete(path), headers={CLUSTER_SECRET_HEADER: secured.secret})
                assert response.status_code != 401, (method, path)


def test_refusals_are_logged_at_most_once_per_client_per_period(secured: Cluster) -> None:
    master = secured.master

    def lines_for(client: str) -> list[str]:
        return [line for line in master.log().splitlines()
                if "event=auth.refused" in line and f"client={client} " in line + " "]  # fmt: skip

    # Each client address of its own: loopback has many.
    transport = httpx.HTTPTransport(local_address="127.0.0.77")
    with httpx.Client(timeout=5, transport=transport) as http:
        for _ in range(30):
            assert http.get(f"{master.url}/v1/jobs").status_code == 401
        wait_until(lambda: lines_for("127.0.0.77"), 5, what="the first refusal logged")
        assert len(lines_for("127.0.0.77")) == 1

        def summarised() -> bool:
            # Once the period is over, the next refusal is logged, counting those it stood for.
            http.get(f"{master.url}{WHOAMI_PATH}")
            return any(re.search(r"suppressed=(\d+)", line) and int(re.search(r"suppressed=(\d+)", line)[1]) >= 29
                       for line in lines_for("127.0.0.77"))  # fmt: skip

        wait_until(summarised, 10, interval=0.2, what="a line counting the suppressed refusals")
    assert len(lines_for("127.0.0.77")) <= 3
    with httpx.Client(timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.78")) as other:
        assert other.get(f"{master.url}/metrics").status_code == 401
    wait_until(lambda: lines_for("127.0.0.78"), 5, what="another client's refusal logged on its own")


def test_tokens_are_never_logged(secured: Cluster) -> None:
    master = secured.master
    with httpx.Client(timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.79")) as http:
        http.get(f"{master.url}/v1/jobs", headers={"Authorization": f"Bearer {secured.token}"})
        http.get(f"{master.url}/v1/jobs", headers={"Authorization": "Bearer a-wrong-token-9f2c"})
        http.get(f"{master.url}/ui?token={secured.token}")  # an old bookmark: the page ignores it
        http.get(f"{master.url}{WHOAMI_PATH}", headers={CLUSTER_SECRET_HEADER: "a-wrong-secret-77ab"})
    wait_until(lambda: "client=127.0.0.79" in master.log(), 5, what="the refusals to be logged")
    log = master.log() + secured.slaves[0].log()
    assert "event=auth.refused" in log
    for credential in (secured.token, secured.secret, "a-wrong-token-9f2c", "a-wrong-secret-77ab"):
        assert credential not in log


def test_the_token_in_a_url_opens_nothing(secured: Cluster) -> None:
    master = secured.master
    for path in ("/v1/jobs", "/v1/cluster", "/metrics", "/v1/events", "/v1/cluster/trace"):
        assert httpx.get(f"{master.url}{path}?token={secured.token}", timeout=5).status_code == 401, path
    page = httpx.get(f"{master.url}/ui?token={secured.token}", timeout=5)
    assert page.status_code == 200 and secured.token not in page.text


def test_credentials_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from claud.master import api, auth

    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert auth.same_secret("s3cret", "s3cret") and not auth.same_secret("guess", "s3cret")
    assert not auth.same_secret(None, "s3cret")
    assert len(compared) == 2
    # Every check of a credential goes through same_secret (or compare_digest), none through ==.
    from claud.slave import api as slave_api

    for checker, call in ((api.TokenAuthMiddleware._refusal, "same_secret("),
                          (slave_api.SecretMiddleware.__call__, "compare_digest(")):  # fmt: skip
        source = inspect.getsource(checker)
        assert call in source
        assert not re.search(r"(==|!=)\s*(self\.node\.)?(token|expected|cluster_secret|secret)\b", source)


def test_a_lone_master_generates_its_secrets_private_and_never_logs_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "m1"
    master = Master(1, "127.0.0.11", free_port(), data_dir, tmp_path / "master.log", [])
    master.start()
    slave = None
    try:
        master.wait_ready()
        token_file, secret_file = data_dir / "token", data_dir / "cluster-secret"
        token, secret = token_file.read_text().strip(), secret_file.read_text().strip()
        assert len(token) >= 32 and len(secret) >= 32 and token != secret
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in ("token", "cluster-secret", "claud.db", "claud.db-wal", "claud.db-shm"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in data_dir.rglob("*") if p.is_file())
        start_line = next(line for line in master.log().splitlines() if "event=master.starting" in line)
        assert str(token_file) in start_line and str(secret_file) in start_line  # it says where...
        assert token not in master.log() and secret not in master.log()  # ...never what
        assert httpx.get(f"{master.url}/v1/cluster", timeout=5).status_code == 401
        assert httpx.get(f"{master.url}{WHOAMI_PATH}", timeout=5).status_code == 401
        whoami = httpx.get(f"{master.url}{WHOAMI_PATH}", headers={CLUSTER_SECRET_HEADER: secret}, timeout=5)
        assert whoami.json()["id"] == 1
        # Its slaves are given the file it generated.
        slave = Slave("gen-s1", "127.0.0.120", free_port(), master.address, tmp_path / "slave.log",
                      ["--runtime", "simulated", "--cluster-secret-file", str(secret_file)])  # fmt: skip
        slave.start()
        with Client(master.url, token) as claud:
            assert claud.cluster().leader_id == 1
            wait_until(lambda: any(n.id == "gen-s1" and n.state.value == "alive" for n in claud.nodes()), 20,
                       what="the slave registered with the generated secret")
    finally:
        if slave is not None:
            slave.terminate()
        master.terminate()
    assert token not in master.log() and secret not in master.log()


def _run(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUD_")}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cluster-size", "3", "--no-discovery"],
         "a cluster of 3 masters needs a shared secret: add --cluster-secret-file"),
        (["--peers", "127.0.0.1:1", "--no-discovery"],
         "a cluster of 2 masters needs a shared secret: add --cluster-secret-file"),
        ([], "discovery (on by default) needs a shared secret: add --cluster-secret-file"),
        (["--advertise", "0.0.0.0:8700", "--no-discovery"], "names no host"),
    ],
)
def test_a_master_that_would_need_a_shared_secret_refuses_to_start(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    result = _run("claud.master", "--id", "1", "--data-dir", str(tmp_path / "m"), *argv)
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_a_slave_without_the_secret_refuses_to_start() -> None:
    result = _run("claud.slave", "--id", "s1", "--masters", "127.0.0.1:1", "--no-discovery", "--runtime", "simulated")
    assert result.returncode == 2, result
    assert result.stderr.count("\n") == 1 and "--cluster-secret-file is required" in result.stderr


@pytest.mark.docker
def test_masters_and_slaves_work_together_with_a_cluster_secret(cluster: Cluster) -> None:
    cluster.start_masters(3)  # replication carries the cluster's secret
    slave = cluster.start_slave("a")  # heartbeats carry it
    with Client([m.url for m in cluster.masters], cluster.token) as claud:
        job = claud.submit({"name": "secret", "image": "claud/busybox:latest",
                            "command": ["sh", "-c", "echo behind the secret"],
                            "resources": {"cpu": 0.05, "memory_mb": 16}})  # fmt: skip
        done = claud.wait(job.id, timeout=30)
        assert done.state is JobState.COMPLETED
        assert "".join(claud.logs(job.id)) == "behind the secret\n"  # master -> slave carries it
        assert any(node.id == slave.id and node.state.value == "alive" for node in claud.nodes())
    # The slave's own API wants the secret too.
    assert httpx.get(f"http://{slave.address}/v1/allocations/{done.alloc_id}/logs", timeout=5).status_code == 401

    # A slave with another secret is refused (and the refusal logged), never registered.
    wrong = cluster.workdir / "wrong-secret"
    wrong.write_text("not-the-cluster-secret\n")
    rogue = Slave(f"{cluster.prefix}-rogue", "127.0.0.150", free_port(), ",".join(m.address for m in cluster.masters),
                  cluster.workdir / "slave-rogue.log", ["--cluster-secret-file", str(wrong)])  # fmt: skip
    cluster.slaves.append(rogue)
    rogue.start()

    # Its watch (asked from the agent's first moment) or its heartbeat, whichever
    # comes first: a master logs one refusal per address per --refused-log-every.
    slave_paths = (HEARTBEAT_PATH, WATCH_PATH)

    def refused_slave() -> bool:
        lines = [line for m in cluster.masters for line in m.log().splitlines()]
        return any(any(f"event=auth.refused path={path}" in line for path in slave_paths)
                   and "credential=cluster_secret" in line for line in lines)  # fmt: skip

    wait_until(refused_slave, 15, what="the rogue slave refused")
    assert cluster.node(rogue.id) is None
    assert all(cluster.secret not in m.log() for m in cluster.masters)
    assert cluster.secret not in slave.log()
