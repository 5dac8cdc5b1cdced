"""The replicated log: drives the pure consensus core with a clock, a disk and a network.

The order of every round is the one Raft's safety rests on: persist the hard
state and entries (fsync), then send messages, then apply committed entries.
``propose`` answers only once the entry is committed (on a quorum's disks)
and applied here; on a follower it forwards the operation to the leader.

The disk (a :class:`LogStore`) and the network (a
:class:`~claud.master.transport.MasterTransport`) are given to it, so a test
can run a master's log in memory. What happens after a round applied entries,
and after the role or the leader changed, is up to the subscribers registered
by name with :meth:`ReplicatedLog.subscribe_applied` and
:meth:`ReplicatedLog.subscribe_role_change`.

The messages each round sends and receives, the role changes and the commits
are written to this master's :class:`~claud.master.trace.Trace` (the live
view's record) here, around the core, which stays a pure step function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claud.daemon.logfmt import log_event
from claud.daemon.waits import within
from claud.master import ops
from claud.master.peers import MasterDirectory
from claud.master.raft import RaftConfig, RaftCore, Role
from claud.master.raft_config import ConfChange, Configuration, config_from_entry, is_config_entry
from claud.master.raft_messages import InstallSnapshot, Message, PreVote, VoteRequest
from claud.master.state import Change, Outcome, SnapshotParts, StateMachine, join_snapshot
from claud.master.storage import Entry, HardState, LogStore, Snapshot
from claud.master.trace import Trace
from claud.master.transport import LeaderUnavailable, MasterTransport, NotCommitted, OutcomeUnknown

log = logging.getLogger("claud.master.replication")

#: Ticks per election timeout; the tick length is election_timeout / this.
ELECTION_TICKS = 10
HEARTBEAT_TICKS = 2
#: Writes a follower forwards to the leader in one request, and such requests at once.
MAX_FORWARD_BATCH = 256
MAX_FORWARDS_IN_FLIGHT = 4
#: A write on a master that knows no leader (or whose leader refused it untaken)
#: waits this many election timeouts for the next one before answering no_leader:
#: a failover then costs its client no retry (the SDK would pause a Retry-After).
LEADER_WAIT_ELECTION_TIMEOUTS = 2
#: Rows are encoded ahead of a snapshot when the log has grown by these
#: fractions of --snapshot-every.
SNAPSHOT_WARMUPS = (0.5, 0.9)
#: A disk write of the log or hard state slower than this is logged (``raft.persist_slow``):
#: the leader sends nothing while it lasts, so a write near an election timeout explains an election.
SLOW_PERSIST_SECONDS = 0.25
#: The consensus clock waking this much later than due is logged (``raft.clock_late``): the
#: event loop (or the whole process) was held that long, and every timer with it.
LATE_TICK_SECONDS = 0.25
SNAPSHOT_WARMUP_CHUNK = 500
#: How often the commit index (a recovery hint: entries up to it are applied at start) is saved.
COMMIT_INDEX_SAVE_INTERVAL = 0.5


#: The exit status of a fail-stop (EX_SOFTWARE), apart from a configuration error's 2.
FAIL_STOP_EXIT_CODE = 70


#: Called with the changes of a round that applied entries (in the order registered).
AppliedSubscriber = Callable[[list[Change]], None]


def fail_stop(event: str, exc: BaseException, **fields: Any) -> None:
    """Exit at once with one clear line: a master whose disk or consensus loop has
    failed must not go on serving frozen tables while saying it is ready. Nothing
    is cleaned up (the store may be what failed); a restart recovers from disk."""
    log_event(log, event, logging.CRITICAL, error=repr(exc)[:500], action="exiting; restart recovers from disk",
              **fields)
    logging.shutdown()
    os._exit(FAIL_STOP_EXIT_CODE)


class ReplicatedLog:
    def __init__(
        self,
        *,
        master_id: int,
        cluster_size: int,
        store: LogStore,
        directory: MasterDirectory,
        transport: MasterTransport,
        election_timeout: float,
        snapshot_every: int,
        propose_timeout: float,
        trace: Trace | None = None,
        running: asyncio.Event | None = None,
        peer_gone_delay: float = 0.0,
    ) -> None:
        """``running`` is cleared while this master is paused (``claud chaos pause``,
        :mod:`claud.daemon.faults`): the core then neither ticks nor steps.
        ``peer_gone_delay`` (seconds, 0 for never) is how long after hearing that
        its leader's process is gone (:meth:`peer_gone`) a follower stands, per rank."""
        self.master_id = master_id
        #: What this master saw and did, for the live view (``GET /v1/cluster/trace``).
        self.trace = trace if trace is not None else Trace(master_id)
        if running is None:
            running = asyncio.Event()
            running.set()
        self.running = running
        self._store = store
        self._directory = directory
        self._transport = transport
        self._snapshot_every = snapshot_every
        self._propose_timeout = propose_timeout
        self._applied_subscribers: list[tuple[str, AppliedSubscriber]] = []
        self._role_subscribers: list[tuple[str, Callable[[], None]]] = []
        self._configuration_subscribers: list[tuple[str, Callable[[Configuration], None]]] = []
        self.tick_seconds = election_timeout / ELECTION_TICKS
        self._leader_wait = min(propose_timeout, LEADER_WAIT_ELECTION_TIMEOUTS * election_timeout)
        #: Writes waiting for the leader to change (see _forward).
        self._leader_watchers: list[asyncio.Future[None]] = []

        #: What this master proposed, by index, with the operation its entry decodes to: applied
        #: without decoding the entry a second time (if the entry at that index is still it).
        self._decoded: dict[int, ops.Encoded] = {}
        started = time.perf_counter()
        snapshot = store.snapshot()
        self.state = StateMachine.from_snapshot(snapshot.state) if snapshot else StateMachine()
        self._snapshot_index = snapshot.index if snapshot else 0
        #: The configuration of the last entry applied (committed, unlike the core's latest).
        self.committed_configuration = (
            Configuration.decode(snapshot.config) if snapshot is not None and snapshot.config else None
        )
        entries = store.entries(self.state.applied_index + 1)
        # Entries known committed before the restart are applied at once, so a
        # restarted follower serves reads before it hears from a leader.
        known_commit = store.commit_index()
        replayed = 0
        for entry in entries:
            if entry.index > known_commit:
                break
            self._apply_entry(entry)
            replayed += 1
        self.state.drain_changes()
        log_event(log, "state.recovered", index=self.state.applied_index, replayed=replayed,
                  jobs=len(self.state.jobs), slaves=len(self.state.slaves),
                  ms=round((time.perf_counter() - started) * 1000))
        self.core = RaftCore(
            RaftConfig(
                id=master_id, cluster_size=cluster_size, election_ticks=ELECTION_TICKS, heartbeat_ticks=HEARTBEAT_TICKS,
                peer_gone_ticks=peer_gone_ticks(peer_gone_delay, election_timeout),
            ),
            random.Random(),
            store.hard_state(),
            snapshot,
            entries,
            self.state.applied_index,
            dict(directory.items()),
        )
        self._configuration_index = -1
        self._stopping = False
        self._forward_queue: list[tuple[ops.Operation, asyncio.Future[tuple[Outcome, int]]]] = []
        #: Single submits waiting for the next round to log them as one entry (group commit).
        self._submits: list[tuple[ops.Encoded, asyncio.Future[Outcome]]] = []
        self._submit_bytes = 0
        # Held here, not only by the loop, which keeps just a weak reference to a task.
        self._forwarders: set[asyncio.Task[None]] = set()
        self._warmup: asyncio.Task[None] | None = None
        self._saving: asyncio.Task[None] | None = None
        self._warmups_done = 0
        self._commit_saved_at = 0.0
        self._applied_waiters: list[asyncio.Future[None]] = []
        self._inbox: list[Any] = []
        #: A streamed snapshot and the tables its receiver restored from it, until the core installs it.
        self._prepared: tuple[Snapshot, StateMachine] | None = None
        self._wakeup = asyncio.Event()
        self._waiting: dict[int, tuple[int, asyncio.Future[Outcome]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._role = self.core.role
        self._leader_id = self.core.leader_id
        #: Told the seconds each proposal took to commit here, and each round's apply (telemetry).
        self.on_commit_seconds: Callable[[float], None] | None = None
        self.on_apply_seconds: Callable[[float, int], None] | None = None
        self._traced_soft = (self.core.role, self.core.term, self.core.leader_id)
        self._traced_commit = self.state.applied_index
        #: The first index of this master's current leadership; duties start once it applies.
        self.leadership_index: int | None = None
        # The core's peer set follows the directory.
        directory.watch(self.peers_changed)

    def subscribe_applied(self, name: str, subscriber: AppliedSubscriber) -> None:
        """Run ``subscriber`` after every round that applied entries, with the changes they made.

        Subscribers run in the order registered, on the consensus loop: they
        must be quick and must not raise (one that does stops this master, as
        any failure of the loop does; its name is on the traceback)."""
        self._applied_subscribers.append((name, subscriber))

    @property
    def applied_subscribers(self) -> list[str]:
        """The names of the applied subscribers, in the order they run."""
        return [name for name, _ in self._applied_subscribers]

    def subscribe_configuration(self, name: str, subscriber: Callable[[Configuration], None]) -> None:
        """Run ``subscriber`` with each configuration as it commits (in log order),
        and with the configuration of every snapshot installed."""
        self._configuration_subscribers.append((name, subscriber))

    def subscribe_role_change(self, name: str, subscriber: Callable[[], None]) -> None:
        """Run ``subscriber`` whenever this master's role or the leader it knows changes."""
        self._role_subscribers.append((name, subscriber))

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="raft")
        self._ticker = asyncio.create_task(self._tick_loop(), name="raft-ticker")

    async def stop(self) -> None:
        """Finish the round in flight (a write, a snapshot), then stop: cancelling
        mid-write would leave a worker thread writing to a store about to close."""
        self._stopping = True
        self.running.set()  # a paused master that is told to stop stops (claud chaos)
        self._wakeup.set()
        if self._ticker:
            self._ticker.cancel()
        if self._warmup:
            self._warmup.cancel()
        await asyncio.gather(*(t for t in (self._ticker, self._task) if t), return_exceptions=True)
        if self._saving:  # the loop's last round may have started one
            await asyncio.gather(self._saving, return_exceptions=True)
        self._store.save_commit_index(self.state.applied_index)
        for _, fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(LeaderUnavailable("master is shutting down"))
        queued, self._submits = self._submits, []
        _fail([fut for _, fut in queued], LeaderUnavailable("master is shutting down"))

    # --------------------------------------------------------------- status

    @property
    def term(self) -> int:
        return self.core.term

    @property
    def commit_index(self) -> int:
        return self.state.applied_index

    @property
    def is_leader(self) -> bool:
        return self.core.role == Role.LEADER

    @property
    def leader_id(self) -> int | None:
        return self.core.leader_id

    @property
    def leader_address(self) -> str | None:
        return self._directory.address(self.core.leader_id)

    @property
    def leader_ready(self) -> bool:
        """Leader, and its own first entry has been applied (§5.4.2): safe to act on the tables."""
        index = self.leadership_index
        return self.is_leader and index is not None and self.state.applied_index >= index

    def match_indexes(self) -> dict[int, int]:
        return self.core.match_indexes() if self.is_leader else {}

    def peers_changed(self) -> None:
        self.core.set_peers(dict(self._directory.items()))
        self._wakeup.set()

    @property
    def configuration(self) -> Configuration | None:
        """The cluster configuration in use (the latest in the log); None before bootstrap."""
        return self.core.configuration

    async def change_membership(self, change: ConfChange) -> int:
        """Make a configuration change on the leader and wait until it commits;
        returns its index. ConfChangeRefused when it cannot be made now,
        OutcomeUnknown when it did not commit in time (it may still)."""
        entry = self.core.propose_config_change(change)
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[entry.index] = (entry.term, fut)
        self._wakeup.set()
        log_event(log, "raft.configuration_change", change=change.kind.value, master=change.id, index=entry.index)
        try:
            await within(self._propose_timeout, fut)
        except TimeoutError:
            raise OutcomeUnknown(
                f"configuration entry {entry.index} was not committed within {self._propose_timeout:g}s; "
                "it may still commit"
            ) from None
        return entry.index

    # ------------------------------------------------------------ proposals

    async def propose(self, op: ops.Operation) -> Outcome:
        """Commit ``op``: here when leading, else through the leader (read-your-writes either way)."""
        if self.is_leader:
            try:
                return await self.propose_local(op)
            except LeaderUnavailable:
                # Refused untaken (a submit waiting for its group when leadership moved):
                # safe to send on to the next leader, as a follower would.
                if self.is_leader or self._stopping:
                    raise
        return await self._forward(op)

    async def propose_local(self, op: ops.Operation | ops.Encoded) -> Outcome:
        """Commit ``op`` here, the leader; an :class:`~claud.master.ops.Encoded` one is logged as it is.

        Single submits are logged in groups (:meth:`_flush_submits`): those that
        arrive while a round persists share the next round's entry."""
        if not self.is_leader:
            raise LeaderUnavailable(f"master {self.master_id} is not the leader")
        encoded = op if isinstance(op, ops.Encoded) else ops.encode_checked(op)
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if encoded.op.kind == "submit_job":
            what = "the submit"
            self._submits.append((encoded, fut))
            self._submit_bytes += len(encoded.data)
            if len(self._submits) >= ops.MAX_GROUP_SUBMITS or self._submit_bytes >= ops.MAX_GROUP_BYTES:
                self._flush_submits()
        else:
            entry = self.core.propose(encoded.data)
            if entry is None:
                raise LeaderUnavailable("leadership is moving to another master")
            what = f"entry {entry.index}"
            self._decoded[entry.index] = encoded
            self._waiting[entry.index] = (entry.term, fut)
        self._wakeup.set()
        proposed = time.perf_counter()
        try:
            outcome = await within(self._propose_timeout, fut)
        except TimeoutError:
            raise OutcomeUnknown(
                f"{what} was not committed within {self._propose_timeout:g}s; it may still commit"
            ) from None
        if self.on_commit_seconds is not None:
            self.on_commit_seconds(time.perf_counter() - proposed)
        return outcome

    def _flush_submits(self) -> None:
        """Log the submits waiting: one entry, a :class:`~claud.master.ops.SubmitGroup`
        of at most MAX_GROUP_SUBMITS (one alone stays a plain submit), each submit
        answered with its own outcome once that entry is applied."""
        queued, self._submits, self._submit_bytes = self._submits, [], 0
        while queued:
            group: list[tuple[ops.Encoded, asyncio.Future[Outcome]]] = []
            size = 0
            while queued and len(group) < ops.MAX_GROUP_SUBMITS and (
                not group or size + len(queued[0][0].data) <= ops.MAX_GROUP_BYTES
            ):
                size += len(queued[0][0].data)
                group.append(queued.pop(0))
            waiters = [fut for _, fut in group]
            if not self.is_leader:
                _fail(waiters, LeaderUnavailable(f"master {self.master_id} is no longer the leader"))
                continue
            encoded = group[0][0] if len(group) == 1 else ops.group_submits([e for e, _ in group])
            entry = self.core.propose(encoded.data)
            if entry is None:
                _fail(waiters, LeaderUnavailable("leadership is moving to another master"))
                continue
            self._decoded[entry.index] = encoded
            if len(group) == 1:
                self._waiting[entry.index] = (entry.term, waiters[0])
                continue
            fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(lambda done, waiters=waiters: _share_group_outcome(done, waiters))  # type: ignore[misc]
            self._waiting[entry.index] = (entry.term, fut)

    async def _forward(self, op: ops.Operation) -> Outcome:
        """Through the leader; while none is known, or the one known refused the
        write without taking it (LeaderUnavailable: it may be dead, or handing
        over), wait for the next leader, up to the leader wait, then try again."""
        deadline = time.monotonic() + self._leader_wait
        while True:
            leader = self.leader_id
            try:
                if self.is_leader:
                    return await self.propose_local(op)
                return await self._forward_to_leader(op)
            except LeaderUnavailable:
                if self._stopping or not await self._leader_changed_from(leader, deadline):
                    raise

    async def _leader_changed_from(self, leader: int | None, deadline: float) -> bool:
        """Wait until a leader other than ``leader`` is known; False at the deadline."""
        if time.monotonic() >= deadline:
            return False
        while self.leader_id == leader or self.leader_id is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._leader_watchers.append(fut)
            with contextlib.suppress(TimeoutError):
                await within(remaining, fut)
        return True

    async def _forward_to_leader(self, op: ops.Operation) -> Outcome:
        """Queue ``op`` for the leader; writes arriving together travel in one request."""
        if self._directory.address(self.leader_id) is None or self.leader_id == self.master_id:
            raise LeaderUnavailable("no leader elected")
        fut: asyncio.Future[tuple[Outcome, int]] = asyncio.get_running_loop().create_future()
        self._forward_queue.append((op, fut))
        if len(self._forwarders) < MAX_FORWARDS_IN_FLIGHT:
            task = asyncio.create_task(self._forward_batches())
            self._forwarders.add(task)
        outcome, index = await fut
        # Read-your-writes on this master too: wait until it has applied the entry.
        await self.wait_applied(index, self._propose_timeout)
        return outcome

    async def _forward_batches(self) -> None:
        try:
            while self._forward_queue:
                batch = self._forward_queue[:MAX_FORWARD_BATCH]
                del self._forward_queue[:MAX_FORWARD_BATCH]
                leader_id = self.leader_id
                try:
                    if leader_id is None:
                        raise LeaderUnavailable("no leader elected")
                    results, index = await self._transport.forward(
                        leader_id, [op for op, _ in batch], self._propose_timeout + 1
                    )
                except Exception as exc:  # noqa: BLE001 - handed to each waiting writer, which decides
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):  # the transport pads
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result((result, index))
        finally:
            # Here, not in a done callback: a write queued after the loop ended but
            # before a callback ran would find every forwarder slot taken, and wait forever.
            self._forwarders.discard(asyncio.current_task())

    async def wait_applied(self, index: int, timeout: float) -> None:  # noqa: ASYNC109 - expiry is OutcomeUnknown
        deadline = time.monotonic() + timeout
        while self.state.applied_index < index:
            if time.monotonic() > deadline:
                raise OutcomeUnknown(f"entry {index} committed but not yet applied on master {self.master_id}")
            fut = asyncio.get_running_loop().create_future()
            self._applied_waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await within(max(0.0, deadline - time.monotonic()), fut)

    def receive(self, messages: list[Message]) -> None:
        """Queue a batch of messages (decoded by the transport) for the core."""
        self._inbox.extend(messages)
        self._wakeup.set()

    def peer_gone(self, peer_id: int) -> None:
        """The transport's word that ``peer_id``'s port refuses connections: a hint for the core."""
        self._inbox.append(_PeerGone(peer_id))
        self._wakeup.set()

    def receive_snapshot(self, message: InstallSnapshot, tables: StateMachine | None) -> None:
        """Queue a snapshot streamed from the leader, with the tables already restored from it
        (off the loop, by the receiver), so that installing it costs no second restore."""
        if tables is not None:
            self._prepared = (message.snapshot, tables)
        self.receive([message])

    # ------------------------------------------------------------ the loop

    async def _tick_loop(self) -> None:
        next_tick = time.monotonic()
        behind = False
        while True:
            next_tick += self.tick_seconds
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            late = time.monotonic() - next_tick
            if late >= LATE_TICK_SECONDS and not behind:  # once per stall, not per tick made up after it
                log_event(log, "raft.clock_late", logging.WARNING, late_ms=round(late * 1000),
                          role=self.core.role.value, term=self.core.term)
            behind = late >= self.tick_seconds
            if not self.running.is_set():  # paused: no time passes for the core, none is made up after
                await self.running.wait()
                next_tick = time.monotonic()
            self._inbox.append(_TICK)
            self._wakeup.set()

    async def _run(self) -> None:
        while not self._stopping:
            await self._wakeup.wait()
            await self.running.wait()  # paused: what arrived waits in the inbox
            self._wakeup.clear()
            try:
                inbox, self._inbox = self._inbox, []
                for item in inbox:
                    if item is _TICK:
                        self.core.tick()
                    elif isinstance(item, _Saved):
                        self.core.compact(item.snapshot)
                    elif isinstance(item, _PeerGone):
                        self.trace.record("peer.gone", peer=item.peer_id, leader=self.core.leader_id)
                        self.core.peer_gone(item.peer_id)
                    else:
                        self.trace.message(item, "in")
                        self.core.step(item)
                self._flush_submits()
                while self.core.has_ready():
                    await self._handle_ready()
                    self._flush_submits()  # those that came while this round persisted
                self._notice_role()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A disk that refuses a write, a snapshot that does not restore, a bug:
                # carrying on would serve tables that no longer advance.
                log.error("consensus loop failed", exc_info=exc)
                fail_stop("master.fail_stop", exc, index=self.state.applied_index, term=self.core.term)

    async def _handle_ready(self) -> None:
        # Persist (fsync), then send, then apply, then advance: the order Raft's safety rests on.
        # One exception, Raft's own (thesis §10.2.1, etcd's Ready contract): a leader whose term
        # and vote are already on disk sends its entries while it writes them. A follower's
        # answer is stepped only after this round's write is done, so the leader counts itself
        # towards a commit only for entries on its disk; its heartbeats no longer wait on its fsync.
        rd = self.core.ready()
        for warning in rd.warnings:
            log_event(log, "raft.warning", logging.WARNING, msg=warning)
        send_first = self.core.role is Role.LEADER and rd.hard_state is None and rd.snapshot is None
        if send_first:
            self._send(rd.messages)
        if rd.snapshot is not None or rd.hard_state is not None or rd.entries:
            persisting = time.monotonic()
            await asyncio.to_thread(self._persist, rd.snapshot, rd.hard_state, rd.entries)
            took = time.monotonic() - persisting
            if took >= SLOW_PERSIST_SECONDS:
                log_event(log, "raft.persist_slow", logging.WARNING, ms=round(took * 1000), entries=len(rd.entries),
                          snapshot=rd.snapshot is not None, role=self.core.role.value, term=self.core.term)
        if not send_first:
            self._send(rd.messages)
        if rd.snapshot is not None and rd.snapshot.index > self.state.applied_index:
            # Restoring costs seconds for a big table: done by the snapshot's receiver, or
            # here in a thread; the loop keeps answering (reads see the old tables until
            # the new ones are whole).
            rejected = self.state.rejected_entries
            prepared = self._prepared
            if prepared is not None and prepared[0] is rd.snapshot:
                self._prepared = None
                self.state = prepared[1]
            else:
                self.state = await asyncio.to_thread(StateMachine.from_snapshot, rd.snapshot.state)
            self.state.rejected_entries += rejected  # a process-local counter: it survives the install
            self._snapshot_index = rd.snapshot.index
            if rd.snapshot.config:
                self._committed(Configuration.decode(rd.snapshot.config))
            self._fail_waiting_up_to(rd.snapshot.index)
            log_event(log, "snapshot.installed", index=rd.snapshot.index, jobs=len(self.state.jobs))
            self.trace.record("snapshot.installed", index=rd.snapshot.index, term=rd.snapshot.term)
        applied_any = False
        applying = time.perf_counter()
        for entry in rd.committed:
            if entry.index <= self.state.applied_index:
                continue
            outcome = self._apply_entry(entry)
            applied_any = True
            waiting = self._waiting.pop(entry.index, None)
            if waiting is not None:
                term, fut = waiting
                if fut.done():
                    continue
                if term == entry.term:
                    fut.set_result(outcome)
                else:
                    fut.set_exception(NotCommitted(f"entry {entry.index} was replaced by another leader's"))
        if rd.committed and self.on_apply_seconds is not None:
            self.on_apply_seconds(time.perf_counter() - applying, len(rd.committed))
        self.core.advance(rd)
        self._notice_configuration()
        if applied_any:
            if self.state.applied_index > self._traced_commit:
                # Sampled: a busy leader commits many times a second; /v1/cluster has the latest.
                self._traced_commit = self.state.applied_index
                self.trace.record("commit", sample="commit", index=self.state.applied_index, term=self.core.term)
            waiters, self._applied_waiters = self._applied_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            now = time.monotonic()
            if now - self._commit_saved_at >= COMMIT_INDEX_SAVE_INTERVAL:
                # Only a hint for a faster restart, so it need not cost an fsync per batch.
                self._commit_saved_at = now
                await asyncio.to_thread(self._store.save_commit_index, self.state.applied_index)
            self._publish_applied()
            since = self.state.applied_index - self._snapshot_index
            if since >= self._snapshot_every:
                if self._saving is None and self._warmup is None:
                    # A last warm-up first, then the snapshot: with the tables changing fast, most
                    # rows changed since the 90% warm-up, and encoding them all at once held the
                    # loop past an election timeout (1.3 s at 26,000 jobs, measured).
                    self._warmup = asyncio.create_task(self._warm_up_snapshot(then_take=True),
                                                       name="snapshot-warmup")
            elif (
                self._warmup is None
                and self._warmups_done < len(SNAPSHOT_WARMUPS)
                and since >= self._snapshot_every * SNAPSHOT_WARMUPS[self._warmups_done]
            ):
                self._warmups_done += 1
                self._warmup = asyncio.create_task(self._warm_up_snapshot(), name="snapshot-warmup")

    def _send(self, messages: list[Message]) -> None:
        self._trace_round(messages)
        for msg in messages:
            self._transport.send(msg)

    def _trace_round(self, messages: list[Message]) -> None:
        """Trace what this round sends: an election begins with its vote requests."""
        requests = [m for m in messages if isinstance(m, VoteRequest)]
        if requests:
            self.trace.record("election", term=requests[0].term, pre=isinstance(requests[0], PreVote),
                              voters=sorted(m.dst for m in requests), transfer=requests[0].transfer)  # fmt: skip
        for msg in messages:
            self.trace.message(msg, "out")

    def _publish_applied(self) -> None:
        changes = self.state.drain_changes()
        for name, subscriber in self._applied_subscribers:
            try:
                subscriber(changes)
            except Exception as exc:
                exc.add_note(f"in the applied subscriber {name!r}")
                raise

    def _persist(self, snapshot: Snapshot | None, hard_state: HardState | None, entries: list[Entry]) -> None:
        if snapshot is not None:
            self._store.save_snapshot(snapshot, replace_log=True)
        if hard_state is not None:
            self._store.save_hard_state(hard_state)
        if entries:
            self._store.append(entries)

    def _apply_entry(self, entry: Entry) -> Outcome:
        # Total: an entry that cannot be decoded or applied is rejected (logged,
        # counted), alike on every master, and the applied index moves past it.
        # A configuration entry is the consensus core's: the tables see a no-op.
        if is_config_entry(entry.data):
            configuration = config_from_entry(entry.data)
            assert configuration is not None
            self._committed(configuration)
            return self.state.apply_entry(entry.index, "")
        mine = self._decoded.pop(entry.index, None)
        if mine is not None and mine.data == entry.data:
            return self.state.apply(entry.index, mine.op)
        return self.state.apply_entry(entry.index, entry.data)

    def _committed(self, configuration: Configuration) -> None:
        self.committed_configuration = configuration
        for name, subscriber in self._configuration_subscribers:
            try:
                subscriber(configuration)
            except Exception as exc:
                exc.add_note(f"in the configuration subscriber {name!r}")
                raise

    def _notice_configuration(self) -> None:
        """The directory learns the members' addresses from the configuration, which is the truth."""
        index = self.core.configuration_index
        configuration = self.core.configuration
        if index == self._configuration_index or configuration is None:
            return
        self._configuration_index = index
        log_event(log, "raft.configuration", index=index, cluster=configuration.cluster_id,
                  voters=",".join(map(str, sorted(configuration.voters))),
                  learners=",".join(map(str, sorted(configuration.learners))))
        for member in configuration.members:
            if member.address:
                self._directory.learn(member.id, member.address)

    def _fail_waiting_up_to(self, index: int) -> None:
        for i in [i for i in self._decoded if i <= index]:
            del self._decoded[i]
        for i in [i for i in self._waiting if i <= index]:
            _, fut = self._waiting.pop(i)
            if not fut.done():
                fut.set_exception(OutcomeUnknown(f"entry {i} was superseded by a snapshot"))

    async def _warm_up_snapshot(self, then_take: bool = False) -> None:
        """Encode changed rows ahead of the snapshot, a chunk per loop turn, so
        that taking it holds the loop only for rows changed since (an election
        timeout must never pass without heartbeats); ``then_take``: take it once done."""
        try:
            rows = [*self.state.jobs.values(), *self.state.slaves.values()]
            for start in range(0, len(rows), SNAPSHOT_WARMUP_CHUNK):
                for row in rows[start : start + SNAPSHOT_WARMUP_CHUNK]:
                    row.encoded()
                await asyncio.sleep(0)
        finally:
            self._warmup = None
        # Still due (a snapshot installed meanwhile may have made it moot), and none being saved.
        due = self.state.applied_index - self._snapshot_index >= self._snapshot_every
        if then_take and due and self._saving is None and not self._stopping:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        """Collect the rows' encodings here; join, compress and store them in the
        background, so the loop goes on replicating; compact the log once stored."""
        index = self.state.applied_index
        term = self.core.term_at(index)
        # Applied means committed, and a snapshot never covers more than is applied.
        assert term is not None, f"no term for applied entry {index}"
        started = time.perf_counter()
        # The only part on the event loop: it encodes the rows changed since the last snapshot.
        parts = self.state.snapshot_parts()
        configuration = self.core.configuration_at(index)
        config = configuration.encode() if configuration else ""
        encode_ms = round((time.perf_counter() - started) * 1000)
        self._snapshot_index = index
        self._warmups_done = 0
        self._saving = asyncio.create_task(
            self._save_snapshot(index, term, parts, config, started, encode_ms), name="snapshot-save"
        )

    async def _save_snapshot(
        self, index: int, term: int, parts: SnapshotParts, config: str, started: float, encode_ms: int
    ) -> None:
        def join_and_store() -> tuple[Snapshot, bool]:
            snapshot = Snapshot(index=index, term=term, state=join_snapshot(parts), config=config)
            return snapshot, self._store.save_snapshot(snapshot)

        try:
            snapshot, saved = await asyncio.to_thread(join_and_store)
        except Exception as exc:  # noqa: BLE001 - any disk trouble stops this master (fail-stop)
            fail_stop("snapshot.failed", exc, index=index)
        finally:
            self._saving = None
        if saved:
            self._inbox.append(_Saved(snapshot))
            self._wakeup.set()
        log_event(log, "snapshot.taken" if saved else "snapshot.superseded", index=index,
                  jobs=len(self.state.jobs), encode_ms=encode_ms, ms=round((time.perf_counter() - started) * 1000))

    def _notice_role(self) -> None:
        role, leader = self.core.role, self.core.leader_id
        soft = (role, self.core.term, leader)
        if soft != self._traced_soft:
            self.trace.record("role", role=role.value, term=self.core.term, leader=leader,
                              voted_for=self.core.voted_for, was=self._traced_soft[0].value,
                              index=self.core.last_index)  # fmt: skip
            self._traced_soft = soft
        if (role, leader) == (self._role, self._leader_id):
            return
        watchers, self._leader_watchers = self._leader_watchers, []
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)
        if role == Role.LEADER and self._role != Role.LEADER:
            self.leadership_index = self.core.last_index
        elif role != Role.LEADER:
            self.leadership_index = None
        log_event(log, "raft.role", role=role.value, term=self.core.term, leader=leader, index=self.core.last_index)
        self._role, self._leader_id = role, leader
        for name, subscriber in self._role_subscribers:
            try:
                subscriber()
            except Exception as exc:
                exc.add_note(f"in the role-change subscriber {name!r}")
                raise


