"""No master configuration runs its internal routes without a secret; one that
would need a shared one refuses to start and names the flag to add."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from claud.master.settings import MasterSettings


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLAUD_CLUSTER_SECRET_FILE", "CLAUD_NO_DISCOVERY", "CLAUD_PEERS", "CLAUD_CLUSTER_SIZE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "discovery (on by default) needs a shared secret: add --cluster-secret-file"),
        ({"no_discovery": True, "cluster_size": 3}, "a cluster of 3 masters needs a shared secret"),
        ({"no_discovery": True, "peers": "10.0.0.2:8700"}, "a cluster of 2 masters needs a shared secret"),
        ({"no_discovery": True, "advertise": "0.0.0.0:8700"}, "names no host"),
    ],
)
def test_what_needs_a_shared_secret_is_refused_without_one(fields: dict, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        MasterSettings(id=1, **fields)


def test_a_lone_master_without_discovery_may_generate_its_secret(tmp_path: Path) -> None:
    settings = MasterSettings(id=1, no_discovery=True, data_dir=tmp_path)
    assert settings.cluster_secret_file is None and settings.size == 1


def test_with_a_shared_secret_anything_goes(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    assert MasterSettings(id=1, cluster_size=3, cluster_secret_file=secret).size == 3


def test_a_wildcard_listen_address_is_never_what_a_master_announces() -> None:
    settings = MasterSettings(id=1, no_discovery=True, listen="0.0.0.0:8700")
    host, _, port = settings.advertised_address.rpartition(":")
    assert port == "8700" and host not in ("0.0.0.0", "", "::")
    assert MasterSettings(id=1, no_discovery=True, listen="0.0.0.0:8700",
                          advertise="m1.example:8700").advertised_address == "m1.example:8700"  # fmt: skip
