"""Where ``claud verify`` reads a run's history: the slaves' Docker engines, a saved
``docker events`` log, and the masters' API. Thin on purpose: the judging is
:mod:`claud.client.verify`'s, and pure.

The Docker SDK is the ``verify`` extra (``pip install 'claud-client[verify]'``),
imported here only when an engine is read: the SDK and the rest of the CLI
never need it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claud.api import LABEL_JOB
from claud.api.jobs import JobEvent, JobView
from claud.client._client import Client
from claud.client.errors import JobNotFound
from claud.client.verify import ContainerEvent, EventLogError, JobHistory, parse_event, read_event_log

#: ``docker events --filter``: only containers carrying CLAUD's job label.
DOCKER_FILTERS = {"type": "container", "label": LABEL_JOB}


class SourceUnavailable(Exception):
    """A source of history that cannot be read (no Docker SDK, an engine that does not answer)."""


def engine_events(hosts: Sequence[str], since: float, until: float) -> list[ContainerEvent]:
    """The CLAUD container events every engine still holds for ``[since, until]``.

    ``hosts`` are engine URLs (``unix:///var/run/docker.sock``, ``tcp://10.0.0.5:2375``);
    none means the local one, as ``DOCKER_HOST`` and the environment say. An engine
    keeps a bounded history in memory (moby: the last 256 events for such a query),
    so on a busy engine the oldest starts may be gone: save a log with
    ``docker events --format '{{json .}}'`` while the run goes for a complete record.
    """
    try:
        import docker
        import docker.errors
    except ImportError:
        raise SourceUnavailable(
            "reading Docker engines needs the Docker SDK: pip install 'claud-client[verify]' "
            "(or give a saved log with --docker-events FILE)"
        ) from None
    found: list[ContainerEvent] = []
    targets: list[str | None] = [*hosts] if hosts else [None]
    for host in targets:
        where = host or "the local Docker engine (DOCKER_HOST)"
        try:
            client = docker.from_env(timeout=30) if host is None else docker.DockerClient(base_url=host, timeout=30)
        except docker.errors.DockerException as exc:
            raise SourceUnavailable(f"cannot reach {where}: {exc}") from None
        try:
            # Both ends given, and until not in the future: the engine answers from its
            # history and ends the stream, instead of waiting for new events.
            stream: Any = client.events(since=max(1, math.floor(since)), until=math.ceil(until),
                                        filters=DOCKER_FILTERS, decode=True)
            try:
                for raw in stream:
                    if isinstance(raw, dict) and (event := parse_event(raw, len(found))) is not None:
                        found.append(event)
            finally:
                stream.close()
        except (docker.errors.DockerException, OSError, EventLogError) as exc:
            raise SourceUnavailable(f"cannot read the events of {where}: {exc}") from None
        finally:
            client.close()
    return found


def saved_events(path: Path) -> list[ContainerEvent]:
    """The CLAUD container events of a saved ``docker events --format '{{json .}}'`` log."""
    try:
        with path.open(encoding="utf-8") as lines:
            return read_event_log(lines)
    except (OSError, UnicodeError) as exc:
        raise EventLogError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def job_histories(
    client: Client, since: datetime, only: Iterable[str] | None = None
) -> tuple[list[JobHistory], set[str]]:
    """The jobs that lived in the window (not ended before ``since``), with their transitions
    when they have not ended (the stuck check needs them), and every id the masters know."""
    wanted = None if only is None else set(only)
    known: set[str] = set()
    histories: list[JobHistory] = []
    for view in client.iter_jobs():
        known.add(view.id)
        if wanted is not None and view.id not in wanted:
            continue
        if view.state.terminal and _utc(view.updated_at) < since:
            continue
        histories.append(_history(client, view))
    return histories, known


def _utc(at: datetime) -> datetime:
    """An instant a master wrote without an offset is UTC, as every master's clock is written."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _history(client: Client, view: JobView) -> JobHistory:
    events: tuple[JobEvent, ...] = ()
    if not view.state.terminal:
        # Collected since it was listed: it had ended, nothing to judge.
        with contextlib.suppress(JobNotFound):
            events = tuple(client.job_events(view.id))
    return JobHistory(view.id, view.state, view.updated_at, view.pending_reason, events)
