"""One master process: its parts, wired together, and the surface the routes use.

:func:`build_master` makes the parts that touch the outside world (the
store on disk, the transport to the other masters, the HTTP client to the
slaves, the credentials) and hands them to :class:`Master`, which only wires
them: a unit test builds a ``Master`` from parts of its own and drives it in
memory. Each decision lives in one part:

- the replicated log (:mod:`claud.master.replication`): what is committed,
  and who leads;
- the slave sessions (:mod:`claud.master.slave_sessions`): what a heartbeat
  commits and what a slave is told;
- the leader's duties (:mod:`claud.master.leader_duties`): where a job goes,
  when a slave is dead, which drains are overdue; run only while leading;
- the transport (:mod:`claud.master.transport`): the master<->master protocol,
  whose snapshots stream apart (:mod:`claud.master.snapshot_stream`).

What follows a commit is a list of named subscribers of the log, in this
order: publish the changes on the event stream, log them, trace them (the
live view's record, :mod:`claud.master.trace`), wake the slaves'
watches, wake the scheduler, then start or stop the leader's duties (and
announce the term) as the role requires, count them (telemetry) and, now
and then, take the rows out of the garbage collector's walks
(:mod:`claud.master.collector`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

import httpx

from claud.api import NodeRole
from claud.daemon.addresses import outgoing_address
from claud.daemon.discovery import Announcement, Discovery, PeerEvent
from claud.daemon.faults import Faults
from claud.daemon.logfmt import log_event
from claud.master import ops, volume_gc
from claud.master.auth import Credentials, load_credentials, private_dir
from claud.master.collector import RowFreezer
from claud.master.events import EventBroker
from claud.master.identity import Identity
from claud.master.leader_duties import LeaderDuties
from claud.master.partition import PartitionedTransport
from claud.master.peer_http import PeerConnection
from claud.master.peers import MasterDirectory
from claud.master.recovery import recover_as_one_member_cluster
from claud.master.replication import ReplicatedLog
from claud.master.settings import MasterSettings
from claud.master.slave_sessions import SlaveSessions
from claud.master.snapshot_stream import SnapshotReceiver
from claud.master.state import Change, Outcome, StateMachine
from claud.master.storage import LogStore
from claud.master.telemetry import MasterTelemetry
from claud.master.transport import HttpTransport, MasterTransport

log = logging.getLogger("claud.master")

#: Connections the slave client keeps at most (one per `claud logs -f` being streamed, at most).
SLAVE_HTTP_MAX_CONNECTIONS = 200
#: Connecting to a slave for its logs; reading has no limit (`logs -f` streams for as long as the job runs).
SLAVE_HTTP_CONNECT_TIMEOUT = 10.0


class Master:
    """The routes' view of one master: identity, credentials, tables, and the parts that act."""

    def __init__(
        self,
        settings: MasterSettings,
        *,
        credentials: Credentials,
        store: LogStore,
        directory: MasterDirectory,
        replicated: ReplicatedLog,
        transport: MasterTransport,
        slave_http: httpx.AsyncClient,
        identity: Identity,
        faults: Faults | None = None,
        peer_connection: Callable[[], PeerConnection] | None = None,
    ) -> None:
        """``faults`` are this master's ``claud chaos`` faults (:mod:`claud.daemon.faults`), whose
        ``running`` event the replicated log waits on; none can be injected without them.
        ``peer_connection`` opens a connection to a peer outside the consensus transport
        (relaying the peers' traces, which a partition does not cut); without it this
        master relays only its own."""
        self.settings = settings
        self.id = settings.id
        self.address = settings.advertised_address
        self.scheme = settings.scheme
        self.credentials = credentials
        self.token, self.cluster_secret = credentials.token, credentials.cluster_secret
        self.store = store
        self.directory = directory
        self.replicated = replicated
        self.transport = transport
        self.slave_http = slave_http
        self.identity = identity
        self.faults = faults if faults is not None else Faults(enabled=False)
        self.peer_connection = peer_connection
        identity.adopt(replicated.committed_configuration)
        replicated.subscribe_configuration("identity", identity.committed)
        self.events = EventBroker()
        self.trace = replicated.trace
        self.slaves = SlaveSessions(settings, replicated)
        self.duties = LeaderDuties(settings, replicated, self.slaves)
        #: Where a leader's streamed snapshots land (``SNAPSHOT_CHUNK_PATH``).
        self.snapshot_receiver = SnapshotReceiver(settings.id, settings.data_dir, replicated.receive_snapshot)
        self.discovery: Discovery | None = None
        self._background: list[asyncio.Task[None]] = []
        replicated.subscribe_applied("events", self._publish_changes)
        replicated.subscribe_applied("log", self._log_changes)
        replicated.subscribe_applied("trace", self._trace_changes)
        replicated.subscribe_applied("watchers", self.slaves.wake_watchers)
        replicated.subscribe_applied("scheduler", self.duties.wake_scheduler)
        replicated.subscribe_applied("discovery", self._announce_term)
        replicated.subscribe_applied("duties", lambda _changes: self.duties.sync())
        self.telemetry = MasterTelemetry()
        self.telemetry.watch_tables(lambda: (self.state, self.term, self.commit_index, self.is_leader))
        replicated.on_commit_seconds = self.telemetry.commit_seconds.observe
        replicated.on_apply_seconds = self._observe_apply
        replicated.subscribe_applied("telemetry", self.telemetry.observe_applied)
        #: Moves the rows applied out of the cyclic collector's walks (claud.master.collector).
        self.collector = RowFreezer()
        replicated.subscribe_applied("collector", self.collector.applied)
        self.slaves.on_heartbeat = lambda slave_id: self.telemetry.heartbeats.labels(slave_id).inc()
        self.duties.on_scheduled = self._observe_scheduling
        self.duties.on_volumes_orphaned = self._remove_volumes
        #: Slaves being asked to remove collected jobs' volumes (claud.master.volume_gc).
        self._volume_tasks: set[asyncio.Task[None]] = set()
        replicated.subscribe_role_change("discovery", self._announce_term)
        replicated.subscribe_role_change("duties", self.duties.sync)
        replicated.subscribe_role_change("watchers", self.slaves.wake_all_watchers)
        replicated.subscribe_role_change(
            "telemetry", lambda: self.telemetry.observe_role(replicated.core.role.value, replicated.leader_id)
        )

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.replicated.start()
        if self.settings.peers:
            self._background.append(asyncio.create_task(
                self.transport.resolve_peers(self.settings.peers), name="resolve-peers"
            ))
        if not self.settings.no_discovery:
            self.discovery = Discovery(
                Announcement(id=str(self.id), role=NodeRole.MASTER, address=self.address, term=self.term),
                port=self.settings.discovery_port,
                secret=self.cluster_secret,
                on_change=self._discovered,
            )
            await self.discovery.start()

    def _remove_volumes(self, homes: dict[str, set[str]]) -> None:
        task = asyncio.create_task(volume_gc.remove_volumes(
            self.slave_http, self.cluster_secret, self.scheme, dict(self.state.slaves), homes
        ), name="volume-gc")
        self._volume_tasks.add(task)
        task.add_done_callback(self._volume_tasks.discard)

    async def stop(self) -> None:
        await self.duties.stop()
        for task in list(self._volume_tasks):
            task.cancel()
        await asyncio.gather(*self._volume_tasks, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.discovery is not None:
            await self.discovery.stop()
        await self.replicated.stop()
        await self.snapshot_receiver.close()
        await self.transport.close()
        await self.slave_http.aclose()
        self.store.close()

    def _discovered(self, event: PeerEvent) -> None:
        peer = event.peer
        if peer.role != NodeRole.MASTER or event.kind == "expired":
            return
        try:
            self.directory.learn(int(peer.id), peer.address)
        except ValueError:
            log_event(log, "discovery.bad_master_id", logging.WARNING, id=peer.id, address=peer.address)

    # ------------------------------------------------------------ the log

    @property
    def state(self) -> StateMachine:
        return self.replicated.state

    @property
    def term(self) -> int:
        return self.replicated.term

    @property
    def commit_index(self) -> int:
        return self.replicated.commit_index

    @property
    def is_leader(self) -> bool:
        return self.replicated.is_leader

    @property
    def leader_id(self) -> int | None:
        return self.replicated.leader_id

    @property
    def leader_address(self) -> str | None:
        return self.replicated.leader_address

    async def propose(self, op: ops.Operation) -> Outcome:
        """Commit ``op`` (forwarded to the leader when this master is a follower)."""
        return await self.replicated.propose(op)

    # ------------------------------------------------------------ subscribers

    def _observe_apply(self, seconds: float, entries: int) -> None:
        self.telemetry.apply_seconds.observe(seconds)
        self.telemetry.applied_entries.inc(entries)

    def _observe_scheduling(self, seconds: float, placed: int) -> None:
        self.telemetry.scheduler_seconds.observe(seconds)
        self.telemetry.placements.inc(placed)

    def _publish_changes(self, changes: list[Change]) -> None:
        self.events.record(changes)  # rendered only for readers: nobody waiting costs the commit path little

    def _log_changes(self, changes: list[Change]) -> None:
        # Every master applies every change; the leader, which acts on them,
        # logs them at INFO, followers at DEBUG, so a cluster's logs do not
        # repeat each event once per master.
        level = logging.INFO if self.replicated.is_leader else logging.DEBUG
        for change in changes:
            if change.kind == "job":
                log_event(log, "job." + change.state, level, job=change.id, slave=change.slave_id, index=change.index,
                          msg=change.message)
            else:
                log_event(log, "node." + change.state, level, slave=change.id, index=change.index, msg=change.message)

    def _trace_changes(self, changes: list[Change]) -> None:
        # Every master applies every change, so each master's trace shows the jobs
        # placed, started, fenced, lost and placed again, with the reason.
        for change in changes:
            if change.kind == "job":
                extra: dict[str, Any] = {"health": change.health} if change.health else {}
                if change.alloc_index is not None:  # a job of several allocations: which one moved
                    extra["alloc_index"] = change.alloc_index
                self.trace.record("job", job=change.id, state=change.state, slave=change.slave_id,
                                  reason=change.message, index=change.index, **extra)  # fmt: skip
            else:
                self.trace.record("slave", slave=change.id, state=change.state, reason=change.message,
                                  index=change.index)  # fmt: skip

    def _announce_term(self, _changes: list[Change] | None = None) -> None:
        if self.discovery is not None:
            self.discovery.update(term=self.term)


def slave_http_client(settings: MasterSettings, tls: ssl.SSLContext | None) -> httpx.AsyncClient:
    """The client for the one request a master sends a slave: its container's logs, streamed.

    httpx, not the masters' lean client: the answer is a stream of unknown
    length (chunked), held open as long as ``logs -f`` follows, and rare."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(SLAVE_HTTP_CONNECT_TIMEOUT, read=None),
        trust_env=False,  # a proxy from the environment must not sit between CLAUD processes
        follow_redirects=False,  # every request it sends carries the cluster secret
        transport=httpx.AsyncHTTPTransport(
            local_address=outgoing_address(settings.listen),
            limits=httpx.Limits(max_connections=SLAVE_HTTP_MAX_CONNECTIONS),
            verify=tls or True,
        ),
    )


def replicated_log(
    settings: MasterSettings, store: LogStore, directory: MasterDirectory, transport: MasterTransport,
    running: asyncio.Event | None = None,
) -> ReplicatedLog:
    """The replicated log with this master's consensus settings, over the given store and transport."""
    return ReplicatedLog(
        master_id=settings.id,
        cluster_size=settings.size,
        store=store,
        directory=directory,
        transport=transport,
        election_timeout=settings.election_timeout,
        snapshot_every=settings.snapshot_every,
        propose_timeout=settings.propose_timeout,
        running=running,
        peer_gone_delay=settings.peer_gone_seconds,
    )


def build_master(settings: MasterSettings) -> Master:
    """A master with the real parts: its data directory, HTTP to masters and slaves, TLS when configured."""
    private_dir(settings.data_dir)
    credentials = load_credentials(settings.token_file, settings.cluster_secret_file, settings.data_dir)
    store = LogStore(settings.data_dir / "claud.db")
    # One client context for every call to another CLAUD process: it checks the peer
    # against the cluster's CA and presents this master's certificate.
    tls = settings.tls.client_context() if settings.tls else None
    directory = MasterDirectory(settings.id, settings.advertised_address)
    if settings.recover_from_data_dir:
        recover_as_one_member_cluster(store, settings.id, settings.advertised_address)
    identity = Identity(settings.id, store)
    http_transport = HttpTransport(
        directory, outgoing_address(settings.listen), credentials.cluster_secret, tls, identity.headers,
        snapshot_source=store.snapshot_blob, snapshot_chunk_bytes=settings.snapshot_chunk_bytes,
        peer_gone_probe_timeout=settings.peer_gone_probe_timeout,
    )
    faults = Faults(enabled=settings.demo_faults)
    transport: MasterTransport = http_transport
    if settings.demo_faults:
        transport = PartitionedTransport(http_transport, faults)
    replicated = replicated_log(settings, store, directory, transport, faults.running)
    if settings.peer_gone_seconds:
        http_transport.on_peer_gone = replicated.peer_gone
    return Master(
        settings, credentials=credentials, store=store, directory=directory, replicated=replicated,
        transport=transport, slave_http=slave_http_client(settings, tls), identity=identity, faults=faults,
        peer_connection=http_transport.new_connection,
    )
