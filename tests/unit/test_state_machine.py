"""The replicated state machine: job lifecycle rules, and properties that must
hold for any sequence of operations (indexes consistent, never over-committed,
snapshot + replay identical to straight replay)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claud.api import AllocationStatus, ContainerState, DesiredState, JobSpec, JobState, NodeState, UpdatePolicy
from claud.master import ops
from claud.master.rollout import decide
from claud.master.scheduler import cpu_millis, schedule
from claud.master.state import SNAPSHOT_FORMAT, StateMachine, _allocation

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Driver:
    """Applies operations with increasing indexes and a clock that only moves when told."""

    def __init__(self) -> None:
        self.sm = StateMachine()
        self.log: list[ops.Operation] = []
        self.now = T0

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)

    def apply(self, op: ops.Operation):
        self.log.append(op)
        return self.sm.apply(len(self.log), op)

    def slave(self, slave_id: str, cpu: float = 2.0, memory: int = 1024, labels: dict | None = None) -> None:
        self.apply(
            ops.RegisterSlave(
                at=self.now, slave_id=slave_id, address=f"{slave_id}:1", labels=labels or {}, cpu_total=cpu,
                memory_mb_total=memory,
            )
        )

    def submit(self, job_id: str, **spec) -> str:
        spec.setdefault("name", job_id)
        spec.setdefault("image", "claud/busybox")
        outcome = self.apply(ops.SubmitJob(at=self.now, job_id=job_id, spec=JobSpec(**spec)))
        assert outcome.ok, outcome
        return outcome.value[0]

    def schedule(self) -> None:
        slaves, jobs = self.sm.scheduling_snapshot(self.now)
        plan = schedule(slaves, jobs)
        self.apply(
            ops.ApplyPlan(
                at=self.now,
                placements=[ops.PlacedJob(job_id=p.job_id, slave_id=p.slave_id) for p in plan.placements],
                unplaced=dict(plan.unplaced),
            )
        )

    def report(self, job_id: str, state: ContainerState, exit_code: int | None = None, message: str | None = None):
        job = self.sm.jobs[job_id]
        status = AllocationStatus(  # a report names the job (row 0's id) and the allocation
            alloc_id=job.alloc_id, job_id=job_id.split(".")[0], state=state, container_id="c" * 64,
            exit_code=exit_code, message=message,
        )
        self.apply(ops.ReportAllocations(at=self.now, slave_id=job.slave_id, statuses=[status]))

    def state(self, job_id: str) -> JobState:
        return self.sm.jobs[job_id].state


@pytest.fixture
def d() -> Driver:
    return Driver()


def test_batch_job_runs_to_completion_with_an_event_per_transition(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1", command=["true"])
    d.schedule()
    assert d.state("j1") == JobState.SCHEDULED
    job = d.sm.jobs["j1"]
    assert (job.slave_id, job.alloc_id, job.attempts) == ("s1", "j1-1", 1)
    assert [a.alloc_id for a in d.sm.desired_allocations("s1")] == ["j1-1"]
    d.report("j1", ContainerState.STARTING)
    d.report("j1", ContainerState.RUNNING)
    d.report("j1", ContainerState.EXITED, exit_code=0)
    assert d.state("j1") == JobState.COMPLETED
    assert job.exit_code == 0
    assert [e.state for e in job.events] == ["pending", "scheduled", "starting", "running", "completed"]
    assert d.sm.desired_allocations("s1") == []
    assert d.sm.capacity(d.sm.slaves["s1"]).cpu_reserved == 0


def test_failed_start_and_nonzero_exit_are_failures(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1")
    d.submit("j2")
    d.schedule()
    d.report("j1", ContainerState.FAILED, message="image 'nosuch' not found")
    d.report("j2", ContainerState.RUNNING)
    d.report("j2", ContainerState.EXITED, exit_code=3)
    assert d.state("j1") == JobState.FAILED and "nosuch" in d.sm.jobs["j1"].message
    assert d.state("j2") == JobState.FAILED and d.sm.jobs["j2"].exit_code == 3


def test_on_failure_restarts_up_to_max_retries_with_backoff(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1", restart={"policy": "on-failure", "max_retries": 2})
    for attempt in (1, 2, 3):
        d.schedule()
        assert d.state("j1") == JobState.SCHEDULED, attempt
        assert d.sm.jobs["j1"].alloc_id == f"j1-{attempt}"
        d.report("j1", ContainerState.EXITED, exit_code=1)
        if attempt < 3:
            assert d.state("j1") == JobState.PENDING
            d.schedule()  # still in backoff: not placed yet
            assert d.state("j1") == JobState.PENDING
            d.tick(60)
    assert d.state("j1") == JobState.FAILED
    assert d.sm.jobs["j1"].attempts == 3


def test_on_failure_does_not_restart_a_success_and_always_does(d: Driver) -> None:
    d.slave("s1")
    d.submit("ok", restart={"policy": "on-failure", "max_retries": 5})
    d.submit("svc", type="service", restart={"policy": "always"})
    d.schedule()
    d.report("ok", ContainerState.EXITED, exit_code=0)
    d.report("svc", ContainerState.EXITED, exit_code=0)
    assert d.state("ok") == JobState.COMPLETED
    assert d.state("svc") == JobState.PENDING


def test_stale_reports_from_an_older_attempt_are_ignored(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1", restart={"policy": "always"})
    d.schedule()
    old_alloc = d.sm.jobs["j1"].alloc_id
    d.report("j1", ContainerState.EXITED, exit_code=1)
    d.tick(60)
    d.schedule()
    late = AllocationStatus(alloc_id=old_alloc, job_id="j1", state=ContainerState.EXITED, exit_code=9)
    assert d.sm.relevant_statuses("s1", [late]) == []
    d.apply(ops.ReportAllocations(at=d.now, slave_id="s1", statuses=[late]))
    assert d.state("j1") == JobState.SCHEDULED


def test_stop_pending_is_immediate_and_running_goes_through_stopping(d: Driver) -> None:
    d.submit("waiting")
    assert d.apply(ops.StopJob(at=d.now, job_id="waiting")).ok
    assert d.state("waiting") == JobState.STOPPED
    d.slave("s1")
    d.submit("j1")
    d.schedule()
    d.report("j1", ContainerState.RUNNING)
    d.apply(ops.StopJob(at=d.now, job_id="j1"))
    assert d.state("j1") == JobState.STOPPING
    assert d.sm.desired_allocations("s1")[0].desired == DesiredState.STOP
    d.report("j1", ContainerState.EXITED, exit_code=137)
    assert d.state("j1") == JobState.STOPPED
    again = d.apply(ops.StopJob(at=d.now, job_id="j1"))
    assert again.ok  # stopping a stopped job is idempotent


def test_stop_of_finished_or_unknown_job_is_an_error(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1")
    d.schedule()
    d.report("j1", ContainerState.EXITED, exit_code=0)
    assert d.apply(ops.StopJob(at=d.now, job_id="j1")).code == "conflict"
    assert d.apply(ops.StopJob(at=d.now, job_id="nope")).code == "not_found"


def test_idempotency_key_returns_the_same_job_and_refuses_another_spec(d: Driver) -> None:
    first = d.apply(ops.SubmitJob(at=d.now, job_id="a", spec=JobSpec(name="x", image="i", idempotency_key="k")))
    again = d.apply(ops.SubmitJob(at=d.now, job_id="b", spec=JobSpec(name="x", image="i", idempotency_key="k")))
    other = d.apply(ops.SubmitJob(at=d.now, job_id="c", spec=JobSpec(name="y", image="i", idempotency_key="k")))
    assert first.value == ("a", True)
    assert again.value == ("a", False)
    assert other.code == "conflict"
    assert set(d.sm.jobs) == {"a"}


def test_plan_is_rechecked_against_the_newest_state(d: Driver) -> None:
    d.slave("s1", cpu=1.0)
    d.submit("a", resources={"cpu": 0.75, "memory_mb": 64})
    d.submit("b", resources={"cpu": 0.75, "memory_mb": 64})
    # A stale plan that puts both on s1 would over-commit it: apply refuses the second.
    d.apply(ops.ApplyPlan(at=d.now, placements=[ops.PlacedJob(job_id="a", slave_id="s1"),
                                                ops.PlacedJob(job_id="b", slave_id="s1")]))
    assert d.state("a") == JobState.SCHEDULED
    assert d.state("b") == JobState.PENDING


def test_dead_node_loses_its_jobs_which_go_back_to_pending(d: Driver) -> None:
    d.slave("s1")
    d.submit("run")
    d.submit("halt")
    d.schedule()
    d.report("run", ContainerState.RUNNING)
    d.apply(ops.StopJob(at=d.now, job_id="halt"))
    d.apply(ops.SetSlaveState(at=d.now, slave_id="s1", state=NodeState.DEAD, reason="no heartbeat for 10.0s"))
    assert d.state("run") == JobState.PENDING
    assert JobState.LOST in [e.state for e in d.sm.jobs["run"].events]
    assert d.state("halt") == JobState.STOPPED
    d.slave("s2")
    d.schedule()
    assert d.sm.jobs["run"].slave_id == "s2" and d.sm.jobs["run"].attempts == 2
    # The dead slave comes back: alive, with nothing to run.
    d.slave("s1")
    assert d.sm.slaves["s1"].state == NodeState.ALIVE
    assert d.sm.desired_allocations("s1") == []


def test_drain_moves_jobs_off_and_places_none_there(d: Driver) -> None:
    d.slave("s1")
    d.submit("j1")
    d.schedule()
    d.report("j1", ContainerState.RUNNING)
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=True))
    assert d.state("j1") == JobState.STOPPING
    d.report("j1", ContainerState.EXITED, exit_code=143)
    assert d.state("j1") == JobState.PENDING
    d.schedule()
    assert d.state("j1") == JobState.PENDING and "no" in (d.sm.jobs["j1"].pending_reason or "")
    d.slave("s2")
    d.schedule()
    assert d.sm.jobs["j1"].slave_id == "s2"


def test_unplaceable_job_stays_pending_with_a_reason(d: Driver) -> None:
    d.slave("s1", cpu=2.0)
    d.submit("big", resources={"cpu": 64, "memory_mb": 64})
    d.schedule()
    assert d.state("big") == JobState.PENDING
    assert "64" in d.sm.jobs["big"].pending_reason


# ------------------------------------------------------------------ properties

NODE_IDS = ["s1", "s2", "s3"]
actions = st.lists(
    st.one_of(
        st.tuples(st.just("node"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("submit"), st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5]),
                  st.sampled_from(["never", "on-failure", "always"])),
        st.tuples(st.just("schedule")),
        # A batch (keys shared with earlier batches, so some retries, some conflicts).
        st.tuples(st.just("batch"), st.integers(1, 4), st.sampled_from([None, "K1", "K2"]), st.booleans()),
        st.tuples(st.just("report"), st.integers(0, 30), st.sampled_from(list(ContainerState)),
                  st.sampled_from([0, 1])),
        st.tuples(st.just("stop"), st.integers(0, 30)),
        st.tuples(st.just("dead"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("drain"), st.sampled_from(NODE_IDS), st.booleans()),
        st.tuples(st.just("tick")),
        st.tuples(st.just("service"), st.sampled_from(["never", "always"])),
        st.tuples(st.just("fence"), st.integers(0, 30), st.sampled_from([0, 137])),
        st.tuples(st.just("drain_until"), st.sampled_from(NODE_IDS), st.sampled_from([0, 30, 120])),
        st.tuples(st.just("force"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("health"), st.sampled_from(NODE_IDS), st.booleans()),
        st.tuples(st.just("lose"), st.sampled_from(NODE_IDS)),
        st.tuples(st.just("replicas"), st.integers(2, 4), st.booleans()),
        st.tuples(st.just("update"), st.integers(0, 30), st.sampled_from(["v1", "v2"]), st.integers(1, 4)),
        st.tuples(st.just("rollout"), st.integers(0, 3)),
        st.tuples(st.just("revert"), st.integers(0, 30), st.integers(0, 3)),
    ),
    max_size=60,
)


def run_actions(d: Driver, steps, after_step: Callable[[int], None] | None = None) -> None:
    """Apply ``steps``; ``after_step(i)`` is called after step i, if given."""
    submitted: list[str] = []
    for number, step in enumerate(steps):
        if after_step is not None and number:
            after_step(number - 1)
        match step:
            case ("node", slave_id):
                d.slave(slave_id, cpu=2.0, memory=512)
            case ("submit", cpu, policy):
                job_id = f"j{len(submitted)}"
                d.submit(job_id, resources={"cpu": cpu, "memory_mb": 64}, restart={"policy": policy, "max_retries": 2})
                submitted.append(job_id)
            case ("batch", size, key, wide):
                cpu = 1.0 if wide else 0.25
                jobs = [
                    ops.SubmittedJob(job_id=f"b{len(d.log)}-{i}", spec=JobSpec(
                        name="b", image="claud/busybox", resources={"cpu": cpu, "memory_mb": 64},
                        idempotency_key=None if key is None else f"{key}/{i}"))
                    for i in range(size)
                ]
                outcome = d.apply(ops.SubmitJobs(at=d.now, jobs=jobs))
                if outcome.ok:
                    submitted.extend(job_id for job_id, created in outcome.value if created)
                    assert [job_id for job_id, _ in outcome.value] == [
                        d.sm._by_idempotency_key.get(job.spec.idempotency_key or "", job.job_id) for job in jobs
                    ]
                else:  # refused whole (a key reused with another spec): none of its jobs was made
                    assert outcome.code == "conflict", outcome
                    assert not any(job.job_id in d.sm.jobs for job in jobs)
            case ("schedule",):
                d.schedule()
            case ("report", n, state, code):
                if submitted:
                    job = d.sm.jobs.get(submitted[n % len(submitted)])  # None: an allocation scaled away
                    if job is not None and job.alloc_id and job.slave_id:
                        d.report(job.id, state, exit_code=code if state == ContainerState.EXITED else None)
            case ("stop", n):
                if submitted:
                    d.apply(ops.StopJob(at=d.now, job_id=submitted[n % len(submitted)]))
            case ("dead", slave_id):
                if slave_id in d.sm.slaves:
                    d.apply(ops.SetSlaveState(at=d.now, slave_id=slave_id, state=NodeState.DEAD))
            case ("drain", slave_id, on):
                if slave_id in d.sm.slaves:
                    d.apply(ops.SetDrain(at=d.now, slave_id=slave_id, draining=on))
            case ("tick",):
                d.tick(40)
            case ("service", policy):
                job_id = f"j{len(submitted)}"
                d.submit(job_id, type="service", resources={"cpu": 0.25, "memory_mb": 64}, restart={"policy": policy})
                submitted.append(job_id)
            case ("fence", n, code):
                if submitted:
                    job = d.sm.jobs.get(submitted[n % len(submitted)])
                    if job is not None and job.alloc_id and job.slave_id:
                        status = AllocationStatus(alloc_id=job.alloc_id, job_id=job.id.split(".")[0],
                                                  state=ContainerState.EXITED, exit_code=code, fenced=True)
                        d.apply(ops.ReportAllocations(at=d.now, slave_id=job.slave_id, statuses=[status]))
            case ("drain_until", slave_id, seconds):
                if slave_id in d.sm.slaves:
                    d.apply(ops.SetDrain(at=d.now, slave_id=slave_id, draining=True,
                                         deadline=d.now + timedelta(seconds=seconds)))
            case ("force", slave_id):
                if slave_id in d.sm.slaves:
                    d.apply(ops.ForceDrain(at=d.now, slave_id=slave_id))
            case ("health", slave_id, healthy):
                if slave_id in d.sm.slaves:
                    d.apply(ops.SetRuntimeHealth(at=d.now, slave_id=slave_id, healthy=healthy, error="engine down"))
            case ("lose", slave_id):
                if slave_id in d.sm.slaves:
                    d.apply(ops.LoseSlaveJobs(at=d.now, slave_id=slave_id, reason="engine away"))
            case ("replicas", count, spread):
                job_id = f"j{len(submitted)}"
                d.submit(job_id, type="service", count=count, spread=spread, command=["v0"],
                         resources={"cpu": 0.25, "memory_mb": 64},
                         update={"max_parallel": 1, "min_healthy_time": 1, "healthy_deadline": 60, "auto_revert": True})
                submitted.extend([job_id, *(f"{job_id}.{i}" for i in range(1, count))])
            case ("update", n, command, count):
                if submitted:
                    job_id = submitted[n % len(submitted)].split(".")[0]
                    spec = JobSpec(name="r", image="claud/busybox", type="service", count=count, command=[command],
                                   resources={"cpu": 0.25, "memory_mb": 64},
                                   update={"max_parallel": 2, "min_healthy_time": 1, "healthy_deadline": 60,
                                           "auto_revert": True})
                    d.apply(ops.UpdateJob(at=d.now, job_id=job_id, spec=spec))
                    submitted.extend(f"{job_id}.{i}" for i in range(1, count) if f"{job_id}.{i}" not in submitted)
            case ("rollout", seconds):
                d.tick(seconds)
                for head, facts in d.sm.rolling_out():
                    assert head.rollout is not None
                    view = d.sm.job_view(head, with_events=False)
                    decision = decide(head.rollout.version, view.update or UpdatePolicy(), view.desired,
                                      head.rollout.started_at, facts, d.now)
                    if decision is not None:
                        d.apply(ops.RolloutStep(at=d.now, job_id=head.id, version=head.rollout.version,
                                                replace=list(decision.replace), outcome=decision.outcome,
                                                message=decision.message))
            case ("revert", n, version):
                if submitted:
                    d.apply(ops.RevertJob(at=d.now, job_id=submitted[n % len(submitted)].split(".")[0],
                                          version=version))
    if after_step is not None and steps:
        after_step(len(steps) - 1)


def recounted_reservations(sm: StateMachine) -> dict[str, tuple[int, int]]:
    """Each slave's reservations counted afresh from the placed jobs' specs (milli-cores, MiB)."""
    holding = (JobState.SCHEDULED, JobState.STARTING, JobState.RUNNING, JobState.STOPPING)
    totals = dict.fromkeys(sm.slaves, (0, 0))
    for job in sm.jobs.values():
        if job.state in holding and job.slave_id is not None:
            cpu, memory = totals.get(job.slave_id, (0, 0))
            totals[job.slave_id] = (cpu + cpu_millis(job.spec.resources.cpu), memory + job.spec.resources.memory_mb)
    return totals


def assert_reservations_recount(sm: StateMachine) -> None:
    """The totals kept on place/unplace are exactly a recount, for every slave (and every slave id
    the index still names), and the scheduler's view of each slave says the same."""
    recount = recounted_reservations(sm)
    for slave_id in {*recount, *sm._placed_by_slave}:
        assert sm.reserved(slave_id) == recount.get(slave_id, (0, 0)), slave_id
    for slave in sm.slaves.values():
        cap = sm.capacity(slave)
        assert (cpu_millis(cap.cpu_reserved), cap.memory_mb_reserved) == recount[slave.id]


