"""Request bodies are read here, once, within a size and a time limit.

Every route of a master takes a JSON body of bounded size, so the body is
read before routing and handed on whole: a body over the limit is refused
with 413 as soon as its ``Content-Length`` (or, chunked, its running count)
says so, before it is all buffered, and a body that trickles in slower than
the read timeout is refused with 408, so it cannot hold a connection and its
buffer for as long as the sender likes. Internal routes carry consensus
messages (a snapshot travels in one) and get a limit of their own, and so
does each of ``large_paths`` (a backup to restore).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from claud.api.protocol import INTERNAL_PREFIX


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": None}}, status_code=status,
                        headers={"Connection": "close"})


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, public_limit: int, internal_limit: int, read_timeout: float,
        large_paths: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.public_limit, self.internal_limit, self.read_timeout = public_limit, internal_limit, read_timeout
        self.large_paths = large_paths or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        internal = scope["path"].startswith(INTERNAL_PREFIX)
        limit = self.internal_limit if internal else self.large_paths.get(scope["path"], self.public_limit)
        try:
            body = await read_body(receive, scope, limit, self.read_timeout)
        except BodyTooLarge:
            too_large = _error(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
            await too_large(scope, receive, send)
            return
        except BodyTimeout:
            await _error(408, "body_timeout", f"request body not received within {self.read_timeout:g}s")(
                scope, receive, send
            )
            return
        await self.app(scope, replay(body, receive), send)


def declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(receive: Receive, scope: Scope, limit: int, timeout: float) -> bytes:  # noqa: ASYNC109 - expiry is a 408, not a cancel
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        # One timeout for the whole body, not per chunk: a sender trickling a
        # byte a second must not keep the connection for ever.
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                if not message.get("more_body"):
                    break
    except TimeoutError:
        raise BodyTimeout from None
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the next app, then the connection's own messages."""
    sent = False

    async def replayed() -> Message | Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def replayed_body(receive: Receive) -> bytes:
    """For an app inside this middleware: the body it has already read (and bounded), in one piece."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)
