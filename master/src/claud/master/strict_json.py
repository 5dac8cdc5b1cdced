"""JSON as the standard defines it, for every body a master parses by hand.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``-Infinity``, which no
other JSON parser does: pydantic writes such a value into the log as ``null``,
and that entry then fails to decode on every replica. Numbers too long to be
numbers (``1e400``; integers of more than 4,300 digits) are refused the same
way, as a ``ValueError``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: standard JSON, but no float can hold it
        raise ValueError(f"{text[:40]} is out of range for a number")
    return value


_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads(data: str | bytes) -> Any:
    """Parse ``data``; ValueError for anything that is not standard JSON."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return _decoder.decode(data)
    except RecursionError:  # [[[[...: nested deeper than the interpreter's stack
        raise ValueError("JSON nested too deeply") from None