def assert_allocations_fresh(sm: StateMachine) -> None:
    """The desired sets a slave is handed (allocations kept between replies) are what building
    them afresh from the rows gives."""
    for slave in sm.slaves.values():
        fresh = [_allocation(job, slave.drain_forced) for job in sm.placed_jobs(slave.id)]
        assert sm.desired_allocations(slave.id) == fresh, slave.id


def assert_job_indexes_recount(sm: StateMachine) -> None:
    """The read indexes kept as the table changes (``job_index``) say what a sort and a recount
    of the table say: the jobs in list order, and the jobs by state."""
    heads = [job for job in sm.jobs.values() if job.index == 0]
    assert sm.job_order.keys() == sorted((job.created_at, job.id) for job in heads)
    assert sm.job_counts() == Counter(sm.state_of(job) for job in heads)


def assert_scheduler_view_fresh(sm: StateMachine, now: datetime = T0) -> None:
    """The scheduling snapshot (slaves kept in id order, each capacity kept until the slave
    changes) is what building it afresh gives, and so is the plan made from it."""
    assert sm._slave_order == sorted(sm.slaves)
    slaves, jobs = sm.scheduling_snapshot(now)
    fresh = [sm.capacity(slave) for slave in sm.slaves.values()]  # the table's order, each built now
    assert slaves == sorted(fresh, key=lambda cap: cap.id)
    assert schedule(slaves, jobs) == schedule(fresh, jobs)


