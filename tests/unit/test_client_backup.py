"""The SDK's backups and GC against httpx.MockTransport: a follower sends the
client on to the leader, a backup is checked before it is written or sent, and
a damaged one never replaces a good file nor leaves the machine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from test_client_sdk import M1, M2, Masters, error_json

from claud.api.backup import SnapshotHeader, checksum, encode_backup
from claud.client import InvalidSpec
from support.fake_wire import NOW

BODY = b'{"applied_index":7,"jobs":[],"nodes":[],"pending":[]}'
BACKUP = encode_backup(SnapshotHeader(index=7, term=2, size=len(BODY), sha256=checksum(BODY), jobs=0, slaves=0,
                                      taken_at=NOW)) + BODY


def not_leader(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json=error_json("not_leader", "master 1 is not the leader"),
                          headers={"Retry-After": "0"})


def leader(body: bytes = BACKUP):
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/operator/snapshot" and request.method == "GET":
            return httpx.Response(200, content=body)
        if request.url.path == "/v1/operator/snapshot":
            assert request.content == BACKUP and request.headers["content-type"] == "application/octet-stream"
            return httpx.Response(200, json={"jobs": 0, "slaves": 0, "index": 9, "source_index": 7, "source_term": 2})
        assert request.url.path == "/v1/system/gc"
        return httpx.Response(200, json={"jobs": ["j1"], "slaves": [], "index": 8})
    return answer


def test_save_asks_the_leader_and_writes_the_file_whole(tmp_path: Path) -> None:
    masters = Masters(m1=not_leader, m2=leader())
    target = tmp_path / "backup.snap"
    with masters.client([M1, M2]) as sdk:
        header = sdk.save_snapshot(target)
    assert (header.index, header.term, header.sha256) == (7, 2, checksum(BODY))
    assert masters.hosts() == ["m1", "m2"]
    assert target.read_bytes() == BACKUP and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["backup.snap"]  # no temporary file left


def test_a_download_cut_short_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "backup.snap"
    target.write_bytes(b"the previous backup")
    with Masters(m1=leader(BACKUP[:-5])).client([M1]) as sdk, pytest.raises(InvalidSpec, match="truncated"):
        sdk.save_snapshot(target)
    assert target.read_bytes() == b"the previous backup"
    assert [p.name for p in tmp_path.iterdir()] == ["backup.snap"]


def test_a_damaged_file_is_refused_before_any_request(tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.snap"
    damaged.write_bytes(BACKUP.replace(b'"jobs":[]', b'"jobs":{}'))
    masters = Masters(m1=leader())
    with masters.client([M1]) as sdk, pytest.raises(InvalidSpec, match="corrupt") as refused:
        sdk.restore_snapshot(damaged)
    assert refused.value.code == "invalid_snapshot" and masters.requests == []


def test_restore_and_gc_through_both_clients(tmp_path: Path) -> None:
    backup = tmp_path / "backup.snap"
    backup.write_bytes(BACKUP)
    masters = Masters(m1=leader())
    with masters.client([M1]) as sdk:
        assert sdk.restore_snapshot(backup).index == 9
        assert sdk.system_gc().jobs == ["j1"]

    async def run() -> None:
        async with masters.async_client([M1]) as sdk:
            assert (await sdk.restore_snapshot(backup)).source_index == 7
            assert (await sdk.system_gc()).index == 8
            assert (await sdk.save_snapshot(tmp_path / "again.snap")).index == 7

    asyncio.run(run())
    assert (tmp_path / "again.snap").read_bytes() == BACKUP
    assert json.loads(BACKUP.split(b"\n", 1)[0])["format"] == "claud-snapshot"
