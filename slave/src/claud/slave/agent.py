"""The agent: one object owning every long-running loop of one slave.

Four loops, all triggered rather than polled where they can be:

* heartbeat: every interval, and at once (coalesced) when a reported status
  changes, so the master learns of a start or an exit without waiting;
* watch: a long poll that brings a new desired set the moment the master has it;
* reconcile: on every new desired set, every runtime event, every finished
  action, at the lease deadline, and every ``reconcile_interval`` regardless;
* runtime events: turns "a container started/died" into a reconcile.

Decisions are made by the pure ``reconciler.reconcile``; this module only feeds
it snapshots and carries out its plan. The agent holds no global state, so a
benchmark can run hundreds of them (with the simulated runtime) in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from claud.api import Allocation, AllocationStatus, Assignments, Heartbeat, NodeRole, WatchRequest
from claud.api.addresses import outgoing_address, parse_host_port
from claud.api.discovery import Announcement, Discovery, PeerEvent
from claud.api.logfmt import log_event
from claud.slave.fencing import Lease
from claud.slave.masters import MasterClient, MastersUnavailable, ReplyGate
from claud.slave.reconciler import Plan, ReconcileInput, RemoveAction, StopAction, reconcile
from claud.slave.resources import Capacity, UsageProbe, probe_capacity
from claud.slave.runtime import Observed, Phase, Runtime, StartFailed
from claud.slave.settings import SlaveSettings

logger = logging.getLogger(__name__)

#: The masters' default fence_stop_grace (claud.api.Assignments), used until they answer.
DEFAULT_FENCE_STOP_GRACE: float = Assignments.model_fields["fence_stop_grace"].default


class _Throttle:
    """Says yes once per ``period``, counting the noes: for errors that repeat every second."""

    def __init__(self, period: float) -> None:
        self._period = period
        self._next = 0.0
        self.failing = False
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        self.failing = True
        if now >= self._next:
            self._next = now + self._period
            return True
        self.suppressed += 1
        return False

    def reset(self) -> int:
        """Back to healthy; returns how many failures went unlogged."""
        suppressed = self.suppressed
        self.failing, self.suppressed, self._next = False, 0, 0.0
        return suppressed


def _signature(statuses: list[AllocationStatus]) -> frozenset[tuple[Any, ...]]:
    # What a master acts on; started_at and the like follow from these.
    return frozenset((s.alloc_id, s.state, s.container_id, s.exit_code, s.message) for s in statuses)


class Agent:
    """One slave: heartbeats, watches, reconciles; leaves containers running on stop."""

    def __init__(
        self,
        settings: SlaveSettings,
        runtime: Runtime,
        *,
        http: httpx.AsyncClient | None = None,
        capacity: Capacity | None = None,
        usage: UsageProbe | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            trust_env=False,  # a proxy from the environment must not sit between slave and master
            transport=httpx.AsyncHTTPTransport(
                local_address=outgoing_address(settings.listen),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
                # With TLS the masters must chain to the cluster's CA and be the address
                # dialled; they see this slave's certificate in turn.
                verify=settings.tls.client_context() if settings.tls else True,
            ),
        )
        self._discovery: Discovery | None = None
        self.masters = MasterClient(
            settings.masters,
            self._http,
            secret=settings.cluster_secret,
            request_timeout=settings.request_timeout,
            connect_timeout=settings.connect_timeout,
        )
        self.capacity = capacity or probe_capacity(settings.cpus, settings.memory_mb)
        self._usage = usage or UsageProbe(runtime.disk_path())
        self._gate = ReplyGate()

        # What the masters want; None until a leader first answers.
        self._desired: dict[str, Allocation] | None = None
        self._version = -1
        self._applied: tuple[int, int] | None = None
        self._lease = Lease(settings.default_lease, time.monotonic())
        self._heartbeat_interval = settings.heartbeat_interval
        self._fenced = False
        self._warned_short_lease = False
        self._fence_grace = self._effective_fence_grace(DEFAULT_FENCE_STOP_GRACE)

        # Memory of actions, read by the reconciler as snapshots.
        self._starting: set[str] = set()
        self._busy: set[str] = set()
        self._start_failures: dict[str, str] = {}
        self._launched: set[str] = set()

        self._statuses: list[AllocationStatus] = []
        self._sent_signature: frozenset[tuple[Any, ...]] | None = None
        self._phases: dict[str, Phase] | None = None  # container id -> last seen phase

        self._reconcile_wanted = asyncio.Event()
        self._heartbeat_wanted = asyncio.Event()
        self._observed_once = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._actions: set[asyncio.Task[None]] = set()
        self._master_errors = _Throttle(30.0)
        self._runtime_errors = _Throttle(30.0)

    # --- lifecycle ---

    async def start(self) -> None:
        s = self.settings
        log_event(
            logger,
            "agent.started",
            runtime=self.runtime.name,
            listen=s.listen,
            advertise=s.advertise_address,
            masters=",".join(s.masters),
            cpus=self.capacity.cpus,
            cpus_from=self.capacity.cpus_source,
            memory_mb=self.capacity.memory_mb,
            memory_from=self.capacity.memory_source,
            lease=s.default_lease,
        )
        if not s.no_discovery:
            self._discovery = Discovery(
                Announcement(id=s.id, role=NodeRole.SLAVE, address=s.advertise_address),
                port=s.discovery_port,
                secret=s.cluster_secret,
                on_change=self._discovered,
            )
            await self._discovery.start()
        for name, loop in (
            ("reconcile", self._reconcile_loop),
            ("heartbeat", self._heartbeat_loop),
            ("watch", self._watch_loop),
            ("runtime-events", self._events_loop),
        ):
            self._loops.append(asyncio.create_task(loop(), name=f"{s.id}-{name}"))

    def _discovered(self, event: PeerEvent) -> None:
        if event.peer.role == NodeRole.MASTER and event.kind != "expired":
            host, port = parse_host_port(event.peer.address)
            self.masters.add_address(self.settings.master_url(host, port))

    async def stop(self) -> None:
        """Stop the loops; containers keep running and are found again on restart."""
        if self._discovery is not None:
            await self._discovery.stop()
        tasks = [*self._loops, *self._actions]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loops.clear()
        if self._own_http:
            await self._http.aclose()
        await self.runtime.aclose()
        log_event(logger, "agent.stopped")

    # --- read-only views (API, tests, benchmarks) ---

    @property
    def desired(self) -> dict[str, Allocation] | None:
        return None if self._desired is None else dict(self._desired)

    @property
    def statuses(self) -> list[AllocationStatus]:
        return list(self._statuses)

    @property
    def fenced(self) -> bool:
        return self._fenced

    # --- master replies ---

    def _apply(self, assignments: Assignments, sent_at: float) -> None:
        if not self._gate.admit(assignments):
            log_event(
                logger,
                "assignments.stale",
                logging.DEBUG,
                term=assignments.term,
                version=assignments.version,
            )
            return
        self._lease.renew(sent_at, assignments.lease_seconds)
        self._fence_grace = self._effective_fence_grace(assignments.fence_stop_grace)
        if assignments.heartbeat_interval > 0:
            # Never beat slower than the masters' failure detector expects.
            self._heartbeat_interval = min(self.settings.heartbeat_interval, assignments.heartbeat_interval)
        if assignments.lease_seconds < 2 * self._heartbeat_interval and not self._warned_short_lease:
            self._warned_short_lease = True
            log_event(
                logger,
                "lease.too_short",
                logging.WARNING,
                lease=assignments.lease_seconds,
                heartbeat_interval=self._heartbeat_interval,
                note="one late heartbeat will stop every job on this slave",
            )
        if self._fenced and not self._lease.expired(time.monotonic()):
            self._fenced = False
            log_event(logger, "lease.regained", leader=assignments.leader_id, term=assignments.term)
        # A new leader may number its versions afresh: the term is part of the identity.
        key = (assignments.term, assignments.version)
        if self._desired is None or key != self._applied:
            first = self._desired is None
            self._desired = {a.alloc_id: a for a in assignments.allocations}
            self._version = assignments.version
            self._applied = key
            # Forget about allocations the masters no longer mention.
            for alloc_id in list(self._start_failures):
                if alloc_id not in self._desired:
                    del self._start_failures[alloc_id]
            self._launched &= set(self._desired)
            log_event(
                logger,
                "assignments.applied",
                logging.INFO if first else logging.DEBUG,
                term=assignments.term,
                version=assignments.version,
                allocations=len(self._desired),
                lease=assignments.lease_seconds,
            )
            self._reconcile_wanted.set()

    def _effective_fence_grace(self, from_masters: float) -> float:
        # Both are upper bounds that keep a job from running twice: the stricter wins.
        local = self.settings.fence_stop_grace
        return from_masters if local is None else min(local, from_masters)

    def _master_failed(self, exc: MastersUnavailable) -> None:
        now = time.monotonic()
        if self._master_errors.allow(now):
            log_event(
                logger,
                "master.unreachable",
                logging.WARNING,
                error=str(exc),
                suppressed=self._master_errors.suppressed or None,
                lease_left=round(self._lease.remaining(now), 1),
            )

    def _master_ok(self) -> None:
        if self._master_errors.failing:
            suppressed = self._master_errors.reset()
            log_event(logger, "master.reachable", failures_not_logged=suppressed or None)

    # --- loops ---

    def _heartbeat(self) -> Heartbeat:
        s = self.settings
        return Heartbeat(
            node_id=s.id,
            address=s.advertise_address,
            labels=s.labels,
            cpu_total=self.capacity.cpus,
            memory_mb_total=self.capacity.memory_mb,
            usage=self._usage.sample(),
            allocations=list(self._statuses),
        )

    async def _heartbeat_loop(self) -> None:
        # The first heartbeat waits for the first look at the runtime: an empty
        # report from a restarted agent would tell the master its jobs are gone.
        await self._observed_once.wait()
        while True:
            self._heartbeat_wanted.clear()
            statuses = self._statuses
            sent_at = time.monotonic()
            try:
                assignments = await self.masters.heartbeat(self._heartbeat())
            except MastersUnavailable as exc:
                self._master_failed(exc)
            else:
                self._sent_signature = _signature(statuses)
                self._master_ok()
                self._apply(assignments, sent_at)
            delay = self._heartbeat_interval - (time.monotonic() - sent_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heartbeat_wanted.wait(), timeout=max(0.0, delay))

    async def _watch_loop(self) -> None:
        backoff = self.settings.retry_min
        while True:
            request = WatchRequest(
                node_id=self.settings.id,
                known_version=self._version,
                wait_seconds=self.settings.watch_wait,
            )
            sent_at = time.monotonic()
            try:
                assignments = await self.masters.watch(request)
            except MastersUnavailable as exc:
                # Heartbeats report the outage; the watch just retries, a bit later each time.
                log_event(logger, "watch.failed", logging.DEBUG, error=str(exc))
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.settings.retry_max)
                continue
            before = self._applied
            self._apply(assignments, sent_at)
            held = time.monotonic() - sent_at
            if self._applied == before and held < request.wait_seconds / 2:
                # Back early with nothing new (a refused stale reply, a master that
                # does not hold long polls): asking again at once would spin.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max)
            else:
                backoff = self.settings.retry_min

    async def _events_loop(self) -> None:
        while True:
            try:
                async for _ in self.runtime.changes():
                    self._reconcile_wanted.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the periodic reconcile still runs
                log_event(logger, "runtime.events_failed", logging.WARNING, error=str(exc))
            await asyncio.sleep(1.0)

    async def _reconcile_loop(self) -> None:
        while True:
            self._reconcile_wanted.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the loop that enforces the lease
                logger.exception("reconcile pass failed")
            now = time.monotonic()
            timeout = self.settings.reconcile_interval
            if not self._fenced:
                # Wake exactly when the lease ends, not up to an interval later.
                timeout = min(timeout, max(0.0, self._lease.remaining(now)) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reconcile_wanted.wait(), timeout=timeout)

    # --- one reconcile pass ---

    async def reconcile_once(self) -> Plan | None:
        """One pass: look, decide, launch the actions. Only the reconcile loop calls it,
        so passes never overlap (the in-flight snapshots below rely on that)."""
        # Snapshot what is in flight *before* looking: an action that ends while
        # we look is then still counted as in flight, never as "gone".
        starting = frozenset(self._starting)
        busy = frozenset(self._busy)
        launched = frozenset(self._launched)
        failures = dict(self._start_failures)
        desired = self._desired
        # Checked before looking at the runtime so that an expiry is logged even
        # while the engine does not answer, and again after: a reply that renewed
        # the lease while we looked must count.
        self._check_lease()
        try:
            observed = await self.runtime.list()
        except Exception as exc:  # noqa: BLE001 - reported, retried next pass
            now = time.monotonic()
            if self._runtime_errors.allow(now):
                log_event(logger, "runtime.unavailable", logging.WARNING, error=str(exc))
            return None
        if self._runtime_errors.failing:
            self._runtime_errors.reset()
            log_event(logger, "runtime.available")
        fenced = self._check_lease()
        self._log_transitions(observed)

        s = self.settings
        plan = reconcile(
            ReconcileInput(
                desired=desired,
                observed=observed,
                starting=starting,
                busy=busy,
                start_failures=failures,
                launched=launched,
                fenced=fenced,
                now=datetime.now(UTC),
                default_grace=s.default_stop_timeout,
                fence_grace=self._fence_grace,
                retention=timedelta(seconds=s.exited_retention),
                max_exited=s.max_exited,
            )
        )
        for alloc in plan.starts:
            self._starting.add(alloc.alloc_id)
            self._spawn(self._start(alloc))
        for stop in plan.stops:
            self._busy.add(stop.container_id)
            self._spawn(self._stop(stop))
        for removal in plan.removals:
            self._busy.add(removal.container_id)
            self._spawn(self._remove(removal))

        self._statuses = plan.statuses
        self._observed_once.set()
        if _signature(plan.statuses) != self._sent_signature:
            self._heartbeat_wanted.set()
        return plan

    def _check_lease(self) -> bool:
        """Is the lease over? Logs the moment it ends (regaining is logged by _apply)."""
        fenced = self._lease.expired(time.monotonic())
        if fenced and not self._fenced:
            self._fenced = True
            log_event(
                logger,
                "lease.expired",
                logging.WARNING,
                lease=self._lease.seconds,
                leader=self.masters.leader[0] if self.masters.leader else None,
                action="stopping every container of this slave",
            )
        return fenced

    def _log_transitions(self, observed: list[Observed]) -> None:
        current = {o.container_id: o.phase for o in observed}
        if self._phases is None:
            for o in observed:
                if o.phase is Phase.RUNNING:
                    log_event(
                        logger,
                        "container.found",
                        job=o.job_id,
                        alloc=o.alloc_id,
                        container=o.container_id[:12],
                    )
        else:
            for o in observed:
                if o.phase is Phase.EXITED and self._phases.get(o.container_id) is Phase.RUNNING:
                    log_event(
                        logger,
                        "container.exited",
                        job=o.job_id,
                        alloc=o.alloc_id,
                        container=o.container_id[:12],
                        exit_code=o.exit_code,
                        error=o.error,
                    )
        self._phases = current

    # --- actions (each in its own task; the runtime bounds the parallelism) ---

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _start(self, alloc: Allocation) -> None:
        log_event(logger, "container.starting", job=alloc.job_id, alloc=alloc.alloc_id, image=alloc.image)
        try:
            observed = await self.runtime.start(alloc)
        except Exception as exc:  # noqa: BLE001 - an engine outage fails this attempt only
            message = (
                exc.message if isinstance(exc, StartFailed) else f"could not start on slave {self.settings.id}: {exc}"
            )
            self._start_failures[alloc.alloc_id] = message
            log_event(logger, "container.failed", logging.WARNING, job=alloc.job_id, alloc=alloc.alloc_id, reason=message)
        else:
            self._launched.add(alloc.alloc_id)
            log_event(
                logger,
                "container.started",
                job=alloc.job_id,
                alloc=alloc.alloc_id,
                container=observed.container_id[:12],
            )
        finally:
            self._starting.discard(alloc.alloc_id)
            self._reconcile_wanted.set()

    async def _stop(self, stop: StopAction) -> None:
        try:
            await self.runtime.stop(stop.container_id, stop.grace)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried by the next pass
            log_event(
                logger,
                "container.stop_failed",
                logging.WARNING,
                job=stop.job_id,
                alloc=stop.alloc_id,
                container=stop.container_id[:12],
                error=str(exc),
            )
        else:
            log_event(
                logger,
                "container.stopped",
                logging.WARNING if stop.reason == "fenced" else logging.INFO,
                job=stop.job_id,
                alloc=stop.alloc_id,
                container=stop.container_id[:12],
                reason=stop.reason,
            )
        finally:
            self._busy.discard(stop.container_id)
            self._reconcile_wanted.set()

    async def _remove(self, removal: RemoveAction) -> None:
        try:
            await self.runtime.remove(removal.container_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried by the next pass
            log_event(
                logger,
                "container.remove_failed",
                logging.WARNING,
                container=removal.container_id[:12],
                error=str(exc),
            )
        else:
            log_event(
                logger,
                "container.removed",
                job=removal.job_id,
                alloc=removal.alloc_id,
                container=removal.container_id[:12],
                reason=removal.reason,
            )
        finally:
            self._busy.discard(removal.container_id)