def check_invariants(sm: StateMachine) -> None:
    holding = (JobState.SCHEDULED, JobState.STARTING, JobState.RUNNING, JobState.STOPPING)
    placed = {(job.slave_id, job.id) for job in sm.jobs.values() if job.state in holding}
    indexed = {(slave_id, job_id) for slave_id in sm.slaves for job_id in sm._placed_by_slave.get(slave_id, ())}
    assert placed == indexed
    assert_reservations_recount(sm)
    assert_allocations_fresh(sm)
    assert_job_indexes_recount(sm)
    assert_scheduler_view_fresh(sm)
    assert set(sm._pending) == {j.id for j in sm.jobs.values() if j.state == JobState.PENDING}
    assert set(sm._unexplained) == {j for j in sm._pending if sm.jobs[j].pending_reason is None}
    assert sm._backoff == {j: sm.jobs[j].not_before for j in sm._pending if sm.jobs[j].not_before is not None}
    for slave in sm.slaves.values():
        cap = sm.capacity(slave)
        assert cpu_millis(cap.cpu_reserved) <= cpu_millis(slave.cpu_total)
        assert cap.memory_mb_reserved <= slave.memory_mb_total
        if slave.state == NodeState.DEAD:
            assert not sm._placed_by_slave.get(slave.id)
    for job in sm.jobs.values():
        assert job.state != JobState.LOST  # lost is a transition, never a resting state
        kept_running = job.spec.restart.policy == "always" or job.spec.type == "service"
        assert job.restarts <= max(job.spec.restart.max_retries, job.restarts if kept_running else 0)
        assert (job.stop_cause is not None) == (job.state == JobState.STOPPING)
        if job.spec.type == "service":
            assert job.state not in (JobState.COMPLETED, JobState.FAILED)
        # What ended because of CLAUD is lost and pending again: never charged.
        for before, after in itertools.pairwise(job.events):
            if before.state == JobState.LOST:
                assert after.state == JobState.PENDING and "restart" not in after.message
    for slave in sm.slaves.values():
        if not slave.runtime_healthy:
            assert not sm.capacity(slave).schedulable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_any_operation_sequence_keeps_the_tables_consistent(steps) -> None:
    d = Driver()
    run_actions(d, steps)
    check_invariants(d.sm)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.integers(0, 60))
