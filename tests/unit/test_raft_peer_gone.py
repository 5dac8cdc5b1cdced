"""The leader-gone hint (RaftCore.peer_gone): a fast failover that never deposes a live leader.

The transport reports a peer gone only when its port refuses connections; these
tests also feed the hint wrongly (about a live leader, at any moment) because
the core must stay safe whatever the hint says.
"""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from claud.master.raft import RaftConfig, RaftCore, Role
from claud.master.raft_config import Configuration, Member
from claud.master.raft_messages import AppendEntries, Message, PreVote, PreVoteReply
from claud.master.storage import HardState, Snapshot
from raft_sim import Sim

E = 10
GONE = 3


def settle(sim: Sim, ticks: int = 100) -> int:
    for _ in range(ticks):
        sim.tick()
        leader = sim.settled()
        if leader is not None:
            return leader
    raise AssertionError(f"no leader after {ticks} ticks")


def ticks_until_leader(sim: Sim, limit: int, among: set[int]) -> tuple[int, int]:
    for n in range(1, limit + 1):
        sim.tick()
        leader = sim.settled()
        if leader is not None and leader in among:
            return n, leader
    raise AssertionError(f"no leader among {sorted(among)} after {limit} ticks")


@pytest.mark.parametrize("seed", range(20))
def test_a_hint_about_the_dead_leader_elects_the_lowest_live_voter_within_a_few_ticks(seed: int) -> None:
    sim = Sim(3, seed=seed, peer_gone_ticks=GONE)
    assert settle(sim) == 1
    term = sim.core(1).term
    sim.crash(1)
    sim.hint_gone(2, 1)
    sim.hint_gone(3, 1)
    ticks, leader = ticks_until_leader(sim, 5 * E, {2, 3})
    assert leader == 2
    # The shortest wait without the hint is two whole election timeouts (rank 1).
    assert ticks <= GONE + GONE // 3 + 1 < 2 * E
    assert sim.core(2).term == term + 1  # one election, no split vote


@pytest.mark.parametrize("seed", range(10))
def test_a_hint_at_one_follower_only_still_elects_once_the_others_lease_ends(seed: int) -> None:
    sim = Sim(3, seed=seed, peer_gone_ticks=GONE)
    assert settle(sim) == 1
    sim.crash(1)
    sim.hint_gone(3, 1)  # the rank-1 survivor knows; master 2 still counts 1's lease
    ticks, _ = ticks_until_leader(sim, 5 * E, {2, 3})
    # 3 stands every 2*GONE ticks (rank 1 among the live) and wins once 2's lease
    # ends (then hands over to 2, the lower id), well before 2's own ranked timeout.
    assert ticks <= E + 2 * GONE + GONE // 3 + 1 < 2 * E


@pytest.mark.parametrize("seed", range(10))
def test_without_the_hint_or_with_it_disabled_failover_takes_the_ranked_timeout(seed: int) -> None:
    sim = Sim(3, seed=seed)  # peer_gone_ticks 0: the hint is ignored
    assert settle(sim) == 1
    sim.crash(1)
    sim.hint_gone(2, 1)
    sim.hint_gone(3, 1)
    ticks, leader = ticks_until_leader(sim, 10 * E, {2, 3})
    assert leader == 2 and ticks >= 2 * E


def test_a_hint_about_a_follower_or_at_the_leader_changes_nothing() -> None:
    sim = Sim(3, seed=1, peer_gone_ticks=GONE)
    assert settle(sim) == 1
    term = sim.core(1).term
    sim.crash(3)
    sim.hint_gone(1, 3)  # the leader: check-quorum is its rule, not the hint
    sim.hint_gone(2, 3)  # a follower of a live leader: 3 was not its leader
    sim.hint_gone(2, 2)  # about itself
    sim.hint_gone(2, 99)  # about a stranger
    assert sim.core(2).leader_id == 1
    sim.run(10 * E)
    assert sim.leaders() == [1] and sim.core(1).term == sim.core(2).term == term


def test_the_hint_ends_the_lease_so_the_follower_grants_a_pre_vote() -> None:
    follower = member(3)
    follower.step(AppendEntries(src=1, dst=3, term=1, prev_index=0, prev_term=0, entries=(), commit=0))
    follower.step(PreVote(src=2, dst=3, term=2, last_index=0, last_term=0))
    assert granted(follower) == [False]  # stickiness: it heard 1
    follower.peer_gone(1)
    assert follower.leader_id is None
    follower.step(PreVote(src=2, dst=3, term=2, last_index=0, last_term=0))
    assert granted(follower) == [True]
    assert follower.term == 1


