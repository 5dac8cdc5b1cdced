"""The one HTTP client masters use with each other: lean keep-alive HTTP/1.1.

Masters talk to each other many times per commit: consensus messages both
ways, and the writes followers forward. A general-purpose client (httpx)
spent more of a master's CPU on this traffic than the work itself, in
connection-pool bookkeeping, cancellation shields and per-request objects
(measured with bench/throughput.py when this client replaced it: see commit
bc34a89 and the README's benchmark table, where the same httpx machinery
caps a load generator at ≈ 2.4 ms CPU per request). One connection per peer
that writes a request and reads the answer needs none of that. It is still
HTTP (over TLS when the cluster has a CA), so ``/v1/internal/*`` keeps one
server, one transport and one authentication check.

Every master<->master exchange goes through it, the rare ones too (asking a
``--peers`` address for its id), so there is one client to configure (local
address, TLS, the cluster secret) and one failure type, :class:`PeerHttpError`.
The master keeps httpx for one thing only: streaming a container's output
from a slave, a body of unknown length (chunked) that this client does not read.

Only what the masters' own server (uvicorn) answers is understood: a status
line, headers, and a ``Content-Length`` body. Anything else closes the
connection and raises :class:`PeerHttpError`.

A connection also tells its owner (``on_lost``) when the peer closes or resets
it, idle or not: the first sign that the peer's process may be gone, which
:func:`refuses` then settles without waiting for any timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from claud.api.protocol import JSON_CONTENT_TYPE
from claud.daemon.addresses import parse_host_port

#: A connection unused this long is replaced rather than reused: the server
#: closes idle ones (uvicorn after 5 s), and a request written into a socket
#: the server is closing is lost without an answer.
IDLE_REUSE_LIMIT = 2.0
#: A body at most this long travels in the same write as the request head (copying it is cheaper
#: than a second send and packet); a longer one (a snapshot chunk) is written apart.
JOIN_BODY_BYTES = 64 * 1024
#: Response heads longer than this are not from a CLAUD master.
MAX_HEAD_BYTES = 16 * 1024
#: A probe connection that stays open this long has a live listener behind it.
PROBE_SETTLE = 0.05
#: Between two probes of a port whose connection was dropped at once.
PROBE_RETRY_PAUSE = 0.005


class PeerHttpError(Exception):
    """The exchange failed: no connection, a broken or odd response, or a timeout.

    ``sent`` says whether the request had been written when it failed: after
    that the peer may have acted on it, so a write's fate is unknown.
    """

    def __init__(self, message: str, *, sent: bool, refused: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        #: The peer's port refused the connection: nothing listens there (its process is gone).
        self.refused = refused


class PeerResponse:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body


class PeerConnection:
    """One connection to one address, one request at a time.

    Callers serialise their use of it (each peer link and each forwarding
    task owns its connection), so there is no lock and no pipelining.
    ``on_lost``, when set, is called (from the event loop, never raising into
    it) when the peer closes or resets the connection, not when this side does.
    """

    on_lost: Callable[[], None] | None = None

    def __init__(self, local_address: str | None, headers: dict[str, str], tls: ssl.SSLContext | None = None) -> None:
        self._local_address = local_address
        self._tls = tls
        self._extra_head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._address: str | None = None
        self._last_used = 0.0
        self._sent = False

    async def post(
        self, address: str, path: str, body: bytes, timeout: float,  # noqa: ASYNC109 - expiry closes the connection
        headers: dict[str, str] | None = None, content_type: str = JSON_CONTENT_TYPE,
    ) -> PeerResponse:
        """POST ``body`` (JSON unless ``content_type`` says otherwise); a failure of any kind
        closes the connection, so the next call starts clean."""
        return await self._request("POST", address, path, body, timeout, headers, content_type)

    async def get(self, address: str, path: str, timeout: float) -> PeerResponse:  # noqa: ASYNC109 - as post
        """GET ``path`` (no body); fails like :meth:`post`."""
        return await self._request("GET", address, path, None, timeout, None, JSON_CONTENT_TYPE)

    async def _request(
        self, method: str, address: str, path: str, body: bytes | None, timeout: float,  # noqa: ASYNC109 - as post
        headers: dict[str, str] | None, content_type: str,
    ) -> PeerResponse:
        self._sent = False
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, no task per request
                return await self._exchange(method, address, path, body, headers, content_type)
        except TimeoutError:
            self.close()
            raise PeerHttpError(f"no answer from {address} within {timeout:g}s", sent=self._sent) from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            # ssl.SSLError is an OSError: a peer whose certificate does not verify lands here too.
            if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError
                          | asyncio.IncompleteReadError):
                # The peer hung up mid-exchange. A reset met while writing reaches the
                # protocol only on the next loop turn, after close() below: tell now.
                self._hung_up_mid_exchange()
            self.close()
            raise PeerHttpError(
                f"{address}: {type(exc).__name__}: {exc}", sent=self._sent,
                refused=isinstance(exc, ConnectionRefusedError),
            ) from None
        except BaseException:
            self.close()  # cancelled mid-exchange: the stream is in an unknown place
            raise

    def close(self) -> None:
        if self._writer is not None:
            protocol = self._writer.transport.get_protocol()
            if isinstance(protocol, _WatchedProtocol):
                protocol.on_lost = None  # closed by this side: nothing to report
            self._writer.close()
        self._reader = self._writer = self._address = None

    async def _exchange(
        self, method: str, address: str, path: str, body: bytes | None, headers: dict[str, str] | None,
        content_type: str,
    ) -> PeerResponse:
        now = time.monotonic()
        if (
            self._writer is None
            or self._address != address
            or self._writer.is_closing()
            or (self._reader is not None and self._reader.at_eof())  # the peer hung up: the request would be lost
            or now - self._last_used > IDLE_REUSE_LIMIT
        ):
            await self._connect(address)
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        head += self._extra_head
        if headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head += "\r\n"
        if body and len(body) <= JOIN_BODY_BYTES:
            self._writer.write(head.encode("latin-1") + body)  # one send, one packet: most requests are small
        else:
            self._writer.write(head.encode("latin-1"))
            if body:
                self._writer.write(body)  # not joined to the head: a snapshot chunk is a megabyte
        self._sent = True
        await self._writer.drain()
        response = await self._read_response(self._reader)
        self._last_used = time.monotonic()
        return response

    async def _connect(self, address: str) -> None:
        self.close()
        host, port = parse_host_port(address)
        local = (self._local_address, 0) if self._local_address else None
        # asyncio.open_connection, with a protocol that also reports the peer hanging up.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        protocol = _WatchedProtocol(reader, self._peer_hung_up)
        # The peer must prove it is the address dialled: the name checked is the host of
        # that address (an IP or a DNS name, as its certificate's SAN lists it).
        transport, _ = await loop.create_connection(
            lambda: protocol, host, port, local_addr=local, ssl=self._tls,
            server_hostname=host if self._tls else None,
        )
        self._reader, self._writer = reader, asyncio.StreamWriter(transport, protocol, reader, loop)
        self._address = address

    def _hung_up_mid_exchange(self) -> None:
        protocol = self._writer.transport.get_protocol() if self._writer is not None else None
        if isinstance(protocol, _WatchedProtocol):
            protocol.lost()

    def _peer_hung_up(self) -> None:
        if self.on_lost is not None:
            self.on_lost()

    async def _read_response(self, reader: asyncio.StreamReader) -> PeerResponse:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD_BYTES:
            raise ValueError("response head too long")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        status = int(rest[:3])
        length, keep_alive = 0, version == "HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                raise ValueError(f"unsupported transfer-encoding {value.strip()!r}")
            elif name == "connection" and value.strip().lower() == "close":
                keep_alive = False
        body = await reader.readexactly(length) if length else b""
        if not keep_alive:
            self.close()
        return PeerResponse(status, body)


class _WatchedProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that calls ``on_lost`` once when the peer ends the
    connection (FIN or reset), whether or not anyone is reading: the transport
    reads all the time, so an idle keep-alive connection notices at once."""

    def __init__(self, reader: asyncio.StreamReader, on_lost: Callable[[], None]) -> None:
        super().__init__(reader)
        self.on_lost: Callable[[], None] | None = on_lost

    def lost(self) -> None:
        """Report the hang-up, once."""
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def eof_received(self) -> bool:
        self.lost()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()
        super().connection_lost(exc)


async def refuses(address: str, timeout: float, local_address: str | None = None) -> bool:  # noqa: ASYNC109 - one probe
    """True when ``address``'s port refuses a TCP connection: nothing listens
    there, so the process that did is gone. Any other outcome within
    ``timeout`` is False: a connection that opens and stays open (a paused
    master's kernel still accepts), a timeout (a partition drops packets, it
    does not refuse), or any other error.

    A killed process's kernel closes its sockets one by one, so the listener
    may still accept for a moment after a connection was reset; such a
    connection is then reset in turn, and the port asked again."""
    host, port = parse_host_port(address)
    local = (local_address, 0) if local_address else None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reader, writer = await asyncio.open_connection(host, port, local_addr=local)
                except ConnectionRefusedError:
                    return True
                try:
                    async with asyncio.timeout(PROBE_SETTLE):
                        alive = bool(await reader.read(1))  # a server says nothing first: EOF means dropped
                except TimeoutError:
                    alive = True  # still open: something listens and keeps it
                except OSError:
                    alive = False
                finally:
                    writer.close()
                if alive:
                    return False
                await asyncio.sleep(PROBE_RETRY_PAUSE)
    except (OSError, TimeoutError):
        return False
