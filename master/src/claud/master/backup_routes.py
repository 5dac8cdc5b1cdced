"""Operator routes for GC and backups: ``claud system gc`` and ``claud operator snapshot``.

- ``POST /v1/system/gc`` runs a GC pass now, through the log, and answers
  the ids it removed.
- ``GET /v1/operator/snapshot`` streams a backup from the leader: a header
  line (index, term, size, SHA-256) and the tables as applied at that index.
- ``POST /v1/operator/snapshot`` restores one into the running cluster: the
  file is checked whole (header, size, checksum, every record) before one
  ``RestoreTables`` entry replaces the jobs and slaves tables on every master;
  a file that fails a check is refused (400/422) and nothing changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from claud.api import ErrorBody
from claud.api.backup import (
    SNAPSHOT_INDEX_HEADER,
    SNAPSHOT_MEDIA_TYPE,
    SNAPSHOT_SHA256_HEADER,
    SNAPSHOT_TERM_HEADER,
    GcResult,
    InvalidBackup,
    RestoreResult,
    SnapshotHeader,
    checksum,
    encode_backup,
    parse_backup,
)
from claud.daemon.api_errors import ApiError
from claud.daemon.logfmt import log_event
from claud.master import openapi as docs
from claud.master import ops
from claud.master.api import MasterDep, log, raise_for, require_token
from claud.master.master import Master
from claud.master.ops import utcnow
from claud.master.state import StateMachine, join_snapshot
from claud.master.transport import OutcomeUnknown

#: The path a backup is restored through; the only public route with a large body (--max-restore-bytes).
RESTORE_PATH = "/v1/operator/snapshot"
#: A backup is streamed in pieces of this size.
STREAM_CHUNK = 1024 * 1024
#: A restore whose commit outlasted --propose-timeout is looked for this long more before
#: the answer is 503 ``outcome_unknown``: applying a big one holds every master for seconds.
RESTORE_WAIT = 60.0
RESTORE_POLL = 0.05

router = APIRouter(prefix="/v1", tags=["operator"], dependencies=[Depends(require_token)],
                   responses=docs.AUTHENTICATED)


@router.post("/system/gc", response_model=GcResult, operation_id="systemGc", responses=docs.WRITE)
async def system_gc(master: MasterDep) -> GcResult:
    """Run a GC pass now, with the master's settings: terminal jobs finished more than
    ``--job-gc-after`` ago and beyond the ``--job-gc-keep`` most recent, and dead
    slaves silent for ``--node-gc-after`` (never one with placed jobs)."""
    collected = await master.duties.collect_garbage()
    return GcResult(jobs=collected.jobs, slaves=collected.slaves, index=master.commit_index)


def _require_leader(master: Master) -> None:
    if not master.replicated.leader_ready:
        where = f"; ask master {master.leader_id} at {master.leader_address}" if master.leader_id is not None else ""
        # 503, not 421: the SDK then asks the next master, and finds the leader.
        raise ApiError(503, "not_leader", f"master {master.id} is not the leader{where}", headers={"Retry-After": "0"})


@router.get(
    "/operator/snapshot", response_class=StreamingResponse, operation_id="saveSnapshot",
    responses={
        200: {
            "description": "a backup: one JSON header line (format, version, index, term, size, sha256), "
            "then the tables",
            "content": {SNAPSHOT_MEDIA_TYPE: {}},
        },
        **docs.NOT_READY,
    },
)
async def save_snapshot(master: MasterDep) -> StreamingResponse:
    """A consistent backup from the leader: the jobs and slaves tables as applied at one index."""
    _require_leader(master)
    parts = master.state.snapshot_parts()  # the rows' kept encodings: the tables at one applied index
    term = master.replicated.core.term_at(parts.applied_index)
    if term is None:
        raise ApiError(503, "not_leader", "the applied entry's term is unknown; retry", headers={"Retry-After": "1"})

    def build() -> tuple[bytes, str]:
        body = join_snapshot(parts).encode()
        return body, checksum(body)

    body, sha256 = await asyncio.to_thread(build)
    header = SnapshotHeader(
        index=parts.applied_index, term=term, size=len(body), sha256=sha256, jobs=len(parts.jobs),
        slaves=len(parts.slaves), taken_at=utcnow(), leader_id=master.id,
    )
    log_event(log, "backup.saved", index=header.index, term=term, bytes=header.size, jobs=header.jobs)

    async def stream() -> AsyncIterator[bytes]:
        yield encode_backup(header)
        for start in range(0, len(body), STREAM_CHUNK):
            yield body[start : start + STREAM_CHUNK]

    return StreamingResponse(stream(), media_type=SNAPSHOT_MEDIA_TYPE, headers={
        SNAPSHOT_INDEX_HEADER: str(header.index), SNAPSHOT_TERM_HEADER: str(term), SNAPSHOT_SHA256_HEADER: sha256,
        "Content-Length": str(len(encode_backup(header)) + len(body)),
    })


def check_backup(data: bytes) -> tuple[SnapshotHeader, str]:
    """The header and tables of a backup that will restore, or ApiError naming what is wrong."""
    try:
        header, body = parse_backup(data)
    except InvalidBackup as exc:
        raise ApiError(400, "invalid_snapshot", str(exc)) from None
    try:
        tables = body.decode()
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_snapshot", "the snapshot's body is not UTF-8 text") from None
    try:
        restored = StateMachine.from_backup(tables)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_snapshot", f"the snapshot does not restore: {str(exc)[:400]}") from None
    if (len(restored.jobs), len(restored.slaves)) != (header.jobs, header.slaves):
        raise ApiError(
            422, "invalid_snapshot",
            f"the snapshot holds {len(restored.jobs)} jobs and {len(restored.slaves)} slaves; "
            f"its header says {header.jobs} and {header.slaves}",
        )
    return header, tables


@router.post(
    RESTORE_PATH.removeprefix("/v1"), response_model=RestoreResult, operation_id="restoreSnapshot",
    responses={
        400: {"model": ErrorBody, "description": "not a whole CLAUD backup (`invalid_snapshot`): no header, "
              "truncated, corrupt (checksum), another format or version"},
        422: {"model": ErrorBody, "description": "a whole backup whose tables do not restore (`invalid_snapshot`)"},
        **docs.TOO_LARGE, **docs.WRITE,
    },
    openapi_extra={"requestBody": {"required": True, "description": "a file `claud operator snapshot save` wrote",
                                   "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                       "format": "binary"}}}}},
)
async def restore_snapshot(request: Request, master: MasterDep) -> RestoreResult:
    """Replace the jobs and slaves tables with a backup's, on every master, through the log.

    Jobs the backup does not know are no longer desired, so their slaves stop
    them; jobs it places on a slave keep running where that slave runs the
    same allocation."""
    data = await request.body()
    header, tables = await asyncio.to_thread(check_backup, data)
    before = master.state.applied_index
    op = ops.RestoreTables(
        at=utcnow(), tables=tables, sha256=header.sha256, source_index=header.index, source_term=header.term,
    )
    try:
        raise_for(await master.propose(op))
    except OutcomeUnknown:
        await _restored_since(master, header.sha256, before)
    log_event(log, "backup.restored", source_index=header.index, source_term=header.term, jobs=header.jobs,
              slaves=header.slaves, index=master.commit_index)
    return RestoreResult(jobs=len(master.state.jobs), slaves=len(master.state.slaves), index=master.commit_index,
                         source_index=header.index, source_term=header.term)


async def _restored_since(master: Master, sha256: str, index: int) -> None:
    """Wait until this master has applied a restore of ``sha256`` after ``index``; if it
    does not within RESTORE_WAIT, its fate stays unknown (OutcomeUnknown: retry, it is safe)."""
    deadline = time.monotonic() + RESTORE_WAIT
    while not ((done := master.state.last_restore) is not None and done.sha256 == sha256 and done.index > index):
        if time.monotonic() > deadline:
            raise OutcomeUnknown(f"the restore was not seen applied within {RESTORE_WAIT:g}s; it may still be")
        await asyncio.sleep(RESTORE_POLL)
