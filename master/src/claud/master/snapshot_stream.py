"""Snapshots streamed to a follower in chunks, apart from the consensus messages.

A snapshot used to travel as one consensus message: a JSON body of tens of
megabytes, encoded on the leader's event loop and sent within the peers'
one-second timeout. Past about a second of sending a lagging follower could
never catch up, and the encoding held back heartbeats long enough for an
election. As etcd's snapshot sender and hashicorp/raft's streamed
InstallSnapshot do, the snapshot now has a sender of its own:

- the leader's core still decides *when* a follower needs a snapshot (it
  emits ``InstallSnapshot``); the transport hands that to a
  :class:`SnapshotSenders`, which streams the snapshot *as stored* (the
  compressed blob, read from the store in a thread: nothing re-encoded on the
  event loop) in chunks of :data:`CHUNK_BYTES` to ``SNAPSHOT_CHUNK_PATH``,
  each chunk with its own timeout, at most one transfer per follower; the
  core's resends while a transfer runs are that transfer;
- every chunk carries the transfer's id, the snapshot's index and term, its
  offset, the total size and the SHA-256 of the whole (:class:`ChunkHeader`);
  the follower answers the offset it expects next, so a broken transfer
  resumes where the follower stands, and an unknown one restarts at 0;
- the follower (:class:`SnapshotReceiver`) writes the chunks to a file in its
  data directory, off the event loop; at the last one it checks the size and
  checksum, decompresses and restores the tables in a thread, and only then
  hands its core the ``InstallSnapshot`` (with the restored tables, so
  installing costs the loop no second restore). The core answers the leader
  through the consensus messages, as before; a snapshot that does not
  restore is never handed over (nor stored).

Heartbeats keep their own connection (the peer link's) throughout. Every
chunk is checked (sizes, offsets, the checksum; the cluster secret is the
internal routes' own check): a bad one is refused with a 4xx and the reason,
never taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claud.api.protocol import SNAPSHOT_CHUNK_HEADER, SNAPSHOT_CHUNK_PATH, SNAPSHOT_CONTENT_TYPE
from claud.daemon.logfmt import log_event
from claud.master.peer_http import PeerConnection, PeerHttpError
from claud.master.peers import MasterDirectory
from claud.master.raft_config import Configuration
from claud.master.raft_messages import InstallSnapshot
from claud.master.state import SnapshotCorrupt, StateMachine
from claud.master.storage import Snapshot, StoredSnapshot, compress_state

log = logging.getLogger("claud.master.snapshot")

#: What a leader sends per chunk.
CHUNK_BYTES = 1 << 20
#: The largest chunk a follower takes (a leader of another version may send larger ones).
MAX_CHUNK_BYTES = 8 << 20
#: The longest configuration a chunk header carries (it rides in an HTTP header; ~60 bytes a member).
MAX_CONFIG_CHARS = 32_000
#: The largest snapshot (compressed, as stored) a follower takes.
MAX_SNAPSHOT_BYTES = 4 << 30
#: The largest state text a snapshot may decompress to.
MAX_STATE_BYTES = 16 << 30
#: Each chunk must be answered this fast, or it is sent again.
CHUNK_TIMEOUT = 10.0
#: A transfer during which no chunk was taken for this long is given up (the core asks again).
STALL_TIMEOUT = 30.0
#: After a chunk failed to arrive, the sender waits this long before resending it.
RETRY_BACKOFF = 0.2
#: The name of the file a transfer is assembled in, in the data directory.
INCOMING_NAME = "snapshot-incoming.part"

_TRANSFER_ID = re.compile(r"[0-9a-f]{16,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# ------------------------------------------------------------ the chunk codec


class ChunkRefused(Exception):
    """A chunk the follower does not take: the HTTP status, a code, why, and (when
    the sender may go on) the offset the follower expects next."""

    def __init__(self, status: int, code: str, message: str, next_offset: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.next_offset = status, code, next_offset

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": str(self), "field": None}, "next_offset": self.next_offset}


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """What every chunk of one transfer says about it; only ``offset`` differs between its chunks."""

    transfer: str  # random, per transfer: a resend of a chunk is told apart from a new transfer
    leader: int
    term: int  # the leader's term when it sent the snapshot
    index: int  # the snapshot's last index and its term
    snapshot_term: int
    size: int  # the whole snapshot, as stored (compressed)
    sha256: str  # of the whole snapshot as stored
    offset: int
    #: The cluster configuration at ``index`` (claud.master.raft_config), "" before the first one.
    config: str = ""

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | None) -> ChunkHeader:
        """The header of a chunk; ChunkRefused (400) for anything that is not one."""
        if not text:
            raise ChunkRefused(400, "malformed_chunk", f"a snapshot chunk needs the {SNAPSHOT_CHUNK_HEADER} header")
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"fields must be exactly {sorted(f.name for f in dataclasses.fields(cls))}")
            header = cls(**raw)
            for name in ("leader", "term", "index", "snapshot_term", "size", "offset"):
                value = getattr(header, name)
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                    raise ValueError(f"{name} must be a non-negative integer")
            if not isinstance(header.transfer, str) or not _TRANSFER_ID.fullmatch(header.transfer):
                raise ValueError("transfer must be 16-64 lowercase hex digits")
            if not isinstance(header.sha256, str) or not _SHA256.fullmatch(header.sha256):
                raise ValueError("sha256 must be 64 lowercase hex digits")
            if not isinstance(header.config, str) or len(header.config) > MAX_CONFIG_CHARS:
                raise ValueError(f"config must be a string of at most {MAX_CONFIG_CHARS} characters")
            if header.config:
                Configuration.decode(header.config)  # a ValueError if it is not one
        except (ValueError, TypeError) as exc:  # JSON errors are ValueErrors
            raise ChunkRefused(400, "malformed_chunk", f"not a snapshot chunk header: {exc}") from None
        return header

    def same_transfer(self, other: ChunkHeader) -> bool:
        return dataclasses.replace(self, offset=0) == dataclasses.replace(other, offset=0)


def check_chunk(header: ChunkHeader, data: bytes) -> None:
    """What a chunk must satisfy on its own, before any state is touched (ChunkRefused otherwise)."""
    if header.size == 0 or header.size > MAX_SNAPSHOT_BYTES:
        raise ChunkRefused(
            413, "snapshot_too_large", f"a snapshot of {header.size} bytes; the limit is 1 to {MAX_SNAPSHOT_BYTES}"
        )
    if not data:
        raise ChunkRefused(400, "empty_chunk", "a chunk carries at least one byte")
    if len(data) > MAX_CHUNK_BYTES:
        raise ChunkRefused(
            413, "chunk_too_large", f"a chunk of {len(data)} bytes exceeds the limit of {MAX_CHUNK_BYTES}"
        )
    if header.offset + len(data) > header.size:
        raise ChunkRefused(
            400, "chunk_past_end", f"bytes {header.offset}-{header.offset + len(data)} of a {header.size}-byte snapshot"
        )


def decode_snapshot_blob(blob: bytes) -> str:
    """The state text of a stored snapshot blob; SnapshotCorrupt if it is not one."""
    inflater = zlib.decompressobj()
    try:
        state = inflater.decompress(blob, MAX_STATE_BYTES)
        if inflater.unconsumed_tail:
            raise SnapshotCorrupt(f"snapshot decompresses past {MAX_STATE_BYTES} bytes")
        if not inflater.eof or inflater.unused_data:
            raise SnapshotCorrupt("snapshot is not one whole zlib stream")
        return state.decode()
    except (zlib.error, UnicodeDecodeError) as exc:
        raise SnapshotCorrupt(f"snapshot does not decompress: {exc}") from None


class SnapshotAssembly:
    """One transfer being received, written to ``path`` as its chunks come, in order.

    Blocking (file writes, hashing): the receiver calls it in a worker thread."""

    def __init__(self, header: ChunkHeader, path: Path) -> None:
        self.header = header
        self.path = path
        self.received = 0
        self._hash = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds every job's env
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        return self.received == self.header.size

    def finish(self) -> str:
        """The state text once every byte is in and the checksum matches; ChunkRefused (422) if not."""
        self._file.close()
        if self._hash.hexdigest() != self.header.sha256:
            raise ChunkRefused(422, "checksum_mismatch", "the snapshot's SHA-256 is not the one announced", 0)
        try:
            return decode_snapshot_blob(self.path.read_bytes())
        except SnapshotCorrupt as exc:
            raise ChunkRefused(422, "not_a_snapshot", str(exc), 0) from None
        finally:
            self.discard()

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


# ------------------------------------------------------------ the follower's end


#: Hands the core a snapshot that is whole, with the tables restored from it (None: the
#: core already has it; this repeats it, so that the core answers the leader again).
Deliver = Callable[[InstallSnapshot, StateMachine | None], None]


@dataclass(slots=True)
class _Received:
    """The last snapshot received whole: restored in the background, then delivered."""

    header: ChunkHeader
    snapshot: Snapshot
    delivered: bool = False

    def same_snapshot(self, header: ChunkHeader) -> bool:
        return (self.header.index, self.header.snapshot_term, self.header.sha256) == (
            header.index, header.snapshot_term, header.sha256)


class SnapshotReceiver:
    """The follower's end of ``SNAPSHOT_CHUNK_PATH``: one transfer at a time, assembled on disk.

    The last chunk is answered once the snapshot is whole and its checksum
    matches; the tables are restored after that, in a thread (seconds for a
    large table, longer than a chunk's timeout), and handed to the core when
    whole. A transfer of the snapshot already received is answered done at its
    first chunk (the leader's core asked again before this one was installed,
    or its answer was lost: the core is told again, and answers again)."""

    def __init__(self, master_id: int, data_dir: Path, deliver: Deliver) -> None:
        self.master_id = master_id
        self._path = data_dir / INCOMING_NAME
        self._deliver = deliver
        self._assembly: SnapshotAssembly | None = None
        self._received: _Received | None = None
        self._restoring: asyncio.Task[None] | None = None
        self._started = 0.0
        self._lock = asyncio.Lock()
        # A transfer cut short by a restart is not resumed: the leader restarts it.
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def answer(self, header_text: str | None, data: bytes) -> tuple[int, dict[str, Any]]:
        """The status and body to answer a chunk with: 200 and the next offset, or the refusal."""
        try:
            return 200, await self.accept(ChunkHeader.parse(header_text), data)
        except ChunkRefused as exc:
            if exc.status != 409:  # a resend's 409 is routine: the answer says where to go on
                log_event(log, "snapshot.chunk_refused", logging.WARNING, code=exc.code, error=str(exc)[:300])
            return exc.status, exc.body()

    async def accept(self, header: ChunkHeader, data: bytes) -> dict[str, Any]:
        check_chunk(header, data)
        if header.leader == self.master_id:
            raise ChunkRefused(400, "own_snapshot", f"master {self.master_id} does not send snapshots to itself")
        async with self._lock:
            received = self._received
            if received is not None and received.same_snapshot(header):
                if received.delivered:
                    self._deliver(self._message(header, received.snapshot), None)
                return {"next_offset": header.size, "done": True}
            if received is not None and _newer(received.header, header):
                # A chunk the leader gave up on, buffered while this master was paused, say:
                # the core already has something newer, and tells the leader in its answers.
                raise ChunkRefused(409, "stale_transfer", f"snapshot {received.header.index} was received already")
            assembly = await self._assembly_for(header)
            if header.offset != assembly.received:
                raise ChunkRefused(
                    409, "unexpected_offset", f"expected offset {assembly.received}, got {header.offset}",
                    assembly.received,
                )
            await asyncio.to_thread(assembly.write, data)
            if not assembly.complete:
                return {"next_offset": assembly.received, "done": False}
            self._assembly = None
            state = await asyncio.to_thread(assembly.finish)
            self._received = _Received(
                header, Snapshot(index=header.index, term=header.snapshot_term, state=state, config=header.config)
            )
            self._restoring = asyncio.create_task(self._restore(self._received), name="snapshot-restore")
            return {"next_offset": header.size, "done": True}

    def _message(self, header: ChunkHeader, snapshot: Snapshot) -> InstallSnapshot:
        return InstallSnapshot(src=header.leader, dst=self.master_id, term=header.term, snapshot=snapshot)

    async def _restore(self, received: _Received) -> None:
        header = received.header
        try:
            tables = await asyncio.to_thread(StateMachine.from_snapshot, received.snapshot.state)
            if tables.applied_index != header.index:
                raise SnapshotCorrupt(f"the tables are at {tables.applied_index}, the transfer said {header.index}")
        except SnapshotCorrupt as exc:
            # Checksummed as the leader stored it, yet not restorable: the leader's store is
            # what to look at. Not delivered; the leader's next attempt streams it again.
            log_event(log, "snapshot.receive_failed", logging.ERROR, leader=header.leader, index=header.index,
                      error=str(exc)[:300])
            if self._received is received:
                self._received = None
            return
        log_event(log, "snapshot.received", leader=header.leader, index=header.index, bytes=header.size,
                  jobs=len(tables.jobs), ms=round((time.monotonic() - self._started) * 1000))
        self._deliver(self._message(header, received.snapshot), tables)
        received.delivered = True

    async def _assembly_for(self, header: ChunkHeader) -> SnapshotAssembly:
        current = self._assembly
        if current is not None and current.header.transfer == header.transfer:
            if not current.header.same_transfer(header):
                raise ChunkRefused(400, "malformed_chunk", "a chunk of this transfer describes another snapshot")
            return current
        if current is not None and _newer(current.header, header):
            raise ChunkRefused(409, "stale_transfer", f"a transfer of snapshot {current.header.index} is under way")
        if header.offset != 0:
            # Not the transfer under way (this master restarted, or gave that one up): from the start.
            raise ChunkRefused(409, "unknown_transfer", f"no transfer {header.transfer} under way; start at 0", 0)
        if current is not None:
            log_event(log, "snapshot.receive_replaced", transfer=current.header.transfer, received=current.received)
            await asyncio.to_thread(current.discard)
        self._assembly = await asyncio.to_thread(SnapshotAssembly, header, self._path)
        self._started = time.monotonic()
        log_event(log, "snapshot.receiving", leader=header.leader, index=header.index, bytes=header.size)
        return self._assembly

    async def close(self) -> None:
        async with self._lock:
            if self._assembly is not None:
                await asyncio.to_thread(self._assembly.discard)
                self._assembly = None
        if self._restoring is not None:
            await asyncio.gather(self._restoring, return_exceptions=True)


def _newer(kept: ChunkHeader, arriving: ChunkHeader) -> bool:
    """Whether ``kept`` (under way, or received) supersedes the transfer ``arriving`` is part of:
    a later leader's snapshot wins, and of one leader, the later snapshot."""
    return (kept.term, kept.index) > (arriving.term, arriving.index)


# ------------------------------------------------------------ the leader's end


#: The stored snapshot, read in a worker thread (``LogStore.snapshot_blob``).
SnapshotSource = Callable[[], StoredSnapshot | None]


@dataclass(frozen=True, slots=True)
class _Outgoing:
    index: int
    term: int
    blob: bytes
    sha256: str
    config: str


class SnapshotSenders:
    """The leader's snapshot transfers, at most one per follower, each on a connection of its own."""

    def __init__(
        self, directory: MasterDirectory, connection: Callable[[], PeerConnection], source: SnapshotSource | None,
        chunk_bytes: int = CHUNK_BYTES, identity: Callable[[], dict[str, str]] = dict,
    ) -> None:
        self._directory = directory
        #: The headers naming this master (cluster and member id), on every chunk as on every message.
        self._identity = identity
        self._connection = connection
        self._source = source
        self._chunk_bytes = chunk_bytes
        self._transfers: dict[int, tuple[int, asyncio.Task[None]]] = {}

    def send(self, message: InstallSnapshot) -> None:
        """Start streaming a snapshot to ``message.dst``, unless a transfer of this term is under way."""
        running = self._transfers.get(message.dst)
        if running is not None and not running[1].done():
            if running[0] == message.term:
                return  # the core resends while it waits; this transfer is its answer
            running[1].cancel()
        task = asyncio.create_task(self._transfer(message), name=f"snapshot-to-{message.dst}")
        self._transfers[message.dst] = (message.term, task)

    def sending(self, peer_id: int) -> bool:
        running = self._transfers.get(peer_id)
        return running is not None and not running[1].done()

    async def close(self) -> None:
        tasks = [task for _, task in self._transfers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _outgoing(self, message: InstallSnapshot) -> _Outgoing:
        """The snapshot to send, as stored (blocking: run in a thread). The store holds the
        core's snapshot or a newer one (saved before the core compacts to it); either is
        committed and applied here, so either may be sent."""
        stored = self._source() if self._source is not None else None
        snapshot = message.snapshot
        if stored is None or stored.index < snapshot.index:
            stored = StoredSnapshot(
                index=snapshot.index, term=snapshot.term, blob=compress_state(snapshot.state), config=snapshot.config
            )
        return _Outgoing(stored.index, stored.term, stored.blob, hashlib.sha256(stored.blob).hexdigest(), stored.config)

    async def _transfer(self, message: InstallSnapshot) -> None:
        peer = message.dst
        started = time.monotonic()
        outgoing = await asyncio.to_thread(self._outgoing, message)
        size = len(outgoing.blob)
        header = ChunkHeader(
            transfer=secrets.token_hex(16), leader=message.src, term=message.term, index=outgoing.index,
            snapshot_term=outgoing.term, size=size, sha256=outgoing.sha256, offset=0, config=outgoing.config,
        )
        log_event(log, "snapshot.send_started", master=peer, index=outgoing.index, term=outgoing.term, bytes=size,
                  chunk_bytes=self._chunk_bytes)
        connection = self._connection()
        offset, resends, last_progress = 0, 0, time.monotonic()
        try:
            while True:
                if time.monotonic() - last_progress > STALL_TIMEOUT:
                    raise PeerHttpError(f"no chunk taken for {STALL_TIMEOUT:g}s", sent=True)
                address = self._directory.address(peer)
                if address is None:
                    await asyncio.sleep(RETRY_BACKOFF)
                    continue
                chunk = outgoing.blob[offset : offset + self._chunk_bytes]
                try:
                    resp = await connection.post(
                        address, SNAPSHOT_CHUNK_PATH, chunk, CHUNK_TIMEOUT,
                        headers={
                            **self._identity(),
                            SNAPSHOT_CHUNK_HEADER: dataclasses.replace(header, offset=offset).encode(),
                        },
                        content_type=SNAPSHOT_CONTENT_TYPE,
                    )
                except PeerHttpError:
                    resends += 1  # the follower answers 409 with its offset if it got the chunk after all
                    await asyncio.sleep(RETRY_BACKOFF)
                    continue
                next_offset = _next_offset(resp.body, size)
                if resp.status == 200 or (resp.status == 409 and next_offset is not None):
                    if next_offset is None:
                        raise PeerHttpError(f"answered 200 without a next offset: {resp.body[:200]!r}", sent=True)
                    if resp.status == 409:
                        resends += 1
                    if resp.status == 200:
                        last_progress = time.monotonic()
                    offset = next_offset
                    if resp.status == 200 and offset == size:
                        break
                    continue
                raise PeerHttpError(f"answered {resp.status}: {resp.body[:300]!r}", sent=True)
        except PeerHttpError as exc:
            log_event(log, "snapshot.send_failed", logging.WARNING, master=peer, index=outgoing.index, bytes=size,
                      sent=offset, error=str(exc)[:300], ms=round((time.monotonic() - started) * 1000))
            return
        finally:
            connection.close()
        log_event(log, "snapshot.sent", master=peer, index=outgoing.index, term=outgoing.term, bytes=size,
                  chunks=-(-size // self._chunk_bytes), resends=resends, ms=round((time.monotonic() - started) * 1000))


def _next_offset(body: bytes, size: int) -> int | None:
    """The offset a follower's answer asks for next, if it names a sane one."""
    try:
        value = json.loads(body).get("next_offset")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= size:
        return None
    return value
