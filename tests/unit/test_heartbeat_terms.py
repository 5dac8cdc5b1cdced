"""Heartbeat terms that scale with the cluster (issue 16): for every slave count,
every stagger and every configuration a master accepts, a cut-off slave fences
before the masters declare it dead, and a slave that does not read the scaled
interval (an earlier agent) stays inside the same bound."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from claud.master.heartbeat_terms import STAGGER, fencing_bound, longest, max_factor, terms_for
from claud.master.settings import MasterSettings
from claud.slave.fencing import asked_heartbeat, honour

EPS = 1e-9


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CLAUD_")]:
        monkeypatch.delenv(name)


seconds = st.floats(min_value=0.01, max_value=120, allow_nan=False)


@st.composite
def master_settings(draw: st.DrawFn) -> MasterSettings:
    heartbeat = draw(seconds)
    fields: dict[str, Any] = dict(
        heartbeat_interval=heartbeat,
        slave_lease=draw(st.floats(min_value=2.01, max_value=20)) * heartbeat,
        election_timeout=draw(st.floats(min_value=0.051, max_value=5)),
        fence_stop_grace=draw(st.floats(min_value=0, max_value=10)),
        max_heartbeats_per_second=draw(st.floats(min_value=0.1, max_value=10_000)),
        node_gc_after=draw(st.floats(min_value=1, max_value=10 * 24 * 3600.0)),
    )
    lease, election = fields["slave_lease"], fields["election_timeout"]
    bound = fencing_bound(lease=lease, interval=heartbeat, election_timeout=election,
                          fence_stop_grace=fields["fence_stop_grace"])
    fields["node_dead_after"] = bound * draw(st.floats(min_value=1, max_value=3))
    fields["suspect_after"] = fields["node_dead_after"] * draw(st.floats(min_value=0.05, max_value=0.95))
    fields["node_gc_after"] = max(fields["node_gc_after"], fields["node_dead_after"])
    try:
        return MasterSettings(id=1, no_discovery=True, **fields)
    except ValidationError:
        assume(False)
        raise


slaves = st.integers(min_value=0, max_value=5_000_000)
staggers = st.floats(min_value=0, max_value=1)


@settings(max_examples=400, deadline=None)
@given(master_settings(), slaves, staggers)
def test_a_cut_off_slave_fences_before_the_masters_declare_it_dead(s: MasterSettings, n: int, u: float) -> None:
    terms = terms_for(s, n, u)
    needed = fencing_bound(lease=terms.lease, interval=terms.interval, election_timeout=s.election_timeout,
                           fence_stop_grace=s.fence_stop_grace)
    assert terms.dead_after >= needed - EPS * needed
    assert terms.lease > 2 * terms.interval  # a healthy slave does not fence on one late reply
    assert terms.lease >= 3 * s.election_timeout - EPS  # nor during a leader failover
    assert terms.suspect_after < terms.dead_after
    assert terms.interval >= s.heartbeat_interval
    assert terms.dead_after <= max(s.node_gc_after, s.node_dead_after) * (1 + EPS)


@settings(max_examples=300, deadline=None)
@given(master_settings(), slaves, staggers)
def test_the_leader_handles_at_most_its_rate_unless_the_cap_binds(s: MasterSettings, n: int, u: float) -> None:
    terms = terms_for(s, n, u)
    if terms.factor < max_factor(s):
        assert n / terms.interval <= s.max_heartbeats_per_second * (1 + EPS)


@settings(max_examples=300, deadline=None)
@given(master_settings(), st.floats(min_value=0, max_value=1), staggers)
def test_a_small_cluster_keeps_the_configured_terms(s: MasterSettings, share: float, u: float) -> None:
    n = int(share * s.max_heartbeats_per_second * s.heartbeat_interval / (1 + STAGGER))
    terms = terms_for(s, n, u)
    assert (terms.interval, terms.lease, terms.suspect_after, terms.dead_after, terms.factor) == (
        s.heartbeat_interval, s.slave_lease, s.suspect_after, s.node_dead_after, 1.0
    )


@settings(max_examples=300, deadline=None)
@given(master_settings(), slaves, st.integers(min_value=0, max_value=1000), staggers)
def test_a_new_leader_assumes_at_least_any_grant_an_earlier_one_made(
    s: MasterSettings, n: int, more: int, u: float
) -> None:
    # The earlier leader counted n live slaves; the new one counts every slave in the tables (>= n).
    granted, assumed = terms_for(s, n, u), longest(s, n + more)
    assert assumed.dead_after >= granted.dead_after
    assert assumed.lease >= granted.lease


@settings(max_examples=300, deadline=None)
@given(
    s=master_settings(), n=slaves, u=staggers,
    own=st.floats(min_value=0.01, max_value=60), longest_lease=st.floats(min_value=0.1, max_value=600),
    round_trip=st.floats(min_value=0, max_value=1), old_agent=st.booleans(),
)
def test_what_the_slave_applies_never_outlasts_the_grant(
    s: MasterSettings, n: int, u: float, own: float, longest_lease: float, round_trip: float, old_agent: bool
) -> None:
    terms = terms_for(s, n, u)
    # An agent of the earlier version reads no next_heartbeat: it keeps beating at most every base interval.
    heartbeat = asked_heartbeat(own, s.heartbeat_interval, None if old_agent else terms.interval)
    applied = honour(lease=terms.lease, grace=s.fence_stop_grace, heartbeat=heartbeat,
                     longest_lease=longest_lease, grace_cap=None, round_trip=round_trip)
    assert applied.lease <= terms.lease  # it fences no later than the masters count on
    assert applied.heartbeat <= terms.interval * (1 + EPS)  # nor beats slower than they expect
    if applied.lease > 0:
        assert applied.lease >= 2 * applied.heartbeat - EPS or applied.heartbeat <= 0.05 + EPS


def test_a_thousand_slaves_at_the_default_rate() -> None:
    s = MasterSettings(id=1, no_discovery=True)
    small = int(s.max_heartbeats_per_second * s.heartbeat_interval / (1 + STAGGER))
    assert small >= 50  # a laptop's cluster keeps today's 1 s
    assert terms_for(s, small, 1.0).interval == s.heartbeat_interval
    terms = terms_for(s, 1000, 0.0)
    assert terms.interval == pytest.approx(1000 / s.max_heartbeats_per_second)
    assert terms.lease == pytest.approx(s.slave_lease * terms.factor)
    assert terms.dead_after == pytest.approx(s.node_dead_after * terms.factor)


def test_an_earlier_master_leaves_the_slave_at_its_own_or_the_base_interval() -> None:
    assert asked_heartbeat(1.0, 0.25, None) == 0.25
    assert asked_heartbeat(0.5, 1.0, None) == 0.5
    assert asked_heartbeat(1.0, 1.0, 7.5) == 7.5
    assert asked_heartbeat(1.0, 1.0, float("nan")) == 1.0
    assert asked_heartbeat(1.0, 1.0, -3.0) == 1.0
