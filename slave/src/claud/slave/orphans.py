"""``claud-orphan-reaper``: job containers do not outlive the container of their slave.

Where each slave runs in a container of its own on a shared engine (the
compose cluster), that container is the slave's machine: when it stops, is
killed or restarts, its jobs must stop with it, or the masters run them
elsewhere while the old copies carry on. Jobs used to get this from sharing
the slave container's PID namespace, which also let them reach the slave's
files through /proc/<pid>/root: the Docker socket (root on the host) and the
cluster secret. With their own namespaces they are confined, and this small
process, outside every job's reach (its own PID namespace, no network), kills
what the kernel no longer does.

The rule (:func:`orphans`) is level-triggered: a job container may run only
while a container running its slave is up and was started before the job was
created. Docker events make a pass happen at once; a pass every
``--reap-interval`` covers missed events and the reaper's own restarts.

The slave containers say which slave they run by the label
``claud.runs-slave=<slave id>``; both they and the jobs carry
``claud.compose=<project>``, the scope of one reaper.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docker
import docker.errors

from claud.api import LABEL_SLAVE
from claud.daemon.logfmt import log_event
from claud.slave.runtime.docker import parse_docker_time

logger = logging.getLogger(__name__)

LABEL_PROJECT = "claud.compose"
#: On a slave's own container: the id of the slave it runs.
LABEL_RUNS_SLAVE = "claud.runs-slave"


@dataclass(frozen=True)
class JobContainer:
    container_id: str
    slave_id: str
    created_at: datetime


@dataclass(frozen=True)
class SlaveContainer:
    slave_id: str
    running: bool
    started_at: datetime | None


def orphans(jobs: Iterable[JobContainer], slaves: Iterable[SlaveContainer]) -> list[JobContainer]:
    """The running job containers whose slave's machine is down or was restarted since they started.

    A slave container started after the job was created is a machine that
    rebooted: the agent in it may adopt what it finds, but the job belongs to
    the previous boot and must be as dead as it would be on real hardware.
    """
    boots: dict[str, list[datetime]] = {}
    for slave in slaves:
        if slave.running and slave.started_at is not None:
            boots.setdefault(slave.slave_id, []).append(slave.started_at)
    return [
        job for job in jobs
        if not any(started <= job.created_at for started in boots.get(job.slave_id, ()))
    ]


# ---------------------------------------------------------------- I/O shell


class Reaper:
    """One pass over the engine's containers of one project, and the loop that repeats it."""

    def __init__(self, project: str, *, api_timeout: float, interval: float) -> None:
        self._project = project
        self._api_timeout = api_timeout
        self._interval = interval
        # The SDK hands `timeout` to requests, which takes float seconds (None: no
        # deadline); the stub follows the SDK's docstring, which says int.
        self._client = docker.DockerClient.from_env(timeout=api_timeout)  # type: ignore[arg-type]
        self._client.ping()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._jobs: dict[str, JobContainer] = {}

    def _observe(self) -> tuple[list[JobContainer], list[SlaveContainer]]:
        api = self._client.api
        # Paused ones too: a frozen job of a dead slave must not thaw into a second copy.
        rows = api.containers(filters={
            "label": [f"{LABEL_PROJECT}={self._project}", LABEL_SLAVE],
            "status": ["running", "paused", "restarting"],
        })
        live = {row["Id"] for row in rows}
        for cid in set(self._jobs) - live:
            del self._jobs[cid]
        for cid in live - set(self._jobs):
            # A container's creation time and labels never change: one inspect each.
            with contextlib.suppress(docker.errors.NotFound):
                info = api.inspect_container(cid)
                created = parse_docker_time(info.get("Created"))
                slave_id = ((info.get("Config") or {}).get("Labels") or {}).get(LABEL_SLAVE, "")
                if created is not None:
                    self._jobs[cid] = JobContainer(cid, slave_id, created)
        jobs = [self._jobs[cid] for cid in live if cid in self._jobs]
        slaves: list[SlaveContainer] = []
        rows = api.containers(all=True, filters={"label": [f"{LABEL_PROJECT}={self._project}", LABEL_RUNS_SLAVE]})
        for row in rows:
            with contextlib.suppress(docker.errors.NotFound):
                info = api.inspect_container(row["Id"])
                state = info.get("State") or {}
                slave_id = ((info.get("Config") or {}).get("Labels") or {}).get(LABEL_RUNS_SLAVE, "")
                started_at = parse_docker_time(state.get("StartedAt"))
                slaves.append(SlaveContainer(slave_id, bool(state.get("Running")), started_at))
        return jobs, slaves

    def reap_once(self) -> int:
        """Kill the orphans there are now; how many."""
        jobs, slaves = self._observe()
        killed = 0
        for job in orphans(jobs, slaves):
            try:
                # SIGKILL: a machine that loses power gives its processes no grace.
                self._client.api.kill(job.container_id)
            except docker.errors.APIError as exc:
                if exc.status_code not in (404, 409):  # gone, or stopped in the meantime
                    raise
                continue
            killed += 1
            log_event(logger, "orphan.killed", slave=job.slave_id, container=job.container_id[:12],
                      project=self._project)
        return killed

    def _watch_events(self) -> None:
        """Wake the loop on every change of the project's containers; reconnect when the engine drops us."""
        while not self._stop.is_set():
            client = None
            try:
                # No deadline: the event stream is long-lived (float or None: see __init__).
                client = docker.DockerClient.from_env(timeout=None)  # type: ignore[arg-type]
                stream = client.api.events(
                    filters={"type": "container", "label": [f"{LABEL_PROJECT}={self._project}"]}, decode=True
                )
                self._wake.set()  # reconnected: what happened meanwhile is unknown
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event.get("Action") in ("die", "kill", "stop", "start", "restart", "create"):
                        self._wake.set()
            except Exception as exc:  # noqa: BLE001 - any engine trouble: retry, the passes go on
                log_event(logger, "docker.events_error", logging.DEBUG, error=str(exc) or type(exc).__name__)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            self._stop.wait(1.0)

    def run(self) -> None:
        threading.Thread(target=self._watch_events, name="reaper-events", daemon=True).start()
        log_event(logger, "reaper.started", project=self._project, interval=self._interval)
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.reap_once()
            except Exception as exc:  # noqa: BLE001 - the engine may be restarting: next pass
                log_event(logger, "reaper.pass_failed", logging.WARNING, error=str(exc) or type(exc).__name__)
            self._wake.wait(self._interval)
        log_event(logger, "reaper.stopped", project=self._project)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def main(argv: Sequence[str] | None = None) -> None:
    from claud.daemon import settings_cli
    from claud.daemon.logfmt import configure_logging
    from claud.slave.settings import OrphanReaperSettings

    prog = "claud-orphan-reaper"
    settings = settings_cli.parse_settings(
        OrphanReaperSettings, argv, prog,
        "Kill job containers whose slave's container is down or restarted since they started.",
        "Every flag has an environment twin (shown). Needs the Docker socket; give it nothing else.",
    )
    configure_logging("orphan-reaper", settings.compose_project, settings.log_level)
    try:
        reaper = Reaper(settings.compose_project, api_timeout=settings.docker_timeout, interval=settings.reap_interval)
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        settings_cli.fail(prog, f"cannot reach the Docker engine: {exc}", 1)

    def on_signal(signum: int, frame: Any) -> None:
        reaper.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reaper.run()


if __name__ == "__main__":
    main()
