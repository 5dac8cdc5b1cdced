"""The error both daemons answer with, and its body: ``{"error": {"code", "message", "field"}}``.

The body is :class:`claud.api.ErrorBody`, which the SDK reads; the master and the
slave raise :class:`ApiError` from a route and render it in one exception handler.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a stable ``code``, a message for a
    person and, when one input is to blame, the ``field`` that names it."""

    def __init__(
        self, status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.headers = status, code, message, field, headers


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON of an error answer (``field`` is null when no one input is to blame)."""
    return {"error": {"code": code, "message": message, "field": field}}
