"""claud-slave flags, their CLAUD_* twins, and one-line configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from claud.slave.__main__ import ConfigError, build_parser, load_settings, main


@pytest.fixture(autouse=True)
def secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every slave needs the cluster secret; its env twin gives it to the tests that are about something else."""
    path = tmp_path / "cluster-secret"
    path.write_text("s3cret\n")
    monkeypatch.setenv("CLAUD_CLUSTER_SECRET_FILE", str(path))
    return path


def test_flags_parse_into_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUD_HEARTBEAT_INTERVAL", raising=False)
    s = load_settings(
        "--id s1 --listen 0.0.0.0:8701 --masters 127.0.0.1:8700,http://m2:8710/ "
        "--labels zone=a,disk=ssd --cpus 1.5 --memory-mb 512 --runtime simulated "
        "--no-discovery --heartbeat-interval 0.5".split()
    )
    assert s.masters == ["http://127.0.0.1:8700", "http://m2:8710"]
    assert s.labels == {"zone": "a", "disk": "ssd"}
    assert (s.cpus, s.memory_mb, s.runtime, s.no_discovery) == (1.5, 512, "simulated", True)
    assert s.heartbeat_interval == 0.5
    assert s.docker_workers == 16 and s.exited_retention == 3600 and s.max_exited == 200
    assert s.advertise_address.endswith(":8701") and not s.advertise_address.startswith("0.0.0.0")


def test_environment_twins_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUD_ID", "env-slave")
    monkeypatch.setenv("CLAUD_MASTERS", "127.0.0.1:8700")
    monkeypatch.setenv("CLAUD_HEARTBEAT_INTERVAL", "0.25")
    monkeypatch.setenv("CLAUD_LABELS", "zone=b")
    s = load_settings([])
    assert (s.id, s.heartbeat_interval, s.labels) == ("env-slave", 0.25, {"zone": "b"})
    assert load_settings(["--heartbeat-interval", "2"]).heartbeat_interval == 2.0


