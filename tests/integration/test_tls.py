"""A cluster over TLS: 3 masters and a simulated slave, each with its own certificate.

The masters elect and replicate through the lean peer client over TLS, the
slave heartbeats over HTTPS, the logs come from the slave through its master;
a client that trusts the CA works and one that does not is refused, with
:class:`Untrusted`, not a traceback.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from claud.api.protocol import WHOAMI_PATH
from claud.client import ClaudError, Client, Untrusted, tls_certs
from support.cluster import Cluster, free_port, wait_until
from support.tls import ClusterTls

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("tls")
    cluster = Cluster(workdir, tls=ClusterTls(workdir / "tls"))
    try:
        cluster.start_masters(3)
        cluster.start_slave("s1", "--runtime", "simulated")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def no_ca_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUD_CACERT", "CLAUD_CLIENT_CERT", "CLAUD_CLIENT_KEY", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def urls(cluster: Cluster) -> str:
    return ",".join(m.url for m in cluster.masters)


def test_a_job_is_placed_and_completes_over_tls(tls_cluster: Cluster) -> None:
    assert tls_cluster.tls is not None
    with Client(urls(tls_cluster), tls_cluster.token, ca_cert=tls_cluster.tls.ca_file) as claud:
        job = claud.submit({"name": "tls", "image": "claud/busybox:latest", "command": ["sleep", "0.5"]})
        done = claud.wait(job.id, timeout=60)
        assert done.state == "completed", done
        assert done.node_id == tls_cluster.slaves[0].id
        # The master fetched these from the slave over TLS, presenting its own certificate.
        lines = list(claud.logs(job.id))
        assert any(job.id in line for line in lines), lines
        assert {m.id for m in claud.cluster().masters} == {1, 2, 3}


def test_an_sdk_that_does_not_trust_the_ca_is_refused(tls_cluster: Cluster, no_ca_in_env: None) -> None:
    started = time.monotonic()
    with (
        Client(urls(tls_cluster), tls_cluster.token, failover_timeout=30) as claud,
        pytest.raises(Untrusted) as refused,
    ):
        claud.jobs()
    # A certificate that failed verification fails again: no waiting out the failover.
    assert time.monotonic() - started < 10
    assert set(refused.value.reasons) == {m.url for m in tls_cluster.masters}
    assert "CLAUD_CACERT" in str(refused.value)


def test_an_sdk_that_trusts_another_ca_is_refused(tls_cluster: Cluster, tmp_path: Path, no_ca_in_env: None) -> None:
    other = ClusterTls(tmp_path / "other")
    with Client(urls(tls_cluster), tls_cluster.token, ca_cert=other.ca_file) as claud, pytest.raises(Untrusted):
        claud.cluster()


def test_plain_http_to_a_tls_master_gets_no_answer(tls_cluster: Cluster) -> None:
    master = tls_cluster.masters[0]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{master.address}/healthz", timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"http://{master.address}{WHOAMI_PATH}", timeout=5)


def test_a_slave_serves_only_clients_with_a_certificate_from_the_ca(tls_cluster: Cluster, tmp_path: Path) -> None:
    assert tls_cluster.tls is not None
    slave = tls_cluster.slaves[0]
    trusting = tls_cluster.tls.client_context()
    with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
        httpx.get(f"https://{slave.address}/healthz", verify=trusting, timeout=5).raise_for_status()
    stranger = ClusterTls(tmp_path / "other")
    stranger_flags = stranger.flags("master", "stranger", "127.0.0.1")
    foreign = ssl.create_default_context(cafile=str(tls_cluster.tls.ca_file))
    foreign.load_cert_chain(stranger_flags[1], stranger_flags[3])
    with pytest.raises(httpx.TransportError):  # a certificate from another CA
        httpx.get(f"https://{slave.address}/healthz", verify=foreign, timeout=5).raise_for_status()
    member = tls_cluster.tls.client_context()
    own = tls_cluster.tls.flags("master", "master-1", tls_cluster.masters[0].ip)
    member.load_cert_chain(own[1], own[3])
    assert httpx.get(f"https://{slave.address}/healthz", verify=member, timeout=5).status_code == 200


def test_the_cli_trusts_the_ca_it_is_given(tls_cluster: Cluster) -> None:
    assert tls_cluster.tls is not None
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUD_CACERT", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(CLAUD_MASTERS=urls(tls_cluster), CLAUD_TOKEN=tls_cluster.token)
    claud = [sys.executable, "-m", "claud.client.cli"]
    refused = subprocess.run([*claud, "cluster"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 5, refused
    assert "untrusted master" in refused.stderr and "Traceback" not in refused.stderr
    trusted = subprocess.run([*claud, "-o", "json", "cluster"],
                             env={**env, "CLAUD_CACERT": str(tls_cluster.tls.ca_file)},
                             capture_output=True, text=True, timeout=60)
    assert trusted.returncode == 0, trusted
    assert '"leader_id"' in trusted.stdout


def test_a_certificate_that_does_not_name_the_address_dialled_is_refused(tmp_path: Path, no_ca_in_env: None) -> None:
    tls = ClusterTls(tmp_path / "tls")
    cluster = Cluster(tmp_path, tls=tls)
    try:
        # master-9's certificate, made first, names 127.0.0.1 and 127.0.0.77, never the 127.0.0.19 it serves on.
        tls.flags("master", "master-9", "127.0.0.77")
        master = cluster.start_master(9, wait=False)
        assert master.ip == "127.0.0.19"
        with Client(master.url, cluster.token, ca_cert=tls.ca_file, failover_timeout=0) as claud:
            def refused() -> bool:
                try:
                    claud.cluster()
                except Untrusted as exc:
                    return "127.0.0.19" in str(exc)
                return False

            wait_until(refused, 20, what="the SDK refusing a certificate for another address")
    finally:
        cluster.close()


@pytest.mark.parametrize("process", ["claud.master", "claud.slave"])
def test_tls_needs_all_three_files(tmp_path: Path, process: str) -> None:
    tls = ClusterTls(tmp_path / "tls")
    flags = tls.flags("master", "p", "127.0.0.1")
    argv = [sys.executable, "-m", process, "--id", "1", "--listen", f"127.0.0.1:{free_port()}",
            "--no-discovery", "--data-dir", str(tmp_path / "d")]
    if process == "claud.slave":
        secret = tmp_path / "secret"
        secret.write_text("s\n")
        argv = [a for a in argv if a != "--data-dir" and a != str(tmp_path / "d")] + [
            "--masters", "127.0.0.1:1", "--cluster-secret-file", str(secret)]
    result = subprocess.run([*argv, *flags[:4]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--tls-ca-file" in lines[0] and "Traceback" not in result.stderr
    # A key that is not the certificate's.
    other = tls.flags("master", "q", "127.0.0.1")
    mismatched = [*flags[:3], other[3], *flags[4:]]
    result = subprocess.run([*argv, *mismatched], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result
    assert "do not load" in result.stderr and "Traceback" not in result.stderr


def test_claud_tls_makes_a_ca_and_certificates_the_processes_load(tmp_path: Path) -> None:
    claud = [sys.executable, "-m", "claud.client.cli", "tls"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*claud, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert run("ca", "create").returncode == 0
    assert run("cert", "create", "--master", "--ip", "10.1.2.3", "--dns", "m1.example").returncode == 0
    assert run("cert", "create", "--master").returncode == 0
    assert run("cert", "create", "--slave").returncode == 0
    assert run("cert", "create", "--cli").returncode == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([
        "claud-agent-ca.pem", "claud-agent-ca-key.pem", "dc1-master-claud.pem", "dc1-master-claud-key.pem",
        "dc1-master-claud-1.pem", "dc1-master-claud-1-key.pem", "dc1-slave-claud.pem", "dc1-slave-claud-key.pem",
        "dc1-cli-claud.pem", "dc1-cli-claud-key.pem",
    ])
    for path in tmp_path.glob("*-key.pem"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    again = run("ca", "create")
    assert again.returncode != 0 and "already exists" in again.stderr
    assert run("cert", "create").returncode == 2  # which one?
    cert = tls_certs.x509.load_pem_x509_certificate((tmp_path / "dc1-master-claud.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(tls_certs.x509.SubjectAlternativeName).value
    assert "m1.example" in sans.get_values_for_type(tls_certs.x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(tls_certs.x509.IPAddress)} == {"127.0.0.1", "10.1.2.3"}
    from claud.api.tls import load_tls_files

    assert load_tls_files(tmp_path / "dc1-slave-claud.pem", tmp_path / "dc1-slave-claud-key.pem",
                          tmp_path / "claud-agent-ca.pem") is not None


def test_masters_that_verify_clients_serve_only_certificate_holders(tmp_path: Path, no_ca_in_env: None) -> None:
    tls = ClusterTls(tmp_path / "tls")
    cluster = Cluster(tmp_path, tls=tls)
    try:
        master = cluster.start_master(1, "--tls-verify-clients", wait=False)
        cli = tls.flags("cli", "cli", "127.0.0.1")
        ok = tls.client_context()
        ok.load_cert_chain(cli[1], cli[3])
        master.verify = ok  # the harness itself is a certificate holder now
        master.wait_ready(60)
        cluster.start_slave("s1", "--runtime", "simulated")  # the slave's certificate opens the door
        with (
            Client(master.url, cluster.token, ca_cert=tls.ca_file, failover_timeout=0) as claud,
            pytest.raises(ClaudError),  # trusts the master, but has no certificate to show
        ):
            claud.cluster()
        with Client(master.url, cluster.token, ca_cert=tls.ca_file, client_cert=cli[1], client_key=cli[3]) as claud:
            job = claud.submit({"name": "mtls", "image": "claud/busybox:latest", "command": ["sleep", "0.2"]})
            assert claud.wait(job.id, timeout=60).state == "completed"
    finally:
        cluster.close()
