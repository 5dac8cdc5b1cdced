"""Snapshots streamed in chunks: the chunk codec, the follower's assembly (offsets,
resume, corruption, wrong sizes), a leader's sender against a follower over
loopback HTTP with a connection that breaks, and the fast restore that trusts a
snapshot in this code's format (the same tables as validating every row)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from test_state_machine import Driver, actions, check_invariants, run_actions

from claud.api import ContainerState
from claud.api.protocol import SNAPSHOT_CHUNK_HEADER, SNAPSHOT_CHUNK_PATH
from claud.master import snapshot_stream
from claud.master.peer_http import PeerConnection
from claud.master.peers import MasterDirectory
from claud.master.raft_config import Configuration
from claud.master.raft_messages import InstallSnapshot
from claud.master.snapshot_stream import (
    ChunkHeader,
    ChunkRefused,
    SnapshotReceiver,
    SnapshotSenders,
    decode_snapshot_blob,
)
from claud.master.state import SNAPSHOT_FORMAT, SnapshotCorrupt, StateMachine
from claud.master.storage import Snapshot, StoredSnapshot, compress_state


def tables(jobs: int = 30) -> StateMachine:
    d = Driver()
    d.slave("s1", cpu=64, memory=64 * 1024)
    for i in range(jobs):
        d.submit(f"j{i}", env={"K": "v" * (i % 7)}, idempotency_key=f"key-{i}")
    d.schedule()
    d.report("j0", ContainerState.RUNNING)
    d.report("j1", ContainerState.EXITED, exit_code=1)
    return d.sm


def header_for(blob: bytes, index: int, *, offset: int = 0, transfer: str = "ab" * 16, term: int = 3,
               **changes: Any) -> ChunkHeader:
    header = ChunkHeader(transfer=transfer, leader=1, term=term, index=index, snapshot_term=2, size=len(blob),
                         sha256=hashlib.sha256(blob).hexdigest(), offset=offset)
    return dataclasses.replace(header, **changes)


class Delivered:
    def __init__(self) -> None:
        self.messages: list[tuple[InstallSnapshot, StateMachine | None]] = []

    def __call__(self, message: InstallSnapshot, restored: StateMachine | None) -> None:
        self.messages.append((message, restored))


async def settle(receiver: SnapshotReceiver) -> None:
    """Until the background restore of the last snapshot received has delivered it."""
    if receiver._restoring is not None:
        await receiver._restoring


async def send_all(receiver: SnapshotReceiver, blob: bytes, index: int, chunk: int, **changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for offset in range(0, len(blob), chunk):
        answer = await receiver.accept(header_for(blob, index, offset=offset, **changes), blob[offset:offset + chunk])
    return answer


# ------------------------------------------------------------ the codec


def test_a_header_round_trips_and_anything_else_is_a_400() -> None:
    header = header_for(b"x" * 10, 7, offset=4)
    assert ChunkHeader.parse(header.encode()) == header
    raw = json.loads(header.encode())
    bad = [
        None, "", "not json", "[]", json.dumps({**raw, "extra": 1}),
        json.dumps({k: v for k, v in raw.items() if k != "sha256"}),
        json.dumps({**raw, "offset": -1}), json.dumps({**raw, "size": True}), json.dumps({**raw, "index": 1.5}),
        json.dumps({**raw, "index": 2**63}), json.dumps({**raw, "sha256": "00" * 31}),
        json.dumps({**raw, "sha256": "G" * 64}), json.dumps({**raw, "transfer": "../../etc"}),
        json.dumps({**raw, "transfer": 12}),
    ]
    for text in bad:
        with pytest.raises(ChunkRefused) as refused:
            ChunkHeader.parse(text)
        assert refused.value.status == 400, text


def test_a_chunk_of_the_wrong_size_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    blob = compress_state(tables(3).to_snapshot())
    receiver = SnapshotReceiver(2, tmp_path, Delivered())

    async def refused(header: ChunkHeader, data: bytes) -> tuple[int, str]:
        with pytest.raises(ChunkRefused) as exc:
            await receiver.accept(header, data)
        return exc.value.status, exc.value.code

    async def run() -> None:
        assert await refused(header_for(blob, 3), b"") == (400, "empty_chunk")
        assert await refused(header_for(blob, 3, offset=len(blob) - 1), blob[-2:]) == (400, "chunk_past_end")
        assert await refused(header_for(blob, 3, size=0), blob) == (413, "snapshot_too_large")
        big = snapshot_stream.MAX_SNAPSHOT_BYTES + 1
        assert await refused(header_for(blob, 3, size=big), blob) == (413, "snapshot_too_large")
        huge = b"x" * (snapshot_stream.MAX_CHUNK_BYTES + 1)
        assert await refused(header_for(huge, 3), huge) == (413, "chunk_too_large")
        assert await refused(header_for(blob, 3, leader=2), blob) == (400, "own_snapshot")

    asyncio.run(run())
    assert not (tmp_path / snapshot_stream.INCOMING_NAME).exists()


def test_a_blob_that_is_not_one_whole_zlib_stream_is_not_a_snapshot() -> None:
    state = tables(2).to_snapshot()
    assert decode_snapshot_blob(compress_state(state)) == state
    for blob in (b"garbage", compress_state(state)[:-5], compress_state(state) + b"more", zlib.compress(b"\xff\xfe")):
        with pytest.raises(SnapshotCorrupt):
            decode_snapshot_blob(blob)


# ------------------------------------------------------------ the follower's assembly


def test_chunks_in_order_deliver_the_snapshot_with_its_tables_restored(tmp_path: Path) -> None:
    sm = tables()
    state = sm.to_snapshot()
    blob = compress_state(state)
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def run() -> None:
        answer = await send_all(receiver, blob, sm.applied_index, 100)
        assert answer == {"next_offset": len(blob), "done": True}
        await settle(receiver)

    asyncio.run(run())
    ((message, restored),) = delivered.messages
    assert (message.src, message.dst, message.term) == (1, 2, 3)
    assert message.snapshot == Snapshot(index=sm.applied_index, term=2, state=state)
    assert restored is not None and restored.to_snapshot() == state
    assert not (tmp_path / snapshot_stream.INCOMING_NAME).exists()


def test_a_resent_or_skipped_chunk_is_answered_with_the_offset_expected(tmp_path: Path) -> None:
    sm = tables()
    blob = compress_state(sm.to_snapshot())
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def run() -> None:
        index = sm.applied_index
        assert (await receiver.accept(header_for(blob, index), blob[:100]))["next_offset"] == 100
        # The answer was lost and the leader resends the same chunk: told to go on from 100.
        with pytest.raises(ChunkRefused) as resent:
            await receiver.accept(header_for(blob, index), blob[:100])
        assert (resent.value.status, resent.value.next_offset) == (409, 100)
        with pytest.raises(ChunkRefused) as skipped:
            await receiver.accept(header_for(blob, index, offset=200), blob[200:300])
        assert (skipped.value.status, skipped.value.next_offset) == (409, 100)
        # Another transfer that does not start at 0 (the receiver lost track of it): from 0.
        with pytest.raises(ChunkRefused) as unknown:
            await receiver.accept(header_for(blob, index, offset=100, transfer="cd" * 16), blob[100:200])
        assert (unknown.value.status, unknown.value.next_offset) == (409, 0)
        # The same transfer id describing another snapshot is not one transfer.
        with pytest.raises(ChunkRefused) as changed:
            await receiver.accept(header_for(blob, index, offset=100, snapshot_term=9), blob[100:200])
        assert changed.value.status == 400
        await send_all_from(receiver, blob, index, 100)
        await settle(receiver)

    async def send_all_from(receiver: SnapshotReceiver, blob: bytes, index: int, start: int) -> None:
        for offset in range(start, len(blob), 100):
            await receiver.accept(header_for(blob, index, offset=offset), blob[offset:offset + 100])

    asyncio.run(run())
    ((_, restored),) = delivered.messages
    assert restored is not None and restored.to_snapshot() == sm.to_snapshot()


def test_a_new_transfer_replaces_one_under_way_but_not_one_of_a_later_term(tmp_path: Path) -> None:
    sm = tables()
    blob = compress_state(sm.to_snapshot())
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def run() -> None:
        index = sm.applied_index
        await receiver.accept(header_for(blob, index, term=5), blob[:100])
        with pytest.raises(ChunkRefused) as stale:
            await receiver.accept(header_for(blob, index, term=4, transfer="cd" * 16), blob[:100])
        assert (stale.value.status, stale.value.code) == (409, "stale_transfer")
        await send_all(receiver, blob, index, 500, term=6, transfer="ef" * 16)
        await settle(receiver)

    asyncio.run(run())
    assert [m.term for m, _ in delivered.messages] == [6]


def test_a_corrupted_byte_fails_the_checksum_and_nothing_is_delivered(tmp_path: Path) -> None:
    sm = tables()
    blob = compress_state(sm.to_snapshot())
    corrupted = bytearray(blob)
    corrupted[len(blob) // 2] ^= 0x01
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def run() -> None:
        with pytest.raises(ChunkRefused) as refused:
            header = header_for(blob, sm.applied_index)  # the checksum of the good blob
            for offset in range(0, len(blob), 256):
                await receiver.accept(dataclasses.replace(header, offset=offset), bytes(corrupted[offset:offset + 256]))
        assert (refused.value.status, refused.value.code, refused.value.next_offset) == (422, "checksum_mismatch", 0)
        assert not delivered.messages
        # The leader starts again; this time every byte is right.
        await send_all(receiver, blob, sm.applied_index, 256, transfer="cd" * 16)
        await settle(receiver)

    asyncio.run(run())
    assert len(delivered.messages) == 1
    assert not (tmp_path / snapshot_stream.INCOMING_NAME).exists()


def test_checksummed_bytes_that_are_no_snapshot_are_refused_or_never_delivered(tmp_path: Path) -> None:
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)
    not_zlib = b"\x00" * 1000
    not_tables = compress_state('{"format":2,"applied_index":1,"jobs":[{"id":1}],"nodes":[],"pending":[]}')
    wrong_index = compress_state(tables(2).to_snapshot())

    async def run() -> None:
        with pytest.raises(ChunkRefused) as refused:
            await send_all(receiver, not_zlib, 1, 400)
        assert (refused.value.status, refused.value.code) == (422, "not_a_snapshot")
        # Whole and checksummed, yet they do not restore (or not at the index announced): never handed over.
        await send_all(receiver, not_tables, 1, 400, transfer="cd" * 16)
        await settle(receiver)
        await send_all(receiver, wrong_index, 999, 400, transfer="ef" * 16)
        await settle(receiver)

    asyncio.run(run())
    assert delivered.messages == []


def test_an_older_snapshot_than_the_one_under_way_or_received_is_refused(tmp_path: Path) -> None:
    older, newer = tables(3), tables(5)
    old_blob, new_blob = compress_state(older.to_snapshot()), compress_state(newer.to_snapshot())
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def stale(blob: bytes, index: int, transfer: str) -> str:
        with pytest.raises(ChunkRefused) as refused:
            await receiver.accept(header_for(blob, index, transfer=transfer), blob[:50])
        assert refused.value.next_offset is None  # the sender gives up: nothing to resume
        return refused.value.code

    async def run() -> None:
        await receiver.accept(header_for(new_blob, newer.applied_index), new_blob[:50])
        # Chunks of transfers the leader gave up on, processed late: the newer one under way stays.
        assert await stale(old_blob, older.applied_index, "cd" * 16) == "stale_transfer"
        for offset in range(50, len(new_blob), 50):
            header = header_for(new_blob, newer.applied_index, offset=offset)
            await receiver.accept(header, new_blob[offset:offset + 50])
        await settle(receiver)
        assert await stale(old_blob, older.applied_index, "ef" * 16) == "stale_transfer"

    asyncio.run(run())
    assert [m.snapshot.index for m, _ in delivered.messages] == [newer.applied_index]


def test_the_snapshot_already_received_is_answered_done_and_told_again(tmp_path: Path) -> None:
    sm = tables()
    blob = compress_state(sm.to_snapshot())
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)

    async def run() -> None:
        await send_all(receiver, blob, sm.applied_index, 1000)
        await settle(receiver)
        # The core's answer was lost; the leader's core asks again with a new transfer.
        answer = await receiver.accept(header_for(blob, sm.applied_index, transfer="cd" * 16), blob[:1000])
        assert answer == {"next_offset": len(blob), "done": True}

    asyncio.run(run())
    assert [restored is not None for _, restored in delivered.messages] == [True, False]
    assert delivered.messages[0][0].snapshot is delivered.messages[1][0].snapshot


# ------------------------------------------------------------ sender and receiver over HTTP


class FollowerServer:
    """The follower's chunk route on a loopback port, breaking connections when told."""

    def __init__(self, receiver: SnapshotReceiver) -> None:
        self.receiver = receiver
        self.drop_answers: set[int] = set()  # the n-th chunk is taken, but its answer is never sent
        self.chunks = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                assert head[0].startswith(f"POST {SNAPSHOT_CHUNK_PATH} ")
                fields = dict(line.split(": ", 1) for line in head[1:] if line)
                body = await reader.readexactly(int(fields["Content-Length"]))
                assert fields["Content-Type"] == "application/octet-stream"
                self.chunks += 1
                status, answer = await self.receiver.answer(fields.get(SNAPSHOT_CHUNK_HEADER), body)
                if self.chunks in self.drop_answers:
                    writer.close()
                    return
                payload = json.dumps(answer).encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def test_a_leader_streams_its_stored_snapshot_and_resumes_after_a_broken_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sm = tables(200)
    state = sm.to_snapshot()
    config = Configuration.bootstrap({1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"}, "c" * 32).encode()
    stored = StoredSnapshot(index=sm.applied_index, term=2, blob=compress_state(state), config=config)
    delivered = Delivered()
    receiver = SnapshotReceiver(2, tmp_path, delivered)
    server = FollowerServer(receiver)
    server.drop_answers = {2, 5}

    async def run() -> None:
        address = await server.start()
        directory = MasterDirectory(1, "127.0.0.1:1")
        directory.learn(2, address)
        senders = SnapshotSenders(directory, lambda: PeerConnection(None, {}), lambda: stored, chunk_bytes=1000)
        # The core's snapshot is older than the stored one: the stored one goes, as it is.
        message = InstallSnapshot(src=1, dst=2, term=3, snapshot=Snapshot(index=1, term=1, state="{}"))
        senders.send(message)
        senders.send(message)  # the core's resend while the transfer runs: the same transfer
        assert senders.sending(2)
        await asyncio.wait_for(senders._transfers[2][1], 30)
        await settle(receiver)
        await senders.close()
        await server.close()

    with caplog.at_level(logging.INFO, logger="claud.master.snapshot"):
        asyncio.run(run())
    ((message, restored),) = delivered.messages
    assert message.snapshot.index == sm.applied_index and message.snapshot.state == state
    assert message.snapshot.config == config  # the members travel with the tables
    assert restored is not None and restored.to_snapshot() == state
    chunks = -(-len(stored.blob) // 1000)
    assert server.chunks == chunks + 2  # each chunk whose answer was lost went again, once, answered 409
    events = [(r.getMessage(), getattr(r, "claud_fields", {})) for r in caplog.records]
    assert [e for e, _ in events].count("snapshot.send_started") == 1
    (sent,) = [fields for e, fields in events if e == "snapshot.sent"]
    # Each lost answer costs a resend that failed, then one answered 409 with the offset to go on from.
    assert sent["bytes"] == len(stored.blob) and sent["chunks"] == chunks and sent["resends"] == 4
    assert sent["ms"] >= 0


# ------------------------------------------------------------ fast restore


def validated(encoded: str) -> StateMachine:
    """The restore of a snapshot written before there was a format: every row validated."""
    data = json.loads(encoded)
    del data["format"]
    return StateMachine.from_snapshot(json.dumps(data))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_trusting_a_snapshot_restores_exactly_what_validating_it_does(steps) -> None:
    d = Driver()
    run_actions(d, steps)
    encoded = d.sm.to_snapshot()
    trusted, checked = StateMachine.from_snapshot(encoded), validated(encoded)
    for mine, theirs in ((trusted.jobs, checked.jobs), (trusted.slaves, checked.slaves)):
        assert list(mine) == list(theirs)
        for key, row in mine.items():
            other = theirs[key]
            assert type(row) is type(other) and row == other
            assert row.model_dump_json() == other.model_dump_json()
            assert row.model_fields_set == other.model_fields_set
    for index in ("_pending", "_unexplained", "_backoff", "_placed_by_slave", "_by_idempotency_key", "slave_versions"):
        assert getattr(trusted, index) == getattr(checked, index), index
    assert trusted.to_snapshot() == encoded
    check_invariants(trusted)
    # The rows still behave as models: a change is seen by the next snapshot.
    for job in trusted.jobs.values():
        job.message = "changed"
    assert all(j["message"] == "changed" for j in json.loads(trusted.to_snapshot())["jobs"])


def test_a_snapshot_of_another_format_or_damaged_fails_whole_with_one_clear_error() -> None:
    encoded = tables(3).to_snapshot()
    assert encoded.startswith(f'{{"format":{SNAPSHOT_FORMAT},')
    data = json.loads(encoded)
    broken_job = {**data, "jobs": [{**data["jobs"][0], "state": "exploded"}]}
    missing_spec = {**data, "jobs": [{k: v for k, v in data["jobs"][0].items() if k != "spec"}]}
    for bad in (
        encoded[: len(encoded) // 2], json.dumps({**data, "format": 99}), json.dumps(broken_job),
        json.dumps(missing_spec), json.dumps({**data, "applied_index": "3"}), "[]", "null",
    ):
        with pytest.raises(SnapshotCorrupt) as exc:
            StateMachine.from_snapshot(bad)
        assert "\n" not in str(exc.value)


def test_a_field_added_after_the_snapshot_was_written_takes_its_default() -> None:
    sm = tables(3)
    data = json.loads(sm.to_snapshot())
    for job in data["jobs"]:
        del job["quick_exits"], job["events"]
    restored = StateMachine.from_snapshot(json.dumps(data))
    job = restored.jobs["j2"]
    assert job.quick_exits == 0 and job.events == []
    assert "events" not in job.model_fields_set and "id" in job.model_fields_set


def test_assigning_an_unset_field_of_one_restored_row_sets_it_on_that_row_only() -> None:
    restored = StateMachine.from_snapshot(tables(3).to_snapshot())
    first, second = list(restored.jobs.values())[:2]
    assert "replaced_at" not in first.model_fields_set and "replaced_at" not in second.model_fields_set
    first.replaced_at = first.created_at
    assert "replaced_at" in first.model_fields_set
    assert "replaced_at" not in second.model_fields_set  # the restore's shared set was not touched
    again = StateMachine.from_snapshot(tables(3).to_snapshot())
    assert all("replaced_at" not in job.model_fields_set for job in again.jobs.values())