def test_cluster_secret_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret\n")
    s = load_settings(["--id", "s1", "--masters", "m:1", "--cluster-secret-file", str(secret)])
    assert s.cluster_secret == "s3cret"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "--id (env CLAUD_ID) is required"),
        (["--id", "s1", "--masters", "nohost"], "'nohost' is not host:port"),
        (["--id", "s1", "--masters", "m:1", "--labels", "zone"], "'zone' is not key=value"),
        (["--id", "s1", "--masters", "m:1", "--runtime", "podman"], "--runtime"),
        (["--id", "s1", "--masters", "m:1", "--cluster-secret-file", "/nonexistent/x"], "cannot read"),
        (["--id", "s1", "--masters", "m:1", "--heartbeat-interval", "20", "--default-lease", "30"], "at least twice"),
        (["--id", "s1", "--masters", "m:1", "--bogus"], "unrecognized arguments"),
        (["--id", "s1", "--masters", "m:1", "--advertise", "0.0.0.0:8701"], "--advertise"),
        (["--id", "s1", "--masters", "m:1", "--advertise", "[::]:8701"], "names no host"),
        (["--id", "s1", "--masters", "m:1", "--advertise", "0:8701"], "names no host"),
    ],
)
def test_bad_configuration_is_one_clear_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CLAUD_ID", "CLAUD_MASTERS"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("claud-slave: ")
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.parametrize("hostname", ["", "bad host!", "0.0.0.0", "x" * 300])
def test_a_slave_that_cannot_derive_a_usable_address_names_advertise(
    hostname: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listening on every interface, the slave advertises its hostname: one the masters
    would refuse must stop it at start, not fail every heartbeat."""
    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    with pytest.raises(SystemExit) as exit_info:
        main(["--id", "s1", "--masters", "m:1", "--listen", "0.0.0.0:8701"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "give --advertise host:port" in err, err
    monkeypatch.setattr("socket.gethostname", lambda: "slave-7")
    settings = load_settings(["--id", "s1", "--masters", "m:1", "--listen", "[::]:8701"])
    assert settings.advertise_address == "slave-7:8701"


def test_help_shows_defaults_and_env_twins() -> None:
    text = build_parser().format_help()
    assert "CLAUD_HEARTBEAT_INTERVAL" in text and "default: 1.0" in text
    assert "{docker|simulated}" in text


def test_config_error_type_is_raised_by_load_settings() -> None:
    with pytest.raises(ConfigError):
        load_settings(["--id", "bad id!", "--masters", "m:1"])


def _tls_flags(tmp_path: Path) -> list[str]:
    from claud.client import tls_certs

    tls_certs.write_pem(tmp_path / "ca", ca := tls_certs.create_ca(days=1))
    ca_cert = tls_certs.x509.load_pem_x509_certificate(ca.cert)
    ca_key = tls_certs.serialization.load_pem_private_key(ca.key, None)
    tls_certs.write_pem(tmp_path / "s1", tls_certs.create_cert(ca_cert, ca_key, tls_certs.Role.SLAVE))
    return ["--tls-cert-file", str(tmp_path / "s1.pem"), "--tls-key-file", str(tmp_path / "s1-key.pem"),
            "--tls-ca-file", str(tmp_path / "ca.pem")]


def test_with_tls_masters_are_reached_over_https_and_plain_http_is_refused(tmp_path: Path) -> None:
    flags = _tls_flags(tmp_path)
    s = load_settings(["--id", "s1", "--no-discovery", "--masters", "m1:8700,https://m2:8700", *flags])
    assert s.masters == ["https://m1:8700", "https://m2:8700"]
    assert s.master_url("::1", 8700) == "https://[::1]:8700"
    with pytest.raises(ConfigError, match="plain HTTP but TLS is on"):
        load_settings(["--id", "s1", "--no-discovery", "--masters", "http://m1:8700", *flags])


def test_tls_needs_all_three_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = _tls_flags(tmp_path)
    with pytest.raises(ConfigError, match="--tls-key-file"):
        load_settings(["--id", "s1", "--no-discovery", "--masters", "m1:8700", *flags[:2], *flags[4:]])
    monkeypatch.setenv("CLAUD_TLS_KEY_FILE", flags[3])  # the environment twin completes the set
    s = load_settings(["--id", "s1", "--no-discovery", "--masters", "m1:8700", *flags[:2], *flags[4:]])
    assert s.tls is not None and s.scheme == "https"


def test_a_slave_without_the_cluster_secret_refuses_to_start(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAUD_CLUSTER_SECRET_FILE")
    with pytest.raises(SystemExit) as exit_info:
        main(["--id", "s1", "--masters", "m:1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--cluster-secret-file is required" in err


def test_state_dir_and_docker_host_flags_and_twins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings(["--id", "s1", "--masters", "m:1", "--state-dir", str(tmp_path), "--docker-host", "unix:///x.sock"])
    assert (s.state_path, s.docker_host) == (tmp_path, "unix:///x.sock")
    monkeypatch.setenv("CLAUD_STATE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("CLAUD_DOCKER_HOST", "tcp://127.0.0.1:2375")
    s = load_settings(["--id", "s1", "--masters", "m:1"])
    assert (s.state_path, s.docker_host) == (tmp_path / "env", "tcp://127.0.0.1:2375")


def test_default_state_dir_is_per_slave(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CLAUD_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    a = load_settings(["--id", "s1", "--masters", "m:1"]).state_path
    b = load_settings(["--id", "s2", "--masters", "m:1"]).state_path
    assert a != b and a.name == "slave-s1"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--docker-host", "/var/run/docker.sock"], "docker-host"),
        (["--request-timeout", "10", "--default-lease", "10"], "request_timeout"),
        (["--fence-round-trip", "5", "--default-lease", "4"], "fence_round_trip"),
    ],
)
def test_timeouts_that_cannot_work_together_are_refused_at_start(argv: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(["--id", "s1", "--masters", "m:1", *argv])
