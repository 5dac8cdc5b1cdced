"""One master process: its tables, its log, and the leader's duties.

``MasterNode`` owns every long-running loop of the process (they start in the
FastAPI lifespan). Routes call its methods; nothing else touches the tables,
and the tables change only through ``propose``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import httpx

from claud.api import Assignments, Heartbeat, HostUsage, NodeRole, NodeState
from claud.daemon.addresses import outgoing_address
from claud.daemon.discovery import Announcement, Discovery, PeerEvent
from claud.daemon.logfmt import log_event
from claud.master import ops
from claud.master.auth import load_or_create_cluster_secret, load_or_create_token, private_dir
from claud.master.events import EventBroker
from claud.master.peers import MasterDirectory, resolve_peer_ids
from claud.master.replication import ReplicatedLog
from claud.master.scheduler import schedule
from claud.master.settings import MasterSettings
from claud.master.state import NodeRecord, Outcome, StateMachine
from claud.master.storage import LogStore

log = logging.getLogger("claud.master")

#: The failure detector looks at the slaves this often.
FAILURE_CHECK_INTERVAL = 0.25


def utcnow() -> datetime:
    return datetime.now(UTC)


class NotLeader(Exception):
    """This master cannot serve a leader-only request; says who can."""

    def __init__(self, leader_id: int | None, leader_address: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_id}")
        self.leader_id, self.leader_address = leader_id, leader_address


class MasterNode:
    def __init__(self, settings: MasterSettings) -> None:
        self.settings = settings
        self.id = settings.id
        self.address = settings.advertised_address
        private_dir(settings.data_dir)
        self.token, self.token_path = load_or_create_token(settings.token_file, settings.data_dir)
        self.cluster_secret, self.cluster_secret_path = load_or_create_cluster_secret(
            settings.cluster_secret_file, settings.data_dir
        )
        self.store = LogStore(settings.data_dir / "claud.db")
        self.events = EventBroker()
        # One client context for every call to another CLAUD process: it checks the peer
        # against the cluster's CA and presents this master's certificate.
        self.tls_client = settings.tls.client_context() if settings.tls else None
        self.scheme = settings.scheme
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            trust_env=False,  # a proxy from the environment must not sit between CLAUD processes
            follow_redirects=False,  # every request it sends carries the cluster secret
            transport=httpx.AsyncHTTPTransport(
                local_address=outgoing_address(settings.listen), limits=httpx.Limits(max_connections=200),
                verify=self.tls_client or True,
            ),
        )
        self.directory = MasterDirectory(self.id, self.address, self._peers_changed)
        self.log = ReplicatedLog(
            node_id=self.id,
            cluster_size=settings.size,
            store=self.store,
            directory=self.directory,
            local_address=outgoing_address(settings.listen),
            secret=self.cluster_secret,
            tls=self.tls_client,
            election_timeout=settings.election_timeout,
            snapshot_every=settings.snapshot_every,
            propose_timeout=settings.propose_timeout,
            on_applied=self._on_applied,
            on_role_change=self._sync_duties,
        )
        self.discovery: Discovery | None = None
        self._applied = asyncio.Event()
        self._schedule_needed = asyncio.Event()
        self._duties: list[asyncio.Task[None]] = []
        self._background: list[asyncio.Task[None]] = []
        # Leader-only soft state: what the slaves told us since we became leader.
        self._last_seen: dict[str, float] = {}
        self._heartbeat_at: dict[str, datetime] = {}
        self._usage: dict[str, HostUsage] = {}
        self._touched: set[str] = set()
        #: Since when (monotonic) each slave has said its container engine does not answer.
        self._unhealthy_since: dict[str, float] = {}

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._applied = asyncio.Event()
        self._schedule_needed = asyncio.Event()
        self.log.start()
        if self.settings.peers:
            self._background.append(asyncio.create_task(
                resolve_peer_ids(
                    self.http, self.scheme, self.settings.peers, self.directory, self.cluster_secret
                ), name="resolve-peers"
            ))
        if not self.settings.no_discovery:
            self.discovery = Discovery(
                Announcement(id=str(self.id), role=NodeRole.MASTER, address=self.address, term=self.term),
                port=self.settings.discovery_port,
                secret=self.cluster_secret,
                on_change=self._discovered,
            )
            await self.discovery.start()

    def _discovered(self, event: PeerEvent) -> None:
        peer = event.peer
        if peer.role != NodeRole.MASTER or event.kind == "expired":
            return
        try:
            self.directory.learn(int(peer.id), peer.address)
        except ValueError:
            log_event(log, "discovery.bad_master_id", logging.WARNING, id=peer.id, address=peer.address)

    def _peers_changed(self) -> None:
        if hasattr(self, "log"):
            self.log.peers_changed()

    def _sync_duties(self) -> None:
        """Run the leader's loops exactly while this master is a leader whose term has begun."""
        if self.discovery is not None:
            self.discovery.update(term=self.term)
        if self.log.leader_ready and not self._duties:
            self._become_leader()
        elif not self.log.is_leader and self._duties:
            for task in self._duties:
                task.cancel()
            self._duties = []
            log_event(log, "leader.stepped_down", term=self.term, leader=self.leader_id)

    def _become_leader(self) -> None:
        now = time.monotonic()
        # Every known slave gets a full dead-after period from now: the new
        # leader has not heard from anyone yet, which says nothing about them.
        self._last_seen = {node_id: now for node_id in self.state.nodes}
        self._heartbeat_at, self._usage, self._touched = {}, {}, set()
        # The same for a slave whose engine was down: a full period from now.
        self._unhealthy_since = {n.id: now for n in self.state.nodes.values() if not n.runtime_healthy}
        log_event(log, "leader.elected", term=self.term, index=self.commit_index)
        self._duties = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._failure_detector_loop(), name="failure-detector"),
            asyncio.create_task(self._touch_loop(), name="touch-nodes"),
        ]
        self._schedule_needed.set()

    async def stop(self) -> None:
        for task in [*self._duties, *self._background]:
            task.cancel()
        await asyncio.gather(*self._duties, *self._background, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.stop()
        await self.log.stop()
        await self.http.aclose()
        self.store.close()

    # ---------------------------------------------------------- the log

    @property
    def state(self) -> StateMachine:
        return self.log.state

    @property
    def term(self) -> int:
        return self.log.term

    @property
    def commit_index(self) -> int:
        return self.log.commit_index

    @property
    def is_leader(self) -> bool:
        return self.log.is_leader

    @property
    def leader_id(self) -> int | None:
        return self.log.leader_id

    @property
    def leader_address(self) -> str | None:
        return self.directory.address(self.leader_id)

    async def propose(self, op: ops.Operation) -> Outcome:
        """Commit ``op`` (forwarded to the leader when this master is a follower)."""
        return await self.log.propose(op)

    def _on_applied(self) -> None:
        # Every master applies every change; the leader, which acts on them,
        # logs them at INFO, followers at DEBUG, so a cluster's logs do not
        # repeat each event once per master.
        level = logging.INFO if self.log.is_leader else logging.DEBUG
        subscribed = self.events.has_subscribers
        for change in self.state.drain_changes():
            if subscribed:
                self.events.publish(change.as_dict())
            if change.kind == "job":
                log_event(
                    log,
                    "job." + change.state,
                    level,
                    job=change.id,
                    node=change.node_id,
                    index=change.index,
                    msg=change.message,
                )
            else:
                log_event(log, "node." + change.state, level, node=change.id, index=change.index, msg=change.message)
        # Wake every long-polling watcher; each checks its own slave's version.
        self._applied.set()
        self._applied = asyncio.Event()
        if self._duties and self.state.has_pending():
            self._schedule_needed.set()
        self._sync_duties()

    # --------------------------------------------------------- slave protocol

    def _require_leader(self) -> None:
        if not self.log.leader_ready:
            raise NotLeader(self.leader_id if self.leader_id != self.id else None, self.leader_address)

    async def heartbeat(self, hb: Heartbeat) -> Assignments:
        self._require_leader()
        self._last_seen[hb.node_id] = time.monotonic()
        self._heartbeat_at[hb.node_id] = utcnow()
        self._usage[hb.node_id] = hb.usage
        self._touched.add(hb.node_id)
        node = self.state.nodes.get(hb.node_id)
        proposals = []
        if (
            node is None
            or node.state != NodeState.ALIVE
            or (node.address, node.labels, node.cpu_total, node.memory_mb_total)
            != (hb.address, hb.labels, hb.cpu_total, hb.memory_mb_total)
        ):
            proposals.append(
                ops.RegisterNode(
                    at=utcnow(),
                    node_id=hb.node_id,
                    address=hb.address,
                    labels=hb.labels,
                    cpu_total=hb.cpu_total,
                    memory_mb_total=hb.memory_mb_total,
                )
            )
        healthy = hb.runtime.healthy
        if healthy:
            self._unhealthy_since.pop(hb.node_id, None)
        else:
            self._unhealthy_since.setdefault(hb.node_id, time.monotonic())
        if (node.runtime_healthy if node is not None else True) != healthy:
            if not healthy:
                log_event(log, "slave.runtime_unhealthy", logging.WARNING, node=hb.node_id, error=hb.runtime.error)
            proposals.append(ops.SetRuntimeHealth(
                at=utcnow(), node_id=hb.node_id, healthy=healthy, error=None if healthy else hb.runtime.error
            ))
        statuses = self.state.relevant_statuses(hb.node_id, hb.allocations, runtime_healthy=healthy)
        if statuses:
            proposals.append(ops.ReportAllocations(
                at=utcnow(), node_id=hb.node_id, statuses=statuses, runtime_healthy=healthy
            ))
        if proposals and isinstance(proposals[0], ops.RegisterNode):
            # A slave's registration goes first: its health and reports need its row.
            await self.propose(proposals.pop(0))
        if proposals:
            await asyncio.gather(*(self.propose(op) for op in proposals))
        return self.assignments(hb.node_id)

    async def watch(self, node_id: str, known_version: int, wait_seconds: float) -> Assignments:
        self._require_leader()
        deadline = time.monotonic() + min(wait_seconds, self.settings.watch_max_wait)
        while self.state.node_versions.get(node_id, 0) == known_version:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._applied.wait(), remaining)
            except TimeoutError:
                break
        self._require_leader()  # leadership may have moved while this watch waited
        return self.assignments(node_id)

    def assignments(self, node_id: str) -> Assignments:
        return Assignments(
            term=self.term,
            leader_id=self.leader_id,
            leader_address=self.leader_address,
            version=self.state.node_versions.get(node_id, 0),
            allocations=self.state.desired_allocations(node_id),
            lease_seconds=self.settings.slave_lease,
            heartbeat_interval=self.settings.heartbeat_interval,
            fence_stop_grace=self.settings.fence_stop_grace,
        )

    def usage(self, node_id: str) -> HostUsage | None:
        return self._usage.get(node_id)

    def last_heartbeat(self, node_id: str) -> datetime | None:
        return self._heartbeat_at.get(node_id)

    # ------------------------------------------------------- leader duties

    async def _scheduler_loop(self) -> None:
        """Place pending jobs: snapshot -> pure scheduler -> plan re-checked by apply."""
        loop = asyncio.get_running_loop()
        backoff_timer: asyncio.TimerHandle | None = None
        seen_epoch: int | None = None
        while True:
            await self._schedule_needed.wait()
            self._schedule_needed.clear()
            try:
                now = utcnow()
                # Jobs that fitted nowhere are looked at again only when some slave may have gained room.
                epoch = self.state.capacity_epoch
                nodes, jobs = self.state.scheduling_snapshot(now, only_unexplained=epoch == seen_epoch)
                seen_epoch = epoch
                if jobs:
                    plan = schedule(nodes, jobs, self.settings.strategy)
                    changed_reasons = {
                        job_id: reason
                        for job_id, reason in plan.unplaced.items()
                        if self.state.jobs[job_id].pending_reason != reason
                    }
                    if plan.placements or changed_reasons:
                        await self.propose(
                            ops.ApplyPlan(
                                at=now,
                                placements=[ops.Placement(job_id=p.job_id, node_id=p.node_id) for p in plan.placements],
                                unplaced=changed_reasons,
                            )
                        )
                expiry = self.state.next_backoff_expiry()
                if backoff_timer:
                    backoff_timer.cancel()
                    backoff_timer = None
                if expiry is not None:
                    delay = max(0.0, (expiry - utcnow()).total_seconds()) + 0.01
                    backoff_timer = loop.call_later(delay, self._schedule_needed.set)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_event(log, "scheduler.error", logging.ERROR, error=repr(exc))
                await asyncio.sleep(0.5)
                self._schedule_needed.set()

    async def _failure_detector_loop(self) -> None:
        """Suspect, then declare dead, the slaves that stopped heartbeating; lose
        the jobs of those whose engine stayed away; force overdue drains."""
        settings = self.settings
        while True:
            await asyncio.sleep(FAILURE_CHECK_INTERVAL)
            now = time.monotonic()
            for node in list(self.state.nodes.values()):
                if node.state == NodeState.DEAD:
                    continue
                await self._check_drain_deadline(node)
                await self._check_runtime(node, now)
                silent = now - self._last_seen.setdefault(node.id, now)
                verdict = None
                if silent >= settings.node_dead_after:
                    verdict = NodeState.DEAD
                elif silent >= settings.suspect_after and node.state == NodeState.ALIVE:
                    verdict = NodeState.SUSPECT
                if verdict is not None:
                    try:
                        await self.propose(
                            ops.SetNodeState(
                                at=utcnow(), node_id=node.id, state=verdict, reason=f"no heartbeat for {silent:.1f}s"
                            )
                        )
                    except Exception as exc:
                        log_event(log, "failure_detector.error", logging.ERROR, node=node.id, error=repr(exc))

    async def _touch_loop(self) -> None:
        """Replicate heartbeat times and usage now and then (not every heartbeat)."""
        while True:
            await asyncio.sleep(self.settings.node_touch_interval)
            touched, self._touched = self._touched, set()
            touched &= self.state.nodes.keys()
            if not touched:
                continue
            try:
                await self.propose(
                    ops.TouchNodes(
                        at=utcnow(),
                        heartbeats={n: self._heartbeat_at[n] for n in touched},
                        usage={n: self._usage[n] for n in touched if n in self._usage},
                    )
                )
            except Exception as exc:
                log_event(log, "touch.error", logging.ERROR, error=repr(exc))

    async def _check_drain_deadline(self, node: NodeRecord) -> None:
        if not node.draining or node.drain_forced or node.drain_deadline is None or node.drain_deadline > utcnow():
            return
        try:
            await self.propose(ops.ForceDrain(at=utcnow(), node_id=node.id))
        except Exception as exc:
            log_event(log, "drain.force_error", logging.ERROR, node=node.id, error=repr(exc))

    async def _check_runtime(self, node: NodeRecord, now: float) -> None:
        """A slave whose engine has not answered for node-dead-after has lost its jobs.

        Measured from the slave's own heartbeats, like death: the agent still
        answers, so it will stop those containers (no longer desired) once its
        engine is back."""
        since = self._unhealthy_since.get(node.id)
        if node.runtime_healthy or since is None or now - since < self.settings.node_dead_after:
            return
        if not self.state.placed_jobs(node.id):
            return
        try:
            await self.propose(ops.LoseSlaveJobs(
                at=utcnow(), node_id=node.id, reason=f"unhealthy for {now - since:.1f}s: {node.runtime_error or ''}"
            ))
        except Exception as exc:
            log_event(log, "failure_detector.error", logging.ERROR, node=node.id, error=repr(exc))
