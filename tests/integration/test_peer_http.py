"""The masters' lean internal HTTP client against a real socket server."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from claud.api.protocol import CLUSTER_SECRET_HEADER, RAFT_PATH, WHOAMI_PATH
from claud.master import peer_http
from claud.master.peer_http import PeerConnection, PeerHttpError

Handler = Callable[[bytes, bytes], Awaitable[bytes | None]]


def in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(test)  # keeps the signature, so pytest still passes fixtures
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class TinyServer:
    """Reads one HTTP request at a time per connection and lets the test answer it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        #: The client address of each connection accepted, in order.
        self.peers: list[str] = []
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.peers.append(writer.get_extra_info("peername")[0])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-length")),
                    0,  # a GET carries no body
                )
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = await self.handler(head, body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


async def connections_for_two_posts(answer: bytes) -> int:
    """Two POSTs in a row on one PeerConnection; how many connections the server saw."""
    async def handler(head: bytes, body: bytes) -> bytes:
        return answer

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection(None, {})
        for _ in range(2):
            assert (await connection.post(address, "/x", b"{}", 2)).status == 200
        connection.close()
    return len(tiny.peers)


@in_event_loop
async def test_requests_share_one_connection_and_carry_the_secret() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        return ok(body)

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection(None, {CLUSTER_SECRET_HEADER: "s3cret"})
        for n in range(3):
            resp = await connection.post(address, RAFT_PATH, f'{{"n":{n}}}'.encode(), 2)
            assert (resp.status, resp.body) == (200, f'{{"n":{n}}}'.encode())
        connection.close()
    assert len(tiny.peers) == 1
    head, _ = tiny.requests[0]
    assert head.startswith(f"POST {RAFT_PATH} HTTP/1.1\r\n".encode())
    assert f"{CLUSTER_SECRET_HEADER}: s3cret\r\n".encode() in head


@in_event_loop
async def test_a_get_has_no_body_and_shares_the_connection_with_posts() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        return ok(b'{"id":2}')

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection(None, {CLUSTER_SECRET_HEADER: "s3cret"})
        assert (await connection.get(address, WHOAMI_PATH, 2)).body == b'{"id":2}'
        assert (await connection.post(address, RAFT_PATH, b"{}", 2)).status == 200
        connection.close()
    assert len(tiny.peers) == 1
    head, body = tiny.requests[0]
    assert head.startswith(f"GET {WHOAMI_PATH} HTTP/1.1\r\n".encode()) and body == b""
    assert b"content-length" not in head.lower() and b"content-type" not in head.lower()
    assert f"{CLUSTER_SECRET_HEADER}: s3cret\r\n".encode() in head


@in_event_loop
async def test_an_answer_with_connection_close_means_a_new_connection_next_time() -> None:
    assert await connections_for_two_posts(ok(extra="connection: close\r\n")) == 2


@in_event_loop
async def test_an_idle_connection_is_replaced_before_the_server_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer_http, "IDLE_REUSE_LIMIT", 0.0)
    assert await connections_for_two_posts(ok()) == 2


@in_event_loop
async def test_a_silent_server_times_out_and_the_next_request_starts_clean() -> None:
    release = asyncio.Event()

    async def handler(head: bytes, body: bytes) -> bytes:
        if body == b'"hang"':
            await release.wait()
        return ok(body)

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection(None, {})
        with pytest.raises(PeerHttpError, match="no answer"):
            await connection.post(address, "/x", b'"hang"', 0.2)
        resp = await connection.post(address, "/x", b'"next"', 2)
        # The late answer to the first request must not be taken for the second's.
        assert resp.body == b'"next"'
        release.set()
        connection.close()
    assert len(tiny.peers) == 2


@in_event_loop
async def test_unsupported_framing_and_refused_connections_are_errors() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection(None, {})
        with pytest.raises(PeerHttpError, match="transfer-encoding"):
            await connection.post(address, "/x", b"{}", 2)
    with pytest.raises(PeerHttpError):
        await PeerConnection(None, {}).post(address, "/x", b"{}", 2)  # the server is gone


@in_event_loop
async def test_connections_start_from_the_given_local_address() -> None:
    async def handler(head: bytes, body: bytes) -> bytes:
        return ok()

    tiny = TinyServer(handler)
    async with tiny as address:
        connection = PeerConnection("127.0.0.42", {})
        assert (await connection.post(address, "/x", b"", 2)).status == 200
        connection.close()
    assert tiny.peers == ["127.0.0.42"]
