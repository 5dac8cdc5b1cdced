"""The compose cluster with TLS on (`make cluster-up TLS=1`): end to end over HTTPS.

Masters find each other by broadcast and replicate over TLS, slaves heartbeat
over it, a job runs on the host's engine and its logs come back through a
master from its slave; a client that does not trust the cluster's CA, or that
speaks plain HTTP, gets nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest

from claud.client import Client, Untrusted
from support.compose import MASTER_IDS, ComposeCluster, docker, missing_images, wait_for

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def compose_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeCluster]:
    if shutil.which("docker-compose") is None and not docker("compose", "version", check=False):
        pytest.fail("neither docker-compose nor `docker compose` is installed")
    missing = missing_images()
    if missing:
        pytest.fail(f"missing images {', '.join(missing)}: run `make images` first (`make test` does)", pytrace=False)
    cluster = ComposeCluster(tmp_path_factory.mktemp("compose-tls"), tls=True)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.down()
    left = cluster.leftovers()
    assert not left, f"the compose cluster left these behind: {left}"


def masters(cluster: ComposeCluster) -> str:
    return ",".join(cluster.url(i) for i in MASTER_IDS)


def test_a_job_submitted_over_tls_completes_and_its_logs_come_back(compose_cluster: ComposeCluster) -> None:
    assert all(compose_cluster.url(i).startswith("https://") for i in MASTER_IDS)
    leader = wait_for(compose_cluster.agreed_leader, 60, "all three masters agreeing on a leader")
    wait_for(lambda: len([s for s in compose_cluster.slaves(leader[0]).values() if s["state"] == "alive"]) == 3,
             60, "three slaves alive over TLS")
    with Client(masters(compose_cluster), compose_cluster.token, ca_cert=compose_cluster.ca_file) as claud:
        job = claud.submit({"name": "tls-e2e", "image": "claud/busybox:latest",
                            "command": ["sh", "-c", "echo over tls"],
                            "resources": {"cpu": 0.1, "memory_mb": 16}})  # fmt: skip
        done = claud.wait(job.id, timeout=90)
        assert done.state == "completed", done
        assert "".join(claud.logs(job.id)) == "over tls\n"  # master -> slave, both ways verified


def test_a_client_that_does_not_trust_the_ca_is_refused(
    compose_cluster: ComposeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CLAUD_CACERT", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    with (
        Client(masters(compose_cluster), compose_cluster.token, failover_timeout=5) as claud,
        pytest.raises(Untrusted),
    ):
        claud.cluster()
    with pytest.raises(httpx.TransportError):
        httpx.get(compose_cluster.url(1).replace("https://", "http://") + "/healthz", timeout=5)
