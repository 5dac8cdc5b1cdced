"""Health checks of a slave's service allocations: the one place that runs them.

Each running allocation whose job has a ``check`` gets one task here, which
runs the check every ``interval`` seconds, each attempt bounded by
``timeout``: ``http`` (a GET of the path on the port's published host port,
2xx or 3xx is healthy, redirects not followed), ``tcp`` (a connection to it
opens) or ``command`` (run in the container by the runtime, exit 0). Failures
within ``grace`` seconds of the container's start do not count; a success
makes it ``healthy``; ``failures`` failures in a row make it ``unhealthy``,
and the task ends there: the reconciler then stops the container (the masters
see it end and restart it, charged to the restart policy like a crash).

What was concluded is kept per allocation while the masters still list it, so
the exit of an unhealthy container is reported as such. The counting rule is
:class:`Verdicts`, plain code the unit tests drive without sockets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from claud.api import Allocation, Health
from claud.api.jobs import HealthCheck
from claud.daemon.logfmt import log_event
from claud.slave.runtime import Observed, Runtime

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Verdicts:
    """The counting rule of one allocation's checks: grace, failures in a row, the verdict."""

    failures: int
    health: Health | None = None
    in_a_row: int = 0
    reason: str | None = None

    def record(self, ok: bool, in_grace: bool, why: str = "") -> Health | None:
        """Count one check; the new verdict if it changed (None if not)."""
        before = self.health
        if ok:
            self.in_a_row = 0
            self.health, self.reason = Health.HEALTHY, None
        elif not in_grace:
            self.in_a_row += 1
            if self.in_a_row >= self.failures:
                self.health, self.reason = Health.UNHEALTHY, why or "check failed"
        return self.health if self.health != before else None


@dataclass(slots=True)
class _Watch:
    container_id: str
    verdicts: Verdicts
    task: asyncio.Task[None] | None = None
    last_error: str = field(default="")


class HealthChecker:
    """The checks of one slave's allocations; ``sync`` after every reconcile pass says which run."""

    def __init__(
        self, runtime: Runtime, check_host: str, on_change: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._host = check_host
        self._on_change = on_change
        self._clock = clock
        self._watches: dict[str, _Watch] = {}
        self._http: httpx.AsyncClient | None = None

    def sync(self, running: Mapping[str, tuple[Allocation, Observed]], desired: set[str]) -> None:
        """Check exactly the ``running`` allocations (alloc id -> allocation, its running container)
        that have a check; forget verdicts of allocations no longer ``desired``."""
        for alloc_id in list(self._watches):
            watch = self._watches[alloc_id]
            now_running = running.get(alloc_id)
            gone = now_running is None or now_running[1].container_id != watch.container_id
            if gone and watch.task is not None:
                watch.task.cancel()
                watch.task = None
            if alloc_id not in desired:
                del self._watches[alloc_id]
        for alloc_id, (alloc, container) in running.items():
            check = alloc.check
            if check is None or alloc_id in self._watches:
                continue
            watch = _Watch(container.container_id, Verdicts(failures=check.failures))
            self._watches[alloc_id] = watch
            watch.task = asyncio.create_task(self._run(alloc, container, check, watch), name=f"check-{alloc_id}")

    def verdict(self, alloc_id: str) -> tuple[Health | None, str | None]:
        watch = self._watches.get(alloc_id)
        return (watch.verdicts.health, watch.verdicts.reason) if watch else (None, None)

    def unhealthy(self) -> frozenset[str]:
        return frozenset(a for a, w in self._watches.items() if w.verdicts.health is Health.UNHEALTHY)

    async def aclose(self) -> None:
        tasks = [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._watches.clear()
        if self._http is not None:
            await self._http.aclose()

    async def _run(self, alloc: Allocation, container: Observed, check: HealthCheck, watch: _Watch) -> None:
        started = container.started_at or datetime.now(UTC)
        while True:
            began = self._clock()
            try:
                ok, why = await asyncio.wait_for(self._once(alloc, container, check), check.timeout)
            except TimeoutError:
                ok, why = False, f"{check.kind} check timed out after {check.timeout:g}s"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
                ok, why = False, f"{check.kind} check could not run: {exc}"
            in_grace = (datetime.now(UTC) - started).total_seconds() < check.grace
            changed = watch.verdicts.record(ok, in_grace, why)
            if not ok and why != watch.last_error:
                log_event(logger, "check.failed", logging.INFO, job=alloc.job_id, alloc=alloc.alloc_id,
                          reason=why, in_grace=in_grace, in_a_row=watch.verdicts.in_a_row)
            watch.last_error = "" if ok else why
            if changed is not None:
                log_event(logger, "check.health", logging.WARNING if changed is Health.UNHEALTHY else logging.INFO,
                          job=alloc.job_id, alloc=alloc.alloc_id, health=changed.value, reason=watch.verdicts.reason)
                self._on_change()
            if watch.verdicts.health is Health.UNHEALTHY:
                return  # its container is stopped now; a new attempt gets new checks
            await asyncio.sleep(max(0.0, check.interval - (self._clock() - began)))

    async def _once(self, alloc: Allocation, container: Observed, check: HealthCheck) -> tuple[bool, str]:
        answer = await self._runtime.probe(alloc)
        if answer is not None:
            return answer, "" if answer else "the simulated check fails (CLAUD_SIM_HEALTHY)"
        if check.command is not None:
            code = await self._runtime.exec(container.container_id, list(check.command))
            return code == 0, f"command check exited with {code}"
        port = next((p.host for p in alloc.ports if p.name == check.port), None)
        if port is None:
            return False, f"port {check.port!r} has no host port"
        if check.tcp:
            try:
                _, writer = await asyncio.open_connection(self._host, port)
            except OSError as exc:
                return False, f"tcp check: cannot connect to {self._host}:{port}: {exc.strerror or exc}"
            writer.close()
            return True, ""
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        url = f"http://{self._host}:{port}{check.http}"
        try:
            response = await self._http.get(url, timeout=check.timeout)
        except httpx.HTTPError as exc:
            return False, f"http check: GET {url}: {type(exc).__name__} {exc}".rstrip()
        if 200 <= response.status_code < 400:
            return True, ""
        return False, f"http check: GET {url} answered {response.status_code}"
