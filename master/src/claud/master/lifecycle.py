"""The job lifecycle: every rule for what happens to a job, in one table.

SwarmKit's task model: the masters keep what they *want* for a job (its
desired state: run, or stop with a cause) apart from what the slave *reports*
(the observed state of its container). The functions here are the only place
that turns the two into a transition; the heartbeat filter (which reports
need a log entry) and apply (what the entry does) both call ``on_report``, so
the two can never disagree.

The causes of a stop, and why they matter:

* ``user``: someone asked (DELETE /v1/jobs/{id}); the job ends ``stopped``.
* ``drain``: its slave is being drained; the job moves (``lost`` -> ``pending``).
* ``fence``: the slave's lease ended and it stopped the container itself.
* ``slave_lost``: the slave is dead, or its container engine stayed away.

What CLAUD stopped itself (every cause but ``user``) makes the job ``lost``
and ``pending`` again, never ``failed``, and does not use up its retries. A
batch job that exited 0 is complete whatever the cause: it is never run again.

Pure code: no clock, no I/O; time comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from claud.api import (
    PLACED_STATES,
    AllocationStatus,
    ContainerState,
    DesiredState,
    Health,
    JobState,
    JobType,
    RestartPolicyName,
)
from claud.api.jobs import RestartPolicy

#: A run shorter than this is a *quick exit*: a service's restart backoff
#: grows with consecutive quick exits and starts over after a longer run.
QUICK_EXIT_SECONDS = 10.0
#: Restart backoff: the first restart after this many seconds, doubling, capped.
RESTART_BACKOFF_BASE = 0.5
RESTART_BACKOFF_MAX = 30.0
#: The doubling stops here (0.5 s * 2**16 is far past the cap), so the
#: arithmetic stays small however often a service has restarted.
RESTART_BACKOFF_MAX_EXPONENT = 16


class StopCause(StrEnum):
    """Why the masters want a job's container stopped (its desired state is ``stop``)."""

    USER = "user"
    DRAIN = "drain"
    FENCE = "fence"
    SLAVE_LOST = "slave_lost"
    #: A rolling update replaces the allocation: it comes back at the new version.
    UPDATE = "update"
    #: The job was scaled below this allocation's index: it goes away once stopped.
    SCALE = "scale"


#: Causes under which CLAUD, not the job, ended the container.
CLAUD_CAUSES = frozenset(
    {StopCause.DRAIN, StopCause.FENCE, StopCause.SLAVE_LOST, StopCause.UPDATE, StopCause.SCALE}
)
#: What each cause the masters give says in the stopping event.
_STOPPING_MESSAGES = {
    StopCause.DRAIN: "its slave is draining; moving the job",
    StopCause.UPDATE: "replaced by a new version of the job",
    StopCause.SCALE: "the job was scaled down",
}


class Spec(Protocol):
    @property
    def type(self) -> JobType: ...
    @property
    def restart(self) -> RestartPolicy: ...


class Job(Protocol):
    """What the table reads of a job (``state.JobRecord`` is one)."""

    @property
    def state(self) -> JobState: ...
    @property
    def spec(self) -> Spec: ...
    @property
    def restarts(self) -> int: ...
    @property
    def quick_exits(self) -> int: ...
    @property
    def stop_cause(self) -> StopCause | None: ...
    @property
    def running_since(self) -> datetime | None: ...
    @property
    def health(self) -> Health | None: ...


@dataclass(frozen=True, slots=True)
class Facts:
    """What the masters know about the reporting slave beyond the report itself."""

    #: The slave was declared dead: whatever it says ended, ended because of that.
    slave_dead: bool = False
    #: The slave's container engine answered (``Heartbeat.runtime.healthy``).
    runtime_healthy: bool = True


class Step(StrEnum):
    """The kinds of transition."""

    STARTING = "starting"  # the container is being started
    RUNNING = "running"  # it runs
    RESTART = "restart"  # it ended; a new attempt, charged to the restart policy, after a backoff
    LOST = "lost"  # CLAUD ended it: lost, then pending at once, not charged
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    STOPPING = "stopping"  # the masters want it stopped (desired state changes, observed not yet)
    HEALTH = "health"  # it runs, and its check reached another verdict (healthy | unhealthy)


#: Where each step leaves the job.
RESTS_IN = {
    Step.STARTING: JobState.STARTING,
    Step.RUNNING: JobState.RUNNING,
    Step.RESTART: JobState.PENDING,
    Step.LOST: JobState.PENDING,
    Step.COMPLETED: JobState.COMPLETED,
    Step.FAILED: JobState.FAILED,
    Step.STOPPED: JobState.STOPPED,
    Step.STOPPING: JobState.STOPPING,
    Step.HEALTH: JobState.RUNNING,
}


