"""The slave's small HTTP API: health, and for the masters its containers' logs and ``claud exec``.

The agent's loops start and stop with the app (the FastAPI lifespan), so one
uvicorn process is one slave, and a SIGTERM to uvicorn stops the agent cleanly
(leaving the containers running).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from claud.api import ErrorBody
from claud.api.chaos import ChaosAction, FaultRequest
from claud.api.jobs import MAX_EXEC_OUTPUT, ExecResult, SlaveExecRequest
from claud.api.protocol import (
    CHAOS_PATH,
    CLUSTER_SECRET_HEADER,
    CONTAINER_ID_HEADER,
    SLAVE_EXEC_ROUTE,
    SLAVE_JOB_VOLUMES_ROUTE,
    SLAVE_LOGS_ROUTE,
)
from claud.daemon.api_errors import ApiError, error_body
from claud.daemon.faults import FaultMiddleware, Faults
from claud.daemon.logfmt import log_event
from claud.daemon.refusal_log import RefusalLog
from claud.slave.agent import Agent
from claud.slave.runtime import (
    ExecRefused,
    ExecTimeout,
    Phase,
    Runtime,
    RuntimeUnavailable,
    make_runtime,
)
from claud.slave.settings import SlaveSettings

logger = logging.getLogger(__name__)

#: Seconds past an exec's own timeout before the route gives up on the runtime.
EXEC_SLACK = 2.0


def _error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field), status_code=status)


def parse_tail(tail: str) -> int | None:
    """``all`` (None) or a count of lines; anything else is the caller's mistake."""
    if tail == "all":
        return None
    if tail.isdigit():
        return int(tail)
    raise ApiError(422, "invalid_request", f"tail must be 'all' or a number of lines, not {tail!r}", "tail")


