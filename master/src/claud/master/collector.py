"""When the tables' new rows leave the cyclic garbage collector's view, and which of its pauses are logged.

Every job is some twenty objects the collector tracks (the row, its spec and
their nested models, the event list). CPython runs a full collection each
time the objects that survived the young ones grow by a quarter, and a full
collection walks every tracked object: with 50,000 jobs, a second or more with
the event loop held, measured while submits commit (long enough for an
election), and a tenth of a master's CPU per submitted job while the tables
grow. The rows hold no reference cycles (they are freed by their reference
counts), so they need no collector: after enough changes have been applied,
:class:`RowFreezer` runs the young collections (cheap: the objects made since
the last one) and then :func:`gc.freeze` moves every surviving object to the
permanent generation, as restoring a snapshot already does
(``state._collector_paused``). The full collections that remain walk only
what survived since the last freeze.

The price: a reference cycle that was alive at a freeze and dies later is
never collected (a frozen object is still freed by its reference count). The
objects alive at a freeze are the tables and what requests in flight hold at
that moment; a freeze happens at most every ``FREEZE_AFTER_CHANGES`` applied
changes, so that price stays small against the pauses it removes.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sized
from typing import Any

from claud.daemon.logfmt import log_event

log = logging.getLogger("claud.master")

#: Applied changes (a job submitted, placed, started, ...) between two freezes.
FREEZE_AFTER_CHANGES = 2000


class RowFreezer:
    """An applied subscriber: counts the changes and freezes the heap every ``after`` of them."""

    def __init__(self, after: int = FREEZE_AFTER_CHANGES) -> None:
        if after < 1:
            raise ValueError("after must be at least 1")
        self.after = after
        self.pending = 0
        #: Freezes done (telemetry, tests).
        self.freezes = 0

    def applied(self, changes: Sized) -> None:
        self.pending += len(changes)
        if self.pending < self.after:
            return
        self.pending = 0
        gc.collect(1)  # what died young goes first; generations 0 and 1 only: cheap
        gc.freeze()
        self.freezes += 1


#: A collection at least this long is logged (``gc.pause``), seconds: it held the whole process
#: (the event loop and every thread), so it is a suspect for any late consensus tick.
LONG_PAUSE_SECONDS = 0.1

_started: list[float] = []


def _pause_callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    if not _started:
        return
    took = time.perf_counter() - _started[0]
    if took >= LONG_PAUSE_SECONDS:
        log_event(log, "gc.pause", logging.WARNING, ms=round(took * 1000), generation=info.get("generation"),
                  collected=info.get("collected"), frozen=gc.get_freeze_count())


def watch_pauses() -> None:
    """Log every long collection from now on (once per process; a master's ``__main__`` calls it)."""
    if _pause_callback not in gc.callbacks:
        gc.callbacks.append(_pause_callback)
