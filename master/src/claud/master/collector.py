"""When the tables' new rows leave the cyclic garbage collector's view.

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
from collections.abc import Sized

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