class SecretMiddleware:
    """Every route but ``/healthz`` needs the cluster secret, checked before routing.

    Only the masters call this server (for a container's logs, which hold
    whatever a job printed); its docs describe internals, so they are behind
    the secret too.
    """

    OPEN_PATHS = frozenset({"/healthz"})

    def __init__(self, app: ASGIApp, secret: str, every: float) -> None:
        self.app, self.secret = app, secret
        self.refusals = RefusalLog(logger, every)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.OPEN_PATHS:
            given = dict(scope["headers"]).get(CLUSTER_SECRET_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(given, self.secret.encode()):
                client = (scope.get("client") or ("?", 0))[0]
                self.refusals.refused(client, path=scope["path"], credential="cluster_secret")
                response = _error_response(401, "unauthorized", f"missing or wrong {CLUSTER_SECRET_HEADER} header")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: SlaveSettings, *, runtime: Runtime | None = None) -> FastAPI:
    """One slave as an ASGI app; ``runtime`` defaults to the one the settings name."""

    #: ``claud chaos`` on this slave (``--demo-faults``): its loops wait on these events.
    faults = Faults(enabled=settings.demo_faults)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        agent = Agent(settings, runtime or make_runtime(settings), faults=faults)
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
    app.add_middleware(SecretMiddleware, secret=settings.cluster_secret, every=settings.refused_log_every)
    if settings.demo_faults:
        # Outermost: a pause holds every request; a partition refuses every one (only masters call a slave).
        app.add_middleware(FaultMiddleware, faults=faults, exempt=frozenset({CHAOS_PATH}),
                           cut_off=lambda _path: True, who=f"slave {settings.id}")

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

    def agent_of(request: Request) -> Agent:
        agent: Agent = request.app.state.agent  # Starlette's state is untyped
        return agent

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        """Container starts, stop durations, fences and the lease left, in Prometheus text format
        (behind the cluster secret, like every route of a slave)."""
        return PlainTextResponse(
            agent_of(request).telemetry.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @app.get("/v1/status")
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

    @app.post(CHAOS_PATH, status_code=202)
    async def chaos(body: FaultRequest) -> JSONResponse:
        """A fault for this slave (``claud chaos``), forwarded by a master; 403 without --demo-faults."""
        if not faults.enabled:
            raise ApiError(403, "chaos_disabled", f"slave {settings.id} was not started with --demo-faults")
        result = faults.take(body, settings.id, "slave")
        kill = BackgroundTask(faults.kill_now) if body.action is ChaosAction.KILL else None
        return JSONResponse(result.model_dump(mode="json"), status_code=202, background=kill)

    @app.get(
        SLAVE_LOGS_ROUTE,
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
            headers={CONTAINER_ID_HEADER: container.container_id},
        )

    @app.post(
        SLAVE_EXEC_ROUTE,
        response_model=ExecResult,
        responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 504: {"model": ErrorBody}},
    )
    async def allocation_exec(request: Request, alloc_id: str, body: SlaveExecRequest) -> ExecResult:
        """Run a command in the allocation's running container (``claud exec``, through a master)."""
        agent = agent_of(request)
        try:
            container = await agent.runtime.find(alloc_id)
        except RuntimeUnavailable as exc:
            raise ApiError(503, "runtime_unavailable", str(exc)) from None
        if container is None:
            raise ApiError(404, "not_found", f"no container of allocation {alloc_id!r} on slave {settings.id}")
        if container.phase is not Phase.RUNNING:
            raise ApiError(409, "not_running", f"the container of allocation {alloc_id} is {container.phase.value}")
        fields: dict[str, Any] = {
            "job": container.job_id, "alloc": alloc_id, "argv": body.command, "timeout": body.timeout,
        }
        try:
            # The runtime bounds the command itself; this bounds a runtime that would not.
            done = await asyncio.wait_for(
                agent.runtime.exec_output(
                    container.container_id, body.command, within=body.timeout, limit=MAX_EXEC_OUTPUT
                ),
                body.timeout + EXEC_SLACK,
            )
        except (ExecTimeout, TimeoutError):
            log_event(logger, "exec.timeout", logging.WARNING, **fields)
            raise ApiError(504, "exec_timeout", f"the command did not end within {body.timeout:g}s") from None
        except ExecRefused as exc:
            log_event(logger, "exec.refused", logging.WARNING, **fields, error=str(exc))
            raise ApiError(409, "not_running", f"allocation {alloc_id}: {exc}") from None
        except RuntimeUnavailable as exc:
            log_event(logger, "exec.failed", logging.WARNING, **fields, error=str(exc))
            raise ApiError(503, "runtime_unavailable", str(exc)) from None
        log_event(logger, "exec.done", logging.INFO, **fields, exit_code=done.exit_code,
                  stdout_bytes=len(done.stdout), stderr_bytes=len(done.stderr), truncated=done.truncated)
        return ExecResult(
            job_id=container.job_id, alloc_id=alloc_id, node_id=settings.id, exit_code=done.exit_code,
            stdout=done.stdout.decode(errors="replace"), stderr=done.stderr.decode(errors="replace"),
            truncated=done.truncated,
        )

    @app.delete(SLAVE_JOB_VOLUMES_ROUTE, responses={409: {"model": ErrorBody}})
    async def job_volumes_removed(request: Request, job_id: str) -> dict[str, list[str]]:
        """The masters' GC removed the job: remove its named volumes here (never one still in use,
        never those of a job the masters still ask this slave to run)."""
        agent = agent_of(request)
        desired = agent.desired
        if desired is None or any(alloc.job_id == job_id for alloc in desired.values()):
            raise ApiError(409, "conflict", f"job {job_id} is still wanted on slave {settings.id} (or no leader "
                           "has spoken yet): its volumes stay")
        try:
            # Its exited containers first (they hold the volumes, and no master serves their logs any more);
            # a running one stays, and so do its volumes: the reconciler stops it, as it is not desired.
            for container in await agent.runtime.list():
                if container.job_id == job_id and container.phase is not Phase.RUNNING:
                    await agent.runtime.remove(container.container_id)
            removed, kept = await agent.runtime.remove_job_volumes(job_id)
        except RuntimeUnavailable as exc:
            raise ApiError(503, "runtime_unavailable", str(exc)) from None
        if removed or kept:
            log_event(logger, "volumes.removed", job=job_id, removed=removed, kept=kept)
        return {"removed": removed, "kept": kept}

    return app
