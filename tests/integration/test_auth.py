"""Access control on real masters: the API token on every route of the schema,
the cluster secret on the internal routes, and neither ever in a log."""

from __future__ import annotations

import inspect
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claud.client import Client, JobState
from support.cluster import Cluster, Master, Slave, free_port, wait_until

#: Open by design: liveness, readiness and the API's own documentation.
OPEN_PATHS = {"/healthz", "/readyz", "/docs", "/openapi.json"}
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
SECRET = "cluster-secret-" + "x" * 20

#: (method, path, a harmless body) of every internal master route.
INTERNAL = [
    ("GET", "/v1/internal/whoami", None),
    ("POST", "/v1/internal/raft", {"messages": []}),
    ("POST", "/v1/internal/propose", {"ops": [{"kind": "noop", "at": "2026-01-01T00:00:00Z"}]}),
    ("POST", "/v1/internal/heartbeat", {}),
    ("POST", "/v1/internal/watch", {}),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One master with a token file and a cluster secret."""
    c = Cluster(tmp_path_factory.mktemp("auth"))
    secret_file = c.workdir / "secret"
    secret_file.write_text(SECRET + "\n")
    try:
        c.start_master(1, "--cluster-secret-file", str(secret_file))
        yield c
    finally:
        c.close()


def status_of(http: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
    """The answer's status and headers without reading a body (a stream would never end)."""
    with http.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        if response.status_code != 200:
            response.read()
        return response


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "dummy", path)


def test_every_route_of_the_schema_needs_the_token(secured: Cluster) -> None:
    master = secured.master
    schema = httpx.get(f"{master.url}/openapi.json", timeout=5).json()  # open, and the list of routes
    paths = schema["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}/logs", "/v1/events", "/metrics", "/ui"} <= set(paths)
    refused = 0
    with httpx.Client(timeout=5) as http:
        for path, documented in paths.items():
            url = master.url + concrete(path)
            if path in OPEN_PATHS:
                assert status_of(http, "GET", url).status_code != 401, path
                continue
            # Each documented method, and the undocumented ones too: nothing is routed before the check.
            for method in sorted({m.upper() for m in documented} | set(ALL_METHODS)):
                for headers in ({}, {"Authorization": "Bearer wrong-token"},
                                {"Authorization": f"Basic {secured.token}"}, {"Authorization": "Bearer"}):  # fmt: skip
                    response = status_of(http, method, url, headers=headers)
                    assert response.status_code == 401, (method, path, headers, response.status_code)
                    assert response.json()["error"]["code"] == "unauthorized"
                    assert response.headers["WWW-Authenticate"] == "Bearer"
                    refused += 1
            # With the token, every documented method gets past authentication.
            for method in documented:
                response = status_of(http, method.upper(), url, headers={"Authorization": f"Bearer {secured.token}"})
                assert response.status_code != 401, (method, path)
        assert refused >= 10 * 5 * 4
        assert status_of(http, "GET", f"{master.url}/docs").status_code == 200
        assert status_of(http, "GET", f"{master.url}/ui?token=wrong-token").status_code == 401
        assert status_of(http, "GET", f"{master.url}/ui?token={secured.token}").status_code == 200


def test_tokens_are_never_logged(secured: Cluster) -> None:
    master = secured.master
    with httpx.Client(timeout=5) as http:
        http.get(f"{master.url}/v1/jobs", headers={"Authorization": f"Bearer {secured.token}"})
        http.get(f"{master.url}/v1/jobs", headers={"Authorization": "Bearer a-wrong-token-9f2c"})
        http.get(f"{master.url}/ui?token={secured.token}")
        http.get(f"{master.url}/ui?token=a-wrong-token-9f2c")
        http.get(f"{master.url}/v1/internal/whoami", headers={"X-Claud-Cluster-Secret": "a-wrong-secret-77ab"})
    wait_until(lambda: "path=/v1/internal/whoami" in master.log(), 5, what="the refusals to be logged")
    log = master.log()
    assert "event=auth.refused" in log
    for credential in (secured.token, SECRET, "a-wrong-token-9f2c", "a-wrong-secret-77ab"):
        assert credential not in log


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
    # Every check of a credential goes through same_secret, none through ==.
    for checker in (api.TokenAuthMiddleware.__call__,):
        source = inspect.getsource(checker)
        assert "same_secret(" in source
        assert not re.search(r"(==|!=)\s*(self\.node\.)?(token|expected|cluster_secret)\b", source)


def test_internal_routes_need_the_cluster_secret(secured: Cluster) -> None:
    master = secured.master
    with httpx.Client(timeout=5) as http:
        for method, path, body in INTERNAL:
            url = master.url + path
            for headers in ({}, {"X-Claud-Cluster-Secret": "wrong"},
                            # the API token is no cluster secret
                            {"Authorization": f"Bearer {secured.token}"}):  # fmt: skip
                response = http.request(method, url, json=body, headers=headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
            # Refused before the body is read: a malformed one is still a 401, not a 400.
            garbage = http.request(method, url, content=b"{not json", headers={"Content-Type": "application/json"})
            assert garbage.status_code == 401, (path, garbage.text)
            wait_until(lambda: f"event=auth.refused path={path} " in master.log(), 5, what=f"{path} refusal logged")
            allowed = http.request(method, url, json=body, headers={"X-Claud-Cluster-Secret": SECRET})
            assert allowed.status_code != 401, (path, allowed.text)
            assert allowed.status_code < 500, (path, allowed.text)
    refusals = [line for line in master.log().splitlines() if "event=auth.refused" in line]
    assert all("credential=" in line for line in refusals)
    assert any("credential=cluster_secret" in line for line in refusals)


def test_a_generated_token_is_stored_not_logged(tmp_path: Path) -> None:
    data_dir = tmp_path / "m1"
    master = Master(1, "127.0.0.11", free_port(), data_dir, tmp_path / "master.log", [])
    master.start()
    try:
        master.wait_ready()
        token_file = data_dir / "token"
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert str(token_file) in master.log()  # it says where the token is...
        assert token not in master.log()  # ...never what it is
        assert httpx.get(f"{master.url}/v1/cluster", timeout=5).status_code == 401
        with Client(master.url, token) as claud:
            assert claud.cluster().leader_id == 1
    finally:
        master.terminate()
    assert token not in master.log()


@pytest.mark.docker
def test_masters_and_slaves_work_together_with_a_cluster_secret(cluster: Cluster) -> None:
    secret_file = cluster.workdir / "secret"
    secret_file.write_text(SECRET + "\n")
    cluster.start_masters(3, "--cluster-secret-file", str(secret_file))  # replication carries it
    slave = cluster.start_slave("a", "--cluster-secret-file", str(secret_file))  # heartbeats carry it
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

    # A slave without the secret is refused (and the refusal logged), never registered.
    rogue = Slave(f"{cluster.prefix}-rogue", "127.0.0.150", free_port(),
                  ",".join(m.address for m in cluster.masters), cluster.workdir / "slave-rogue.log", [])  # fmt: skip
    cluster.slaves.append(rogue)
    rogue.start()
    def refused_heartbeat() -> bool:
        lines = [line for m in cluster.masters for line in m.log().splitlines()]
        return any("event=auth.refused path=/v1/internal/heartbeat" in line
                   and "credential=cluster_secret" in line for line in lines)  # fmt: skip

    wait_until(refused_heartbeat, 15, what="the rogue slave's heartbeat refused")
    assert cluster.node(rogue.id) is None
    assert all(SECRET not in m.log() for m in cluster.masters)
    assert SECRET not in slave.log()
