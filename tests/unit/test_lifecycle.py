"""The lifecycle table (claud.master.lifecycle): every row, and the promises
that must hold for any job, report and cause (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from claud.api import AllocationStatus, ContainerState, JobSpec, JobState, JobType
from claud.master.lifecycle import (
    QUICK_EXIT_SECONDS,
    RESTART_BACKOFF_MAX,
    Facts,
    Step,
    StopCause,
    backoff,
    drain_moves_now,
    on_report,
    on_stop,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Job:
    state: JobState
    spec: JobSpec = field(default_factory=lambda: JobSpec(name="j", image="claud/busybox"))
    restarts: int = 0
    quick_exits: int = 0
    stop_cause: StopCause | None = None
    running_since: datetime | None = None


def spec(type: str = "batch", policy: str = "never", retries: int = 0) -> JobSpec:
    return JobSpec(name="j", image="claud/busybox", type=type, restart={"policy": policy, "max_retries": retries})


def report(state: ContainerState, exit_code: int | None = None, fenced: bool = False) -> AllocationStatus:
    return AllocationStatus(alloc_id="j-1", job_id="j", state=state, exit_code=exit_code, fenced=fenced)


EXITED_0 = report(ContainerState.EXITED, 0)
EXITED_1 = report(ContainerState.EXITED, 1)
KILLED = report(ContainerState.EXITED, 137)


# ------------------------------------------------------------------ the table, row by row


@pytest.mark.parametrize("state, container, step", [
    (JobState.SCHEDULED, ContainerState.STARTING, Step.STARTING),
    (JobState.STARTING, ContainerState.STARTING, None),
    (JobState.RUNNING, ContainerState.STARTING, None),
    (JobState.SCHEDULED, ContainerState.RUNNING, Step.RUNNING),
    (JobState.STARTING, ContainerState.RUNNING, Step.RUNNING),
    (JobState.RUNNING, ContainerState.RUNNING, None),
    (JobState.STOPPING, ContainerState.RUNNING, None),
])
def test_starting_and_running_reports(state, container, step) -> None:
    job = Job(state, stop_cause=StopCause.USER if state == JobState.STOPPING else None)
    transition = on_report(job, report(container))
    assert (transition.step if transition else None) == step


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.COMPLETED, JobState.FAILED, JobState.STOPPED])
def test_a_job_not_placed_ignores_every_report(state) -> None:
    for r in (EXITED_0, EXITED_1, report(ContainerState.RUNNING), report(ContainerState.MISSING)):
        assert on_report(Job(state), r) is None


@pytest.mark.parametrize("type, policy, retries, restarts, r, step", [
    # batch: runs to completion under its restart policy
    ("batch", "never", 0, 0, EXITED_0, Step.COMPLETED),
    ("batch", "never", 0, 0, EXITED_1, Step.FAILED),
    ("batch", "on-failure", 2, 0, EXITED_1, Step.RESTART),
    ("batch", "on-failure", 2, 2, EXITED_1, Step.FAILED),
    ("batch", "on-failure", 2, 0, EXITED_0, Step.COMPLETED),
    ("batch", "always", 0, 50, EXITED_1, Step.RESTART),
    ("batch", "always", 0, 0, EXITED_0, Step.COMPLETED),
    ("batch", "never", 0, 0, report(ContainerState.FAILED), Step.FAILED),
    ("batch", "never", 0, 0, report(ContainerState.MISSING), Step.FAILED),  # vanished after it ran
    # service: kept running, whatever its policy and however it ended
    ("service", "never", 0, 0, EXITED_0, Step.RESTART),
    ("service", "on-failure", 1, 9, EXITED_1, Step.RESTART),
    ("service", "always", 0, 0, report(ContainerState.FAILED), Step.RESTART),
])
def test_an_exit_of_a_running_job(type, policy, retries, restarts, r, step) -> None:
    job = Job(JobState.RUNNING, spec(type, policy, retries), restarts=restarts, running_since=T0)
    assert on_report(job, r).step == step


@pytest.mark.parametrize("type", ["batch", "service"])
@pytest.mark.parametrize("policy", ["never", "on-failure", "always"])
def test_what_claud_stopped_itself_is_lost(type, policy) -> None:
    running = dict(state=JobState.RUNNING, spec=spec(type, policy), running_since=T0)
    assert on_report(Job(**running), report(ContainerState.EXITED, 137, fenced=True)).step == Step.LOST
    assert on_report(Job(**running), KILLED, Facts(slave_dead=True)).step == Step.LOST
    assert on_report(Job(**running), report(ContainerState.FAILED), Facts(runtime_healthy=False)).step == Step.LOST
    draining = Job(**{**running, "state": JobState.STOPPING}, stop_cause=StopCause.DRAIN)
    assert on_report(draining, KILLED).step == Step.LOST
    assert on_report(draining, report(ContainerState.MISSING)).step == Step.LOST
    # A container that never ran and is gone: CLAUD failed to start it.
    assert on_report(Job(JobState.STARTING, spec(type, policy)), report(ContainerState.MISSING)).step == Step.LOST


def test_a_batch_job_that_finished_is_complete_even_while_claud_stops_it() -> None:
    for job, facts in [
        (Job(JobState.STOPPING, stop_cause=StopCause.DRAIN), Facts()),
        (Job(JobState.RUNNING), Facts(slave_dead=True)),
        (Job(JobState.RUNNING), Facts(runtime_healthy=False)),
    ]:
        assert on_report(job, EXITED_0, facts).step == Step.COMPLETED
    assert on_report(Job(JobState.RUNNING), report(ContainerState.EXITED, 0, fenced=True)).step == Step.COMPLETED


def test_a_user_stop_ends_stopped_whatever_the_exit() -> None:
    for type in ("batch", "service"):
        job = Job(JobState.STOPPING, spec(type, "always"), stop_cause=StopCause.USER)
        for r in (EXITED_0, KILLED, report(ContainerState.MISSING), report(ContainerState.EXITED, 137, fenced=True)):
            assert on_report(job, r).step == Step.STOPPED


def test_an_exit_seen_before_running_records_that_it_ran() -> None:
    assert on_report(Job(JobState.SCHEDULED), EXITED_0).ran
    assert on_report(Job(JobState.STARTING), EXITED_1).ran
    assert not on_report(Job(JobState.STARTING), report(ContainerState.FAILED)).ran
    assert not on_report(Job(JobState.RUNNING), EXITED_0).ran


@pytest.mark.parametrize("state, current, cause, step, recorded", [
    (JobState.PENDING, None, StopCause.USER, Step.STOPPED, None),
    (JobState.PENDING, None, StopCause.DRAIN, None, None),
    (JobState.PENDING, None, StopCause.SLAVE_LOST, None, None),
    (JobState.RUNNING, None, StopCause.USER, Step.STOPPING, StopCause.USER),
    (JobState.RUNNING, None, StopCause.DRAIN, Step.STOPPING, StopCause.DRAIN),
    (JobState.SCHEDULED, None, StopCause.SLAVE_LOST, Step.LOST, None),
    (JobState.RUNNING, None, StopCause.SLAVE_LOST, Step.LOST, None),
    (JobState.RUNNING, None, StopCause.FENCE, None, None),  # only a slave reports a fence
    (JobState.STOPPING, StopCause.DRAIN, StopCause.USER, Step.STOPPING, StopCause.USER),  # a user stop wins
    (JobState.STOPPING, StopCause.USER, StopCause.DRAIN, None, None),
    (JobState.STOPPING, StopCause.DRAIN, StopCause.DRAIN, None, None),
    (JobState.STOPPING, StopCause.DRAIN, StopCause.SLAVE_LOST, Step.LOST, None),  # issue 11: drain + death
    (JobState.STOPPING, StopCause.USER, StopCause.SLAVE_LOST, Step.STOPPED, None),
    (JobState.COMPLETED, None, StopCause.USER, None, None),
    (JobState.STOPPED, None, StopCause.SLAVE_LOST, None, None),
])
def test_stops(state, current, cause, step, recorded) -> None:
    transition = on_stop(Job(state, stop_cause=current), cause)
    assert (transition.step if transition else None) == step
    if transition is not None:
        assert transition.cause == recorded


def test_a_drain_with_a_deadline_lets_running_batch_jobs_finish() -> None:
    assert drain_moves_now(Job(JobState.RUNNING), has_deadline=False)
    assert not drain_moves_now(Job(JobState.RUNNING), has_deadline=True)
    assert drain_moves_now(Job(JobState.SCHEDULED), has_deadline=True)
    assert drain_moves_now(Job(JobState.RUNNING, spec("service")), has_deadline=True)


def test_a_service_backoff_grows_with_quick_exits_and_resets_after_a_long_run() -> None:
    svc = Job(JobState.RUNNING, spec("service"), running_since=T0)
    delays = []
    for _ in range(12):
        wait = backoff(svc, T0 + timedelta(seconds=1))
        delays.append(wait.delay)
        svc.restarts, svc.quick_exits = wait.restarts, wait.quick_exits
    assert delays[:4] == [0.5, 1, 2, 4] and delays[-1] == RESTART_BACKOFF_MAX
    assert delays == sorted(delays)
    long_run = backoff(svc, T0 + timedelta(seconds=QUICK_EXIT_SECONDS + 1))
    assert (long_run.delay, long_run.quick_exits, long_run.restarts) == (0.5, 0, 13)
    never_seen_running = backoff(Job(JobState.STARTING, spec("service"), quick_exits=3), T0)
    assert never_seen_running.quick_exits == 4


def test_a_batch_backoff_grows_with_its_restarts() -> None:
    job = Job(JobState.RUNNING, spec("batch", "on-failure", 5), restarts=2, running_since=T0)
    assert backoff(job, T0 + timedelta(hours=1)).delay == 2


# ------------------------------------------------------------------ promises, for every input

STATES = st.sampled_from(list(JobState))
CAUSES = st.one_of(st.none(), st.sampled_from(list(StopCause)))
REPORTS = st.builds(
    AllocationStatus,
    alloc_id=st.just("j-1"),
    job_id=st.just("j"),
    state=st.sampled_from(list(ContainerState)),
    exit_code=st.one_of(st.none(), st.sampled_from([0, 1, 2, 137, 143, -1, 255])),
    fenced=st.booleans(),
)
FACTS = st.builds(Facts, slave_dead=st.booleans(), runtime_healthy=st.booleans())
JOBS = st.builds(
    Job,
    state=STATES,
    spec=st.builds(spec, type=st.sampled_from(["batch", "service"]),
                   policy=st.sampled_from(["never", "on-failure", "always"]), retries=st.integers(0, 5)),
    restarts=st.integers(0, 8),
    quick_exits=st.integers(0, 40),
    stop_cause=CAUSES,
    running_since=st.one_of(st.none(), st.just(T0)),
)


def claud_ended_it(job: Job, r: AllocationStatus, facts: Facts) -> bool:
    return r.fenced or facts.slave_dead or not facts.runtime_healthy or job.stop_cause in (
        StopCause.DRAIN, StopCause.FENCE, StopCause.SLAVE_LOST)


@given(JOBS, REPORTS, FACTS)
def test_what_claud_ended_is_never_failed_nor_charged(job, r, facts) -> None:
    transition = on_report(job, r, facts)
    ended = (ContainerState.EXITED, ContainerState.FAILED, ContainerState.MISSING)
    if transition is not None and r.state in ended and claud_ended_it(job, r, facts):
        assert transition.step in (Step.LOST, Step.COMPLETED, Step.STOPPED), transition
        assert not transition.charged


@given(JOBS, REPORTS, FACTS)
def test_a_service_never_completes_nor_fails_from_an_exit(job, r, facts) -> None:
    if job.spec.type == JobType.SERVICE:
        transition = on_report(job, r, facts)
        if transition is not None:
            assert transition.to not in (JobState.COMPLETED, JobState.FAILED), transition


@given(JOBS, REPORTS, FACTS)
def test_a_batch_job_that_exited_0_is_never_run_again(job, r, facts) -> None:
    if job.spec.type == JobType.BATCH and r.state == ContainerState.EXITED and r.exit_code == 0:
        transition = on_report(job, r, facts)
        if transition is not None:
            assert transition.to in (JobState.COMPLETED, JobState.STOPPED), transition


@given(JOBS, REPORTS, FACTS)
def test_only_a_placed_job_moves_and_a_user_stop_is_final(job, r, facts) -> None:
    transition = on_report(job, r, facts)
    if job.state not in (JobState.SCHEDULED, JobState.STARTING, JobState.RUNNING, JobState.STOPPING):
        assert transition is None
    elif transition is not None and job.stop_cause is StopCause.USER:
        assert transition.to in (JobState.STOPPED, JobState.STARTING, JobState.RUNNING)
        assert transition.to == JobState.STOPPED or job.state != JobState.STOPPING


@given(JOBS, st.sampled_from(list(StopCause)))
def test_a_stop_never_fails_a_job_nor_charges_it(job, cause) -> None:
    transition = on_stop(job, cause)
    if transition is not None:
        assert transition.step in (Step.STOPPING, Step.STOPPED, Step.LOST)
        assert not transition.charged
        if transition.step is Step.STOPPED:
            assert cause is StopCause.USER or job.stop_cause is StopCause.USER


@given(JOBS, FACTS.filter(lambda f: f.slave_dead or not f.runtime_healthy), st.integers(0, 255), st.booleans())
def test_the_issue_blip_a_fenced_or_lost_kill_never_charges_a_retry(job, facts, code, fenced) -> None:
    transition = on_report(job, report(ContainerState.EXITED, code, fenced=fenced), facts)
    if transition is not None:
        assert not transition.charged
