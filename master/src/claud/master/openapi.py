"""What the OpenAPI document says about each route's answers, and the offline /docs page.

Every status a route can answer is listed with the project's error body
(``ErrorBody``); FastAPI's own ``HTTPValidationError`` never appears, since
the master renders every 422 as ``{"error": {...}}`` (see ``create_app``).
Swagger UI's scripts are served from the ``fastapi-offline`` package, so the
docs work on a machine with no way out to a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from claud.api import ErrorBody

_STRING = {"type": "string"}
_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
}


#: What FastAPI's ``responses=`` takes: a status (or "default") to its description.
Responses = dict[int | str, dict[str, Any]]


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        response["headers"] = headers
    return response


BAD_JSON: Responses = {400: _error("the body is not valid JSON (`malformed_json`), or the request is malformed")}
UNAUTHORIZED: Responses = {
    401: _error(
        "missing or wrong API token (`unauthorized`)",
        {"WWW-Authenticate": {"description": "`Bearer`: send `Authorization: Bearer <token>`", "schema": _STRING}},
    )
}
NOT_FOUND: Responses = {404: _error("no such job or node (`not_found`)")}
CONFLICT: Responses = {409: _error("the request contradicts the object's state (`conflict`)")}
EXEC_CONFLICT: Responses = {
    409: _error("the job has no running allocation (`not_running`) or `alloc` is not it (`alloc_mismatch`)")
}
EXEC_TIMEOUT: Responses = {504: _error("the command did not end within its timeout (`exec_timeout`)")}
TOO_LARGE: Responses = {413: _error("the body is over the size limit")}
INVALID: Responses = {422: _error("a parameter or the body is invalid (`invalid_spec`); `field` names it")}
BAD_GATEWAY: Responses = {502: _error("the job's slave is unreachable (`slave_unreachable`) or failed (`slave_error`)")}
UNAVAILABLE: Responses = {
    503: _error(
        "the write cannot be committed now: no leader (`no_leader`), not committed in time "
        "(`not_committed`) or its fate is unknown (`outcome_unknown`); retry (with the same idempotency key)",
        _RETRY_AFTER,
    )
}
NOT_READY: Responses = {503: _error("no leader elected yet (`no_leader`)", _RETRY_AFTER)}
SERVER_ERROR: Responses = {500: _error("an unexpected error in the master")}

#: On every route behind the token.
AUTHENTICATED: Responses = {**UNAUTHORIZED, **SERVER_ERROR}
#: On every write: it is committed through the replicated log.
WRITE: Responses = {**UNAVAILABLE}


class TextStream(StreamingResponse):
    """A plain-text stream (container logs)."""

    media_type = "text/plain"


class EventStream(StreamingResponse):
    """A server-sent events stream."""

    media_type = "text/event-stream"


def operation_id(route: APIRoute) -> str:
    """Routes name their operation (``operation_id=``); others get one from their function name."""
    head, *rest = route.name.split("_")
    return head + "".join(part.title() for part in rest)


def _drop_validation_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Point any leftover reference to FastAPI's validation error at ErrorBody, and drop its schemas."""
    components = schema.get("components", {}).get("schemas", {})
    gone = {name for name in ("HTTPValidationError", "ValidationError") if name in components}
    for name in gone:
        del components[name]
    if not gone:
        return schema
    targets = {f"#/components/schemas/{name}" for name in gone}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in targets:
                node["$ref"] = "#/components/schemas/ErrorBody"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _errors_as_json(schema: dict[str, Any]) -> dict[str, Any]:
    """Error answers are JSON even on routes that stream text (FastAPI files them under the route's type)."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[:1] in "45" and content and "application/json" not in content:
                    response["content"] = {"application/json": next(iter(content.values()))}
    return schema


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` with no trace of FastAPI's default validation error body."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = _errors_as_json(_drop_validation_schemas(schema))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def swagger_static_dir() -> Path:
    """Swagger UI's files (``swagger-ui-bundle.js``, ``swagger-ui.css``, ``favicon.png``)."""
    return Path(str(files("fastapi_offline") / "static"))


#: Where the docs page's files are served (open without a token, see TokenAuthMiddleware).
DOCS_STATIC = "/docs/static"


def install_docs(app: FastAPI) -> None:
    """``/docs`` from local files; create the app with ``docs_url=None``."""
    app.mount(DOCS_STATIC, StaticFiles(directory=swagger_static_dir()), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )
