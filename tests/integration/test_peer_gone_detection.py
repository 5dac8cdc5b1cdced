"""A peer link reports its peer gone only when the peer's port refuses connections.

Real sockets on loopback: a peer that hangs up and stops listening (a killed
process) is reported at once, without any timeout; one that hangs up but
still listens (a restart of its server, an idle close), or that stops
answering (paused, cut off), never is.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable

from test_peer_http import in_event_loop

from claud.master.peer_http import PeerConnection, refuses
from claud.master.peers import MasterDirectory
from claud.master.transport import PeerLink

NO_CONTENT = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"


class Peer:
    """Answers every request 204 until told to hang up, stop listening, or go silent."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.accepted = 0
        self.requests = 0
        self.silent = False
        #: On the next request: stop listening and reset every connection (a process killed mid-request).
        self.die_on_request = False
        #: Reset every new connection at once (a dying process's listener, its sockets closing one by one).
        self.dying = False

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def hang_up(self, *, stop_listening: bool) -> None:
        assert self.server is not None
        if stop_listening:
            self.server.close()
        for writer in self.writers:
            writer.close()

    def die(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            # One hung up before is closed already (its socket may be gone): only the open ones reset.
            if writer.transport.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        if self.dying:
            self.die()
            return
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                self.requests += 1
                if self.die_on_request:
                    self.die()
                    return
                if self.silent:
                    await asyncio.Event().wait()
                writer.write(NO_CONTENT)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def poll(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` holds (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def linked(peer: Peer) -> tuple[PeerLink, list[int]]:
    address = await peer.start()
    directory = MasterDirectory(1, "127.0.0.1:1")
    directory.learn(2, address)
    gone: list[int] = []
    link = PeerLink(directory, 2, PeerConnection(None, {}), on_gone=gone.append, probe_timeout=0.5)
    link.send({"type": "heartbeat"})
    await poll(lambda: peer.requests == 1 and link.reachable, 5, "the first batch answered")
    return link, gone


@in_event_loop
async def test_a_peer_that_hangs_up_and_stops_listening_is_reported_gone_at_once_while_idle() -> None:
    peer = Peer()
    link, gone = await linked(peer)
    try:
        peer.hang_up(stop_listening=True)  # what a SIGKILL does: the kernel closes both
        seconds = await poll(lambda: gone == [2], 2, "the peer reported gone")
        assert seconds < 0.5  # the idle connection noticed the hang-up: no request, no timeout
        link.send({"type": "heartbeat"})  # refused again: still one report for the outage
        await poll(lambda: not link.reachable, 2, "the next batch to fail")
        assert gone == [2]
    finally:
        await link.close()


@in_event_loop
async def test_a_peer_that_hangs_up_but_still_listens_is_not_reported_and_a_later_outage_is() -> None:
    peer = Peer()
    link, gone = await linked(peer)
    try:
        peer.hang_up(stop_listening=False)
        await poll(lambda: peer.accepted == 2, 2, "the probe connection")
        await poll(lambda: link._probe is not None and link._probe.done(), 2, "the probe to finish")
        assert gone == []
        link.send({"type": "heartbeat"})
        await poll(lambda: peer.requests == 2, 2, "the next batch on a new connection")
        peer.hang_up(stop_listening=True)
        await poll(lambda: gone == [2], 2, "the peer reported gone")
    finally:
        await link.close()


@in_event_loop
async def test_a_peer_that_resets_the_connection_mid_request_and_stops_listening_is_reported_gone() -> None:
    peer = Peer()
    link, gone = await linked(peer)
    try:
        peer.die_on_request = True
        link.send({"type": "heartbeat"})
        await poll(lambda: gone == [2], 2, "the peer reported gone")
    finally:
        await link.close()


@in_event_loop
async def test_a_listener_that_still_accepts_while_its_process_dies_is_asked_again() -> None:
    peer = Peer()
    link, gone = await linked(peer)
    try:
        peer.dying = True  # the probe's connection is reset, then the port refuses
        peer.hang_up(stop_listening=False)
        await poll(lambda: gone == [2], 2, "the peer reported gone")
        assert peer.accepted >= 2
    finally:
        await link.close()


@in_event_loop
async def test_a_peer_that_stops_answering_is_never_reported() -> None:
    peer = Peer()
    link, gone = await linked(peer)
    try:
        peer.silent = True  # paused or cut off: the connection stays open, nothing comes back
        link.send({"type": "heartbeat"})
        await poll(lambda: not link.reachable, 5, "the batch to time out")
        assert gone == []
    finally:
        await link.close()
        peer.hang_up(stop_listening=True)


@in_event_loop
async def test_only_a_refused_connection_counts_as_refusing() -> None:
    peer = Peer()
    address = await peer.start()
    assert not await refuses(address, 1.0)
    peer.hang_up(stop_listening=True)
    await poll(lambda: peer.server is not None and not peer.server.is_serving(), 2, "the listener to close")
    assert await refuses(address, 1.0)
