"""The state machine against adversarial logs: apply is total and deterministic.

A hypothesis state machine writes raw entries (JSON built from dicts, with
non-finite and huge numbers, empty, huge and invalid strings, unknown ids,
reports for old attempts, crash loops with timestamps years ahead, random
bytes) and feeds them to ``StateMachine.apply_entry``, the function the
replicated log calls. Invariants: apply never raises, two replicas (one of
them restored from its own snapshots now and then) agree entry by entry, and
replaying the whole log from scratch gives the same tables.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_state_machine import (
    T0,
    assert_allocations_fresh,
    assert_job_indexes_recount,
    assert_reservations_recount,
    assert_scheduler_view_fresh,
)

from claud.api import JobState, UpdatePolicy
from claud.master import ops
from claud.master.rollout import decide
from claud.master.scheduler import schedule
from claud.master.state import StateMachine

NODE_IDS = ["s1", "s2", "s3"]
LATEST = datetime(8999, 1, 1, tzinfo=UTC)

ADVERSARIAL_TEXT = st.one_of(
    st.sampled_from(["", " ", "s1", "j0", "x\n", "a\x00b", "\x7f", "../etc", "é", "😀", "\ud800", "a\udfffb"]),
    st.text(max_size=12),
    st.integers(60_000, 70_000).map(lambda n: "a" * n),  # huge
)
IDS = st.one_of(st.sampled_from([*NODE_IDS, "j0", "j1", "j2", "nosuch"]), ADVERSARIAL_TEXT)
FLOATS = st.one_of(
    st.sampled_from([0.0, 0.001, 0.25, 1.0, 2.0, 8.0, -1.0, 1e308, 5e-324, float("nan"), float("inf"), float("-inf")]),
    st.floats(),
)
INTS = st.one_of(st.integers(-3, 5000), st.sampled_from([2**31, 2**53 + 1, 2**63, 2**64, 10**30, -(2**63) - 1]))
BAD_TIMES = st.sampled_from([
    "2026-01-01T00:00:00",  # naive
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+01:00",
    "2026-13-01T00:00:00Z",
    "not a time",
    "",
    1e30,
    -1,
    None,
])
STATES = st.one_of(st.sampled_from(["starting", "running", "exited", "failed", "missing"]), ADVERSARIAL_TEXT)
VALID = st.sampled_from([True, True, True, True, False])  # mostly well-formed, sometimes not
#: Flags as a hostile or buggy proposer might write them.
FLAGS = st.one_of(st.booleans(), st.sampled_from([None, "yes", "true", 0, 1, 2, [], {}]))


def entry(data: dict[str, Any], inf_as_1e400: bool = False) -> str:
    text = json.dumps(data)  # writes NaN and Infinity, as Python's json accepts them
    return text.replace("Infinity", "1e400") if inf_as_1e400 else text


class Replicas(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.a = StateMachine()
        self.b = StateMachine()  # restored from its own snapshot now and then
        self.log: list[str | bytes] = []
        self.now = T0
        self.jobs = 0
        self.restores = 0

    # ------------------------------------------------------------ helpers

    def append(self, data: str | bytes, *, well_formed: bool = False) -> None:
        self.log.append(data)
        index = len(self.log)
        first = self.a.apply_entry(index, data)
        second = self.b.apply_entry(index, data)
        assert first == second, (index, first, second)
        event("rejected" if first.code == "rejected" else "applied")
        assert self.a.applied_index == self.b.applied_index == index
        # Only entries that do not decode may be rejected: a decoded one whose apply raised is a bug.
        assert "(apply_failed)" not in first.message, first
        if well_formed:
            assert first.code != "rejected", first

    def at(self, valid: bool, bad: Any) -> Any:
        return self.now.isoformat() if valid else bad

    def job_id(self, n: int) -> str:
        ids = list(self.a.jobs)
        return ids[n % len(ids)] if ids else "j0"

    # -------------------------------------------------------------- rules

    @rule(slave=IDS, valid=VALID, cpu=FLOATS, memory=INTS, address=ADVERSARIAL_TEXT,
          labels=st.dictionaries(ADVERSARIAL_TEXT, ADVERSARIAL_TEXT, max_size=2), bad_time=BAD_TIMES,
          big=st.booleans())
    def register(self, slave, valid, cpu, memory, address, labels, bad_time, big) -> None:
        if valid:
            slave = NODE_IDS[hash(slave) % len(NODE_IDS)]
            self.append(entry({"kind": "register_node", "at": self.now.isoformat(), "node_id": slave,
                               "address": f"{slave}:8701", "labels": {"zone": "a"}, "cpu_total": 4.0,
                               "memory_mb_total": 4096}))
        else:
            self.append(entry({"kind": "register_node", "at": self.at(hash(address) % 2 == 0, bad_time),
                               "node_id": slave, "address": address, "labels": labels, "cpu_total": cpu,
                               "memory_mb_total": memory}, inf_as_1e400=big))

    @rule(valid=VALID, job_id=IDS, name=ADVERSARIAL_TEXT, cpu=FLOATS, memory=INTS,
          policy=st.sampled_from(["never", "on-failure", "always", "sometimes"]), retries=INTS,
          command=st.lists(ADVERSARIAL_TEXT, max_size=3),
          env=st.dictionaries(ADVERSARIAL_TEXT, ADVERSARIAL_TEXT, max_size=2),
          key=st.one_of(st.none(), ADVERSARIAL_TEXT), stop_timeout=FLOATS, big=st.booleans())
    def submit(self, valid, job_id, name, cpu, memory, policy, retries, command, env, key, stop_timeout, big) -> None:
        if valid:
            spec = {"name": "job", "image": "claud/busybox", "resources": {"cpu": 0.5, "memory_mb": 64},
                    "restart": {"policy": policy if policy != "sometimes" else "always", "max_retries": 3},
                    "idempotency_key": key if key in (None, "j0", "s1") else None}
            data = {"kind": "submit_job", "at": self.now.isoformat(), "job_id": f"j{self.jobs}", "spec": spec}
            self.jobs += 1
        else:
            spec = {"name": name, "image": "claud/busybox", "command": command, "env": env,
                    "resources": {"cpu": cpu, "memory_mb": memory},
                    "restart": {"policy": policy, "max_retries": retries},
                    "stop_timeout": stop_timeout, "idempotency_key": key}
            data = {"kind": "submit_job", "at": self.now.isoformat(), "job_id": job_id, "spec": spec}
        self.append(entry(data, inf_as_1e400=big))

    @rule()
    def schedule(self) -> None:
        slaves, jobs = self.a.scheduling_snapshot(self.now)
        plan = schedule(slaves, jobs)
        op = ops.ApplyPlan(at=self.now,
                           placements=[ops.PlacedJob(job_id=p.job_id, slave_id=p.slave_id) for p in plan.placements],
                           unplaced=dict(plan.unplaced))
        self.append(ops.encode(op), well_formed=True)

    @rule(job=IDS, slave=IDS, reason=ADVERSARIAL_TEXT, valid=VALID, bad_time=BAD_TIMES)
    def random_plan(self, job, slave, reason, valid, bad_time) -> None:
        self.append(entry({"kind": "apply_plan", "at": self.at(valid, bad_time),
                           "placements": [{"job_id": job, "node_id": slave}], "unplaced": {job: reason}}))

    @rule(n=st.integers(0, 50), attempt=st.sampled_from(["current", "old", "next", "other"]), state=STATES,
          exit_code=INTS, message=st.one_of(st.none(), ADVERSARIAL_TEXT),
          container=st.one_of(st.none(), ADVERSARIAL_TEXT),
          slave=st.one_of(st.none(), IDS), valid=VALID, bad_time=BAD_TIMES, fenced=FLAGS, healthy=FLAGS)
    def report(self, n, attempt, state, exit_code, message, container, slave, valid, bad_time, fenced, healthy) -> None:
        job = self.a.jobs.get(self.job_id(n))
        attempts = job.attempts if job else 0
        alloc = {"current": attempts, "old": attempts - 1, "next": attempts + 1, "other": 7}[attempt]
        job_id = job.id if job else "j0"
        # A report names the job (row 0's id) and the allocation (<row id>-<attempt>).
        status = {"alloc_id": f"{job_id}-{alloc}", "job_id": job_id.split(".")[0], "state": state,
                  "container_id": container,
                  "exit_code": exit_code, "message": message, "fenced": fenced}
        slave_id = slave if slave is not None else (job.slave_id if job and job.slave_id else "s1")
        self.append(entry({"kind": "report_allocations", "at": self.at(valid, bad_time), "node_id": slave_id,
                           "statuses": [status], "runtime_healthy": healthy}))

    @rule(restarts=st.integers(1, 80), years=st.integers(0, 40), last_at=st.one_of(st.none(), BAD_TIMES))
    def crash_loop(self, restarts, years, last_at) -> None:
        """An ``always`` service that exits at once, again and again, its clock leaping ahead."""
        job_id = f"j{self.jobs}"
        self.jobs += 1
        self.append(ops.encode(ops.RegisterSlave(at=self.now, slave_id="loop", address="loop:1", cpu_total=64,
                                                memory_mb_total=1 << 20)), well_formed=True)
        self.append(ops.encode(ops.SubmitJob(at=self.now, job_id=job_id, spec={
            "name": "svc", "image": "claud/busybox", "type": "service", "restart": {"policy": "always"}})),
            well_formed=True)
        for i in range(restarts):
            placements = [ops.PlacedJob(job_id=job_id, slave_id="loop")]
            self.append(ops.encode(ops.ApplyPlan(at=self.now, placements=placements)), well_formed=True)
            job = self.a.jobs[job_id]
            last = i == restarts - 1 and last_at is not None  # the last report at an odd time
            self.append(entry({"kind": "report_allocations", "at": last_at if last else self.now.isoformat(),
                               "node_id": "loop", "statuses": [{"alloc_id": job.alloc_id or "none", "job_id": job_id,
                                                                "state": "exited", "exit_code": i % 3}]}),
                        well_formed=not last)
            self.now = min(self.now + timedelta(seconds=31, days=365 * years if i % 10 == 9 else 0), LATEST)
        assert self.a.jobs[job_id].restarts >= restarts - (last_at is not None)

    @rule(count=st.integers(1, 4), spread=st.booleans(), service=st.booleans(),
          auto_revert=st.booleans())
    def submit_replicas(self, count, spread, service, auto_revert) -> None:
        spec = {"name": "web", "image": "claud/busybox", "count": count, "spread": spread,
                "type": "service" if service else "batch", "resources": {"cpu": 0.5, "memory_mb": 64},
                "update": {"max_parallel": 1, "min_healthy_time": 1, "healthy_deadline": 5,
                           "auto_revert": auto_revert}}
        self.append(entry({"kind": "submit_job", "at": self.now.isoformat(), "job_id": f"j{self.jobs}",
                           "spec": spec}), well_formed=True)
        self.jobs += 1

    @rule(n=st.integers(0, 50), count=st.one_of(st.integers(1, 4), INTS), command=st.lists(ADVERSARIAL_TEXT,
          max_size=2), service=st.booleans(), kind=st.sampled_from(["update_job", "scale_job", "revert_job"]),
          version=st.one_of(st.integers(0, 4), INTS), valid=VALID, bad_time=BAD_TIMES)
    def new_version(self, n, count, command, service, kind, version, valid, bad_time) -> None:
        """Updates, scales and reverts of any job (an allocation row's id too), valid or not."""
        data: dict[str, Any] = {"kind": kind, "at": self.at(valid, bad_time), "job_id": self.job_id(n)}
        if valid:  # most of them well formed, so that rollouts happen
            command, count = [f"v{version}"], 1 + abs(count) % 4
        if kind == "update_job":
            data["spec"] = {"name": "web", "image": "claud/busybox", "count": count, "command": command,
                            "type": "service" if service else "batch",
                            "update": {"max_parallel": 2, "min_healthy_time": 1, "healthy_deadline": 5,
                                       "auto_revert": True}}
        elif kind == "scale_job":
            data["count"] = count
        else:
            data["version"] = version
        self.append(entry(data))

    @rule()
    def rollout_pass(self) -> None:
        """What the leader's rollout loop proposes now."""
        for head, facts in self.a.rolling_out():
            view = self.a.job_view(head)
            assert head.rollout is not None
            decision = decide(head.rollout.version, view.update or UpdatePolicy(), view.desired,
                              head.rollout.started_at, facts, self.now)
            if decision is not None:
                event(f"rollout {decision.outcome or 'replace'}")
                self.append(ops.encode(ops.RolloutStep(
                    at=self.now, job_id=head.id, version=head.rollout.version, replace=list(decision.replace),
                    outcome=decision.outcome, message=decision.message)), well_formed=True)

    @rule(n=st.integers(0, 50), version=st.one_of(st.integers(0, 4), INTS),
          replace=st.lists(st.one_of(st.integers(0, 5), INTS), max_size=4),
          outcome=st.sampled_from([None, "complete", "failed", "running", "bogus"]), valid=VALID, bad_time=BAD_TIMES)
    def stale_rollout_step(self, n, version, replace, outcome, valid, bad_time) -> None:
        """A rollout step decided on other tables (or made up): apply has the last word."""
        self.append(entry({"kind": "rollout_step", "at": self.at(valid, bad_time), "job_id": self.job_id(n),
                           "version": version, "replace": replace, "outcome": outcome}))

    @rule(n=st.integers(0, 50), job=IDS, known=st.booleans(), valid=VALID, bad_time=BAD_TIMES)
    def stop(self, n, job, known, valid, bad_time) -> None:
        job_id = self.job_id(n) if known else job
        self.append(entry({"kind": "stop_job", "at": self.at(valid, bad_time), "job_id": job_id}))

    @rule(slave=IDS, state=st.one_of(st.sampled_from(["alive", "suspect", "dead", "draining"]), ADVERSARIAL_TEXT),
          reason=ADVERSARIAL_TEXT)
    def node_state(self, slave, state, reason) -> None:
        self.append(entry({"kind": "set_node_state", "at": self.now.isoformat(), "node_id": slave, "state": state,
                           "reason": reason}))

    @rule(slave=IDS, draining=st.one_of(st.booleans(), st.sampled_from(["yes", 2, None])),
          deadline=st.one_of(st.none(), st.sampled_from([-3600, 0, 60, 86_400 * 365 * 100]), BAD_TIMES))
    def drain(self, slave, draining, deadline) -> None:
        data = {"kind": "set_drain", "at": self.now.isoformat(), "node_id": slave, "draining": draining}
        if isinstance(deadline, int):  # seconds from now; far ones run past MAX_TIME
            deadline = (self.now + timedelta(seconds=min(deadline, 86_400 * 365 * 2000))).isoformat()
        if deadline is not None:
            data["deadline"] = deadline
        self.append(entry(data))

    @rule(slave=IDS, valid=VALID, bad_time=BAD_TIMES)
    def force_drain(self, slave, valid, bad_time) -> None:
        self.append(entry({"kind": "force_drain", "at": self.at(valid, bad_time), "node_id": slave}))

    @rule(slave=IDS, healthy=FLAGS, error=st.one_of(st.none(), ADVERSARIAL_TEXT))
    def runtime_health(self, slave, healthy, error) -> None:
        self.append(entry({"kind": "set_runtime_health", "at": self.now.isoformat(), "node_id": slave,
                           "healthy": healthy, "error": error}))

    @rule(slave=IDS, reason=ADVERSARIAL_TEXT, valid=VALID, bad_time=BAD_TIMES)
    def lose_jobs(self, slave, reason, valid, bad_time) -> None:
        self.append(entry({"kind": "lose_slave_jobs", "at": self.at(valid, bad_time), "node_id": slave,
                           "reason": reason}))

    @rule(slave=IDS, valid=VALID, bad_time=BAD_TIMES, cpu=FLOATS, memory=INTS, big=st.booleans())
    def touch(self, slave, valid, bad_time, cpu, memory, big) -> None:
        self.append(entry({"kind": "touch_nodes", "at": self.now.isoformat(),
                           "heartbeats": {slave: self.at(valid, bad_time)},
                           "usage": {slave: {"cpu_percent": cpu, "memory_mb_available": memory}}}, inf_as_1e400=big))

    @rule(data=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode), st.just(b"\xff"), st.just("")))
    def raw(self, data) -> None:
        self.append(data)

    @rule(data=st.dictionaries(st.sampled_from(["kind", "at", "job_id", "node_id", "spec", "statuses", "heartbeats"]),
                               st.one_of(ADVERSARIAL_TEXT, INTS, FLOATS, st.none(), st.lists(INTS, max_size=2)),
                               max_size=5),
          kind=st.sampled_from(["submit_job", "apply_plan", "register_node", "report_allocations", "stop_job",
                                "set_node_state", "set_drain", "force_drain", "set_runtime_health",
                                "lose_slave_jobs", "touch_nodes", "noop", "drop_tables"]))
    def junk(self, data, kind) -> None:
        self.append(entry({"kind": kind, **data}))

    @rule(seconds=st.sampled_from([1, 31, 3600, 86_400 * 365, 86_400 * 365 * 30]))
    def tick(self, seconds) -> None:
        self.now = min(self.now + timedelta(seconds=seconds), LATEST)

    @rule()
    def scrape(self) -> None:
        """``/metrics`` on the replica read now and then: its tally recounts what changed since."""
        assert_job_indexes_recount(self.b)
        assert_scheduler_view_fresh(self.b, self.now)

    @precondition(lambda self: self.log)
    @rule()
    def restore(self) -> None:
        snapshot = self.b.to_snapshot()
        self.b = StateMachine.from_snapshot(snapshot)
        assert self.b.to_snapshot() == snapshot
        self.restores += 1

    # --------------------------------------------------------- invariants

    @invariant()
    def replicas_agree(self) -> None:
        assert self.a.to_snapshot() == self.b.to_snapshot()

    @invariant()
    def indexes_consistent(self) -> None:
        sm = self.a
        placed = {(j.slave_id, j.id) for j in sm.jobs.values()
                  if j.state in (JobState.SCHEDULED, JobState.STARTING, JobState.RUNNING, JobState.STOPPING)}
        indexed = {(slave_id, job_id) for slave_id, ids in sm._placed_by_slave.items() for job_id in ids}
        assert placed == indexed
        assert_reservations_recount(sm)
        assert_reservations_recount(self.b)  # restored from snapshots now and then: totals derived again
        assert_allocations_fresh(sm)
        assert_job_indexes_recount(sm)  # read after every step; b's only when it is scraped (below)
        assert_scheduler_view_fresh(sm, self.now)
        assert set(sm._pending) == {j.id for j in sm.jobs.values() if j.state == JobState.PENDING}
        assert set(sm._unexplained) == {j for j in sm._pending if sm.jobs[j].pending_reason is None}
        assert sm._backoff == {j: sm.jobs[j].not_before for j in sm._pending if sm.jobs[j].not_before is not None}
        for key, job_id in sm._by_idempotency_key.items():
            assert sm.jobs[job_id].spec.idempotency_key == key
        replicas: dict[str, set[int]] = {}
        for job in sm.jobs.values():
            if job.index:
                head = sm.jobs[job.id.rsplit(".", 1)[0]]  # every allocation row has its job
                assert head.index == 0 and job.id == f"{head.id}.{job.index}"
                replicas.setdefault(head.id, set()).add(job.index)
        assert replicas == sm._replicas
        assert sm._rolling == {j.id for j in sm.jobs.values()
                               if j.rollout is not None and j.rollout.state == "running"}
        for job in sm.jobs.values():
            assert job.state != JobState.LOST
            assert (job.stop_cause is not None) == (job.state == JobState.STOPPING), (job.state, job.stop_cause)
            if job.not_before is not None and job.state == JobState.PENDING:
                assert job.not_before - job.updated_at <= timedelta(seconds=30)
        for slave in sm.slaves.values():
            assert slave.drain_deadline is None or slave.draining
            assert not slave.drain_forced or slave.drain_deadline is not None
            assert slave.runtime_healthy or not sm.capacity(slave).schedulable

    def teardown(self) -> None:
        straight = StateMachine()
        for index, data in enumerate(self.log, 1):
            straight.apply_entry(index, data)
        assert straight.to_snapshot() == self.a.to_snapshot()
        assert straight.rejected_entries == self.a.rejected_entries
        restored = StateMachine.from_snapshot(self.a.to_snapshot())
        assert restored.to_snapshot() == self.a.to_snapshot()
        assert json.loads(self.a.to_snapshot())["jobs"] == [job.model_dump(mode="json") for job in self.a.jobs.values()]


