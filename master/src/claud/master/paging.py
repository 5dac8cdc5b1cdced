"""Pagination of the API's lists: stable orders, opaque cursors, and the job list's rendering.

A list is paginated only when asked (``?limit=K``); a page ends with the
cursor of its last item (``next``), and ``?next=`` answers the items after
that one. A cursor is the last item's sort key, as urlsafe base64 of JSON, so
it stays valid while the list changes: an item added between two pages comes
later in the order or was already passed, and no item is answered twice.

Orders:

* jobs: by ``created_at`` then ``id`` (the order they were submitted in);
* a job's events: oldest first (the order they were committed in);
* nodes: masters by id, then slaves by id.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from claud.api import JobEvent
from claud.master.state import JobRecord, StateMachine

T = TypeVar("T")

#: The largest page a list answers (``?limit`` is 1..MAX_LIMIT).
MAX_LIMIT = 1000
#: Longest cursor accepted; the ones the masters hand out are far shorter.
MAX_CURSOR = 512

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class InvalidCursor(ValueError):
    """A ``next`` the masters did not hand out (or one for another list)."""


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, shape: Sequence[type]) -> list[Any]:
    """The key in ``cursor``, checked against ``shape`` (one type per element)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise InvalidCursor("next is not a cursor this list handed out") from None
    if (
        not isinstance(key, list)
        or len(key) != len(shape)
        or not all(type(part) is kind for part, kind in zip(key, shape, strict=True))  # bool is no int here
    ):
        raise InvalidCursor("next is not a cursor this list handed out")
    return key


def micros(when: datetime) -> int:
    """``when`` as whole microseconds since the epoch: exact, unlike a float timestamp."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    try:
        return _EPOCH + value * _MICROSECOND
    except OverflowError:
        raise InvalidCursor("next is not a cursor this list handed out") from None


def page(items: list[T], start: int, limit: int | None, key: Callable[[T], list[Any]]) -> tuple[list[T], str | None]:
    """``items[start:]``, at most ``limit`` of them, and the cursor after the last one (None at the end)."""
    if limit is None:
        return items[start:], None
    chosen = items[start : start + limit]
    more = start + limit < len(items)
    return chosen, encode_cursor(key(chosen[-1])) if more and chosen else None


# ---------------------------------------------------------------------- jobs


def job_cursor_key(job: JobRecord) -> list[Any]:
    return [micros(job.created_at), job.id]


def jobs_page(
    state: StateMachine, wanted: Callable[[JobRecord], bool] | None, cursor: str | None, limit: int | None
) -> tuple[list[JobRecord], str | None]:
    """The jobs in their stable order, from after ``cursor``, at most ``limit``.

    The order is the state machine's index (``StateMachine.job_order``, kept as jobs are made
    and removed), so nothing is sorted per request. Without ``wanted`` a page is a bisect
    and a slice: O(limit + log n). With it (``?state=``) the jobs from the cursor on are
    tested in order until the page is full and one more matches (so the page knows whether
    another follows): cheap for a common state, but up to every job after the cursor for a
    rare one (no index by state: a job's state moves with every one of its rows).
    """
    after = None
    if cursor is not None:
        at, job_id = decode_cursor(cursor, (int, str))
        after = (from_micros(at), job_id)
    order, rows = state.job_order, state.jobs
    start = order.after(after)
    if wanted is None:
        chosen = [rows[job_id] for job_id in order.ids(start, None if limit is None else start + limit)]
        more = limit is not None and start + limit < len(order)
    else:
        chosen, more = [], False
        for job_id in order.iter_ids(start):
            job = rows[job_id]
            if wanted(job):
                if limit is not None and len(chosen) >= limit:
                    more = True
                    break
                chosen.append(job)
    return chosen, encode_cursor(job_cursor_key(chosen[-1])) if more and chosen else None


class JobListRenderer:
    """Each job's list view as JSON text, kept until the job's row changes.

    Building a ``JobView`` per job and having FastAPI validate and encode the
    list cost about 80 ms per 1,000 jobs. A row's kept encoding
    (``JobRecord.encoded()``) is a new string after every change, so a view
    rendered from the same encoding is still current.
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[str, bytes]] = {}

    def render(self, state: StateMachine, job: JobRecord) -> bytes:
        row = job.encoded()
        kept = self._kept.get(job.id)
        if kept is not None and kept[0] is row:
            return kept[1]
        text = state.job_view(job, with_events=False).model_dump_json().encode()
        self._kept[job.id] = (row, text)
        return text

    def body(self, state: StateMachine, jobs: list[JobRecord], index: int, next_cursor: str | None) -> bytes:
        """``{"jobs": [...], "index": N, "next": ...}`` as JSON."""
        parts = [self.render(state, job) for job in jobs]
        if len(self._kept) > 2 * len(state.jobs) + 1000:  # forget jobs that are gone
            self._kept = {job_id: kept for job_id, kept in self._kept.items() if job_id in state.jobs}
        tail = f'],"index":{int(index)},"next":{json.dumps(next_cursor)}}}'.encode()
        return b'{"jobs":[' + b",".join(parts) + tail


# -------------------------------------------------------------------- events


def events_page(events: list[JobEvent], cursor: str | None, limit: int | None) -> tuple[list[JobEvent], str | None]:
    """A job's events, oldest first, from after ``cursor``, at most ``limit``.

    Events carry no sequence number, and a job keeps only its latest ones (the
    oldest are dropped), so a cursor names the last event answered by its time
    and its rank among the events committed at that same time (one commit may
    record several). When that event has been dropped since, the page goes on
    with the first event after its time.
    """
    start = 0
    if cursor is not None:
        at_micros, rank = decode_cursor(cursor, (int, int))
        at = from_micros(at_micros)
        first = next((i for i, event in enumerate(events) if event.at == at), None)
        if first is not None:
            start = first + max(rank, 0)
        else:
            start = next((i for i, event in enumerate(events) if event.at > at), len(events))
    chosen = events[start:] if limit is None else events[start : start + limit]
    if limit is None or start + limit >= len(events) or not chosen:
        return chosen, None
    last = start + len(chosen) - 1
    first_same = next(i for i, event in enumerate(events) if event.at == events[last].at)
    return chosen, encode_cursor([micros(events[last].at), last - first_same + 1])


# --------------------------------------------------------------------- nodes


def node_sort_key(role_rank: int, node_id: str) -> tuple[int, int, str]:
    """Masters (rank 0) by numeric id, then slaves (rank 1) by id."""
    if role_rank == 0 and node_id.isdigit():
        return (0, int(node_id), "")
    return (role_rank, 0, node_id)


def nodes_page(items: list[tuple[int, str, T]], cursor: str | None, limit: int | None) -> tuple[list[T], str | None]:
    """``items`` are (role rank, id, view); answers the views in order, from after ``cursor``."""
    ordered = sorted(items, key=lambda item: node_sort_key(item[0], item[1]))
    start = 0
    if cursor is not None:
        rank, node_id = decode_cursor(cursor, (int, str))
        after = node_sort_key(rank, node_id)
        start = bisect.bisect_right(ordered, after, key=lambda item: node_sort_key(item[0], item[1]))
    chosen, next_cursor = page(ordered, start, limit, lambda item: [item[0], item[1]])
    return [view for _, _, view in chosen], next_cursor
