"""What only the leader does, run exactly while this master leads a term that has begun.

Three loops, started together when this master's first entry of its term has
applied (§5.4.2: only then are its tables the cluster's) and cancelled when it
stops leading:

- the scheduler: pending jobs -> pure scheduler -> a plan that apply re-checks;
- the failure detector: suspect, then declare dead, the slaves that stopped
  heartbeating; lose the jobs of a slave whose engine stayed away; force the
  drains whose deadline passed;
- the touches: replicate heartbeat times and usage now and then, not on every
  heartbeat;
- GC: every ``--gc-interval``, remove old terminal jobs and dead slaves
  through the log (:meth:`LeaderDuties.collect_garbage`, also ``claud system gc``).

They read what the slaves said from :class:`~claud.master.slave_sessions.SlaveSessions`
and change the tables only through the replicated log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from claud.api import NodeState, UpdatePolicy
from claud.daemon.logfmt import log_event
from claud.master import ops
from claud.master.heartbeat_terms import longest
from claud.master.ops import utcnow
from claud.master.replication import ReplicatedLog
from claud.master.rollout import decide
from claud.master.scheduler import schedule
from claud.master.settings import MasterSettings
from claud.master.slave_sessions import SlaveSessions
from claud.master.state import Change, SlaveRecord, desired_spec
from claud.master.volume_gc import volume_homes

log = logging.getLogger("claud.master")

#: The failure detector looks at the slaves this often.
FAILURE_CHECK_INTERVAL = 0.25
#: After an unexpected error the scheduler waits this long before it tries again.
SCHEDULER_ERROR_BACKOFF = 0.5
#: A backoff timer fires this long after the expiry it waits for, so the job is surely due.
BACKOFF_SLACK = 0.01
#: Ids one GC entry removes at most: a pass over a big backlog is several modest entries.
GC_BATCH = 5_000
#: The rollout loop looks at the jobs rolling out this often (min_healthy_time is seconds).
ROLLOUT_CHECK_INTERVAL = 0.5


def _cutoff(now: datetime, seconds: float) -> datetime:
    """``seconds`` before ``now``, but never before the earliest time an entry may carry."""
    try:
        return max(ops.MIN_TIME, now - timedelta(seconds=seconds))
    except OverflowError:
        return ops.MIN_TIME


@dataclass
class Collected:
    """What one GC pass removed (the ids apply actually removed, not the ones chosen)."""

    jobs: list[str] = field(default_factory=list)
    slaves: list[str] = field(default_factory=list)


class LeaderDuties:
    def __init__(self, settings: MasterSettings, replicated: ReplicatedLog, slaves: SlaveSessions) -> None:
        self._settings = settings
        self._replicated = replicated
        self._slaves = slaves
        self._schedule_needed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Told each scheduling pass's seconds (plan and commit) and how many jobs it placed (telemetry).
        self.on_scheduled: Callable[[float, int], None] | None = None
        #: Told the jobs a GC pass removed that had named volumes, and the slaves they ran on.
        self.on_volumes_orphaned: Callable[[dict[str, set[str]]], None] | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def sync(self) -> None:
        """Start the duties once this master's leadership has begun; stop them once it has ended."""
        if self._replicated.leader_ready and not self._tasks:
            self._start()
        elif not self._replicated.is_leader and self._tasks:
            self._cancel()
            log_event(log, "leader.stepped_down", term=self._replicated.term, leader=self._replicated.leader_id)

    def wake_scheduler(self, _changes: list[Change] | None = None) -> None:
        """Look for pending jobs again (an applied subscriber: a commit may have made some)."""
        if self._tasks and self._replicated.state.has_pending():
            self._schedule_needed.set()

    def _start(self) -> None:
        self._slaves.begin_leadership()
        log_event(log, "leader.elected", term=self._replicated.term, index=self._replicated.commit_index)
        self._tasks = [
            asyncio.create_task(self._scheduler_loop(), name="scheduler"),
            asyncio.create_task(self._failure_detector_loop(), name="failure-detector"),
            asyncio.create_task(self._touch_loop(), name="touch-nodes"),
            asyncio.create_task(self._gc_loop(), name="gc"),
            asyncio.create_task(self._rollout_loop(), name="rollout"),
        ]
        self._schedule_needed.set()

    def _cancel(self) -> list[asyncio.Task[None]]:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    async def stop(self) -> None:
        await asyncio.gather(*self._cancel(), return_exceptions=True)

    # ------------------------------------------------------------ the loops

    async def _scheduler_loop(self) -> None:
        """Place pending jobs: snapshot -> pure scheduler -> plan re-checked by apply."""
        loop = asyncio.get_running_loop()
        backoff_timer: asyncio.TimerHandle | None = None
        seen_epoch: int | None = None
        while True:
            await self._schedule_needed.wait()
            await self._replicated.running.wait()  # paused (claud chaos): no duty runs
            self._schedule_needed.clear()
            try:
                now = utcnow()
                state = self._replicated.state
                # Jobs that fitted nowhere are looked at again only when some slave may have gained room.
                epoch = state.capacity_epoch
                slaves, jobs = state.scheduling_snapshot(now, only_unexplained=epoch == seen_epoch)
                seen_epoch = epoch
                if jobs:
                    started = time.perf_counter()
                    plan = schedule(slaves, jobs, self._settings.strategy)
                    changed_reasons = {
                        job_id: reason
                        for job_id, reason in plan.unplaced.items()
                        if state.jobs[job_id].pending_reason != reason
                    }
                    if plan.placements or changed_reasons:
                        await self._replicated.propose(
                            ops.ApplyPlan(
                                at=now,
                                placements=[
                                    ops.PlacedJob(job_id=p.job_id, slave_id=p.slave_id, ports=list(p.ports))
                                    for p in plan.placements
                                ],
                                unplaced=changed_reasons,
                            )
                        )
                    if self.on_scheduled is not None:
                        self.on_scheduled(time.perf_counter() - started, len(plan.placements))
                expiry = self._replicated.state.next_backoff_expiry()
                if backoff_timer:
                    backoff_timer.cancel()
                    backoff_timer = None
                if expiry is not None:
                    delay = max(0.0, (expiry - utcnow()).total_seconds()) + BACKOFF_SLACK
                    backoff_timer = loop.call_later(delay, self._schedule_needed.set)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad pass must not stop scheduling: logged, retried
                log_event(log, "scheduler.error", logging.ERROR, error=repr(exc))
                await asyncio.sleep(SCHEDULER_ERROR_BACKOFF)
                self._schedule_needed.set()

    async def _failure_detector_loop(self) -> None:
        """Suspect, then declare dead, the slaves that stopped heartbeating; lose
        the jobs of those whose engine stayed away; force overdue drains."""
        while True:
            await asyncio.sleep(FAILURE_CHECK_INTERVAL)
            await self._replicated.running.wait()
            now = time.monotonic()
            for slave in list(self._replicated.state.slaves.values()):
                if slave.state == NodeState.DEAD:
                    continue
                await self._check_drain_deadline(slave)
                await self._check_runtime(slave, now)
                silent = now - self._slaves.last_seen.setdefault(slave.id, now)
                suspect, dead = self._slaves.overdue(slave.id, now)
                verdict = None
                if dead:
                    verdict = NodeState.DEAD
                elif suspect and slave.state == NodeState.ALIVE:
                    verdict = NodeState.SUSPECT
                if verdict is not None:
                    try:
                        await self._replicated.propose(
                            ops.SetSlaveState(
                                at=utcnow(), slave_id=slave.id, state=verdict, reason=f"no heartbeat for {silent:.1f}s"
                            )
                        )
                    except Exception as exc:  # noqa: BLE001 - a verdict not proposed now is proposed next round
                        log_event(log, "failure_detector.error", logging.ERROR, slave=slave.id, error=repr(exc))

    async def _touch_loop(self) -> None:
        """Replicate heartbeat times and usage now and then (not every heartbeat)."""
        while True:
            await asyncio.sleep(self._settings.node_touch_interval)
            await self._replicated.running.wait()
            touches = self._slaves.take_touches()
            if not touches.heartbeats:
                continue
            try:
                touch = ops.TouchSlaves(at=utcnow(), heartbeats=touches.heartbeats, usage=touches.usage)
                await self._replicated.propose(touch)
            except Exception as exc:  # noqa: BLE001 - soft state: the next touch carries newer times
                log_event(log, "touch.error", logging.ERROR, error=repr(exc))

    async def _rollout_loop(self) -> None:
        """Carry the rolling updates on: ``rollout.decide`` for each job rolling out, its step proposed."""
        while True:
            await asyncio.sleep(ROLLOUT_CHECK_INTERVAL)
            await self._replicated.running.wait()
            now = utcnow()
            for head, facts in self._replicated.state.rolling_out():
                rollout = head.rollout
                spec = desired_spec(head)
                if rollout is None:
                    continue
                decision = decide(rollout.version, spec.update or UpdatePolicy(), spec.count, rollout.started_at,
                                  facts, now)
                if decision is None:
                    continue
                step = ops.RolloutStep(at=now, job_id=head.id, version=rollout.version, replace=list(decision.replace),
                                       outcome=decision.outcome, message=decision.message)
                try:
                    await self._replicated.propose(step)
                except Exception as exc:  # noqa: BLE001 - decided again next round, on newer tables
                    log_event(log, "rollout.error", logging.ERROR, job=head.id, error=repr(exc))
                    break
                log_event(log, "rollout.step", job=head.id, version=rollout.version, replace=list(decision.replace),
                          outcome=decision.outcome.value if decision.outcome else None, message=decision.message)

    async def _gc_loop(self) -> None:
        """A GC pass every --gc-interval (the first one an interval after leadership begins)."""
        while True:
            await asyncio.sleep(self._settings.gc_interval)
            await self._replicated.running.wait()
            try:
                await self.collect_garbage()
            except Exception as exc:  # noqa: BLE001 - what is not collected now is collected next pass
                log_event(log, "gc.error", logging.ERROR, error=repr(exc))

    async def collect_garbage(self) -> Collected:
        """One GC pass now: terminal jobs finished more than --job-gc-after ago and
        beyond the --job-gc-keep most recent, dead slaves silent for --node-gc-after.

        The ids are chosen from this master's tables and proposed (forwarded when
        this master follows); apply checks each again, so a stale choice removes
        nothing that no longer qualifies. A backlog goes in entries of GC_BATCH ids."""
        settings = self._settings
        collected = Collected()
        while True:
            now = utcnow()
            garbage = self._replicated.state.garbage(
                jobs_finished_before=_cutoff(now, settings.job_gc_after),
                keep_jobs=settings.job_gc_keep,
                slaves_dead_before=_cutoff(now, settings.node_gc_after),
                limit=GC_BATCH,
            )
            # Where their volumes are, read before the removal forgets it.
            homes = volume_homes(self._replicated.state, garbage.job_ids)
            outcome = await self._replicated.propose(ops.CollectGarbage(
                at=now, job_ids=garbage.job_ids, slave_ids=garbage.slave_ids,
                jobs_finished_before=garbage.jobs_finished_before, keep_jobs=garbage.keep_jobs,
                slaves_dead_before=garbage.slaves_dead_before,
            ))
            removed = outcome.value if outcome.ok and isinstance(outcome.value, dict) else {}
            jobs, slaves = removed.get("jobs", []), removed.get("slaves", [])
            collected.jobs += jobs
            collected.slaves += slaves
            orphaned = {job_id: homes[job_id] for job_id in jobs if job_id in homes}
            if orphaned and self.on_volumes_orphaned is not None:
                self.on_volumes_orphaned(orphaned)
            for slave_id in slaves:
                self._slaves.forget(slave_id)
            full = len(garbage.job_ids) >= GC_BATCH or len(garbage.slave_ids) >= GC_BATCH
            if not full or not (jobs or slaves):
                break
        log_event(log, "gc.pass", jobs=len(collected.jobs), slaves=len(collected.slaves),
                  index=self._replicated.state.applied_index)
        return collected

    async def _check_drain_deadline(self, slave: SlaveRecord) -> None:
        if not slave.draining or slave.drain_forced or slave.drain_deadline is None or slave.drain_deadline > utcnow():
            return
        try:
            await self._replicated.propose(ops.ForceDrain(at=utcnow(), slave_id=slave.id))
        except Exception as exc:  # noqa: BLE001 - the deadline is checked again next round
            log_event(log, "drain.force_error", logging.ERROR, slave=slave.id, error=repr(exc))

    async def _check_runtime(self, slave: SlaveRecord, now: float) -> None:
        """A slave whose engine has not answered for node-dead-after has lost its jobs.

        Measured from the slave's own heartbeats, like death (and scaled like it): the agent still
        answers, so it will stop those containers (no longer desired) once its
        engine is back."""
        since = self._slaves.unhealthy_since.get(slave.id)
        # The slave's engine fence waits out the lease it holds: the longest a leader may have granted.
        dead_after = longest(self._settings, len(self._replicated.state.slaves)).dead_after
        if slave.runtime_healthy or since is None or now - since < dead_after:
            return
        if not self._replicated.state.placed_jobs(slave.id):
            return
        try:
            await self._replicated.propose(ops.LoseSlaveJobs(
                at=utcnow(), slave_id=slave.id, reason=f"unhealthy for {now - since:.1f}s: {slave.runtime_error or ''}"
            ))
        except Exception as exc:  # noqa: BLE001 - checked again next round
            log_event(log, "failure_detector.error", logging.ERROR, slave=slave.id, error=repr(exc))
