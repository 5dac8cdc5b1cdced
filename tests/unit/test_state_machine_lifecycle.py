"""The state machine carries out the lifecycle table: issue 11's cases through
apply (fences, drains with deadlines and deaths, runtime health, services)."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_state_machine import Driver, actions, check_invariants, run_actions

from claud.api import AllocationStatus, ContainerState, DesiredState, JobState, NodeState
from claud.master import ops
from claud.master.lifecycle import StopCause
from claud.master.state import StateMachine


def fenced(d: Driver, job_id: str, code: int = 137) -> None:
    job = d.sm.jobs[job_id]
    status = AllocationStatus(alloc_id=job.alloc_id, job_id=job_id, state=ContainerState.EXITED, exit_code=code,
                              fenced=True)
    d.apply(ops.ReportAllocations(at=d.now, slave_id=job.slave_id, statuses=[status]))


def running(d: Driver, *job_ids: str) -> None:
    for job_id in job_ids:
        d.report(job_id, ContainerState.RUNNING)


def test_a_blip_that_fences_a_never_job_loses_it_without_charging_a_retry() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("never")
    d.submit("retry", restart={"policy": "on-failure", "max_retries": 1})
    d.schedule()
    running(d, "never", "retry")
    fenced(d, "never")
    fenced(d, "retry")
    for job_id in ("never", "retry"):
        job = d.sm.jobs[job_id]
        assert job.state == JobState.PENDING and job.restarts == 0 and job.not_before is None
        assert [e.state for e in job.events][-2:] == [JobState.LOST, JobState.PENDING]
    d.schedule()
    assert d.sm.jobs["never"].attempts == 2 and d.state("never") == JobState.SCHEDULED


def test_a_draining_slave_that_dies_has_its_jobs_placed_elsewhere() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("moved")
    d.submit("halted")
    d.schedule()
    running(d, "moved", "halted")
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=True))
    d.apply(ops.StopJob(at=d.now, job_id="halted"))
    assert d.sm.jobs["moved"].stop_cause is StopCause.DRAIN
    assert d.sm.jobs["halted"].stop_cause is StopCause.USER
    d.apply(ops.SetSlaveState(at=d.now, slave_id="s1", state=NodeState.DEAD, reason="no heartbeat for 10.0s"))
    assert d.state("moved") == JobState.PENDING and d.sm.jobs["moved"].restarts == 0
    assert d.state("halted") == JobState.STOPPED
    d.slave("s2")
    d.schedule()
    assert d.sm.jobs["moved"].slave_id == "s2"


def test_a_drain_deadline_lets_batch_jobs_finish_then_forces_the_rest_off() -> None:
    d = Driver()
    d.slave("s1", cpu=4)
    d.submit("done")
    d.submit("slow")
    d.submit("svc", type="service")
    d.schedule()
    running(d, "done", "slow", "svc")
    deadline = d.now + timedelta(seconds=60)
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=True, deadline=deadline))
    assert d.sm.slaves["s1"].drain_deadline == deadline
    assert d.state("svc") == JobState.STOPPING  # a service moves at once
    assert (d.state("done"), d.state("slow")) == (JobState.RUNNING, JobState.RUNNING)
    d.report("done", ContainerState.EXITED, exit_code=0)
    assert d.state("done") == JobState.COMPLETED  # finished while draining: never run again
    d.apply(ops.ForceDrain(at=d.now, slave_id="s1"))  # too early: the tables refuse it
    assert d.state("slow") == JobState.RUNNING
    d.tick(61)
    d.apply(ops.ForceDrain(at=d.now, slave_id="s1"))
    assert d.state("slow") == JobState.STOPPING
    wanted = {a.job_id: a for a in d.sm.desired_allocations("s1")}
    assert wanted["slow"].desired == DesiredState.STOP and wanted["slow"].stop_timeout == 0
    d.report("slow", ContainerState.EXITED, exit_code=137)
    job = d.sm.jobs["slow"]
    assert job.state == JobState.PENDING and job.restarts == 0
    d.slave("s2", cpu=4)
    d.schedule()
    assert job.slave_id == "s2" and d.sm.jobs["done"].state == JobState.COMPLETED


def test_a_drain_whose_deadline_is_now_forces_at_once_and_undrain_clears_it() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("b")
    d.schedule()
    running(d, "b")
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=True, deadline=d.now))
    assert d.state("b") == JobState.STOPPING and d.sm.slaves["s1"].drain_forced
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=False))
    slave = d.sm.slaves["s1"]
    assert (slave.draining, slave.drain_deadline, slave.drain_forced) == (False, None, False)
    assert d.sm.slave_view(slave).drain_deadline is None


def test_an_unhealthy_runtime_takes_no_placements_and_loses_its_jobs_after_dead_after() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("a")
    d.schedule()
    running(d, "a")
    d.apply(ops.SetRuntimeHealth(at=d.now, slave_id="s1", healthy=False, error="connection refused"))
    slave = d.sm.slaves["s1"]
    view = d.sm.slave_view(slave)
    assert (view.runtime_healthy, view.runtime_error, view.state) == (False, "connection refused", NodeState.ALIVE)
    assert not d.sm.capacity(slave).schedulable
    d.submit("b")
    d.schedule()
    assert d.state("b") == JobState.PENDING
    d.apply(ops.LoseSlaveJobs(at=d.now, slave_id="s1", reason="unhealthy for 10.1s"))
    assert d.state("a") == JobState.PENDING and d.sm.jobs["a"].restarts == 0
    assert d.sm.desired_allocations("s1") == []
    d.apply(ops.SetRuntimeHealth(at=d.now, slave_id="s1", healthy=True))
    assert d.sm.capacity(slave).schedulable and d.sm.slave_view(slave).runtime_error is None
    d.schedule()
    assert d.state("a") == JobState.SCHEDULED and d.state("b") == JobState.SCHEDULED
    # Proposed before the engine came back, applied after: nothing is lost.
    d.apply(ops.LoseSlaveJobs(at=d.now, slave_id="s1", reason="late"))
    assert d.state("a") == JobState.SCHEDULED


def test_a_start_error_while_the_engine_is_away_is_retried_never_failed() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("a")
    d.schedule()
    job = d.sm.jobs["a"]
    status = AllocationStatus(alloc_id=job.alloc_id, job_id="a", state=ContainerState.FAILED,
                              message="could not start: Connection refused")
    assert d.sm.relevant_statuses("s1", [status], runtime_healthy=False) == [status]
    d.apply(ops.ReportAllocations(at=d.now, slave_id="s1", statuses=[status], runtime_healthy=False))
    assert job.state == JobState.PENDING and job.restarts == 0


def test_a_service_that_exits_0_is_restarted_with_a_backoff_that_grows_with_quick_exits() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("svc", type="service")  # policy never: a service is kept running anyway
    waits = []
    for _ in range(4):
        d.schedule()
        running(d, "svc")
        d.tick(1)
        d.report("svc", ContainerState.EXITED, exit_code=0)
        job = d.sm.jobs["svc"]
        assert job.state == JobState.PENDING
        waits.append((job.not_before - d.now).total_seconds())
        d.tick(60)
    assert waits == [0.5, 1, 2, 4]
    d.schedule()
    running(d, "svc")
    d.tick(600)  # a long run: the next exit starts the backoff over
    d.report("svc", ContainerState.EXITED, exit_code=0)
    job = d.sm.jobs["svc"]
    assert (job.not_before - d.now).total_seconds() == 0.5 and job.quick_exits == 0 and job.restarts == 5


def test_may_start_is_withdrawn_once_the_attempt_was_seen_starting() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("a", restart={"policy": "on-failure", "max_retries": 1})
    d.schedule()
    assert d.sm.desired_allocations("s1")[0].may_start
    d.report("a", ContainerState.STARTING)
    assert not d.sm.desired_allocations("s1")[0].may_start
    d.report("a", ContainerState.RUNNING)
    assert not d.sm.desired_allocations("s1")[0].may_start
    d.report("a", ContainerState.EXITED, exit_code=1)
    d.tick(60)
    d.schedule()
    assert d.sm.desired_allocations("s1")[0].may_start  # a new attempt may start


def test_a_snapshot_of_the_previous_masters_still_loads() -> None:
    d = Driver()
    d.slave("s1")
    d.submit("a")
    d.schedule()
    running(d, "a")
    d.apply(ops.SetDrain(at=d.now, slave_id="s1", draining=True))
    data = json.loads(d.sm.to_snapshot())
    del data["format"]  # written before snapshots had one
    new_job_fields = ("stop_cause", "running_since", "seen_started", "quick_exits")
    new_node_fields = ("drain_deadline", "drain_forced", "runtime_healthy", "runtime_error")
    for job in data["jobs"]:
        job["stop_reason"] = job.pop("stop_cause")
        for name in new_job_fields[1:]:
            job.pop(name)
    for slave in data["nodes"]:
        for name in new_node_fields:
            slave.pop(name)
    restored = StateMachine.from_snapshot(json.dumps(data))
    assert restored.jobs["a"].stop_cause is StopCause.DRAIN
    assert restored.slaves["s1"].runtime_healthy
    d.report("a", ContainerState.EXITED, exit_code=143)
    restored.apply(len(d.log), d.log[-1])
    assert restored.jobs["a"].state == JobState.PENDING


REPORT_STATES = st.sampled_from(list(ContainerState))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.lists(st.tuples(st.integers(0, 30), REPORT_STATES, st.sampled_from([0, 1, 137]), st.booleans(),
                                   st.booleans()), min_size=1, max_size=8))
def test_the_heartbeat_filter_and_apply_make_the_same_decision(steps, reports) -> None:
    """A report the filter drops changes nothing when applied; one it keeps changes the job."""
    d = Driver()
    run_actions(d, steps)
    jobs = [j for j in d.sm.jobs.values() if j.alloc_id and j.slave_id]
    if not jobs:
        return
    for n, state, code, is_fenced, healthy in reports:
        job = jobs[n % len(jobs)]
        if job.slave_id is None:
            continue
        status = AllocationStatus(alloc_id=job.alloc_id, job_id=job.id.split(".")[0], state=state, exit_code=code,
                                  fenced=is_fenced,
                                  container_id="c1")
        kept = d.sm.relevant_statuses(job.slave_id, [status], runtime_healthy=healthy)
        before = job.model_dump_json()
        d.apply(ops.ReportAllocations(at=d.now, slave_id=job.slave_id, statuses=[status], runtime_healthy=healthy))
        assert (job.model_dump_json() != before) == bool(kept), (status, before)
    check_invariants(d.sm)
