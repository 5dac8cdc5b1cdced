"""Raft consensus for the masters, as a pure state machine.

Nothing here touches a socket, a file or a clock. The master feeds in ticks and
messages and takes out, through :class:`Ready`, what to persist, what to send
and what to apply: the shape of etcd-io/raft's ``RawNode``. That keeps every
rule in one place and lets the unit tests drive thousands of seeded steps with
loss, delay, partitions and crashes in seconds.

This module decides roles, votes, replication and commit: ``step`` settles the
term, then hands the message to the step function of the current role. The log
itself is :mod:`claud.master.raft_log`, the leader's per-follower flow control
:mod:`claud.master.raft_progress`, the wire :mod:`claud.master.raft_messages`.

Beyond the Raft paper this follows the thesis' operational extensions, because
CLAUD masters come and go on real networks: pre-vote (§9.6) so a member that
rejoins cannot bump terms and depose a healthy leader; check-quorum so a
leader cut off from a majority steps down, and leader stickiness so followers
that hear a live leader refuse votes; leadership transfer (§3.10).

Membership is a configuration in the log (:mod:`claud.master.raft_config`),
changed one server at a time (§4.1): each master uses the latest configuration
its log holds, committed or not; quorums, votes and the commit index count
its voters only; a learner, or a master outside the committed configuration,
never stands, and its votes do not count; at most one change is uncommitted;
a leader that has removed itself leads until the removal commits, then steps
down; the leader promotes a learner once it has caught up with the commit index.

Bootstrap: before any configuration is in the log, the configured cluster
size N seats the first N masters known (masters learned beyond N are ignored
and reported), and an election needs *every* seat's vote: two masters' seats
can differ (four masters configured for three, each seating whom it heard of
first), and only whole seat sets, which overlap whenever fewer than 2N
masters exist, keep two such views from electing two leaders. The winner's
first entry is the first configuration, its seats as voters, with a new
cluster id; from then on the configuration in the log is the truth, majorities
count again, and discovery only tells addresses.

CLAUD rules on top: election timeouts are ranked by id so the lowest voter
stands first; a leader hands over to a lower voter once it has caught up.
A follower told that its leader's process is gone (:meth:`RaftCore.peer_gone`,
a local hint from the transport, never a message) stops counting that leader's
lease and stands after ``peer_gone_ticks`` per rank among the voters still
there, instead of a whole election timeout per rank: failover then costs a
fraction of an election timeout. Pre-vote still decides, so a wrong hint about
a live leader costs at most a refused pre-vote round.

Driving it (the caller's loop)::

    core.tick()  /  core.step(message)  /  core.propose(data)
    if core.has_ready():
        rd = core.ready()
        if rd.snapshot: persist it, drop the whole persisted log, restore the state machine from it
        persist rd.entries (overwriting from rd.entries[0].index) and rd.hard_state  -- fsync
        send rd.messages
        apply rd.committed in order
        core.advance(rd)

Readies are handled one at a time, in order; ticks, messages and proposals may
arrive between ``ready()`` and ``advance()``.

On restart, build the core from what was persisted, with ``applied_index`` the
snapshot's index (the state machine restored from the snapshot alone): entries
after it come back in ``Ready.committed`` once known to be committed. Replaying
the persisted log at start would apply entries that may never commit.

A proposal ``(index, term)`` succeeded when ``Ready.committed`` carries that
index with that term, and failed when the index commits with another term.
Once its leader has lost office its fate stays open until the index commits,
which may wait for later proposals; callers time out and retry idempotently.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from claud.master.raft_config import (
    ChangeKind,
    ConfChange,
    ConfChangeRefused,
    ConfigHistory,
    Configuration,
    apply_change,
    config_from_entry,
)
from claud.master.raft_log import RaftLog
from claud.master.raft_messages import (
    AppendEntries,
    AppendEntriesReply,
    InstallSnapshot,
    InstallSnapshotReply,
    Message,
    PreVote,
    PreVoteReply,
    RequestVote,
    RequestVoteReply,
    TimeoutNow,
    VoteRequest,
)
from claud.master.raft_progress import Progress, ProgressState
from claud.master.storage import Entry, HardState, Snapshot

__all__ = ["RaftConfig", "RaftCore", "Ready", "Role"]


@dataclass(frozen=True)
class RaftConfig:
    id: int
    cluster_size: int
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_entries_per_message: int = 512
    max_inflight: int = 4
    #: Ticks per rank a follower waits to stand once told its leader is gone; 0 ignores the hint.
    peer_gone_ticks: int = 0

    def __post_init__(self) -> None:
        if self.cluster_size < 1:
            raise ValueError("cluster_size must be at least 1")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be at least 1")
        if self.election_ticks <= self.heartbeat_ticks:
            # Check-quorum needs every follower heard from at least once per election timeout.
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.max_entries_per_message < 1 or self.max_inflight < 1:
            raise ValueError("max_entries_per_message and max_inflight must be at least 1")
        if self.peer_gone_ticks and not self.heartbeat_ticks < self.peer_gone_ticks < self.election_ticks:
            # Above a heartbeat: a follower wrongly told its live leader is gone hears it
            # again before standing. Below an election timeout, or the hint saves nothing.
            raise ValueError("peer_gone_ticks must be 0 or between heartbeat_ticks and election_ticks (exclusive)")

    @property
    def quorum(self) -> int:
        """The bootstrap quorum, before the first configuration is in the log: every seat."""
        return self.cluster_size


class Role(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass
class Ready:
    """One batch of work for the caller, in this order: persist ``snapshot``
    (dropping every persisted entry), then ``entries`` (overwriting from
    ``entries[0].index``) and ``hard_state``, fsync; then send ``messages``;
    then apply ``committed``; then ``advance(ready)``."""

    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed: list[Entry]
    role: Role
    term: int
    leader_id: int | None
    commit_index: int
    warnings: list[str] = field(default_factory=list)


class RaftCore:
    """One member's consensus state. Not thread-safe: drive it from one task."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        hard_state: HardState,
        snapshot: Snapshot | None,
        entries: list[Entry],
        applied_index: int,
        peers: Iterable[int] | Mapping[int, str] = (),
    ) -> None:
        self.config = config
        self.id = config.id
        self._rng = rng
        #: The masters this one replicates with: the latest configuration's, or the bootstrap seats.
        self.members: set[int] = {config.id}
        self.ignored: set[int] = set()
        self._addresses: dict[int, str] = {}
        self._warnings: list[str] = []

        self.term = hard_state.term
        self.voted_for = hard_state.voted_for
        self._log = RaftLog(snapshot, entries)
        self._history = ConfigHistory(self._log.snap_index, _snapshot_config(snapshot))
        self._track_configs(self._log.entries(self._log.snap_index + 1))
        self._seats: set[int] = {config.id}  # bootstrap only: the first cluster_size masters known
        if applied_index < self._log.snap_index or applied_index > self._log.last_index:
            raise ValueError(
                f"applied_index {applied_index} outside [{self._log.snap_index}, {self._log.last_index}] "
                "(restore the state machine from the snapshot first)"
            )
        self.commit_index = applied_index
        self._applied = applied_index  # the highest index handed out in Ready.committed

        self.role = Role.FOLLOWER
        self.leader_id: int | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._heartbeat_round_no = 0
        self._timeout = 0
        #: Voters reported gone (peer_gone) since this member last knew a leader.
        self._gone: set[int] = set()
        self._votes: dict[int, bool] = {}
        self._progress: dict[int, Progress] = {}
        self.transfer_target: int | None = None
        self._transfer_elapsed = 0
        self._transfer_cooldown: dict[int, int] = {}
        self._needs_broadcast = False
        self._commit_dirty = False

        self._msgs: list[Message] = []
        self._handed_hard_state = hard_state
        self._handed_soft: tuple[Role, int, int | None, int] = (self.role, self.term, None, self.commit_index)
        self._outstanding: Ready | None = None

        self._configuration_changed()
        self.set_peers(peers)
        self._reset_timeout()

    # ------------------------------------------------------------ queries

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def quorum(self) -> int:
        configuration = self._history.latest
        return self.config.quorum if configuration is None else configuration.quorum

    @property
    def configuration(self) -> Configuration | None:
        """The configuration in use (the latest in the log); None before bootstrap."""
        return self._history.latest

    @property
    def configuration_index(self) -> int:
        """The index of the entry that made :attr:`configuration`."""
        return self._history.latest_index

    def configuration_at(self, index: int) -> Configuration | None:
        """The configuration in effect at ``index`` (what a snapshot there carries)."""
        return self._history.at(index)

    @property
    def voters(self) -> frozenset[int]:
        configuration = self._history.latest
        return frozenset(self._seats) if configuration is None else configuration.voters

    @property
    def change_in_flight(self) -> bool:
        """True while a configuration change is appended but not committed."""
        return self._history.latest_index > self.commit_index

    def term_at(self, index: int) -> int | None:
        """None when the index is beyond the log or compacted away."""
        return self._log.term_at(index)

    def match_indexes(self) -> dict[int, int]:
        """The leader's view (itself: what it has persisted); empty on other members."""
        if self.role is not Role.LEADER:
            return {}
        out = {self.id: self._log.stable}
        out.update({p: pr.match for p, pr in self._progress.items()})
        return dict(sorted(out.items()))

    # ------------------------------------------------------------ membership

    def set_peers(self, peers: Iterable[int] | Mapping[int, str]) -> None:
        """Learn masters (and, from a mapping, their addresses, which only the
        bootstrap configuration takes). Before bootstrap, seats only grow and
        stop at ``cluster_size``: a master that drops out of discovery keeps its
        seat, so a later newcomer can never make this one count more than N
        voters. Once configured, a master outside the configuration is reported once."""
        if isinstance(peers, Mapping):
            self._addresses.update(peers)
        for peer in sorted(set(peers)):
            self._learn(peer)

    def _learn(self, peer: int) -> bool:
        """True when ``peer`` is a member (a seat, before bootstrap)."""
        if peer == self.id:
            return True
        configuration = self._history.latest
        if configuration is not None:
            if peer in configuration.ids:
                return True
            if peer not in self.ignored:
                self.ignored.add(peer)
                self._warnings.append(
                    f"master {peer} is not in the cluster configuration {sorted(configuration.ids)}: "
                    "it neither votes nor counts until an operator adds it"
                )
            return False
        if peer in self._seats:
            return True
        if len(self._seats) < self.config.cluster_size:
            self._seats.add(peer)
            self._configuration_changed()
            return True
        if peer not in self.ignored:
            self.ignored.add(peer)
            self._warnings.append(
                f"master {peer} ignored: cluster_size is {self.config.cluster_size} and the members "
                f"are already {sorted(self._seats)}; check the configured cluster size"
            )
        return False

    def _may_stand(self) -> bool:
        """A voter stands; so does a master whose removal is not committed yet,
        which may still be needed for a quorum (dissertation §4.2.2; its own vote
        does not count). A master outside the committed configuration never
        stands; before bootstrap every master holds its own seat."""
        if self.id in self.voters:
            return True
        committed = self._history.at(self.commit_index)
        return committed is not None and self.id in committed.voters

    def _configuration_changed(self) -> None:
        """The configuration in use moved (appended, truncated, restored, or a seat taken)."""
        configuration = self._history.latest
        self.members = set(self._seats) if configuration is None else set(configuration.ids)
        if configuration is not None:
            self.ignored -= configuration.ids
            self._addresses.update({m.id: m.address for m in configuration.members})
        if self.role is Role.LEADER:
            for peer in self.members - {self.id} - set(self._progress):
                self._progress[peer] = Progress(next=self._log.last_index + 1)
                self._needs_broadcast = True
            for peer in set(self._progress) - self.members:
                del self._progress[peer]
            if self.transfer_target is not None and self.transfer_target not in self.voters:
                self.transfer_target = None

    def _track_configs(self, entries: Iterable[Entry]) -> bool:
        """Record the configurations among ``entries`` (just added to the log); True if any."""
        found = False
        for entry in entries:
            configuration = config_from_entry(entry.data)
            if configuration is not None:
                self._history.append(entry.index, configuration)
                found = True
        return found

    def _maybe_bootstrap(self) -> None:
        """A leader elected before bootstrap (by all its seats): the first configuration."""
        if self.role is not Role.LEADER or self._history.latest is not None:
            return
        cluster_id = f"{self._rng.getrandbits(64):016x}"
        configuration = Configuration.bootstrap({i: self._addresses.get(i, "") for i in self._seats}, cluster_id)
        self._append_own(configuration.entry_data())

    # ------------------------------------------------------------ inputs

    def tick(self) -> None:
        for target in list(self._transfer_cooldown):
            self._transfer_cooldown[target] -= 1
            if self._transfer_cooldown[target] <= 0:
                del self._transfer_cooldown[target]
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self._timeout:
            if self._may_stand():
                self._campaign(pre=True)
            else:
                self._election_elapsed = 0

    def peer_gone(self, peer: int) -> None:
        """A local hint: ``peer``'s process is gone (its port refuses connections).

        A follower whose leader that is ends the lease it granted (so it grants
        pre-votes) and stands after ``peer_gone_ticks`` per rank among the
        voters not reported gone; one already without a leader only shortens
        its wait. Anyone else ignores it: a leader's check-quorum, and the
        timeout of a follower of another leader, need no hint. The hint never
        extends a wait, so repeating it changes nothing."""
        if not self.config.peer_gone_ticks or peer == self.id or peer not in self.voters:
            return
        if self.role is Role.LEADER or (self.leader_id is not None and self.leader_id != peer):
            return
        self._gone.add(peer)
        if self.leader_id == peer:
            self.leader_id = None
            self._election_elapsed = 0
            self._timeout = self._gone_timeout()
        else:
            self._timeout = min(self._timeout, self._election_elapsed + self._gone_timeout())

    def propose(self, data: str) -> Entry | None:
        """The entry as appended; the caller knows it is committed when
        ``Ready.committed`` carries the same index *and* term, and lost when
        that index commits with another term."""
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return None
        return self._append_own(data)

    def propose_config_change(self, change: ConfChange) -> Entry:
        """Append the configuration ``change`` makes (it is in use at once);
        ConfChangeRefused when this master is not the leader, when a change or
        its own first entry is still uncommitted, or when the change is not allowed."""
        if self.role is not Role.LEADER or self.transfer_target is not None:
            raise ConfChangeRefused("not_leader", f"master {self.id} is not the leader")
        configuration = self._history.latest
        if configuration is None or self.change_in_flight or self._log.term_at(self.commit_index) != self.term:
            # The last condition is the dissertation's fix (raft-dev, 2015): a new
            # leader's own entry must commit before it changes the configuration.
            raise ConfChangeRefused("in_flight", "a configuration change or a new leadership is not committed yet")
        return self._append_own(apply_change(configuration, change).entry_data())

    def _append_own(self, data: str) -> Entry:
        entry = Entry(self._log.last_index + 1, self.term, data)
        self._log.append(entry)
        if self._track_configs([entry]):
            self._configuration_changed()
        self._needs_broadcast = True
        return entry

    def transfer_leadership(self, target: int) -> bool:
        """Hand leadership to ``target`` once it has every entry. Proposals are
        refused meanwhile, so the target cannot fall behind again; after one
        election timeout without success they are accepted again."""
        if self.role is not Role.LEADER or target == self.id or target not in self._progress:
            return False
        if target not in self.voters:
            return False
        if self.transfer_target == target:
            return True
        self.transfer_target = target
        self._transfer_elapsed = 0
        if self._progress[target].match == self._log.last_index:
            self._send(TimeoutNow(src=self.id, dst=target, term=self.term))
        else:
            self._send_append(target)
        return True

    def compact(self, snapshot: Snapshot) -> None:
        """The caller snapshotted its state machine at ``snapshot.index`` (and
        persisted it); entries up to there are dropped, and the snapshot is kept
        to send to followers that fall behind it."""
        if snapshot.index <= self._log.snap_index:
            return
        if snapshot.index > self._applied:
            raise ValueError(f"cannot compact to {snapshot.index}: only {self._applied} applied")
        configuration = self._history.at(snapshot.index)
        if configuration is not None and not snapshot.config:
            snapshot = dataclasses.replace(snapshot, config=configuration.encode())
        self._log.compact(snapshot)
        self._history.compact_to(snapshot.index)

    def step(self, msg: Message) -> None:
        """Settle the term the message carries, then let the current role act on it."""
        if msg.dst != self.id or msg.src == self.id:
            return
        member = self._learn(msg.src)
        if msg.src in self._gone:  # it spoke: whatever the hint said, it is there
            self._gone.discard(msg.src)
            self._reset_timeout()
        if isinstance(msg, VoteRequest) and not member and not self.change_in_flight:
            # A master outside the committed configuration cannot win (its
            # votes would not count), nor may it move this one's term: silence,
            # as if the request were lost. Members are answered whatever this
            # master's own part (§4.2.2): the candidate counts its configuration's voters.
            return
        if not member and not isinstance(msg, (VoteRequest, AppendEntries, InstallSnapshot)):
            return  # appends are taken from any leader: this master's configuration may be behind its

        if msg.term > self.term:
            if isinstance(msg, VoteRequest) and not msg.transfer and self._in_lease():
                # Stickiness: a live leader exists; do not even adopt the term.
                self._reply_vote(msg, granted=False)
                return
            if isinstance(msg, PreVote) or (isinstance(msg, PreVoteReply) and msg.granted):
                pass  # a pre-vote is about a future term, nobody moves to it
            elif isinstance(msg, (AppendEntries, InstallSnapshot, TimeoutNow)):
                self._become_follower(msg.term, msg.src)
            else:
                self._become_follower(msg.term, None)
        elif msg.term < self.term:
            if isinstance(msg, (AppendEntries, InstallSnapshot)):
                # A stale leader: tell it the term so it steps down (pre-vote
                # means it may never hear our term otherwise).
                self._send(AppendEntriesReply(src=self.id, dst=msg.src, term=self.term, success=False, match_index=0))
            elif isinstance(msg, PreVote):
                self._send(PreVoteReply(src=self.id, dst=msg.src, term=self.term, granted=False))
            return

        if self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role is Role.FOLLOWER:
            self._step_follower(msg)
        else:
            self._step_candidate(msg)

    # ------------------------------------------------------------ outputs

    def has_ready(self) -> bool:
        """False while a Ready is out and not yet advanced."""
        if self._outstanding is not None:
            return False
        return bool(
            self._needs_broadcast
            or self._commit_dirty
            or self._msgs
            or self._log.has_unstable()
            or self.commit_index > self._applied
            or self._warnings
            or HardState(self.term, self.voted_for) != self._handed_hard_state
            or self._soft_state() != self._handed_soft
        )

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for the next one")
        if self.role is Role.LEADER and (self._needs_broadcast or self._commit_dirty):
            self._broadcast()
        if self.role is Role.LEADER and self.id not in self.voters and not self.change_in_flight:
            # Its removal is committed (and the commit index just went out): leave.
            self._become_follower(self.term, None)
        hard_state = HardState(self.term, self.voted_for)
        committed = self._log.entries(self._applied + 1, self.commit_index + 1)
        snapshot, entries = self._log.hand_out_unstable()
        rd = Ready(
            hard_state=hard_state if hard_state != self._handed_hard_state else None,
            entries=entries,
            snapshot=snapshot,
            messages=self._msgs,
            committed=committed,
            role=self.role,
            term=self.term,
            leader_id=self.leader_id,
            commit_index=self.commit_index,
            warnings=self._warnings,
        )
        self._handed_hard_state = hard_state
        self._handed_soft = self._soft_state()
        self._applied = self.commit_index
        self._msgs = []
        self._warnings = []
        self._outstanding = rd
        return rd

    def advance(self, ready: Ready) -> None:
        if ready is not self._outstanding:
            raise ValueError("advance() takes the Ready last returned by ready()")
        self._outstanding = None
        if ready.entries:
            self._log.stable_to(ready.entries[-1])
        if self.role is Role.LEADER and self._maybe_commit():
            self._commit_dirty = True

    # ------------------------------------------------------------ one step function per role

    def _step_follower(self, msg: Message) -> None:
        match msg:
            case VoteRequest():
                self._handle_vote_request(msg)
            case AppendEntries():
                self._hear_leader(msg.src)
                self._handle_append(msg)
            case InstallSnapshot():
                self._hear_leader(msg.src)
                self._handle_snapshot(msg)
            case TimeoutNow():
                if self._may_stand():
                    self._campaign(pre=False, transfer=True)
            # Vote and append replies answer a candidacy or a leadership this member no longer holds.

    def _step_candidate(self, msg: Message) -> None:
        """Pre-candidates and candidates: only the replies to their own round count."""
        match msg:
            case VoteRequest():
                self._handle_vote_request(msg)
            case PreVoteReply():
                if self.role is Role.PRE_CANDIDATE and msg.term == (self.term + 1 if msg.granted else self.term):
                    self._votes[msg.src] = msg.granted
                    self._poll()
            case RequestVoteReply():
                if self.role is Role.CANDIDATE and msg.term == self.term:
                    self._votes[msg.src] = msg.granted
                    self._poll()
            case AppendEntries() | InstallSnapshot():
                # Someone won this term: follow it.
                self._become_follower(self.term, msg.src)
                self._step_follower(msg)

    def _step_leader(self, msg: Message) -> None:
        pr = self._progress.get(msg.src)
        if pr is not None:
            pr.active = True  # any message at our term counts for check-quorum
        match msg:
            case VoteRequest():
                self._handle_vote_request(msg)
            case AppendEntriesReply():
                self._handle_append_reply(msg)
            case InstallSnapshotReply():
                self._handle_snapshot_reply(msg)
            case AppendEntries() | InstallSnapshot():
                # Another leader of our own term cannot exist (election safety);
                # should one speak, stepping down is the side that cannot break it.
                self._become_follower(self.term, msg.src)
                self._step_follower(msg)

    # ------------------------------------------------------------ roles

    def _soft_state(self) -> tuple[Role, int, int | None, int]:
        return (self.role, self.term, self.leader_id, self.commit_index)

    def _reset_timeout(self) -> None:
        """Lower ids time out first, a whole base timeout apart, so in a healthy
        cluster the lowest id stands (and wins) before anyone else tries; the
        jitter only separates retries. The +1 keeps even the shortest timeout
        past the voters' lease (election_ticks) when their ticks are out of phase."""
        if self._gone and self.leader_id is None and self.config.peer_gone_ticks:
            self._timeout = self._gone_timeout()
            return
        base = self.config.election_ticks
        voters = sorted(self.voters)
        rank = voters.index(self.id) if self.id in voters else len(voters)
        self._timeout = base * (1 + rank) + 1 + self._rng.randint(0, base // 3)

    def _gone_timeout(self) -> int:
        """Ranked like :meth:`_reset_timeout`, but among the voters not reported
        gone and ``peer_gone_ticks`` apart: the lowest live voter stands first.
        The jitter (at most a third of the step) keeps ranks from overlapping."""
        step = self.config.peer_gone_ticks
        live = sorted(self.voters - self._gone)
        rank = live.index(self.id) if self.id in live else len(live)
        return step * (1 + rank) + self._rng.randint(0, step // 3)

    def _in_lease(self) -> bool:
        return self.leader_id is not None and self._election_elapsed < self.config.election_ticks

    def _become_follower(self, term: int, leader: int | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
        self.role = Role.FOLLOWER
        self.leader_id = leader
        if leader is not None:
            self._gone.clear()
        self._election_elapsed = 0
        self._reset_timeout()
        self._votes = {}
        self._progress = {}
        self.transfer_target = None
        self._needs_broadcast = False
        self._commit_dirty = False

    def _hear_leader(self, leader: int) -> None:
        self.leader_id = leader
        self._election_elapsed = 0
        if self._gone:
            self._gone.clear()
            self._reset_timeout()

    def _campaign(self, *, pre: bool, transfer: bool = False) -> None:
        self._progress = {}
        self.transfer_target = None
        self._needs_broadcast = False
        self._commit_dirty = False
        self.leader_id = None
        if pre:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.voted_for = self.id
            term = self.term
        self._votes = {self.id: True}
        self._election_elapsed = 0
        self._reset_timeout()
        if self._poll():
            return
        kind = PreVote if pre else RequestVote
        for peer in sorted(self.voters - {self.id}):
            self._send(
                kind(
                    src=self.id,
                    dst=peer,
                    term=term,
                    last_index=self._log.last_index,
                    last_term=self._log.last_term,
                    transfer=transfer,
                )
            )

    def _poll(self) -> bool:
        """Count the votes of voters (before bootstrap against N, not against the
        seats known so far); True when the round is decided."""
        voters = self.voters
        granted = sum(v for src, v in self._votes.items() if src in voters)
        refused = sum(not v for src, v in self._votes.items() if src in voters)
        size = self.config.cluster_size if self._history.latest is None else len(voters)
        if granted >= self.quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre=False)
            else:
                self._become_leader()
            return True
        if refused > size - self.quorum:
            self._become_follower(self.term, None)
            return True
        return False

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self._gone.clear()
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._votes = {}
        self.transfer_target = None
        self._progress = {p: Progress(next=self._log.last_index + 1) for p in sorted(self.members - {self.id})}
        # §5.4.2: entries of earlier terms commit only under one of our own
        # (the first configuration, when it is time to bootstrap).
        before = self._log.last_index
        self._maybe_bootstrap()
        if self._log.last_index == before:
            self._append_own("")
        self._maybe_commit()

    # ------------------------------------------------------------ votes

    def _handle_vote_request(self, msg: VoteRequest) -> None:
        up_to_date = self._log.is_up_to_date(msg.last_index, msg.last_term)
        unclaimed = self.voted_for == msg.src or (self.voted_for is None and self.leader_id is None)
        if isinstance(msg, PreVote):
            # A pre-vote asks about the next term, where this member has not voted yet.
            self._reply_vote(msg, granted=(msg.term > self.term or unclaimed) and up_to_date)
            return
        if unclaimed and up_to_date:
            # The vote lands in the next Ready's hard_state, persisted before this reply goes out.
            self.voted_for = msg.src
            self._election_elapsed = 0
            self._reply_vote(msg, granted=True)
        else:
            self._reply_vote(msg, granted=False)

    def _reply_vote(self, msg: VoteRequest, *, granted: bool) -> None:
        if isinstance(msg, PreVote):
            self._send(PreVoteReply(src=self.id, dst=msg.src, term=msg.term if granted else self.term, granted=granted))
        else:
            self._send(RequestVoteReply(src=self.id, dst=msg.src, term=self.term, granted=granted))

    # ------------------------------------------------------------ follower side

    def _handle_append(self, msg: AppendEntries) -> None:
        prev_index, prev_term, entries = msg.prev_index, msg.prev_term, msg.entries
        if prev_index < self.commit_index:
            # Everything up to our commit index matches any current leader (§5.4):
            # skip that part, which also covers a prefix we compacted away.
            entries = entries[self.commit_index - prev_index :]
            prev_index = self.commit_index
            prev_term = self._log.term_at(prev_index) or 0
        if self._log.term_at(prev_index) != prev_term:
            hint = self._log.find_conflict_by_term(prev_index, prev_term)
            self._send(
                AppendEntriesReply(
                    src=self.id,
                    dst=msg.src,
                    term=self.term,
                    success=False,
                    match_index=0,
                    hint_index=hint,
                    hint_term=self._log.term_at(hint) or 0,
                    reject_index=msg.prev_index,
                )
            )
            return
        self._append_from_leader(entries)
        last_new = prev_index + len(entries)
        commit = min(msg.commit, last_new)
        if commit > self.commit_index:
            self.commit_index = commit
        self._send(AppendEntriesReply(src=self.id, dst=msg.src, term=self.term, success=True, match_index=last_new))

    def _append_from_leader(self, entries: tuple[Entry, ...]) -> None:
        """Entries we already hold stay (a delayed duplicate truncates nothing);
        from the first one we lack or hold with another term, the leader's win."""
        new = entries[self._log.first_new(entries) :]
        if not new:
            return
        if self._log.term_at(new[0].index) is not None and new[0].index <= self.commit_index:
            raise AssertionError(
                f"raft safety violated: truncating committed index {new[0].index} (commit {self.commit_index})"
            )
        truncated = self._history.latest_index >= new[0].index
        self._history.truncate_from(new[0].index)
        self._log.truncate_and_append(new)
        if self._track_configs(new) or truncated:
            self._configuration_changed()

    def _handle_snapshot(self, msg: InstallSnapshot) -> None:
        snap = msg.snapshot
        if snap.index <= self.commit_index:
            match = self.commit_index
        elif self._log.term_at(snap.index) == snap.term:
            # We already hold that prefix; it is committed, nothing to replace.
            self.commit_index = snap.index
            match = snap.index
        else:
            self._log.restore(snap)
            self._history.reset(snap.index, _snapshot_config(snap))
            self._configuration_changed()
            self.commit_index = self._applied = snap.index
            match = snap.index
        self._send(InstallSnapshotReply(src=self.id, dst=msg.src, term=self.term, match_index=match))

    # ------------------------------------------------------------ leader side

    def _tick_leader(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self.transfer_target is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= self.config.election_ticks:
                self._transfer_cooldown[self.transfer_target] = 4 * self.config.election_ticks
                self.transfer_target = None
        for pr in self._progress.values():
            pr.tick(self.config.election_ticks)
        if self._election_elapsed >= self.config.election_ticks:
            # Check-quorum: step down unless a majority was heard from during the timeout.
            self._election_elapsed = 0
            voters = self.voters
            active = (self.id in voters) + sum(pr.active for p, pr in self._progress.items() if p in voters)
            for pr in self._progress.values():
                pr.active = False
            if active < self.quorum:
                self._become_follower(self.term, None)
                return
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._heartbeat_round()
        self._maybe_auto_transfer()
        self._maybe_promote()

    def _heartbeat_round(self) -> None:
        self._heartbeat_round_no += 1
        for peer, pr in self._progress.items():
            pr.heartbeat(self._heartbeat_round_no)
            if not self._send_append(peer):
                self._send_heartbeat(peer)
            if self.transfer_target == peer and pr.match == self._log.last_index:
                self._send(TimeoutNow(src=self.id, dst=peer, term=self.term))

    def _broadcast(self) -> None:
        """New entries (or a new commit index) go out once per Ready, so all
        proposals made between two ready() calls travel together."""
        for peer in self._progress:
            if not self._send_append(peer) and self._commit_dirty:
                self._send_heartbeat(peer)
        self._needs_broadcast = False
        self._commit_dirty = False

    def _send_heartbeat(self, peer: int) -> None:
        pr = self._progress[peer]
        # prev = match: the follower certainly holds it, so the heartbeat never
        # fails and carries commit safely (the follower commits min(commit, match)).
        prev = pr.match if pr.match >= self._log.snap_index else 0
        self._send(
            AppendEntries(
                src=self.id,
                dst=peer,
                term=self.term,
                prev_index=prev,
                prev_term=self._log.term_at(prev) or 0,
                entries=(),
                commit=self.commit_index,
            )
        )

    def _send_append(self, peer: int) -> bool:
        """Send what the follower lacks, within its flow-control window; True if anything went."""
        pr = self._progress[peer]
        sent = False
        while pr.can_send(self._log.last_index, self.config.max_inflight):
            prev = pr.next - 1
            prev_term = self._log.term_at(prev)
            if prev_term is None:
                if prev > self._log.last_index:  # cannot happen unless match bookkeeping broke; recover by probing
                    pr.next = self._log.last_index + 1
                    continue
                snapshot = self._log.snapshot
                assert snapshot is not None
                self._send(InstallSnapshot(src=self.id, dst=peer, term=self.term, snapshot=snapshot))
                pr.become_snapshot()
                return True
            entries = tuple(self._log.entries(pr.next, pr.next + self.config.max_entries_per_message))
            self._send(
                AppendEntries(
                    src=self.id,
                    dst=peer,
                    term=self.term,
                    prev_index=prev,
                    prev_term=prev_term,
                    entries=entries,
                    commit=self.commit_index,
                )
            )
            sent = True
            pr.sent(prev + len(entries), self._heartbeat_round_no)
        return sent

    def _handle_append_reply(self, msg: AppendEntriesReply) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        if not msg.success:
            if msg.reject_index < pr.match:
                # Stale: a later message already got past that point. (Equal is
                # not stale: the follower reached the point afterwards, so what
                # the refused message carried is still missing.)
                return
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
            else:
                if msg.reject_index != pr.next - 1:
                    return  # refusal of an older probe
                hint = msg.hint_index
                if msg.hint_term:
                    hint = self._log.find_conflict_by_term(msg.hint_index, msg.hint_term)
                pr.probe_from(min(msg.reject_index, hint + 1))
            self._send_append(msg.src)
            return
        if pr.acked(msg.match_index) and self._maybe_commit():
            self._commit_dirty = True
        self._send_append(msg.src)
        self._maybe_promote()
        if self.transfer_target == msg.src:
            if pr.match == self._log.last_index:
                self._send(TimeoutNow(src=self.id, dst=msg.src, term=self.term))
        else:
            self._maybe_auto_transfer()

    def _handle_snapshot_reply(self, msg: InstallSnapshotReply) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.snapshot_done(msg.match_index)
        if self._maybe_commit():
            self._commit_dirty = True
        self._send_append(msg.src)

    def _maybe_commit(self) -> bool:
        """§5.4.2: count the voters' replicas, but commit only an entry of the current term."""
        matches = [self._log.stable if v == self.id else self._progress[v].match if v in self._progress else 0
                   for v in self.voters]
        if self._history.latest is None:
            matches += [0] * (self.config.cluster_size - len(matches))
        matches.sort(reverse=True)
        candidate = matches[self.quorum - 1]
        if candidate > self.commit_index and self._log.term_at(candidate) == self.term:
            self.commit_index = candidate
            return True
        return False

    def _maybe_auto_transfer(self) -> None:
        """The lowest id should lead; a lower member takes over once it holds
        every entry (so it catches up before anyone waits on it)."""
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return
        voters = self.voters
        ready = [
            p
            for p, pr in self._progress.items()
            if p < self.id
            and p in voters
            and pr.active
            and pr.match == self._log.last_index
            and p not in self._transfer_cooldown
        ]
        if ready:
            self.transfer_leadership(min(ready))

    def _maybe_promote(self) -> None:
        """A learner that holds everything committed becomes a voter (one change at a time)."""
        configuration = self._history.latest
        if (
            self.role is not Role.LEADER
            or configuration is None
            or not configuration.learners
            or self.transfer_target is not None
            or self.change_in_flight
            or self._log.term_at(self.commit_index) != self.term
        ):
            return  # not now: the next reply or tick looks again
        for learner in sorted(configuration.learners):
            pr = self._progress.get(learner)
            if pr is not None and pr.match >= self.commit_index:
                self.propose_config_change(ConfChange(ChangeKind.PROMOTE, learner))
                return

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)


def _snapshot_config(snapshot: Snapshot | None) -> Configuration | None:
    if snapshot is None or not snapshot.config:
        return None
    return Configuration.decode(snapshot.config)
