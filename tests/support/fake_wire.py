"""Canned master answers for SDK and CLI tests that run against httpx.MockTransport."""

from __future__ import annotations

from typing import Any

NOW = "2026-01-01T00:00:00Z"


def job_json(**fields: Any) -> dict[str, Any]:
    """A job view as a master renders it; ``fields`` override the defaults."""
    job = {"id": "j1", "name": "hello", "image": "claud/busybox:latest", "state": "pending",
           "created_at": NOW, "updated_at": NOW}
    job.update(fields)
    return job


def error_json(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}