def test_snapshot_then_replay_equals_straight_replay(steps, cut) -> None:
    d = Driver()
    run_actions(d, steps)
    cut = min(cut, len(d.log))
    straight = StateMachine()
    for i, op in enumerate(d.log, 1):
        straight.apply(i, ops.decode(ops.encode(op)))
    partial = StateMachine()
    for i, op in enumerate(d.log[:cut], 1):
        partial.apply(i, op)
    restored = StateMachine.from_snapshot(partial.to_snapshot())  # which also fills partial's kept row encodings
    for i, op in enumerate(d.log[cut:], cut + 1):
        restored.apply(i, op)
        partial.apply(i, op)
    # partial's rows changed after their encodings were kept: none may be stale.
    assert partial.to_snapshot() == restored.to_snapshot() == straight.to_snapshot() == d.sm.to_snapshot()
    assert json.loads(partial.to_snapshot()) == {
        "format": SNAPSHOT_FORMAT,
        "applied_index": partial.applied_index,
        "jobs": [job.model_dump(mode="json") for job in partial.jobs.values()],
        "nodes": [slave.model_dump(mode="json") for slave in partial.slaves.values()],
        "pending": list(partial._pending),
    }
    check_invariants(restored)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.lists(st.booleans(), min_size=60, max_size=60))
