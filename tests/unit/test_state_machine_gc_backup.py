"""GC and backups in the state machine: what a GC pass may remove (never a job
that is not terminal, never a slave with placed jobs, never one of the most
recent terminal jobs), that the indexes stay consistent, that apply never
raises on any GC or restore entry, and that a backup restores every row."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_state_machine import T0, Driver, actions, check_invariants, run_actions

from claud.api import ContainerState, JobState, NodeState
from claud.api.backup import InvalidBackup, SnapshotHeader, checksum, encode_backup, parse_backup
from claud.master import ops
from claud.master.state import StateMachine, slave_last_alive


@pytest.fixture
def d() -> Driver:
    return Driver()


LONG_AGO = T0 - timedelta(days=3650)
FAR_AHEAD = T0 + timedelta(days=3650)


def gc_op(d: Driver, jobs: list[str] | None = None, slaves: list[str] | None = None, *,
          keep: int = 0, jobs_before=FAR_AHEAD, slaves_before=FAR_AHEAD) -> ops.CollectGarbage:
    return ops.CollectGarbage(
        at=d.now, job_ids=jobs if jobs is not None else list(d.sm.jobs),
        slave_ids=slaves if slaves is not None else list(d.sm.slaves),
        jobs_finished_before=jobs_before, keep_jobs=keep, slaves_dead_before=slaves_before,
    )


def finished(d: Driver, job_id: str, code: int = 0) -> None:
    d.submit(job_id, resources={"cpu": 0.25, "memory_mb": 32})
    d.schedule()
    d.report(job_id, ContainerState.RUNNING)
    d.report(job_id, ContainerState.EXITED, exit_code=code)
    assert d.state(job_id) in (JobState.COMPLETED, JobState.FAILED)


def test_a_pass_removes_old_terminal_jobs_and_keeps_the_running_ones(d: Driver) -> None:
    d.slave("s1")
    finished(d, "done", 0)
    finished(d, "broken", 1)
    d.submit("running", resources={"cpu": 0.25, "memory_mb": 32})
    d.schedule()
    d.report("running", ContainerState.RUNNING)
    d.submit("waiting", resources={"cpu": 64, "memory_mb": 32})  # fits nowhere: stays pending
    d.schedule()
    outcome = d.apply(gc_op(d))
    assert outcome.ok
    assert sorted(outcome.value["jobs"]) == ["broken", "done"]
    assert outcome.value["slaves"] == []  # alive, and with a job on it
    assert set(d.sm.jobs) == {"running", "waiting"}
    assert d.sm.last_gc is not None and (d.sm.last_gc.jobs, d.sm.last_gc.slaves) == (2, 0)
    check_invariants(d.sm)


def test_the_most_recently_finished_are_kept_however_old(d: Driver) -> None:
    d.slave("s1")
    for n in range(5):
        finished(d, f"j{n}")
        d.tick(10)
    outcome = d.apply(gc_op(d, keep=2))
    assert outcome.value["jobs"] == ["j0", "j1", "j2"]
    assert set(d.sm.jobs) == {"j3", "j4"}


def test_only_jobs_finished_before_the_cutoff_go(d: Driver) -> None:
    d.slave("s1")
    finished(d, "old")
    d.tick(100)
    finished(d, "new")
    cutoff = d.sm.jobs["old"].updated_at + timedelta(seconds=1)
    assert d.sm.garbage(cutoff, 0, cutoff, limit=10).job_ids == ["old"]
    assert d.apply(gc_op(d, jobs_before=cutoff)).value["jobs"] == ["old"]
    assert set(d.sm.jobs) == {"new"}


def test_a_stale_pass_removes_nothing_that_no_longer_qualifies(d: Driver) -> None:
    """Chosen on one table, applied on a newer one: a job the keep rule now protects stays."""
    d.slave("s1")
    finished(d, "a")
    d.tick()
    garbage = d.sm.garbage(FAR_AHEAD, 0, LONG_AGO, limit=10)
    assert garbage.job_ids == ["a"]
    # Proposed with keep=1: while it travelled, no newer terminal job appeared, so "a" is the newest: kept.
    assert d.apply(gc_op(d, garbage.job_ids, [], keep=1)).value["jobs"] == []
    assert "a" in d.sm.jobs


def test_a_dead_slave_goes_only_once_empty_and_silent_long_enough(d: Driver) -> None:
    d.slave("s1")
    d.slave("s2")
    d.apply(ops.SetSlaveState(at=d.now, slave_id="s2", state=NodeState.DEAD, reason="gone"))
    silent_since = slave_last_alive(d.sm.slaves["s2"])
    assert d.apply(gc_op(d, [], ["s1", "s2"], slaves_before=silent_since - timedelta(seconds=1))).value["slaves"] == []
    outcome = d.apply(gc_op(d, [], ["s1", "s2", "nobody"], slaves_before=silent_since))
    assert outcome.value["slaves"] == ["s2"]  # s1 is alive; "nobody" was never there
    assert set(d.sm.slaves) == {"s1"} and "s2" not in d.sm.slave_versions
    check_invariants(d.sm)


def test_a_collected_jobs_idempotency_key_is_forgotten(d: Driver) -> None:
    d.slave("s1")
    d.submit("first", idempotency_key="k1", resources={"cpu": 0.25, "memory_mb": 32})
    d.apply(ops.StopJob(at=d.now, job_id="first"))
    assert d.state("first") == JobState.STOPPED
    assert d.apply(gc_op(d)).value["jobs"] == ["first"]
    # The key names no job any more: the same key makes a new one.
    assert d.submit("second", idempotency_key="k1", resources={"cpu": 0.25, "memory_mb": 32}) == "second"


def test_garbage_is_chosen_in_batches(d: Driver) -> None:
    d.slave("s1")
    for n in range(7):
        d.submit(f"j{n}")
        d.apply(ops.StopJob(at=d.now, job_id=f"j{n}"))
        d.tick()
    assert d.sm.garbage(FAR_AHEAD, 0, LONG_AGO, limit=3).job_ids == ["j0", "j1", "j2"]
    assert d.sm.garbage(FAR_AHEAD, 5, LONG_AGO, limit=10).job_ids == ["j0", "j1"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.integers(0, 5), st.integers(0, 100), st.randoms(use_true_random=False))
def test_gc_after_any_history_removes_only_what_qualifies(steps, keep, cutoff_s, rnd) -> None:
    d = Driver()
    run_actions(d, steps)
    # Jobs, not allocation rows: a job of several allocations is judged and removed whole.
    before = {job_id: (d.sm.state_of(job), d.sm._finished_at(job)) for job_id, job in d.sm.jobs.items()
              if job.index == 0}
    placed = {slave_id: bool(d.sm._placed_by_slave.get(slave_id)) for slave_id in d.sm.slaves}
    dead = {slave_id for slave_id, slave in d.sm.slaves.items() if slave.state == NodeState.DEAD}
    terminal = sorted((t, j) for j, (s, t) in before.items() if s.terminal)
    newest = {j for _, j in terminal[max(0, len(terminal) - keep):]} if keep else set()
    cutoff = T0 + timedelta(seconds=cutoff_s * 40)
    chosen_jobs = rnd.sample([*sorted(before), "ghost"], k=rnd.randint(0, len(before) + 1))
    chosen_slaves = rnd.sample([*sorted(d.sm.slaves), "ghost"], k=rnd.randint(0, len(d.sm.slaves) + 1))
    outcome = d.apply(gc_op(d, chosen_jobs, chosen_slaves, keep=keep, jobs_before=cutoff, slaves_before=cutoff))
    assert outcome.ok
    for job_id in outcome.value["jobs"]:
        state, finished_at = before[job_id]
        assert state.terminal and finished_at <= cutoff and job_id not in newest
    for job_id in set(chosen_jobs) & set(before):
        state, finished_at = before[job_id]
        if state.terminal and finished_at <= cutoff and job_id not in newest:
            assert job_id in outcome.value["jobs"]  # what qualifies does go
    for slave_id in outcome.value["slaves"]:
        assert slave_id in dead and not placed[slave_id]
    assert {j for j, job in d.sm.jobs.items() if job.index == 0} == set(before) - set(outcome.value["jobs"])
    assert not [j for j in d.sm.jobs if j.split(".")[0] in outcome.value["jobs"]]  # every row of them went
    check_invariants(d.sm)
    # Replayed from a snapshot, the same pass gives the same tables.
    again = StateMachine.from_snapshot(d.sm.to_snapshot())
    assert again.to_snapshot() == d.sm.to_snapshot()
    # What the leader would choose now is exactly what a pass with the same rules removes.
    garbage = d.sm.garbage(cutoff, keep, cutoff, limit=1000)
    chosen = d.apply(gc_op(d, garbage.job_ids, garbage.slave_ids, keep=keep, jobs_before=cutoff,
                           slaves_before=cutoff))
    assert chosen.value == {"jobs": garbage.job_ids, "slaves": garbage.slave_ids}
    check_invariants(d.sm)


gc_entries = st.fixed_dictionaries({
    "kind": st.just("collect_garbage"),
    "at": st.sampled_from(["2026-01-01T00:00:00Z", "1970-01-01T00:00:00+00:00", "8999-12-31T00:00:00Z", "x", 5]),
    "job_ids": st.one_of(st.lists(st.sampled_from(["j0", "j1", "j2", "ghost", "", "a" * 80, "../x"])), st.just(None)),
    "slave_ids": st.lists(st.sampled_from(["s1", "s2", "s3", "", "nobody"])),
    "jobs_finished_before": st.sampled_from(["2026-01-01T00:00:00Z", "9999-01-01T00:00:00Z", None]),
    "keep_jobs": st.one_of(st.integers(-5, 10), st.just(2**70), st.just("3")),
    "slaves_dead_before": st.sampled_from(["2030-01-01T00:00:00Z", "bad"]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, gc_entries)
def test_apply_never_raises_on_any_gc_entry(steps, entry) -> None:
    d = Driver()
    run_actions(d, steps)
    outcome = d.sm.apply_entry(len(d.log) + 1, json.dumps(entry))
    assert outcome.ok or outcome.code == "rejected"
    check_invariants(d.sm)


# ------------------------------------------------------------------ backups


def backup_of(sm: StateMachine, term: int = 3) -> bytes:
    body = sm.to_snapshot().encode()
    header = SnapshotHeader(index=sm.applied_index, term=term, size=len(body), sha256=checksum(body),
                            jobs=len(sm.jobs), slaves=len(sm.slaves), taken_at=T0)
    return encode_backup(header) + body


def restore_op(d: Driver, data: bytes) -> ops.RestoreTables:
    header, body = parse_backup(data)
    return ops.RestoreTables(at=d.now, tables=body.decode(), sha256=header.sha256, source_index=header.index,
                             source_term=header.term)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, actions)
def test_a_restored_backup_has_every_row_and_consistent_indexes(saved_steps, later_steps) -> None:
    source = Driver()
    run_actions(source, saved_steps)
    data = backup_of(source.sm)
    # The route's strict check accepts every backup a real history makes, and reads it as the log's restore does.
    body = source.sm.to_snapshot()
    assert StateMachine.from_backup(body).to_snapshot() == StateMachine.from_snapshot(body).to_snapshot() == body
    target = Driver()
    run_actions(target, later_steps)  # a cluster with a history of its own, replaced whole
    outcome = target.apply(restore_op(target, data))
    assert outcome.ok, outcome
    assert outcome.value == {"jobs": len(source.sm.jobs), "slaves": len(source.sm.slaves)}
    expected, got = json.loads(source.sm.to_snapshot()), json.loads(target.sm.to_snapshot())
    assert got["applied_index"] == target.sm.applied_index
    assert (got["jobs"], got["nodes"], got["pending"]) == (expected["jobs"], expected["nodes"], expected["pending"])
    check_invariants(target.sm)
    # The restore is an entry like any: a snapshot then replay holds the same tables.
    assert StateMachine.from_snapshot(target.sm.to_snapshot()).to_snapshot() == target.sm.to_snapshot()


def test_a_slave_the_backup_does_not_know_is_told_its_jobs_are_no_longer_desired(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1", resources={"cpu": 0.25, "memory_mb": 32})
    d.schedule()
    d.report("j1", ContainerState.RUNNING)
    empty = backup_of(StateMachine())
    before = d.sm.slave_versions["s1"]
    assert d.apply(restore_op(d, empty)).ok
    assert d.sm.jobs == {} and d.sm.desired_allocations("s1") == []
    assert d.sm.slave_versions["s1"] > before  # its watch wakes, and it stops the container


def test_backup_files_that_are_not_whole_are_refused_by_name() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("j1")
    data = backup_of(d.sm)
    parse_backup(data)
    problems = {
        b"": "no header line",
        b"hello world\n{}": "not a JSON header",
        b'{"format": "tar"}\n': "format",
        data.replace(b'"version":1', b'"version":7', 1): "version 7",
        data[:-10]: "truncated",
        data + b"  ": "longer than its header says",
        data[:-3] + b"XYZ": "corrupt",
        data.replace(b'"term":3', b'"term":-1', 1): "header is invalid",
    }
    for bad, named in problems.items():
        with pytest.raises(InvalidBackup, match=named):
            parse_backup(bad)


def _without_index(snapshot: str) -> dict[str, object]:
    """A snapshot's tables, all but the applied index (each refused entry still moves it)."""
    tables = json.loads(snapshot)
    del tables["applied_index"]
    return tables  # type: ignore[no-any-return]


