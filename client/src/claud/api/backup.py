"""GC and backups: what ``claud system gc`` and ``claud operator snapshot`` send and read.

A backup file is one line of JSON, the :class:`SnapshotHeader`, then the
snapshot body: the jobs and slaves tables as the leader had applied them at
``index``. The header's ``size`` and ``sha256`` cover the body, so a file cut
short, altered or from something else is refused before anything changes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Literal

from pydantic import Field, ValidationError

from claud.api.jobs import WireModel as BaseModel

#: The first field of every backup's header: what makes a file a CLAUD snapshot.
SNAPSHOT_FORMAT = "claud-snapshot"
SNAPSHOT_VERSION = 1
#: A header is small; a first line longer than this is not one.
MAX_HEADER_BYTES = 4096
SNAPSHOT_MEDIA_TYPE = "application/vnd.claud.snapshot"
#: Response headers of ``GET /v1/operator/snapshot`` (the same facts as the file's header).
SNAPSHOT_INDEX_HEADER = "X-Claud-Snapshot-Index"
SNAPSHOT_TERM_HEADER = "X-Claud-Snapshot-Term"
SNAPSHOT_SHA256_HEADER = "X-Claud-Snapshot-Sha256"


class GcSummary(BaseModel):
    """The last GC pass applied on the master that answers."""

    at: datetime = Field(..., description="when the pass was proposed (the proposer's clock)")
    index: int = Field(..., description="the log index of the pass")
    jobs: int = Field(..., description="terminal jobs it removed")
    slaves: int = Field(..., description="dead slaves it removed")


class GcResult(BaseModel):
    """What ``POST /v1/system/gc`` removed, by id."""

    jobs: list[str]
    slaves: list[str]
    index: int = Field(..., description="the commit index after the pass")


class SnapshotHeader(BaseModel):
    format: Literal["claud-snapshot"] = "claud-snapshot"
    version: Literal[1] = 1
    index: int = Field(..., ge=0, description="the log index the tables were applied up to")
    term: int = Field(..., ge=0, description="the term of the entry at index")
    size: int = Field(..., ge=0, description="bytes of the body that follows the header line")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the body, hex")
    jobs: int = Field(..., ge=0)
    slaves: int = Field(..., ge=0)
    taken_at: datetime
    leader_id: int | None = None


class RestoreResult(BaseModel):
    """What ``POST /v1/operator/snapshot`` restored."""

    jobs: int
    slaves: int
    index: int = Field(..., description="the log index of the restore entry")
    source_index: int = Field(..., description="the index the backup was taken at")
    source_term: int


class InvalidBackup(ValueError):
    """A file that is not a whole, unaltered CLAUD backup; the message names the problem."""


def encode_backup(header: SnapshotHeader) -> bytes:
    """The header line of a backup (the body follows it)."""
    return header.model_dump_json().encode() + b"\n"


def checksum(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def parse_backup(data: bytes) -> tuple[SnapshotHeader, bytes]:
    """The header and the checked body of a backup file, or InvalidBackup saying what is wrong."""
    newline = data.find(b"\n", 0, MAX_HEADER_BYTES + 1)
    if newline < 0:
        raise InvalidBackup("not a CLAUD snapshot: no header line")
    try:
        raw = json.loads(data[:newline])
    except ValueError:
        raise InvalidBackup("not a CLAUD snapshot: the first line is not a JSON header") from None
    if not isinstance(raw, dict) or raw.get("format") != SNAPSHOT_FORMAT:
        raise InvalidBackup(f"not a CLAUD snapshot: the header's format is not {SNAPSHOT_FORMAT!r}")
    if raw.get("version") != SNAPSHOT_VERSION:
        raise InvalidBackup(
            f"a CLAUD snapshot of version {raw.get('version')!r}; this version reads {SNAPSHOT_VERSION}"
        )
    try:
        header = SnapshotHeader.model_validate(raw)
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidBackup(f"the snapshot's header is invalid: {problem}") from None
    body = data[newline + 1 :]
    if len(body) != header.size:
        what = "truncated" if len(body) < header.size else "longer than its header says"
        raise InvalidBackup(f"the snapshot is {what}: {len(body)} bytes of body, the header says {header.size}")
    if checksum(body) != header.sha256:
        raise InvalidBackup("the snapshot is corrupt: its body does not match the header's SHA-256")
    return header, body