Replicas.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestAdversarialLog = Replicas.TestCase


# ------------------------------------------------------------ the cases


def test_an_empty_idempotency_key_entry_is_rejected_and_the_next_entry_applies() -> None:
    sm = StateMachine()
    spec = {"name": "x", "image": "claud/busybox", "idempotency_key": ""}
    bad = entry({"kind": "submit_job", "at": T0.isoformat(), "job_id": "a", "spec": spec})
    outcome = sm.apply_entry(1, bad)
    assert (outcome.ok, outcome.code) == (False, "rejected")
    assert "idempotency_key" in outcome.message
    assert (sm.applied_index, sm.rejected_entries, sm.jobs) == (1, 1, {})
    good = ops.encode(ops.SubmitJob(at=T0, job_id="b", spec={"name": "x", "image": "claud/busybox"}))
    assert sm.apply_entry(2, good).ok and set(sm.jobs) == {"b"}
    # Every replica gives the same verdict for the same bytes.
    other = StateMachine()
    assert other.apply_entry(1, bad) == outcome


def test_a_heartbeat_with_nan_or_infinity_never_reaches_the_tables() -> None:
    sm = StateMachine()
    for i, value in enumerate(["NaN", "Infinity", "-Infinity", "1e400"], 1):
        data = (f'{{"kind":"register_node","at":"{T0.isoformat()}","node_id":"s1","address":"s1:1",'
                f'"cpu_total":{value},"memory_mb_total":1024}}')
        assert sm.apply_entry(i, data).code == "rejected"
    assert sm.slaves == {} and sm.rejected_entries == 4