def test_the_kept_job_tally_and_order_are_a_recount_whenever_read(steps, reads) -> None:
    """Read now and then (a scrape between some commits, none between others), the tally
    recounts only the jobs changed since: it must still say what counting every job says.
    Likewise the scheduler's view, whose capacities are kept between the passes."""
    d = Driver()

    def scrape(number: int) -> None:
        if reads[number % len(reads)]:
            assert_job_indexes_recount(d.sm)
            assert_scheduler_view_fresh(d.sm, d.now)

    run_actions(d, steps, scrape)
    assert_job_indexes_recount(d.sm)
    assert_job_indexes_recount(StateMachine.from_snapshot(d.sm.to_snapshot()))


def test_a_user_stop_of_a_row_already_stopping_moves_the_tally(d: Driver) -> None:
    """The one change of a job's state that records no event: a user stops a job whose only live
    row a drain is stopping already (the row stays stopping; the job goes pending -> stopping)."""
    d.slave("s1")
    d.slave("s2")
    d.submit("j", type="batch", count=2, resources={"cpu": 0.5, "memory_mb": 64})
    d.schedule()
    assert_job_indexes_recount(d.sm)
    d.report("j", ContainerState.RUNNING)
    d.report("j", ContainerState.EXITED, exit_code=0)
    other = d.sm.jobs["j.1"]
    d.apply(ops.SetDrain(at=d.now, slave_id=other.slave_id, draining=True))
    assert (other.state, d.sm.state_of(d.sm.jobs["j"])) == (JobState.STOPPING, JobState.PENDING)
    assert d.sm.job_counts() == {JobState.PENDING: 1}
    d.apply(ops.StopJob(at=d.now, job_id="j"))
    assert (other.state, d.sm.state_of(d.sm.jobs["j"])) == (JobState.STOPPING, JobState.STOPPING)
    assert d.sm.job_counts() == {JobState.STOPPING: 1}
    assert_job_indexes_recount(d.sm)


