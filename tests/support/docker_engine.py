"""Is there a Docker engine, and cleaning up what a test left in it."""

from __future__ import annotations

import contextlib
import functools
import itertools

import docker
import docker.errors


@functools.cache
def docker_available() -> bool:
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - no SDK config, no socket, no answer: all mean "no Docker here"
        return False


def remove_containers(label: str) -> int:
    """Force-remove every container carrying ``label`` (``key=value``); returns how many."""
    client = docker.from_env()
    try:
        containers = client.containers.list(all=True, filters={"label": label})
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return len(containers)
    finally:
        client.close()


def remove_volumes(label: str) -> None:
    """Force-remove every volume carrying ``label`` (``key=value``): the named volumes a slave
    made for a test's jobs (it labels them as it labels their containers)."""
    client = docker.from_env(timeout=30)
    try:
        for volume in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(docker.errors.APIError):
                volume.remove(force=True)
    finally:
        client.close()


def run_intervals(job_id: str) -> list[tuple[str, float, float]]:
    """(slave id, started, finished) of every container of ``job_id``, in Docker's own clock.

    A container still running has ``finished = inf``; one never started is left out.
    """
    from datetime import datetime

    def stamp(value: str) -> float | None:
        if not value or value.startswith("0001-01-01"):
            return None
        # Docker gives nanoseconds; datetime takes microseconds.
        head, _, frac = value.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()

    client = docker.from_env()
    try:
        intervals = []
        for container in client.containers.list(all=True, filters={"label": f"claud.job={job_id}"}):
            state = container.attrs["State"]
            started = stamp(state.get("StartedAt", ""))
            if started is None:
                continue
            finished = float("inf") if state.get("Running") else (stamp(state.get("FinishedAt", "")) or float("inf"))
            intervals.append((container.labels.get("claud.slave", "?"), started, finished))
        return sorted(intervals, key=lambda i: i[1])
    finally:
        client.close()


def assert_never_twice(job_id: str) -> None:
    """No two containers of one job ever ran at the same time (Docker's start/stop times)."""
    intervals = run_intervals(job_id)
    for (slave_a, _, end_a), (slave_b, start_b, _) in itertools.pairwise(intervals):
        assert end_a <= start_b, (
            f"job {job_id} ran twice at once: on {slave_a} until {end_a:.3f} and on {slave_b} from {start_b:.3f}"
        )
