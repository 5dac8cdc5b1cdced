"""Cluster events as the SDK hands them out, and the server-sent-events decoder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One transition from ``GET /v1/events``.

    ``type`` is the stream's event name (``"job"`` or ``"node"``; ``"message"``
    when the master named none) and ``data`` its decoded JSON payload, e.g.
    ``{"type": "job", "id": "j1", "state": "running", "at": "...",
    "node_id": "s1", "message": "", "index": 42}``. The payload is kept as
    a plain value rather than a model so that fields a newer master adds
    reach the caller instead of being dropped; ``id`` is the stream's event
    id, when the master sends one.
    """

    type: str
    data: Any
    id: str | None = None


class EventDecoder:
    """Incremental decoder of the text/event-stream format, one line at a time.

    Follows the HTML living standard's parsing rules (comments, multi-line
    ``data``, the sticky last event id) so keep-alive comments and proxies
    that re-chunk the stream are harmless.
    """

    def __init__(self) -> None:
        self._type = ""
        self._data: list[str] = []
        self._last_id: str | None = None

    def feed(self, line: str) -> Event | None:
        """Take one line without its ending; return an event when the line completes one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> Event | None:
        kind, self._type = self._type or "message", ""
        if not self._data:
            return None
        text, self._data = "\n".join(self._data), []
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        return Event(type=kind, data=data, id=self._last_id)