@dataclass(frozen=True, slots=True)
class Transition:
    step: Step
    message: str
    #: It ran and ended between two reports: the history still records that it ran.
    ran: bool = False
    #: Set on STOPPING: the cause to record.
    cause: StopCause | None = None

    @property
    def to(self) -> JobState:
        return RESTS_IN[self.step]

    @property
    def charged(self) -> bool:
        return self.step is Step.RESTART


ENDED = frozenset({ContainerState.EXITED, ContainerState.FAILED, ContainerState.MISSING})


def desired_state(job: Job) -> DesiredState:
    return DesiredState.RUN if job.stop_cause is None else DesiredState.STOP


def describe(report: AllocationStatus) -> str:
    if report.state == ContainerState.EXITED:
        what = f"exited with code {report.exit_code}"
        if report.health is Health.UNHEALTHY:
            what += f" ({report.message or 'unhealthy: stopped by its slave'})"
    elif report.state == ContainerState.FAILED:
        what = f"could not start: {report.message or 'unknown error'}"
    else:
        what = report.message or "container disappeared"
    return what + (" (fenced by its slave)" if report.fenced else "")


def on_report(job: Job, report: AllocationStatus, facts: Facts = Facts()) -> Transition | None:
    """The transition a slave's report about the job's *current* attempt causes; None if none.

    The caller has checked that the report is about the current attempt, from
    the slave the job is placed on.
    """
    if job.state not in PLACED_STATES:
        return None
    match report.state:
        case ContainerState.STARTING:
            if job.state == JobState.SCHEDULED:
                return Transition(Step.STARTING, "container starting")
            return None
        case ContainerState.RUNNING:
            if job.state in (JobState.SCHEDULED, JobState.STARTING):
                return Transition(Step.RUNNING, "container running")
            if job.state == JobState.RUNNING and report.health is not None and report.health != job.health:
                # An unhealthy service is then stopped by its slave: its exit restarts it, charged.
                return Transition(Step.HEALTH, f"health: {report.health.value}")
            return None
    return _ended(job, report, facts)


def _ended(job: Job, report: AllocationStatus, facts: Facts) -> Transition:
    what = describe(report)
    # EXITED means it ran; FAILED and MISSING say nothing of that.
    ran = report.state == ContainerState.EXITED and job.state in (JobState.SCHEDULED, JobState.STARTING)
    succeeded = report.state == ContainerState.EXITED and report.exit_code == 0
    if job.stop_cause is StopCause.USER:
        return Transition(Step.STOPPED, what, ran)
    batch = job.spec.type == JobType.BATCH
    if batch and succeeded:
        # Finished is finished, even if a drain or a fence was about to stop it.
        return Transition(Step.COMPLETED, what, ran)
    if _claud_ended_it(job, report, facts):
        return Transition(Step.LOST, f"{what}; {_claud_cause(job, report, facts)}", ran)
    if not batch:
        return Transition(Step.RESTART, f"{what}; restarting the service", ran)
    restart = job.spec.restart
    if restart.policy == RestartPolicyName.ALWAYS or (
        restart.policy == RestartPolicyName.ON_FAILURE and job.restarts < restart.max_retries
    ):
        return Transition(Step.RESTART, f"{what}; restarting", ran)
    return Transition(Step.FAILED, what, ran)


def _claud_ended_it(job: Job, report: AllocationStatus, facts: Facts) -> bool:
    if report.fenced or facts.slave_dead or not facts.runtime_healthy:
        return True
    if job.stop_cause in CLAUD_CAUSES:
        return True
    # No container, and it was never seen running: CLAUD failed to start it
    # (an agent that died before creating it, a start the masters stopped).
    return report.state == ContainerState.MISSING and job.running_since is None and job.state != JobState.RUNNING


def _claud_cause(job: Job, report: AllocationStatus, facts: Facts) -> str:
    if report.fenced:
        return "its slave fenced it (lease ended)"
    if facts.slave_dead:
        return "its slave was declared dead"
    if not facts.runtime_healthy:
        return "its slave's container engine does not answer"
    if job.stop_cause is StopCause.DRAIN:
        return "moved off a draining slave"
    if job.stop_cause is not None:
        return f"stopped by CLAUD ({job.stop_cause.value})"
    return "it never started"


