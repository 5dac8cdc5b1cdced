"""Log the garbage collector's long pauses: a full collection over big tables holds the
whole process (the event loop and every thread), so it is a suspect for any late tick."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from claud.daemon.logfmt import log_event

log = logging.getLogger("claud.master")

#: A collection at least this long is logged (``gc.pause``), seconds.
LONG_PAUSE_SECONDS = 0.1

_started: list[float] = []


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    if not _started:
        return
    took = time.perf_counter() - _started[0]
    if took >= LONG_PAUSE_SECONDS:
        log_event(log, "gc.pause", logging.WARNING, ms=round(took * 1000), generation=info.get("generation"),
                  collected=info.get("collected"), tracked=len(gc.get_objects(info.get("generation", 2))))


def watch() -> None:
    """Start logging long collections (once per process)."""
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)
