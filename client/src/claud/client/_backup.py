"""Backup files on the client's side: checked before they are written or sent."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from claud.api.backup import InvalidBackup, SnapshotHeader, parse_backup
from claud.client.errors import InvalidSpec


def check(data: bytes, source: str) -> SnapshotHeader:
    """The header of a whole, unaltered backup, or InvalidSpec (code ``invalid_snapshot``, as a
    master answers for one) naming the problem: refused before it costs a round trip."""
    try:
        header, _ = parse_backup(data)
    except InvalidBackup as exc:
        raise InvalidSpec(f"{source}: {exc}", code="invalid_snapshot") from None
    return header


def write_atomically(path: str | Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or is left as it was: written beside it, synced, then renamed
    over it. 0600, like every file of a master's data directory (a backup holds every job's env)."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the directory is synced
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