def on_stop(job: Job, cause: StopCause) -> Transition | None:
    """The transition the masters' wish to stop the job causes; None if none.

    USER and DRAIN ask the slave to stop it (``stopping``; a user stop wins over
    a drain). SLAVE_LOST does not wait for a slave that cannot answer: the job
    is lost at once (or ``stopped``, if a user had asked). FENCE never comes
    from the masters: a slave reports it (``AllocationStatus.fenced``).
    """
    state = job.state
    if state.terminal:
        return None
    if state == JobState.PENDING:
        if cause is StopCause.USER:
            return Transition(Step.STOPPED, "stopped by user before it was placed")
        return None
    if cause is StopCause.SLAVE_LOST:
        if job.stop_cause is StopCause.USER:
            return Transition(Step.STOPPED, "its slave was lost while stopping")
        return Transition(Step.LOST, "its slave was lost")
    if cause is StopCause.FENCE:
        return None
    if state == JobState.STOPPING:
        if cause is StopCause.SCALE and job.stop_cause is not StopCause.USER:
            # Whatever stops it, it goes away then (an update's replacement would be surplus).
            return Transition(Step.STOPPING, _STOPPING_MESSAGES[cause], cause=cause)
        if cause is StopCause.USER and job.stop_cause is not StopCause.USER:
            return Transition(Step.STOPPING, "stop requested", cause=StopCause.USER)
        return None
    if cause is StopCause.USER:
        return Transition(Step.STOPPING, "stop requested", cause=StopCause.USER)
    return Transition(Step.STOPPING, _STOPPING_MESSAGES[cause], cause=cause)


def drain_moves_now(job: Job, has_deadline: bool) -> bool:
    """Whether a drain stops the job at once or lets it run to its deadline.

    As in Nomad: services move at once; a batch job, given a deadline, may
    finish its work first (one that has not started yet moves at once).
    """
    if not has_deadline or job.spec.type == JobType.SERVICE:
        return True
    return job.state == JobState.SCHEDULED


def restart_delay(restarts: int) -> float:
    """Seconds before restart number ``restarts`` (1, 2, ...) may be placed."""
    exponent = min(max(restarts - 1, 0), RESTART_BACKOFF_MAX_EXPONENT)
    return float(min(RESTART_BACKOFF_BASE * 2**exponent, RESTART_BACKOFF_MAX))


def is_quick_exit(job: Job, at: datetime) -> bool:
    """A run not seen to last QUICK_EXIT_SECONDS (or never seen running at all)."""
    if job.running_since is None:
        return True
    return (at - job.running_since).total_seconds() < QUICK_EXIT_SECONDS


@dataclass(frozen=True, slots=True)
class Backoff:
    delay: float
    restarts: int
    quick_exits: int


def backoff(job: Job, at: datetime) -> Backoff:
    """The delay before a charged restart, and the counters after it.

    A batch job's delay grows with its restarts (it has few). A service's
    grows with consecutive quick exits, so a crash loop slows down while a
    service that ran for a while and then exited comes back at once.
    """
    restarts = job.restarts + 1
    quick = job.quick_exits + 1 if is_quick_exit(job, at) else 0
    if job.spec.type == JobType.SERVICE:
        return Backoff(restart_delay(max(quick, 1)), restarts, quick)
    return Backoff(restart_delay(restarts), restarts, quick)


#: How far along a live allocation is, for the job's state: the job is as far along as its least
#: advanced allocation. One stopped by CLAUD (update, scale, drain) is on its way back to pending.
_PROGRESS = {
    JobState.PENDING: 0, JobState.LOST: 0, JobState.STOPPING: 0,
    JobState.SCHEDULED: 1, JobState.STARTING: 2, JobState.RUNNING: 3,
}


def job_state(allocations: Sequence[tuple[JobState, StopCause | None]]) -> JobState:
    """A job's state from its allocations' (state, stop cause), the rule the README writes down.

    One allocation: its own state (a job of one copy reads as it always did). Several: once all
    are terminal, ``failed`` if one failed, else ``stopped`` if one was stopped, else
    ``completed``; before that ``stopping`` if the user stopped it, else the state of the least
    advanced live allocation, where one that CLAUD is stopping counts as ``pending``.
    """
    if len(allocations) == 1:
        return allocations[0][0]
    live = [(state, cause) for state, cause in allocations if not state.terminal]
    if not live:
        ended = {state for state, _ in allocations}
        if JobState.FAILED in ended:
            return JobState.FAILED
        return JobState.STOPPED if JobState.STOPPED in ended else JobState.COMPLETED
    if any(cause is StopCause.USER for _, cause in live):
        return JobState.STOPPING
    least = min(_PROGRESS[state] for state, _ in live)
    return JobState.PENDING if least == 0 else next(s for s, _ in live if _PROGRESS[s] == least)
