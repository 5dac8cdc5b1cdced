"""Credentials: the users' API token and the cluster secret.

Both are compared in constant time and never logged. With no token file (or
no cluster secret file) configured, a master generates one on first start and
keeps it in its data directory (0700, the file 0600), so a fresh cluster is
never open by accident: the internal routes always need a secret.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from claud.api.protocol import CLUSTER_SECRET_HEADER
from claud.daemon.logfmt import log_event
from claud.daemon.settings_cli import ConfigError

log = logging.getLogger("claud.master.auth")

TOKEN_FILENAME = "token"
#: Where a master without --cluster-secret-file keeps the secret it generated.
CLUSTER_SECRET_FILENAME = "cluster-secret"


def read_secret_file(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what} file {path} is empty")
    return value


def private_dir(path: Path) -> None:
    """Create ``path`` (0700) or tighten it: it holds the log (every job's env) and credentials."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def _load_or_create(configured: Path | None, data_dir: Path, filename: str, what: str, event: str) -> tuple[str, Path]:
    if configured is not None:
        return read_secret_file(configured, what), configured
    private_dir(data_dir)
    path = data_dir / filename
    if path.exists():
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)  # written by an older version, or copied in by hand
        return read_secret_file(path, what), path
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log_event(log, event, path=str(path))
    return value, path


def load_or_create_token(token_file: Path | None, data_dir: Path) -> tuple[str, Path]:
    return _load_or_create(token_file, data_dir, TOKEN_FILENAME, "token", "auth.token_generated")


def load_or_create_cluster_secret(secret_file: Path | None, data_dir: Path) -> tuple[str, Path]:
    """The secret of the internal routes: the configured file, else one kept in the data directory.

    A generated secret only suits a lone master (settings refuse a cluster or
    discovery without a shared file); its slaves are given the same file."""
    return _load_or_create(
        secret_file, data_dir, CLUSTER_SECRET_FILENAME, "cluster secret", "auth.cluster_secret_generated"
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """A master's two credentials, and the files they were read from (logged at start, never the values)."""

    token: str
    token_path: Path
    cluster_secret: str
    cluster_secret_path: Path


def load_credentials(token_file: Path | None, cluster_secret_file: Path | None, data_dir: Path) -> Credentials:
    token, token_path = load_or_create_token(token_file, data_dir)
    secret, secret_path = load_or_create_cluster_secret(cluster_secret_file, data_dir)
    return Credentials(token, token_path, secret, secret_path)


def cluster_secret_headers(secret: str | None) -> dict[str, str]:
    """What a master sends with a request to another CLAUD process: the secret when one is set."""
    return {CLUSTER_SECRET_HEADER: secret} if secret else {}


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
