"""A deterministic, in-process network of RaftCores with a safety checker.

Everything random comes from one seeded ``random.Random``, so a failing seed
replays exactly. Time is ticks; inside a tick, messages without a delay are
delivered in rounds until the network is quiet, which matches the real masters
(a tick is 50-100 ms, a round trip about a millisecond). A node persists each
Ready before sending its messages, as the master will, and a restart builds a
fresh RaftCore from only what was persisted: hard state, snapshot, entries.

Membership: a cluster starts configured (every id a voter, given as the
configuration of a snapshot at index 0) or, with ``bootstrap``, from seats
only, the way real masters do; :meth:`Sim.change` asks the leader to add,
promote or remove a member, :meth:`Sim.add_node` starts a master with an
empty data directory, and ``chaos(membership=True)`` mixes random adds,
removes and replacements into the faults.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from claud.master.raft import RaftConfig, RaftCore, Ready, Role
from claud.master.raft_config import ChangeKind, ConfChange, ConfChangeRefused, Configuration, Member
from claud.master.raft_messages import Message
from claud.master.storage import Entry, HardState, Snapshot


class SafetyViolation(AssertionError):
    pass


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0  # share of messages held back 1..max_delay ticks
    max_delay: int = 3


CALM = Faults()


@dataclass
class SimNode:
    id: int
    config: RaftConfig
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    log: list[Entry] = field(default_factory=list)
    core: RaftCore | None = None
    applied: list[tuple[int, int, str]] = field(default_factory=list)
    incarnation: int = 0

    @property
    def alive(self) -> bool:
        return self.core is not None

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.index if self.snapshot else 0

    def entry(self, index: int) -> Entry | None:
        """The persisted entry at ``index``; None when compacted away or beyond the log."""
        pos = index - self.snapshot_index - 1
        return self.log[pos] if 0 <= pos < len(self.log) else None

    @property
    def applied_index(self) -> int:
        if self.applied:
            return self.applied[-1][0]
        return self.snapshot.index if self.snapshot else 0

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.log = []
        if rd.entries:
            first = rd.entries[0].index
            base = self.snapshot.index if self.snapshot else 0
            del self.log[max(0, first - base - 1) :]
            self.log.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state


class Checker:
    """Raft's safety properties, checked as the run goes (Raft paper, Figure 3).

    A node's log is read from what it persisted: once its Ready loop is done,
    that is everything its core holds, and it is what survives a crash."""

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.entries: dict[tuple[int, int], tuple[str, int | None]] = {}
        self.committed: dict[int, tuple[int, str]] = {}
        self.commit_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, str]] = {}
        self.commit_seen: dict[int, int] = {}
        self.leader_seen: set[tuple[int, int]] = set()

    def persisted(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        assert core is not None
        for e in rd.entries:
            key = (e.index, e.term)
            value = (e.data, core.term_at(e.index - 1))
            # Log matching, by induction: one (data, previous term) per (index, term).
            if self.entries.setdefault(key, value) != value:
                raise SafetyViolation(f"node {node.id}: {key} holds {value}, elsewhere {self.entries[key]}")

    def apply(self, node: SimNode, e: Entry) -> None:
        expected = node.applied_index + 1
        if e.index != expected:
            raise SafetyViolation(f"node {node.id} applied {e.index}, expected {expected}")
        node.applied.append((e.index, e.term, e.data))
        self._agree_applied(node.id, e.index, e.term, e.data)

    def restored(self, node: SimNode, snap: Snapshot) -> None:
        node.applied = [(i, t, d) for i, t, d in json.loads(snap.state)["applied"]]
        if node.applied_index != snap.index:
            raise SafetyViolation(f"node {node.id}: snapshot at {snap.index} holds entries up to {node.applied_index}")
        for i, t, d in node.applied:
            self._agree_applied(node.id, i, t, d)

    def _agree_applied(self, node_id: int, index: int, term: int, data: str) -> None:
        if self.applied.setdefault(index, (term, data)) != (term, data):
            raise SafetyViolation(
                f"state machine safety: node {node_id} applied {index}={(term, data)}, another {self.applied[index]}"
            )
        self._agree_committed(node_id, index, term, data, None)

    def _agree_committed(self, node_id: int, index: int, term: int, data: str, at_term: int | None) -> None:
        if self.committed.setdefault(index, (term, data)) != (term, data):
            raise SafetyViolation(
                f"committed entry changed: node {node_id} has {index}={(term, data)}, was {self.committed[index]}"
            )
        if at_term is not None:
            self.commit_term[index] = min(self.commit_term.get(index, at_term), at_term)

    def after(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        if core.role is Role.LEADER:
            if self.leaders.setdefault(core.term, node.id) != node.id:
                raise SafetyViolation(f"election safety: {self.leaders[core.term]} and {node.id} lead term {core.term}")
            if (core.term, node.id) not in self.leader_seen:
                self.leader_seen.add((core.term, node.id))
                self._leader_complete(node)
        seen = self.commit_seen.get(node.id, 0)
        if core.commit_index > seen:
            for i in range(max(seen, node.snapshot_index) + 1, core.commit_index + 1):
                e = node.entry(i)
                assert e is not None
                self._agree_committed(node.id, i, e.term, e.data, core.term)
            self.commit_seen[node.id] = core.commit_index

    def _leader_complete(self, node: SimNode) -> None:
        """An entry committed in an earlier term is in every later leader's log."""
        core = node.core
        assert core is not None
        for index, (term, data) in self.committed.items():
            if self.commit_term.get(index, core.term) >= core.term or index <= node.snapshot_index:
                continue
            e = node.entry(index)
            if e is None or (e.term, e.data) != (term, data):
                raise SafetyViolation(f"leader completeness: leader {node.id} of term {core.term} lacks {index}")


