"""The slave's small HTTP API: health, and its containers' logs for the masters.

The agent's loops start and stop with the app (the FastAPI lifespan), so one
uvicorn process is one slave, and a SIGTERM to uvicorn stops the agent cleanly
(leaving the containers running).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from claud.api import ErrorBody, ErrorDetail
from claud.api.logfmt import log_event
from claud.slave.agent import Agent
from claud.api.agent import CLUSTER_SECRET_HEADER
from claud.slave.runtime import Runtime, RuntimeUnavailable, make_runtime
from claud.slave.settings import SlaveSettings

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def _error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


def parse_tail(tail: str) -> int | None:
    """``all`` (None) or a count of lines; anything else is the caller's mistake."""
    if tail == "all":
        return None
    if tail.isdigit():
        return int(tail)
    raise ApiError(422, "invalid_request", f"tail must be 'all' or a number of lines, not {tail!r}", "tail")


def create_app(settings: SlaveSettings, *, runtime: Runtime | None = None) -> FastAPI:
    """One slave as an ASGI app; ``runtime`` defaults to the one the settings name."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = Agent(settings, runtime or make_runtime(settings))
        app.state.agent = agent
        await agent.start()
        try:
            yield
        finally:
            await agent.stop()

    app = FastAPI(
        title=f"claud-slave {settings.id}",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body")]
        field = ".".join(loc) or None
        return _error_response(
            422, "invalid_request", f"{field or 'request'}: {first.get('msg', 'invalid')}", field
        )

    def require_secret(request: Request) -> None:
        secret = settings.cluster_secret
        if secret is None:
            return
        given = request.headers.get(CLUSTER_SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise ApiError(401, "unauthorized", f"missing or wrong {CLUSTER_SECRET_HEADER} header")

    def agent_of(request: Request) -> Agent:
        return request.app.state.agent  # type: ignore[no-any-return]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/status", dependencies=[Depends(require_secret)])
    async def status(request: Request) -> dict[str, Any]:
        """What this agent believes: handy when a job does not start."""
        agent = agent_of(request)
        leader = agent.masters.leader
        desired = agent.desired
        return {
            "id": settings.id,
            "runtime": agent.runtime.name,
            "fenced": agent.fenced,
            "leader_id": leader[0] if leader else None,
            "leader_address": leader[1] if leader else None,
            "desired": None if desired is None else sorted(desired),
            "allocations": [s.model_dump(mode="json") for s in agent.statuses],
        }

    @app.get(
        "/v1/allocations/{alloc_id}/logs",
        dependencies=[Depends(require_secret)],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/plain": {}}}, 404: {"model": ErrorBody}},
    )
    async def allocation_logs(
        request: Request,
        alloc_id: str,
        follow: bool = Query(False, description="keep streaming until the container exits"),
        tail: str = Query("all", description="'all' or the number of last lines"),
    ) -> StreamingResponse:
        lines = parse_tail(tail)
        agent = agent_of(request)
        try:
            container = await agent.runtime.find(alloc_id)
        except RuntimeUnavailable as exc:
            raise ApiError(503, "runtime_unavailable", str(exc)) from None
        if container is None:
            raise ApiError(
                404, "not_found", f"no container of allocation {alloc_id!r} on slave {settings.id}"
            )
        source = agent.runtime.logs(container.container_id, follow=follow, tail=lines)

        async def body() -> AsyncIterator[bytes]:
            # Once the 200 is sent an error can only end the stream; say why in the log.
            try:
                async for chunk in source:
                    yield chunk
            except RuntimeUnavailable as exc:
                log_event(logger, "logs.interrupted", logging.WARNING, alloc=alloc_id, error=str(exc))
            finally:
                await source.aclose()

        return StreamingResponse(
            body(),
            media_type="text/plain; charset=utf-8",
            headers={"X-Claud-Container-Id": container.container_id},
        )

    return app
