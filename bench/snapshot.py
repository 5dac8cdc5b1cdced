"""What a snapshot costs as the jobs table grows: take, send, restore, and etcd beside it.

Builds a state machine of N submitted jobs (each with an environment of its
own, so the snapshot compresses as real tables do), then times

- take: ``snapshot_parts`` (the only part on the event loop) the first time,
  when every row is encoded, and again after 1% of the rows changed; then the
  join into one text and its compression as stored (both in the save thread);
- send: the stored blob streamed in 1 MiB chunks over loopback HTTP to a
  follower's :class:`~claud.master.snapshot_stream.SnapshotReceiver`, until
  the last chunk is answered, and until the follower has restored the tables
  (off its loop) and hands them to its core; beside it, what encoding the
  snapshot as one consensus message on the leader's loop used to cost;
- restore: ``StateMachine.from_snapshot`` of a snapshot in this code's format
  (trusted), and, with ``--validated``, of one written before (every row
  validated again, as every restore did before);
- etcd (when ``etcd`` and ``etcdctl`` are installed: Debian's etcd-server and
  etcd-client): N keys holding as many bytes as the snapshot's text, then
  ``etcdctl snapshot save`` and ``etcdctl snapshot restore`` of them.

    .venv/bin/python bench/snapshot.py [--jobs 10000 50000 100000] [--validated] [--no-etcd]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from claud.api import JobSpec
from claud.api.protocol import SNAPSHOT_CHUNK_HEADER
from claud.master import ops
from claud.master.peer_http import PeerConnection
from claud.master.peers import MasterDirectory
from claud.master.raft_messages import InstallSnapshot, message_to_dict
from claud.master.snapshot_stream import SnapshotReceiver, SnapshotSenders
from claud.master.state import StateMachine, join_snapshot
from claud.master.storage import Snapshot, StoredSnapshot, compress_state

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """The result, wall seconds and CPU seconds (of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def build_tables(count: int) -> StateMachine:
    rng = random.Random(count)
    sm = StateMachine()
    now = datetime.now(UTC)
    for i in range(count):
        spec = JobSpec(name="load", image="claud/busybox", command=["sh", "-c", "true"],
                       env={"SEED": rng.randbytes(24).hex()})
        sm.apply(i + 1, ops.SubmitJob(at=now, job_id=f"{i:012x}", spec=spec))
    return sm


# ------------------------------------------------------------ send, over loopback HTTP


async def _serve_chunks(receiver: SnapshotReceiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The follower's chunk route, without the rest of a master around it."""
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = {k.lower(): v for k, _, v in (line.partition(": ") for line in head[1:] if line)}
            body = await reader.readexactly(int(fields["content-length"]))
            status, answer = await receiver.answer(fields.get(SNAPSHOT_CHUNK_HEADER.lower()), body)
            payload = json.dumps(answer).encode()
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(payload)) + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def send_over_loopback(stored: StoredSnapshot, workdir: Path) -> tuple[float, float]:
    """Seconds until the last chunk was answered, and until the follower's core was handed the tables."""
    delivered = asyncio.get_running_loop().create_future()
    receiver = SnapshotReceiver(2, workdir, lambda message, tables: delivered.done() or delivered.set_result(None))
    server = await asyncio.start_server(lambda r, w: _serve_chunks(receiver, r, w), "127.0.0.1", 0)
    directory = MasterDirectory(1, "127.0.0.1:1")
    directory.learn(2, f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    senders = SnapshotSenders(directory, lambda: PeerConnection(None, {}), lambda: stored)
    started = time.perf_counter()
    senders.send(InstallSnapshot(src=1, dst=2, term=1, snapshot=Snapshot(index=0, term=0, state="")))
    await senders._transfers[2][1]
    sent = time.perf_counter() - started
    await delivered
    restored = time.perf_counter() - started
    await senders.close()
    server.close()
    await server.wait_closed()
    return sent, restored


# ------------------------------------------------------------ etcd, beside it


def etcd_figures(keys: int, total_bytes: int, workdir: Path) -> str:
    """``etcdctl snapshot save`` and ``restore`` of ``keys`` keys holding ``total_bytes`` in all."""
    data, client = workdir / "etcd", "127.0.0.1:23790"
    proc = subprocess.Popen(
        ["etcd", "--data-dir", str(data), "--listen-client-urls", f"http://{client}",
         "--advertise-client-urls", f"http://{client}", "--listen-peer-urls", "http://127.0.0.1:23800",
         "--initial-advertise-peer-urls", "http://127.0.0.1:23800",
         "--initial-cluster", "default=http://127.0.0.1:23800", "--max-txn-ops", "5000",
         "--max-request-bytes", str(64 << 20), "--quota-backend-bytes", str(8 << 30)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://{client}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("etcd did not start")
            time.sleep(0.2)
        rng = random.Random(keys)
        value_bytes = max(1, total_bytes // keys)
        with httpx.Client(timeout=120) as http:
            for start in range(0, keys, 5000):
                puts = [{"requestPut": {
                    "key": base64.b64encode(f"/jobs/{i:012x}".encode()).decode(),
                    # Half random, half repeated: about as compressible as a jobs table.
                    "value": base64.b64encode(rng.randbytes(value_bytes // 2) + b"x" * (value_bytes // 2)).decode(),
                }} for i in range(start, min(keys, start + 5000))]
                http.post(f"{url}/v3/kv/txn", json={"success": puts}).raise_for_status()
        snap = workdir / "etcd.snap"
        _, save_s, _ = timed(lambda: subprocess.run(
            ["etcdctl", "--endpoints", client, "snapshot", "save", str(snap)],
            check=True, capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}))
        _, restore_s, _ = timed(lambda: subprocess.run(
            ["etcdctl", "snapshot", "restore", str(snap), "--data-dir", str(workdir / "etcd-restored")],
            check=True, capture_output=True, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}))
        return (f"etcd {keys} keys of {value_bytes} B ({snap.stat().st_size / 1e6:.0f} MB file): "
                f"snapshot save {save_s:.2f} s, restore {restore_s:.2f} s")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--validated", action="store_true", help="also time the restore that validates every row")
    parser.add_argument("--no-etcd", action="store_true", help="leave etcd out")
    args = parser.parse_args()
    with_etcd = not args.no_etcd and shutil.which("etcd") and shutil.which("etcdctl")
    if not args.no_etcd and not with_etcd:
        print("etcd: not installed (apt-get install etcd-server etcd-client); no peer figure")
    _, calibrate, _ = timed(lambda: sum(range(5_000_000)))
    print(f"this machine: sum(range(5e6)) takes {calibrate * 1000:.0f} ms")
    for count in args.jobs:
        sm = build_tables(count)
        _, first, _ = timed(sm.snapshot_parts)
        for i in range(count // 100):  # 1% of the rows change between two snapshots
            sm.apply(count + i + 1, ops.StopJob(at=datetime.now(UTC), job_id=f"{i:012x}"))
        parts, again, _ = timed(sm.snapshot_parts)
        encoded, joined, _ = timed(lambda parts=parts: join_snapshot(parts))
        blob, compressed, _ = timed(lambda encoded=encoded: compress_state(encoded))
        old = InstallSnapshot(src=1, dst=2, term=1, snapshot=Snapshot(index=sm.applied_index, term=1, state=encoded))
        _, one_message, _ = timed(lambda old=old: json.dumps({"messages": [message_to_dict(old)]}).encode())
        stored = StoredSnapshot(index=sm.applied_index, term=1, blob=blob)
        with tempfile.TemporaryDirectory() as tmp:
            sent, delivered = asyncio.run(send_over_loopback(stored, Path(tmp)))
        restored, restore_wall, restore_cpu = timed(lambda encoded=encoded: StateMachine.from_snapshot(encoded))
        assert restored.to_snapshot() == encoded
        del restored
        line = (f"{count} jobs ({len(encoded) / 1e6:.0f} MB text, {len(blob) / 1e6:.1f} MB stored): "
                f"take: on the loop {first * 1000:.0f} ms first, {again * 1000:.0f} ms after 1% changed, "
                f"join {joined * 1000:.0f} ms + compress {compressed * 1000:.0f} ms in the save thread; "
                f"send: {sent * 1000:.0f} ms chunked over loopback, tables handed over at {delivered:.2f} s "
                f"(one JSON message used to cost {one_message * 1000:.0f} ms on the loop); "
                f"restore {restore_wall:.2f} s ({restore_cpu:.2f} s CPU)")
        if args.validated:
            data = json.loads(encoded)
            del data["format"]  # as written before snapshots had one: every row validated
            legacy = json.dumps(data)
            _, validated_wall, validated_cpu = timed(lambda legacy=legacy: StateMachine.from_snapshot(legacy))
            line += f", validating every row {validated_wall:.2f} s ({validated_cpu:.2f} s CPU)"
        print(line, flush=True)
        if with_etcd:
            with tempfile.TemporaryDirectory() as tmp:
                print("  " + etcd_figures(count, len(encoded), Path(tmp)), flush=True)
        del sm, parts, encoded, blob, stored


if __name__ == "__main__":
    main()