class Sim:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        ids: list[int] | None = None,
        election_ticks: int = 10,
        heartbeat_ticks: int = 2,
        max_entries_per_message: int = 512,
        max_inflight: int = 4,
        peer_gone_ticks: int = 0,
        compact_every: int = 0,
        peers_known: bool = True,
        bootstrap: bool = False,
        peers: dict[int, list[int]] | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = sorted(ids or range(1, n + 1))
        self.n = n
        self._config_args = {
            "cluster_size": n,
            "election_ticks": election_ticks,
            "heartbeat_ticks": heartbeat_ticks,
            "max_entries_per_message": max_entries_per_message,
            "max_inflight": max_inflight,
            "peer_gone_ticks": peer_gone_ticks,
        }
        #: Ids whose machine is gone for good (heal_all leaves them down).
        self.retired: set[int] = set()
        self.nodes: dict[int, SimNode] = {}
        first = None
        if not bootstrap and peers_known and peers is None:
            members = tuple(Member(i, f"sim://{i}", True) for i in self.ids)
            voters = Configuration(members, cluster_id=f"sim-{seed}").encode()
            first = Snapshot(0, 0, json.dumps({"applied": []}), voters)
        for i in self.ids:
            self.nodes[i] = SimNode(i, RaftConfig(id=i, **self._config_args), snapshot=first)
        self.now = 0
        self.faults = CALM
        self.groups: dict[int, int] | None = None
        self.compact_every = compact_every
        self.checker = Checker()
        self.queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self.delivered = 0
        self.heard: dict[int, dict[int, int]] = {}
        self.drop_if: Callable[[Message], bool] | None = None
        self.observers: list[Callable[[SimNode, Ready], None]] = []
        self._config_seen: dict[tuple[int, int, int], int] = {}
        for i in self.ids:
            self.start(i, peers=(peers or {}).get(i, self.ids if peers_known else ()))

    # ---------------------------------------------------------- nodes

    def add_node(self, node_id: int) -> None:
        """A new master with an empty data directory, knowing every master (as discovery tells it)."""
        assert node_id not in self.nodes
        self.ids = sorted([*self.ids, node_id])
        self.nodes[node_id] = SimNode(node_id, RaftConfig(id=node_id, **self._config_args))
        if self.groups is not None:
            self.groups.setdefault(node_id, 10_000 + node_id)
        self.start(node_id)

    def configuration(self) -> Configuration | None:
        """The configuration the current leader uses."""
        leader = self.leader()
        return None if leader is None else self.core(leader).configuration

    def members(self) -> list[int]:
        """The ids in the leader's configuration (every id while there is none)."""
        configuration = self.configuration()
        return sorted(configuration.ids) if configuration else list(self.ids)

    def change(self, kind: ChangeKind, node_id: int) -> Entry | None:
        """Ask the leader for a configuration change; None when it refuses (or there is none)."""
        leader = self.leader()
        if leader is None:
            return None
        try:
            entry = self.core(leader).propose_config_change(ConfChange(kind, node_id, f"sim://{node_id}"))
        except ConfChangeRefused:
            return None
        self.process(self.nodes[leader])
        return entry

    def start(self, node_id: int, peers: list[int] | tuple[int, ...] | None = None) -> None:
        node = self.nodes[node_id]
        node.incarnation += 1
        snap = node.snapshot
        node.core = RaftCore(
            node.config,
            random.Random(f"{self.seed}/{node_id}/{node.incarnation}"),
            node.hard_state,
            snap,
            list(node.log),
            applied_index=snap.index if snap else 0,
            peers=self.ids if peers is None else peers,
        )
        node.applied = [(i, t, d) for i, t, d in json.loads(snap.state)["applied"]] if snap else []
        self.checker.commit_seen[node_id] = node.core.commit_index

    def crash(self, node_id: int) -> None:
        self.nodes[node_id].core = None

    def hint_gone(self, node_id: int, peer: int) -> None:
        """Tell ``node_id`` that ``peer``'s process is gone, as its transport would."""
        node = self.nodes[node_id]
        if node.core is not None:
            node.core.peer_gone(peer)
            self.process(node)

    def alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def core(self, node_id: int) -> RaftCore:
        core = self.nodes[node_id].core
        assert core is not None
        return core

    def live(self) -> list[tuple[int, RaftCore]]:
        return [(n.id, n.core) for n in self.nodes.values() if n.core is not None]

    def leaders(self) -> list[int]:
        return [i for i, core in self.live() if core.role is Role.LEADER]

    def leader(self) -> int | None:
        """The leader of the highest term among live leaders."""
        leaders = [(core.term, i) for i, core in self.live() if core.role is Role.LEADER]
        return max(leaders)[1] if leaders else None

    def settled(self) -> int | None:
        """The leader every live node follows, if there is one."""
        leader = self.leader()
        if leader is not None and all(core.leader_id == leader for _, core in self.live()):
            return leader
        return None

    # ---------------------------------------------------------- network

    def partition(self, *groups: list[int]) -> None:
        self.groups = {i: g for g, members in enumerate(groups) for i in members}
        for i in self.ids:
            self.groups.setdefault(i, len(groups) + i)

    def heal(self) -> None:
        self.groups = None

    def connected(self, a: int, b: int) -> bool:
        return self.groups is None or self.groups[a] == self.groups[b]

    def _send(self, msg: Message) -> None:
        if self.drop_if is not None and self.drop_if(msg):
            return
        f = self.faults
        copies = 1
        if f.drop and self.rng.random() < f.drop:
            copies = 0
        elif f.duplicate and self.rng.random() < f.duplicate:
            copies = 2
        for _ in range(copies):
            delay = self.rng.randint(1, f.max_delay) if f.delay and self.rng.random() < f.delay else 0
            self._seq += 1
            heapq.heappush(self.queue, (self.now + delay, self._seq, msg))

    def deliver(self) -> None:
        rounds = 0
        while self.queue and self.queue[0][0] <= self.now:
            rounds += 1
            if rounds > 2000:
                raise SafetyViolation("message storm: the network never went quiet within a tick")
            batch = []
            while self.queue and self.queue[0][0] <= self.now:
                batch.append(heapq.heappop(self.queue)[2])
            self.rng.shuffle(batch)
            for msg in batch:
                node = self.nodes.get(msg.dst)
                if node is None or node.core is None or not self.connected(msg.src, msg.dst):
                    continue
                self.delivered += 1
                self.heard.setdefault(msg.dst, {})[msg.src] = self.now
                node.core.step(msg)
                self.process(node)

    # ---------------------------------------------------------- the caller's loop

    def process(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        while core.has_ready():
            rd = core.ready()
            for observe in self.observers:
                observe(node, rd)
            node.persist(rd)
            self.checker.persisted(node, rd)
            if rd.snapshot is not None:
                self.checker.restored(node, rd.snapshot)
            for m in rd.messages:
                self._send(m)
            for e in rd.committed:
                self.checker.apply(node, e)
            core.advance(rd)
        self.checker.after(node)
        if self.compact_every and node.applied_index - node.snapshot_index >= self.compact_every:
            self.compact(node)

    def compact(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        index, term, _ = node.applied[-1]
        configuration = core.configuration_at(index)
        snap = Snapshot(
            index,
            term,
            json.dumps({"applied": [list(x) for x in node.applied]}),
            configuration.encode() if configuration else "",
        )
        node.snapshot = snap  # the caller persists its own snapshot, then tells the core
        node.log = [e for e in node.log if e.index > index]
        core.compact(snap)

    def propose(self, node_id: int, data: str) -> Entry | None:
        node = self.nodes[node_id]
        if node.core is None:
            return None
        entry = node.core.propose(data)
        self.process(node)
        return entry

    def tick(self) -> None:
        self.now += 1
        order = self.alive()
        self.rng.shuffle(order)
        for node in order:
            assert node.core is not None
            node.core.tick()
            self.process(node)
        self.deliver()
        self._watch_minority()

    def _watch_minority(self) -> None:
        """Check-quorum: a leader must step down once it has not heard from a
        quorum for an election timeout; with the check running once per
        timeout, that is at most two timeouts after it last did. The quorum is
        the configuration's: once that changes, the clock starts again."""
        window = 2 * self.nodes[self.ids[0]].config.election_ticks + 1
        for node in self.alive():
            core = node.core
            assert core is not None
            if core.role is not Role.LEADER:
                continue
            since = self._config_seen.setdefault((node.id, core.term, core.configuration_index), self.now)
            if self.now - since < window:
                continue
            heard = self.heard.get(node.id, {})
            voters = core.voters
            recent = (node.id in voters) + sum(
                1 for src, at in heard.items() if src != node.id and src in voters and at >= self.now - window
            )
            if recent < core.quorum:
                raise SafetyViolation(f"node {node.id} still leads term {core.term} from a minority")

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()

    # ---------------------------------------------------------- scenarios

    def chaos(self, steps: int, *, proposal_rate: float = 0.3, membership: bool = False) -> int:
        """Random faults and proposals (and with ``membership`` configuration
        changes) for ``steps`` ticks; returns the number of proposals accepted."""
        rng = self.rng
        accepted = 0
        for step in range(steps):
            if membership and rng.random() < 0.02:
                self._random_change()
            if step % 150 == 0:
                self.faults = rng.choice(
                    [
                        CALM,
                        Faults(drop=0.1, duplicate=0.05, delay=0.2, max_delay=3),
                        Faults(drop=0.3, duplicate=0.1, delay=0.3, max_delay=5),
                        Faults(delay=0.5, max_delay=6, duplicate=0.2),
                    ]
                )
            r = rng.random()
            if r < 0.012:
                members = list(self.ids)
                rng.shuffle(members)
                cut = rng.randint(1, len(members) - 1)
                if rng.random() < 0.3 and len(members) >= 5:
                    cut2 = rng.randint(cut, len(members) - 1)
                    self.partition(members[:cut], members[cut:cut2], members[cut2:])
                else:
                    self.partition(members[:cut], members[cut:])
            elif r < 0.024:
                self.heal()
            if rng.random() < 0.006:
                live = self.alive()
                if live:
                    self.crash(rng.choice(live).id)
            if rng.random() < 0.03:
                dead = [i for i in self.ids if self.nodes[i].core is None and i not in self.retired]
                if dead:
                    self.start(rng.choice(dead))
            if rng.random() < proposal_rate:
                live = self.alive()
                if live:
                    target = rng.choice(live).id
                    for _ in range(rng.randint(1, 4)):
                        if self.propose(target, f"s{self.seed}-p{self._seq}-{rng.random():.6f}") is not None:
                            accepted += 1
            self.tick()
        return accepted

    def _random_change(self) -> None:
        """Add a new master, remove a member (its machine retired, or left
        running outside the cluster), or add one to replace a member."""
        configuration = self.configuration()
        if configuration is None:
            return
        rng = self.rng
        ids = sorted(configuration.ids)
        r = rng.random()
        if r < 0.4 and len(ids) < 6:
            new = max(self.ids) + 1
            self.add_node(new)
            self.change(ChangeKind.ADD_LEARNER, new)
        elif r < 0.8 and len(configuration.voters) > 2:
            victim = rng.choice(ids)
            if self.change(ChangeKind.REMOVE, victim) is not None and rng.random() < 0.5:
                self.retired.add(victim)
                self.crash(victim)
        else:
            # A replacement's second half: a machine that died is removed once
            # its successor has joined (the order an operator would choose).
            dead = [i for i in ids if self.nodes[i].core is None]
            if dead and len(configuration.learners) == 0:
                self.change(ChangeKind.REMOVE, dead[0])

    def heal_all(self) -> None:
        self.heal()
        self.faults = CALM
        for i in self.ids:
            if self.nodes[i].core is None and i not in self.retired:
                self.start(i)

    def await_commit(self, limit: int, data: str = "final") -> int:
        """Ticks until a fresh proposal is applied on every node; fails after ``limit``."""
        t0 = self.now
        pending: Entry | None = None
        proposer = 0
        attempt = 0
        while self.now - t0 < limit:
            if pending is None:
                leader = self.leader()
                if leader is not None:
                    attempt += 1
                    pending, proposer = self.propose(leader, f"{data}-{attempt}"), leader
            self.tick()
            if pending is not None:
                got = [self.applied_at(self.nodes[i], pending.index) for i in self.members()]
                if all(g == (pending.term, pending.data) for g in got):
                    return self.now - t0
                if any(g is not None and g != (pending.term, pending.data) for g in got):
                    pending = None  # that index committed with another entry: lost
                elif self.nodes[proposer].core is None or self.core(proposer).term != pending.term:
                    # Its leader is gone: the fate is unknown until the index
                    # commits, which may take new proposals; a client retries.
                    pending = None
        raise AssertionError(f"seed {self.seed}: nothing committed on every node within {limit} ticks")

    def await_lowest_leader(self, limit: int) -> int:
        """Ticks until the lowest voter leads and every member follows it."""
        t0 = self.now
        while self.now - t0 < limit:
            self.tick()
            configuration = self.configuration()
            lowest = min(configuration.voters) if configuration else self.ids[0]
            leader = self.leader()
            members = self.members()
            if leader == lowest and all(
                self.nodes[i].core is not None and self.core(i).leader_id == lowest for i in members
            ) and [i for i in self.leaders() if i in members] == [lowest]:
                return self.now - t0
        states = [(i, core.term, core.role.value) for i, core in self.live()]
        raise AssertionError(f"seed {self.seed}: leaders {self.leaders()} ({states}) after {limit} ticks")

    def applied_at(self, node: SimNode, index: int) -> tuple[int, str] | None:
        if node.applied and node.applied[0][0] <= index <= node.applied[-1][0]:
            _, t, d = node.applied[index - node.applied[0][0]]
            return (t, d)
        return None

