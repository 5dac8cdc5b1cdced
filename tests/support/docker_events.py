"""Docker's own event history as the judge of "never twice".

The masters and the agents can be wrong about what ran; the engine is not.
The judging is ``claud verify``'s (claud.client.verify: ``parse_event``,
``run_intervals``, ``overlaps``, ``successful_exits``, pure, and re-exported
here under the names the campaign knows); ``EventRecorder`` is the thin shell
that records the engine live through a campaign.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from claud.client.verify import (
    ACTIONS,
    ContainerEvent,
    Overlap,
    overlaps,
    parse_event,
    run_intervals,
    successful_exits,
)
from claud.client.verify import ContainerInterval as RunInterval

__all__ = ["ACTIONS", "ContainerEvent", "EventRecorder", "Overlap", "RunInterval", "overlaps", "parse_event",
           "run_intervals", "successful_exits"]


class EventRecorder:
    """Records the engine's events of the given slaves' containers, live, from ``start``.

    Live, because the engine keeps only its last 256 events for a ``since`` query
    (moby's ``eventsLimit``): on a busy engine, history read at the end has lost
    the starts of the campaign's first containers. At ``stop`` the stream is closed
    and the short tail since the last event received is read from history, to
    miss nothing up to ``until``.
    """

    def __init__(self, slave_ids: Iterable[str], since: float) -> None:
        import threading

        self.slave_ids = set(slave_ids)
        self.since = since
        self._raw: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    _FILTERS: ClassVar[dict[str, str]] = {"type": "container", "label": "claud.slave"}

    def _keep(self, raw: Mapping[str, Any]) -> None:
        attributes = (raw.get("Actor") or {}).get("Attributes") or {}
        if attributes.get("claud.slave") not in self.slave_ids:
            return
        key = (str((raw.get("Actor") or {}).get("ID")), str(raw.get("Action")), int(raw.get("timeNano", 0)))
        with self._lock:
            self._raw.setdefault(key, dict(raw))

    def start(self) -> EventRecorder:
        import docker

        self._client = docker.from_env(timeout=60)
        self._stream = self._client.events(since=math.floor(self.since) - 1, filters=self._FILTERS, decode=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for raw in self._stream:
                self._keep(raw)
        except Exception as exc:  # noqa: BLE001 - the stream closed by stop(), or the engine went away
            self.error = exc

    def stop(self, until: float) -> list[ContainerEvent]:
        """Every event recorded from ``since`` to ``until``, parsed."""
        import docker

        with self._lock:
            last = max((k[2] for k in self._raw), default=int(self.since * 1e9)) / 1e9
        if self._stream is not None:
            self._stream.close()
        self._thread.join(10)
        client = docker.from_env(timeout=60)
        try:
            tail = client.events(since=math.floor(last) - 1, until=math.ceil(until) + 1,
                                 filters=self._FILTERS, decode=True)
            try:
                for raw in tail:
                    self._keep(raw)
            finally:
                tail.close()
        finally:
            client.close()
            if self._client is not None:
                self._client.close()
        with self._lock:
            ordered = sorted(self._raw.values(), key=lambda r: int(r.get("timeNano", 0)))
        parsed = [parse_event(raw, seq) for seq, raw in enumerate(ordered)]
        return [e for e in parsed if e is not None]

    def intervals(self, until: float) -> list[RunInterval]:
        return run_intervals(self.stop(until), window_start=self.since)

    def close(self) -> None:
        """Stop listening without reading anything (cleanup after a failure)."""
        import contextlib

        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close()