def test_an_always_service_restarting_for_hours_keeps_a_capped_backoff() -> None:
    """The issue's crash loop: ~1,100 restarts overflowed 2 ** (restarts - 1)."""
    sm = StateMachine()
    index = 0

    def apply(op) -> None:
        nonlocal index
        index += 1
        outcome = sm.apply_entry(index, ops.encode(op))
        assert outcome.ok, outcome

    now = T0
    apply(ops.RegisterSlave(at=now, slave_id="s1", address="s1:1", cpu_total=4, memory_mb_total=4096))
    apply(ops.SubmitJob(at=now, job_id="svc", spec={"name": "svc", "image": "claud/busybox", "type": "service",
                                                  "restart": {"policy": "always"}}))
    for _ in range(1100):
        apply(ops.ApplyPlan(at=now, placements=[ops.PlacedJob(job_id="svc", slave_id="s1")]))
        job = sm.jobs["svc"]
        assert job.state == JobState.SCHEDULED
        status = {"alloc_id": job.alloc_id, "job_id": "svc", "state": "exited", "exit_code": 1}
        apply(ops.ReportAllocations(at=now, slave_id="s1", statuses=[status]))
        assert job.not_before - now <= timedelta(seconds=30)
        now += timedelta(seconds=31)
    job = sm.jobs["svc"]
    assert (job.restarts, job.attempts, job.state) == (1100, 1100, JobState.PENDING)
    assert job.not_before - job.updated_at == timedelta(seconds=30)
    assert "in 30s (restart 1100)" in job.message
    assert sm.rejected_entries == 0


