"""Credentials: the users' API token and the cluster secret.

Both are compared in constant time and never logged. With no token file
configured, a master generates a token on first start and keeps it in its
data directory (mode 0600), so a fresh cluster is never open by accident.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from claud.api.agent import CLUSTER_SECRET_HEADER
from claud.api.logfmt import log_event

log = logging.getLogger("claud.master.auth")

TOKEN_FILENAME = "token"


class ConfigError(Exception):
    """Bad configuration: the process exits with this one line."""


def read_secret_file(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what} file {path} is empty")
    return value


def load_or_create_token(token_file: Path | None, data_dir: Path) -> tuple[str, Path]:
    if token_file is not None:
        return read_secret_file(token_file, "token"), token_file
    path = data_dir / TOKEN_FILENAME
    if path.exists():
        return read_secret_file(path, "token"), path
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log_event(log, "auth.token_generated", path=str(path))
    return token, path


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
