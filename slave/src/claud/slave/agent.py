"""The agent: one object owning every long-running loop of one slave.

Its loops, all triggered rather than polled where they can be:

* heartbeat: every interval, and at once (coalesced) when a reported status
  changes, so the master learns of a start or an exit without waiting;
* watch: a long poll that brings a new desired set the moment the master has it;
* reconcile: on every new desired set, every runtime event, every finished
  action, at the lease deadline, and every ``reconcile_interval`` regardless;
* runtime events: turns "a container started/died" into a reconcile;
* lease: wakes at the lease's end and fences at once, whatever the other
  loops are waiting for (a hung ``list()`` included);
* engine fence: wakes when an engine that stopped answering has been away as
  long as a lease, and kills the containers' processes itself, through pidfds
  (``engine_fence``): by then the masters may run those jobs elsewhere.

Fencing has a path of its own: every container this slave last saw running
(plus any a label sweep finds) gets SIGTERM at once and SIGKILL at the lease
end + its grace, on the runtime's own fence threads. The lease end and the
allocations fenced are persisted in the state directory, so a restarted agent
honours the lease its previous process held and still reports those exits as
fenced (lost, not failed).

Decisions are made by the pure ``reconciler.reconcile``; this module only feeds
it snapshots and carries out its plan. The agent holds no global state, so a
benchmark can run hundreds of them (with the simulated runtime) in one process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from claud.api import Allocation, AllocationStatus, Assignments, DesiredState, Health, Heartbeat, NodeRole, WatchRequest
from claud.api.slave_protocol import DEFAULT_FENCE_STOP_GRACE, RuntimeHealth
from claud.daemon.addresses import outgoing_address, parse_host_port
from claud.daemon.discovery import Announcement, Discovery, PeerEvent
from claud.daemon.faults import Faults
from claud.daemon.logfmt import log_event
from claud.daemon.waits import wait_set, within
from claud.slave.engine_fence import EngineFence, Pin, fence_times
from claud.slave.fencing import (
    FencedLog,
    LeaseRecord,
    asked_heartbeat,
    boot_id,
    boottime,
    ensure_state_dir,
    honour,
    kill_window,
    lease_from_record,
    load_lease,
    save_lease,
)
from claud.slave.health import HealthChecker
from claud.slave.masters import MasterClient, MastersUnavailable, ReplyGate
from claud.slave.reconciler import (
    ReconcileInput,
    ReconcileOutput,
    RemoveAction,
    Slot,
    StopAction,
    reconcile,
    slot_of,
)
from claud.slave.resources import Capacity, UsageProbe, probe_capacity
from claud.slave.runtime import Observed, Phase, Runtime, RuntimeUnavailable, StartAborted, StartFailed
from claud.slave.settings import SlaveSettings
from claud.slave.telemetry import SlaveTelemetry

logger = logging.getLogger(__name__)

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
    return frozenset(
        (s.alloc_id, s.state, s.container_id, s.exit_code, s.message, s.fenced, s.health) for s in statuses
    )


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
        faults: Faults | None = None,
    ) -> None:
        """``faults`` are this slave's ``claud chaos`` faults (:mod:`claud.daemon.faults`): paused,
        it neither heartbeats nor reconciles; partitioned, it does not talk to the masters.
        The lease and engine-fence loops never wait on them: a slave cut off still fences."""
        self.settings = settings
        self._faults = faults if faults is not None else Faults(enabled=False)
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
        self._usage = usage or UsageProbe(runtime.disk_path)
        self._gate = ReplyGate()

        # What the masters want; None until a leader first answers.
        self._desired: dict[str, Allocation] | None = None
        self._version = -1
        self._applied: tuple[int, int] | None = None
        # What must outlive this process. Simulated containers do not, so
        # the simulated runtime persists only when told where.
        self._state_dir = None
        if settings.runtime == "docker" or settings.state_dir is not None:
            self._state_dir = ensure_state_dir(settings.state_path)
        self._boot = boot_id()
        record = load_lease(self._state_dir) if self._state_dir is not None else None
        self._lease = lease_from_record(
            record, boot=self._boot, now=boottime(), fallback_seconds=settings.default_lease
        )
        self._inherited_lease = self._lease.seconds > 0 and record is not None and record.boot == self._boot
        self._heartbeat_interval = settings.heartbeat_interval
        self._fenced = False
        self._refused: str | None = None
        self._fence_grace = self._effective_fence_grace(record.grace if record else DEFAULT_FENCE_STOP_GRACE)
        self._fenced_log = FencedLog(self._state_dir)
        self._lease_changed = asyncio.Event()
        self._persist_errors = _Throttle(30.0)

        # Memory of actions, read by the reconciler as snapshots.
        self._starting: dict[str, Slot] = {}  # alloc id -> the slot (job id, index) it starts in
        self._busy: set[str] = set()
        #: Containers a fence is signalling now (cleared when the lease is regained).
        self._fencing: set[str] = set()
        #: The last containers seen running, and those started since: the fence's targets.
        self._known_running: dict[str, Observed] = {}
        self._runtime_health = RuntimeHealth()
        #: Pidfds of the running containers and the engine's absence: the fence without the engine.
        self._engine_fence = EngineFence(settings.id)
        self.telemetry = SlaveTelemetry()
        self.telemetry.watch_lease(lambda: self._lease.remaining(boottime()), lambda: self._fenced)
        self._engine_changed = asyncio.Event()
        self._start_failures: dict[str, str] = {}
        self._launched: set[str] = set()

        self._statuses: list[AllocationStatus] = []
        self._sent_signature: frozenset[tuple[Any, ...]] | None = None
        self._phases: dict[str, Phase] | None = None  # container id -> last seen phase

        self._reconcile_wanted = asyncio.Event()
        #: The health checks of the running allocations that have one.
        self._health = HealthChecker(runtime, settings.check_host, self._reconcile_wanted.set)
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
            lease_left=round(self._lease.remaining(boottime()), 2),
            state_dir=str(self._state_dir) if self._state_dir else None,
        )
        if self._lease.expired(boottime()):
            # No lease on record, or the old process's has ended: whatever runs
            # here may already run elsewhere. Fenced until a leader answers.
            self._fenced = True
            log_event(
                logger,
                "lease.expired" if self._inherited_lease else "lease.none",
                logging.WARNING,
                lease_from="previous process" if self._inherited_lease else None,
                action="stopping every container of this slave",
            )
            self._spawn(self._fence_sweep())
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
            ("lease", self._lease_loop),
            ("engine-fence", self._engine_fence_loop),
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
        self._engine_fence.close()
        await self._health.aclose()
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
        if self._faults.partitioned:  # a reply in flight when the partition began never arrived
            return
        if not self._gate.admit(assignments):
            log_event(
                logger,
                "assignments.stale",
                logging.DEBUG,
                term=assignments.term,
                version=assignments.version,
            )
            return
        s = self.settings
        heartbeat = asked_heartbeat(s.heartbeat_interval, assignments.heartbeat_interval, assignments.next_heartbeat)
        terms = honour(
            lease=assignments.lease_seconds,
            grace=assignments.fence_stop_grace,
            heartbeat=heartbeat,
            longest_lease=s.default_lease,
            grace_cap=s.fence_stop_grace,
            round_trip=s.fence_round_trip,
        )
        if terms.problem != self._refused:
            self._refused = terms.problem
            if terms.problem is not None:
                log_event(
                    logger,
                    "lease.refused",
                    logging.WARNING,
                    lease=assignments.lease_seconds,
                    grace=assignments.fence_stop_grace,
                    heartbeat_interval=heartbeat,
                    applied_lease=round(terms.lease, 3),
                    applied_grace=terms.grace,
                    applied_heartbeat=round(terms.heartbeat, 3),
                    reason=terms.problem,
                )
        self._heartbeat_interval = terms.heartbeat
        self._fence_grace = terms.grace
        if self._lease.renew(sent_at, terms.lease):
            self._persist_lease()
            self._lease_changed.set()
            self._engine_changed.set()  # its deadline follows the lease's length
        if self._fenced and not self._lease.expired(boottime()):
            self._fenced = False
            self._fencing.clear()
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

    def _persist_lease(self) -> None:
        if self._state_dir is None:
            return
        record = LeaseRecord(self._boot, self._lease.last_success, self._lease.seconds, self._fence_grace)
        try:
            save_lease(self._state_dir, record)
        except OSError as exc:
            # Not fatal: a restarted agent then fences early (an old record), never late.
            if self._persist_errors.allow(time.monotonic()):
                log_event(logger, "lease.persist_failed", logging.WARNING, error=str(exc))

    def _effective_fence_grace(self, from_masters: float) -> float:
        # Both are upper bounds that keep a job from running twice: the stricter wins.
        local = self.settings.fence_stop_grace
        return from_masters if local is None else min(local, from_masters)

    def _master_failed(self, exc: MastersUnavailable) -> None:
        now = boottime()
        if self._master_errors.allow(time.monotonic()):
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
            slave_id=s.id,
            address=s.advertise_address,
            labels=s.labels,
            cpu_total=self.capacity.cpus,
            memory_mb_total=self.capacity.memory_mb,
            usage=self._usage.sample(),
            allocations=list(self._statuses),
            runtime=self._runtime_health,
            port_range=s.ports,
            ports_host=s.ports_host,
            host_volumes=s.allow_host_volumes,
        )

    async def _heartbeat_loop(self) -> None:
        # The first heartbeat waits for the first look at the runtime: an empty
        # report from a restarted agent would tell the master its jobs are gone.
        # An engine that does not answer is worth reporting at once, though.
        await self._observed_once.wait()
        while True:
            await self._faults.wait_connected()
            self._heartbeat_wanted.clear()
            statuses = self._statuses
            sent_at = boottime()
            heartbeat = self._heartbeat()
            try:
                assignments = await self.masters.heartbeat(heartbeat)
            except MastersUnavailable as exc:
                self._master_failed(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not end the loop that renews the lease
                log_event(logger, "heartbeat.failed", logging.ERROR, error=repr(exc))
            else:
                self._sent_signature = _signature(statuses)
                self._master_ok()
                if heartbeat.runtime.healthy:
                    self._engine_fence.healthy_heard()
                try:
                    self._apply(assignments, sent_at)
                except Exception as exc:  # noqa: BLE001 - as above; the watch brings the next desired set
                    log_event(logger, "assignments.apply_failed", logging.ERROR, error=repr(exc))
            delay = self._heartbeat_interval - (boottime() - sent_at)
            await wait_set(self._heartbeat_wanted, max(0.0, delay))

    async def _watch_loop(self) -> None:
        """Brings a new desired set the moment the master has it; without it, starts wait for a heartbeat."""
        backoff = self.settings.retry_min
        while True:
            await self._faults.wait_connected()
            sent_at = boottime()
            try:
                request = WatchRequest(
                    slave_id=self.settings.id,
                    # Before any reply (version -1), 0: a master with more answers at once, and
                    # one with none has nothing for this slave yet (the heartbeat registers it).
                    known_version=max(self._version, 0),
                    wait_seconds=self.settings.watch_wait,
                )
                assignments = await self.masters.watch(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not end the loop: heartbeats alone are slower
                # Heartbeats report an outage; the watch just retries, a bit later each time.
                unexpected = not isinstance(exc, MastersUnavailable)
                log_event(logger, "watch.failed", logging.WARNING if unexpected else logging.DEBUG, error=repr(exc))
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.settings.retry_max)
                continue
            before = self._applied
            self._apply(assignments, sent_at)
            held = boottime() - sent_at
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
            await self._faults.running.wait()
            self._reconcile_wanted.clear()
            try:
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end the loop that enforces the lease
                logger.exception("reconcile pass failed")
            await wait_set(self._reconcile_wanted, self.settings.reconcile_interval)

    async def _lease_loop(self) -> None:
        """Fence the moment the lease ends: nothing else this agent waits for may delay it."""
        while True:
            self._lease_changed.clear()
            self._check_lease()
            timeout = None if self._fenced else max(0.0, self._lease.remaining(boottime())) + 0.001
            await wait_set(self._lease_changed, timeout)

    async def _engine_fence_loop(self) -> None:
        """Fence without the engine once it has been away as long as a lease (``engine_fence``).

        A loop of its own for the lease loop's reason: a reconcile pass may sit
        in a hung engine call for the whole Docker timeout.
        """
        while True:
            self._engine_changed.clear()
            now = boottime()
            term_at = self._engine_fence.term_at(self._lease.seconds)
            if term_at is not None and now >= term_at:
                self._engine_fence_now(term_at)
                term_at = None  # until something changes: a start that lands, the engine back
            await wait_set(self._engine_changed, None if term_at is None else term_at - now + 0.001)

    # --- one reconcile pass ---

    async def reconcile_once(self) -> ReconcileOutput | None:
        """One pass: look, decide, launch the actions. Only the reconcile loop calls it,
        so passes never overlap (the in-flight snapshots below rely on that)."""
        # Snapshot what is in flight *before* looking: an action that ends while
        # we look is then still counted as in flight, never as "gone".
        starting = frozenset(self._starting)
        starting_slots = frozenset(self._starting.values())
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
            # What was last reported stays as it was: a container we cannot see
            # is neither missing nor exited, it is unknown.
            self._runtime_down(str(exc))
            self._observed_once.set()
            return None
        self._runtime_up()
        fenced = self._check_lease()
        self._log_transitions(observed)
        self._known_running = {o.container_id: o for o in observed if o.phase is Phase.RUNNING}
        self._engine_fence.observe(observed)
        if fenced:
            # A fence stops every container, whatever stop was already under way.
            busy = frozenset(self._fencing)

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
                starting_slots=starting_slots,
                fenced_allocs={
                    a: datetime.fromtimestamp(at, UTC) for a, at in self._fenced_log.snapshot().items()
                },
                now=datetime.now(UTC),
                default_grace=s.default_stop_timeout,
                fence_grace=self._fence_grace,
                retention=timedelta(seconds=s.exited_retention),
                max_exited=s.max_exited,
                health=self._verdicts(desired),
            )
        )
        self._check_health(desired, observed, fenced)
        for alloc in plan.starts:
            self._starting[alloc.alloc_id] = slot_of(alloc)
            self._spawn(self._start(alloc))
        fence_ids = {stop.container_id for stop in plan.stops if stop.reason == "fenced"}
        if fence_ids:
            self._fence([o for o in observed if o.container_id in fence_ids])
        for stop in plan.stops:
            if stop.reason == "fenced":
                continue
            self._busy.add(stop.container_id)
            self._spawn(self._stop(stop))
        for removal in plan.removals:
            self._busy.add(removal.container_id)
            self._spawn(self._remove(removal))

        if desired is not None:
            # Remember fenced allocations only while someone can still ask about them.
            self._fenced_log.keep_only({*desired, *(o.alloc_id for o in observed)})
        self._statuses = plan.statuses
        self._observed_once.set()
        if _signature(plan.statuses) != self._sent_signature:
            self._heartbeat_wanted.set()
        return plan

    def _verdicts(self, desired: dict[str, Allocation] | None) -> dict[str, tuple[Health, str | None]]:
        verdicts: dict[str, tuple[Health, str | None]] = {}
        for alloc_id in desired or ():
            health, why = self._health.verdict(alloc_id)
            if health is not None:
                verdicts[alloc_id] = (health, why)
        return verdicts

    def _check_health(self, desired: dict[str, Allocation] | None, observed: list[Observed], fenced: bool) -> None:
        """Checks run for exactly the desired running allocations that have one (none while fenced)."""
        if desired is None:
            return
        running: dict[str, tuple[Allocation, Observed]] = {}
        if not fenced:
            for o in observed:
                alloc = desired.get(o.alloc_id)
                if (
                    alloc is not None and alloc.check is not None and o.phase is Phase.RUNNING
                    and alloc.desired is DesiredState.RUN and o.container_id not in self._busy
                ):
                    running[o.alloc_id] = (alloc, o)
        self._health.sync(running, set(desired))

    def _check_lease(self) -> bool:
        """Is the lease over? The moment it ends, fence (regaining is handled by _apply)."""
        fenced = self._lease.expired(boottime())
        if fenced and not self._fenced:
            self._fenced = True
            log_event(
                logger,
                "lease.expired",
                logging.WARNING,
                lease=self._lease.seconds,
                leader=self.masters.leader[0] if self.masters.leader else None,
                known_running=len(self._known_running),
                action="stopping every container of this slave",
            )
            # The last observation, not a fresh list: the engine may be slow to answer.
            self._fence(list(self._known_running.values()))
            self._spawn(self._fence_sweep())
        return fenced

    def _lease_allows_start(self) -> bool:
        # Asked from a runtime thread just before a container starts.
        return not self._lease.expired(boottime())

    def _runtime_down(self, error: str) -> None:
        if not self._engine_fence.down:
            # Before any heartbeat can carry the news: the masters count from later.
            self._engine_fence.engine_failed(boottime())
            self._engine_changed.set()
        if self._runtime_health.healthy:
            self._heartbeat_wanted.set()
        self._runtime_health = RuntimeHealth(healthy=False, error=error[:4096])
        if self._runtime_errors.allow(time.monotonic()):
            log_event(logger, "runtime.unavailable", logging.WARNING, error=error)

    def _runtime_up(self) -> None:
        if self._engine_fence.down:
            self._engine_fence.engine_answered()
            self._engine_changed.set()
        if not self._runtime_health.healthy:
            self._runtime_health = RuntimeHealth()
            self._heartbeat_wanted.set()
        if self._runtime_errors.failing:
            self._runtime_errors.reset()
            log_event(logger, "runtime.available")

    # --- fencing: its own path ---

    def _fence(self, containers: list[Observed]) -> None:
        """SIGTERM now, SIGKILL at lease end + grace, for every container not already fenced."""
        todo = [o for o in containers if o.container_id not in self._fencing]
        if todo:
            self.telemetry.fences.inc()
        if not todo:
            return
        # Recorded before any signal: an agent that dies mid-fence still knows these were its doing.
        try:
            self._fenced_log.add([o.alloc_id for o in todo], time.time())
        except OSError as exc:
            log_event(logger, "fence.persist_failed", logging.WARNING, error=str(exc))
        lease_end = self._lease.deadline
        now = boottime()
        round_trip = self.settings.fence_round_trip
        desired = self._desired or {}
        targets: dict[str, float] = {}
        for o in todo:
            self._fencing.add(o.container_id)
            grace = self._fence_grace
            if o.alloc_id in desired:
                grace = min(grace, desired[o.alloc_id].stop_timeout)
            targets[o.container_id] = max(0.0, lease_end + kill_window(grace, round_trip) - now)
        self._spawn(self._fence_batch(todo, targets))

    async def _fence_batch(self, containers: list[Observed], targets: dict[str, float]) -> None:
        began = boottime()
        try:
            await self.runtime.fence(targets)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the next pass fences what still runs
            log_event(logger, "fence.failed", logging.WARNING, containers=len(targets), error=str(exc))
            for o in containers:
                self._fencing.discard(o.container_id)
        else:
            for o in containers:
                log_event(
                    logger,
                    "container.stopped",
                    logging.WARNING,
                    job=o.job_id,
                    alloc=o.alloc_id,
                    container=o.container_id[:12],
                    reason="fenced",
                )
            log_event(
                logger,
                "fence.done",
                logging.WARNING,
                containers=len(targets),
                seconds=round(boottime() - began, 3),
            )
        finally:
            self._reconcile_wanted.set()

    def _engine_fence_now(self, term_at: float) -> None:
        """The engine has been away a lease long: signal every pinned process ourselves."""
        targets = self._engine_fence.take_targets()
        if not targets:
            return
        # Recorded before any signal, as the lease fence does: when the engine returns,
        # these exits are reported fenced (lost, not failed) and never restarted.
        try:
            self._fenced_log.add([t.alloc_id for t in targets], time.time())
        except OSError as exc:
            log_event(logger, "fence.persist_failed", logging.WARNING, error=str(exc))
        away = self._engine_fence.away_since
        assert away is not None  # term_at came from it
        desired = self._desired or {}
        schedule: list[tuple[Pin, float]] = []
        for t in targets:
            grace = self._fence_grace
            if t.alloc_id in desired:
                grace = min(grace, desired[t.alloc_id].stop_timeout)
            schedule.append((t, fence_times(away, self._lease.seconds, grace, self.settings.fence_round_trip)[1]))
        log_event(
            logger,
            "engine_fence.begun",
            logging.WARNING,
            slave=self.settings.id,
            containers=len(targets),
            engine_away=round(boottime() - away, 2),
            late=round(max(0.0, boottime() - term_at), 3) or None,
            lease=self._lease.seconds,
            error=self._runtime_health.error,
            action="killing the containers' processes without the engine: the masters may run their jobs elsewhere",
        )
        self._spawn(self._engine_fence_kill(schedule))

    async def _engine_fence_kill(self, schedule: list[tuple[Pin, float]]) -> None:
        """SIGTERM now, SIGKILL at each one's time; carried through even if the engine returns meanwhile:
        the allocations are recorded fenced, and the masters may already be placing them elsewhere."""
        began = boottime()
        for target, kill_at in schedule:
            if kill_at > began:
                self._engine_fence.send(target, signal.SIGTERM)
        killed = 0
        for target, kill_at in sorted(schedule, key=lambda item: item[1]):
            delay = kill_at - boottime()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = self._engine_fence.send(target, signal.SIGKILL)
            self._engine_fence.killed(target)
            killed += sent
            log_event(
                logger,
                "container.stopped",
                logging.WARNING,
                slave=self.settings.id,
                job=target.job_id,
                alloc=target.alloc_id,
                container=target.container_id[:12],
                pid=target.pid,
                reason="engine-fenced",
                signalled=sent,
            )
        log_event(
            logger,
            "engine_fence.done",
            logging.WARNING,
            slave=self.settings.id,
            containers=len(schedule),
            killed=killed,
            seconds=round(boottime() - began, 3),
        )
        self._reconcile_wanted.set()

    async def _fence_sweep(self) -> None:
        """Whatever runs under this slave's label that the last observation missed."""
        try:
            found = await within(self.settings.docker_timeout, self.runtime.running())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reconcile passes keep trying
            log_event(logger, "fence.sweep_failed", logging.WARNING, error=str(exc))
            return
        if self._fenced:
            self._fence(found)

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
            observed = await self.runtime.start(alloc, self._lease_allows_start)
        except StartAborted as exc:
            log_event(logger, "container.start_abandoned", job=alloc.job_id, alloc=alloc.alloc_id, reason=str(exc))
        except RuntimeUnavailable as exc:
            # The engine's fault, not the job's: retried by a later pass, never reported failed.
            self._runtime_down(str(exc))
            log_event(
                logger, "container.start_retry", logging.WARNING, job=alloc.job_id, alloc=alloc.alloc_id, error=str(exc)
            )
        except Exception as exc:  # noqa: BLE001 - anything else fails this attempt only
            message = (
                exc.message if isinstance(exc, StartFailed) else f"could not start on slave {self.settings.id}: {exc}"
            )
            self._start_failures[alloc.alloc_id] = message
            self.telemetry.start_failures.inc()
            log_event(
                logger, "container.failed", logging.WARNING, job=alloc.job_id, alloc=alloc.alloc_id, reason=message
            )
        else:
            self.telemetry.starts.inc()
            self._launched.add(alloc.alloc_id)
            if observed.phase is Phase.RUNNING:
                self._known_running[observed.container_id] = observed
                self._engine_fence.pin(observed)
                self._engine_changed.set()  # started as the engine went away: fenced like the rest
                if self._fenced:
                    # Started in the instant the lease ended: fenced like the rest.
                    self._fence([observed])
            log_event(
                logger,
                "container.started",
                job=alloc.job_id,
                alloc=alloc.alloc_id,
                container=observed.container_id[:12],
            )
        finally:
            self._starting.pop(alloc.alloc_id, None)
            self._reconcile_wanted.set()

    async def _stop(self, stop: StopAction) -> None:
        asked = time.perf_counter()
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
            self.telemetry.stop_seconds.labels(stop.reason).observe(time.perf_counter() - asked)
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
