"""The rows applied leave the cyclic collector's walks every FREEZE_AFTER_CHANGES changes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from claud.master.collector import RowFreezer


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session walks everything again


def test_the_heap_is_frozen_once_enough_changes_are_applied() -> None:
    freezer = RowFreezer(after=10)
    gc.unfreeze()
    freezer.applied([object()] * 9)
    assert freezer.freezes == 0 and gc.get_freeze_count() == 0
    rows = [{"row": i} for i in range(100)]  # long-lived and tracked, as table rows are
    freezer.applied([object()] * 1)
    assert freezer.freezes == 1 and gc.get_freeze_count() >= len(rows)
    freezer.applied([object()] * 9)
    assert freezer.freezes == 1  # counted again from zero


def test_a_frozen_row_without_cycles_is_still_freed_when_dropped() -> None:
    import weakref

    class Row:
        pass

    row = Row()
    alive = weakref.ref(row)
    RowFreezer(after=1).applied([row])
    del row
    assert alive() is None


def test_the_freezer_needs_a_positive_count() -> None:
    with pytest.raises(ValueError):
        RowFreezer(after=0)