def test_a_repeated_hint_never_extends_the_wait() -> None:
    follower = member(2)
    follower.step(AppendEntries(src=1, dst=2, term=1, prev_index=0, prev_term=0, entries=(), commit=0))
    follower.peer_gone(1)
    ticks = 0
    while follower.role is Role.FOLLOWER:
        follower.tick()
        follower.peer_gone(1)  # the transport may report again while the port stays closed
        ticks += 1
    assert ticks <= GONE + GONE // 3


def test_hearing_the_leader_again_restores_the_full_timeout() -> None:
    follower = member(2)
    heartbeat = AppendEntries(src=1, dst=2, term=1, prev_index=0, prev_term=0, entries=(), commit=0)
    follower.step(heartbeat)
    follower.peer_gone(1)
    follower.tick()
    follower.step(heartbeat)
    assert follower.leader_id == 1
    for _ in range(2 * E):
        follower.tick()
    assert follower.role is Role.FOLLOWER  # rank 1 stands after 2E+1 ticks at the earliest


def test_peer_gone_ticks_must_lie_between_the_heartbeat_and_the_election_timeout() -> None:
    for bad in (1, 2, E, E + 1):
        with pytest.raises(ValueError, match="peer_gone_ticks"):
            RaftConfig(id=1, cluster_size=3, election_ticks=E, heartbeat_ticks=2, peer_gone_ticks=bad)
    RaftConfig(id=1, cluster_size=3, election_ticks=E, heartbeat_ticks=2, peer_gone_ticks=0)
    RaftConfig(id=1, cluster_size=3, election_ticks=E, heartbeat_ticks=2, peer_gone_ticks=E - 1)


# ---------------------------------------------------------------- the live leader is never deposed

#: Per tick: hints (position among that tick's deliveries, follower told, peer named).
hint_schedules = st.lists(
    st.lists(st.tuples(st.integers(0, 12), st.sampled_from([2, 3]), st.sampled_from([1, 2, 3])), max_size=3),
    min_size=1,
    max_size=8 * E,
)


@settings(max_examples=150, deadline=None)
@given(schedule=hint_schedules, seed=st.integers(0, 2**16))
def test_a_leader_that_keeps_heartbeating_is_never_deposed_whatever_the_hints(
    schedule: list[list[tuple[int, int, int]]], seed: int
) -> None:
    sim = Sim(3, seed=seed, peer_gone_ticks=GONE)
    assert settle(sim) == 1
    term = sim.core(1).term
    rng = random.Random(seed)
    for hints in schedule:
        sim.now += 1
        for node in rng.sample(sim.alive(), 3):
            assert node.core is not None
            node.core.tick()
            sim.process(node)
        # Deliver everything sent this tick, in a random order, with the hints between messages.
        pending = sorted(hints)
        delivered = 0
        while sim.queue or pending:
            while pending and pending[0][0] <= delivered:
                _, follower, peer = pending.pop(0)
                sim.hint_gone(follower, peer)
            if not sim.queue:
                pending = [(delivered, f, p) for _, f, p in pending]
                continue
            deliver_one(sim, rng)
            delivered += 1
        assert sim.leaders() == [1], f"leader deposed at tick {sim.now}"
        assert {sim.core(i).term for i in (1, 2, 3)} == {term}


def deliver_one(sim: Sim, rng: random.Random) -> None:
    _, _, msg = sim.queue.pop(rng.randrange(len(sim.queue)))
    heapq.heapify(sim.queue)
    node = sim.nodes[msg.dst]
    if node.core is not None:
        node.core.step(msg)
        sim.process(node)


# ---------------------------------------------------------------- helpers


def member(node_id: int) -> RaftCore:
    voters = Configuration(tuple(Member(i, f"sim://{i}", True) for i in (1, 2, 3)), cluster_id="c0").encode()
    return RaftCore(
        RaftConfig(id=node_id, cluster_size=3, election_ticks=E, peer_gone_ticks=GONE),
        random.Random(node_id),
        HardState(),
        Snapshot(0, 0, "{}", voters),
        [],
        0,
        (1, 2, 3),
    )


def granted(core: RaftCore) -> list[bool]:
    msgs: list[Message] = []
    if core.has_ready():
        rd = core.ready()
        core.advance(rd)
        msgs = rd.messages
    return [m.granted for m in msgs if isinstance(m, PreVoteReply)]