def test_a_restore_entry_that_does_not_restore_changes_nothing(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1")
    before = d.sm.to_snapshot()
    tables = json.dumps({"applied_index": 1, "jobs": [], "nodes": [], "pending": []})
    shapeless = ["[1, 2]", "{}", "not json", json.dumps({"applied_index": 1, "jobs": 5, "nodes": [], "pending": []})]
    bad = [
        ops.RestoreTables(at=d.now, tables=tables, sha256=checksum(b"other"), source_index=1, source_term=1),
        *(ops.RestoreTables(at=d.now, tables=t, sha256=checksum(t.encode()), source_index=1, source_term=1)
          for t in shapeless),
    ]
    for op in bad:
        outcome = d.apply(op)
        assert not outcome.ok and outcome.code == "invalid_snapshot", outcome
        assert _without_index(d.sm.to_snapshot()) == _without_index(before)
    assert d.sm.applied_index == len(d.log)


def test_a_backup_with_an_invalid_record_is_refused_naming_it(d: Driver) -> None:
    """What the route checks before it proposes: every record, as if it came from anywhere."""
    d.slave("s1")
    d.submit("j1")
    good = json.loads(d.sm.to_snapshot())
    cases = {
        "appears twice": {**good, "jobs": good["jobs"] * 2},
        r"jobs\[0\] is not a valid record": {**good, "jobs": [{"id": "x"}]},
        r"nodes\[0\] is not a valid record": {**good, "nodes": [{**good["nodes"][0], "cpu_total": "many"}]},
        "no 'pending' list": {k: v for k, v in good.items() if k != "pending"},
        "does not match the pending jobs": {**good, "pending": []},
        "distinct job ids": {**good, "pending": ["j1", "j1"]},
        "which the tables lack": {**good, "jobs": [{**good["jobs"][0], "state": "running", "node_id": "nowhere"}],
                                  "pending": []},
        "not a JSON object": [good],
        "not JSON": "{",
    }
    for named, tables in cases.items():
        with pytest.raises(ValueError, match=named):
            StateMachine.from_backup(tables if isinstance(tables, str) else json.dumps(tables))
    StateMachine.from_backup(json.dumps(good))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "j0", "s1", "pending", "running"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "state", "spec"]), inner,
                                                                 max_size=3),
    max_leaves=10,
)
tables_like = st.fixed_dictionaries(
    {}, optional={"applied_index": json_values, "jobs": json_values, "nodes": json_values, "pending": json_values},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.one_of(tables_like, json_values))
def test_apply_never_raises_on_any_restore_entry_and_a_refused_one_changes_nothing(steps, tables) -> None:
    d = Driver()
    run_actions(d, steps)
    before = json.loads(d.sm.to_snapshot())
    text = json.dumps(tables)
    entry = {"kind": "restore_tables", "at": "2026-01-01T00:00:00Z", "tables": text, "sha256": checksum(text.encode()),
             "source_index": 1, "source_term": 1}
    outcome = d.sm.apply_entry(len(d.log) + 1, json.dumps(entry))
    if not outcome.ok:
        after = json.loads(d.sm.to_snapshot())
        assert (after["jobs"], after["nodes"], after["pending"]) == (before["jobs"], before["nodes"], before["pending"])
    check_invariants(d.sm)