def test_a_failing_apply_is_rejected_and_leaves_indexes_that_agree_with_the_rows(monkeypatch) -> None:
    sm = StateMachine()
    sm.apply_entry(1, ops.encode(ops.SubmitJob(at=T0, job_id="a", spec={"name": "a", "image": "claud/busybox"})))

    def broken(self, op):  # a bug: changes a row, then raises
        self.jobs["a"].state = JobState.STOPPED
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(StateMachine, "_apply_stop_job", broken)
    outcome = sm.apply_entry(2, ops.encode(ops.StopJob(at=T0, job_id="a")))
    assert outcome.code == "rejected" and "apply_failed" in outcome.message
    assert (sm.applied_index, sm.rejected_entries) == (2, 1)
    assert "a" not in sm._pending and "a" not in sm._unexplained
    restored = StateMachine.from_snapshot(sm.to_snapshot())
    assert (restored._pending, restored._unexplained, restored._backoff, restored._placed_by_slave) == (
        sm._pending, sm._unexplained, sm._backoff, sm._placed_by_slave)


def test_an_index_already_applied_is_a_programming_error() -> None:
    sm = StateMachine()
    sm.apply_entry(1, "")
    with pytest.raises(ValueError, match="already applied"):
        sm.apply_entry(1, "")


def test_timestamps_must_be_aware_and_within_range() -> None:
    sm = StateMachine()
    for i, at in enumerate(["2026-01-01T00:00:00", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"], 1):
        assert sm.apply_entry(i, entry({"kind": "noop", "at": at})).code == "rejected"
    op = ops.decode(entry({"kind": "noop", "at": "2026-01-01T05:30:00+05:30"}))
    assert op.at == T0 and op.at.utcoffset() == timedelta(0)


def test_rejected_entries_are_exported_in_metrics() -> None:
    from claud.master.telemetry import MasterTelemetry

    sm = StateMachine()
    sm.apply_entry(1, b"\xff")
    telemetry = MasterTelemetry()
    telemetry.watch_tables(lambda: (sm, 1, 1, True))
    text = telemetry.exposition().decode()
    assert "# TYPE claud_rejected_entries_total counter" in text
    assert "claud_rejected_entries_total 1.0\n" in text
