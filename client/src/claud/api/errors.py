"""The error body every master endpoint answers with."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    code: str  # machine-readable: "not_found", "invalid_spec", "no_leader", ...
    message: str  # one human sentence, naming the field or object at fault
    field: str | None = None  # dotted path of the bad field, for 422s


class ErrorBody(BaseModel):
    error: ErrorDetail
