"""Idle or trickling connections cannot lock anyone out of a master.

uvicorn arms no timer on a connection until it has answered a request, so a
socket that connects and sends nothing is kept for ever, and ``limit_concurrency``
only answers 503 to requests that already arrived. A thousand such sockets use
up a 1,024-file limit and the master can no longer accept ``/healthz``, a
peer's consensus messages or a slave's heartbeat. Two rules fix that:

- a connection must deliver a request's headers within ``header_timeout`` of
  connecting (or of its previous answer, when kept alive);
- connections are capped below the file limit; when a new one arrives at the
  cap, the connection that has been idle longest (no request in progress) is
  closed to make room, as nginx's ``reset_timedout_connection`` does, and only
  when every connection is busy is the newcomer itself refused.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Files kept for everything that is not a client connection: the log store,
#: peer and slave connections, discovery sockets, the data directory.
RESERVED_FILES = 128


def raise_file_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def connection_budget(configured: int, file_limit: int) -> int:
    return max(16, min(configured, file_limit - RESERVED_FILES))


def guarded_protocol(max_connections: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the two rules above, as a class uvicorn can be given (``http=``)."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _idle_since: float = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._idle_since = time.monotonic()
            if len(self.connections) > max_connections and not self._evict_idle():
                transport.close()
                return
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._idle_since = time.monotonic()
                self._arm_header_timer()

        def send_400_response(self, msg: str) -> None:
            # The parser refused the request (a control character in a header, say):
            # answered with the error body every other status has, not plain text.
            body = json.dumps({"error": {"code": "malformed_request", "message": msg, "field": None}}).encode()
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            for name, value in self.server_state.default_headers:
                head.append(name + b": " + value + b"\r\n")
            head.append(
                b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(b"".join(head) + body)
            self.transport.close()

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _evict_idle(self) -> bool:
            idle = [c for c in self.connections if c is not self and isinstance(c, GuardedHttpToolsProtocol)
                    and not c._busy()]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._idle_since)
            oldest.transport.close()
            oldest.connections.discard(oldest)
            return True

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_deadline)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if not self._busy() and not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
