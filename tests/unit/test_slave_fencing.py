"""The slave's lease: its clock, the terms it accepts, and what survives a restart."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claud.slave.fencing import (
    FENCED_FILE,
    LEASE_FILE,
    MIN_HEARTBEAT,
    FencedLog,
    Lease,
    LeaseRecord,
    boottime,
    ensure_state_dir,
    honour,
    kill_window,
    lease_from_record,
    load_lease,
    save_lease,
)

BOOT = "boot-a"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_the_lease_clock_is_boottime_and_counts_like_monotonic_while_awake() -> None:
    before_boot, before_mono = boottime(), time.monotonic()
    time.sleep(0.05)
    assert boottime() - before_boot >= 0.05
    # BOOTTIME = MONOTONIC + time suspended: never behind it.
    assert boottime() - time.monotonic() >= before_boot - before_mono - 0.01


def test_lease_expires_at_the_send_time_of_the_last_answer_plus_its_length() -> None:
    clock = FakeClock()
    lease = Lease(4, last_success=clock.now)
    assert not lease.expired(clock.advance(3.9))
    assert lease.renew(sent_at=clock.now - 0.5, seconds=4)  # sent before the reply arrived
    assert lease.deadline == clock.now - 0.5 + 4
    assert not lease.renew(sent_at=clock.now - 2, seconds=4)  # an older long poll: no step back
    assert lease.expired(clock.advance(3.5))


def test_an_ended_lease_is_expired_at_once() -> None:
    assert Lease.ended(10, now=50.0).expired(50.0)


def test_restart_keeps_the_old_process_lease_not_a_fresh_one(tmp_path: Path) -> None:
    clock = FakeClock()
    state = ensure_state_dir(tmp_path / "state")
    save_lease(state, LeaseRecord(BOOT, renewed_at=clock.now, seconds=4.0, grace=3.0))
    clock.advance(3.0)  # the agent was down for 3 s
    lease = lease_from_record(load_lease(state), boot=BOOT, now=clock.now, fallback_seconds=10.0)
    assert lease.remaining(clock.now) == 1.0  # not 10 s from the new process's start


def test_a_record_from_another_boot_or_from_the_future_means_the_lease_is_over(tmp_path: Path) -> None:
    state = ensure_state_dir(tmp_path)
    save_lease(state, LeaseRecord(BOOT, renewed_at=500.0, seconds=4.0, grace=3.0))
    record = load_lease(state)
    assert lease_from_record(record, boot="boot-b", now=10.0, fallback_seconds=10.0).expired(10.0)
    assert lease_from_record(record, boot=BOOT, now=400.0, fallback_seconds=10.0).expired(400.0)
    assert lease_from_record(None, boot=BOOT, now=400.0, fallback_seconds=10.0).expired(400.0)


def test_state_dir_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir(mode=0o755)
    ensure_state_dir(state)
    save_lease(state, LeaseRecord(BOOT, 1.0, 4.0, 3.0))
    FencedLog(state).add(["a1"], at=5.0)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    for name in (LEASE_FILE, FENCED_FILE):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600
    assert sorted(os.listdir(state)) == sorted([LEASE_FILE, FENCED_FILE])  # no temporary left over


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), st.dictionaries(
    st.sampled_from(["boot", "renewed_at", "seconds", "grace", "x"]),
    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=8)),
    max_size=6,
).map(lambda d: json.dumps(d).encode())))
def test_a_hostile_lease_file_is_no_lease_or_a_sane_one(garbage: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = ensure_state_dir(Path(tmp))
        (state / LEASE_FILE).write_bytes(garbage)
        record = load_lease(state)
    if record is not None:
        assert math.isfinite(record.renewed_at) and record.seconds >= 0 and record.grace >= 0
        assert math.isfinite(record.seconds) and math.isfinite(record.grace)


def test_fenced_log_round_trips_and_forgets_what_nobody_asks_about(tmp_path: Path) -> None:
    state = ensure_state_dir(tmp_path)
    log = FencedLog(state)
    log.add(["a1", "a2"], at=100.0)
    log.add(["a1"], at=200.0)  # the first fence is the one that counts
    again = FencedLog(state)
    assert again.snapshot() == {"a1": 100.0, "a2": 100.0}
    again.keep_only(["a2", "zzz"])
    assert FencedLog(state).snapshot() == {"a2": 100.0}


def test_fenced_log_ignores_a_malformed_file(tmp_path: Path) -> None:
    state = ensure_state_dir(tmp_path)
    (state / FENCED_FILE).write_text(json.dumps({"ok": 1.0, "": 2.0, "x" * 500: 3.0, "bad": "soon", "inf": 1e999}))
    assert FencedLog(state).snapshot() == {"ok": 1.0}


# --- the terms the slave accepts ---

seconds = st.floats(min_value=0, max_value=120, allow_nan=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lease=st.floats(allow_nan=True, allow_infinity=True),
    grace=st.floats(allow_nan=True, allow_infinity=True),
    heartbeat=st.floats(min_value=0.01, max_value=60),
    longest=st.floats(min_value=0.1, max_value=600),
    cap=st.none() | seconds,
    round_trip=st.floats(min_value=0, max_value=5),
)
def test_applied_terms_never_kill_later_than_the_masters_assume(
    lease: float, grace: float, heartbeat: float, longest: float, cap: float | None, round_trip: float
) -> None:
    terms = honour(
        lease=lease, grace=grace, heartbeat=heartbeat, longest_lease=longest, grace_cap=cap, round_trip=round_trip
    )
    assert terms.lease >= 0 and terms.grace >= 0 and terms.heartbeat <= heartbeat
    if not (math.isfinite(lease) and lease > 0):
        assert terms.lease == 0  # nonsense: stay fenced
        return
    assert terms.lease <= lease
    offered_grace = grace if math.isfinite(grace) and grace >= 0 else 0.0
    # TERM at the applied lease end, KILL after the window, dead a round trip later:
    # never after the masters' lease end + grace.
    dead_by = terms.lease + kill_window(terms.grace, round_trip) + round_trip
    bound = max(round_trip, min(lease, longest) + offered_grace)
    # Relative slack: past 2**52 s a float's last bit is worth a second.
    assert dead_by <= bound + 1e-9 * max(1.0, bound)
    if terms.lease / 3 >= MIN_HEARTBEAT:
        assert terms.lease >= 2 * terms.heartbeat - 1e-9


def test_an_honourable_offer_is_taken_as_it_is() -> None:
    terms = honour(lease=4, grace=3, heartbeat=1, longest_lease=10, grace_cap=None, round_trip=0.5)
    assert (terms.lease, terms.grace, terms.heartbeat, terms.problem) == (4, 3, 1, None)


def test_a_grace_shorter_than_a_round_trip_fences_early_and_says_so() -> None:
    terms = honour(lease=4, grace=0.2, heartbeat=1, longest_lease=10, grace_cap=None, round_trip=0.5)
    assert terms.lease == 4 - 0.3 and terms.problem and "round trip" in terms.problem


def test_a_lease_under_two_heartbeats_makes_the_slave_beat_faster() -> None:
    terms = honour(lease=1.5, grace=3, heartbeat=1, longest_lease=10, grace_cap=None, round_trip=0.5)
    assert terms.lease == 1.5 and terms.heartbeat == 0.5 and terms.problem


def test_a_lease_longer_than_this_slave_accepts_is_cut() -> None:
    terms = honour(lease=30, grace=3, heartbeat=1, longest_lease=10, grace_cap=1, round_trip=0.5)
    assert (terms.lease, terms.grace) == (10, 1) and terms.problem