_TICK = object()


def _fail(waiters: list[asyncio.Future[Outcome]], exc: Exception) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_exception(exc)


def _share_group_outcome(group: asyncio.Future[Outcome], waiters: list[asyncio.Future[Outcome]]) -> None:
    """Each submit of a group entry gets its own outcome, or the group's failure."""
    if group.cancelled():
        _fail(waiters, OutcomeUnknown("the group entry's wait was cancelled"))
        return
    exc = group.exception()
    if exc is not None:
        _fail(waiters, exc)  # type: ignore[arg-type]
        return
    outcome = group.result()
    shared = outcome.value if outcome.ok and isinstance(outcome.value, list) else None
    for i, fut in enumerate(waiters):
        if not fut.done():
            # A group rejected as a whole (it never is: its parts were checked) rejects each submit.
            fut.set_result(shared[i] if shared is not None and i < len(shared) else outcome)


def peer_gone_ticks(delay: float, election_timeout: float) -> int:
    """``delay`` in whole ticks, rounded up (0 stays 0: the hint is ignored)."""
    if delay <= 0:
        return 0
    return math.ceil(round(delay / (election_timeout / ELECTION_TICKS), 9))


@dataclass(frozen=True, slots=True)
class _PeerGone:
    """For the raft loop: the transport found this peer's port refusing connections."""

    peer_id: int


@dataclass(frozen=True, slots=True)
class _Saved:
    """For the raft loop: this snapshot is on disk, so the log before it may go."""

    snapshot: Snapshot
