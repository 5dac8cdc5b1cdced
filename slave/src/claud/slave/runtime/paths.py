"""Which host paths a job may bind: the slave's rule, the same as the masters' scheduler."""

from __future__ import annotations

from collections.abc import Iterable


def path_allowed(path: str, prefixes: Iterable[str]) -> bool:
    """Is ``path`` (absolute, normalised: the spec checks it) at or under one of ``prefixes``?

    Whole components only: ``/srv/claud`` allows ``/srv/claud/db``, never ``/srv/claudx``."""
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