def test_reservations_are_kept_on_place_and_unplace_and_derived_again_on_restore(d: Driver) -> None:
    d.slave("s1", cpu=1.0, memory=1000)
    for i, (cpu, memory) in enumerate([(0.1, 100), (0.2, 200), (0.3, 300)]):
        d.submit(f"j{i}", resources={"cpu": cpu, "memory_mb": memory}, type="batch")
    d.schedule()
    assert d.sm.reserved("s1") == (600, 600)
    d.report("j1", ContainerState.RUNNING)
    d.report("j1", ContainerState.EXITED, exit_code=0)  # completed: its room is free again
    assert d.state("j1") == JobState.COMPLETED
    assert d.sm.reserved("s1") == (400, 400)
    cap = d.sm.capacity(d.sm.slaves["s1"])
    assert (cap.cpu_reserved, cap.memory_mb_reserved) == (0.4, 400)
    restored = StateMachine.from_snapshot(d.sm.to_snapshot())
    assert restored.reserved("s1") == (400, 400)  # not read from the snapshot: counted from its rows
    d.apply(ops.SetSlaveState(at=d.now, slave_id="s1", state=NodeState.DEAD, reason="test"))
    assert d.sm.reserved("s1") == (0, 0)
    assert_reservations_recount(d.sm)
