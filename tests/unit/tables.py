"""The state machine driven op by op, as the leader would drive it, for tests of its rules.

Shared by the service and replica rule tests: slaves registered with a port range, jobs
submitted from a base spec, a scheduling pass proposed as a plan, a slave's report of one
allocation (named by its row: ``<job id>`` or ``<job id>.<index>``), and one pass of the
leader's rollout loop.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from claud.api import AllocationStatus, ContainerState, Health, JobSpec, JobState, UpdatePolicy
from claud.api.slave_protocol import PortRange
from claud.master import ops
from claud.master.rollout import decide
from claud.master.scheduler import schedule
from claud.master.state import Outcome, StateMachine

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Tables:
    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self.sm = StateMachine()
        self.index = 0
        self.now = T0
        self.base = base or {"name": "web", "image": "claud/busybox:latest"}

    def apply(self, op: ops.Operation) -> Outcome:
        self.index += 1
        return self.sm.apply(self.index, op)

    def later(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def slave(self, slave_id: str, host_volumes: list[str] | None = None, cpu: float = 4) -> None:
        assert self.apply(ops.RegisterSlave(
            at=self.now, slave_id=slave_id, address=f"10.0.0.{len(self.sm.slaves) + 1}:8701", cpu_total=cpu,
            memory_mb_total=4096, port_range=PortRange(low=20000, high=20010), host_volumes=host_volumes or [],
        )).ok

    def spec(self, **fields: object) -> JobSpec:
        return JobSpec.model_validate({**self.base, **fields})

    def submit(self, job_id: str = "web", **fields: object) -> None:
        assert self.apply(ops.SubmitJob(at=self.now, job_id=job_id, spec=self.spec(**fields))).ok

    def schedule(self) -> None:
        slaves, jobs = self.sm.scheduling_snapshot(self.now)
        plan = schedule(slaves, jobs)
        self.apply(ops.ApplyPlan(
            at=self.now, unplaced=dict(plan.unplaced),
            placements=[ops.PlacedJob(job_id=p.job_id, slave_id=p.slave_id, ports=list(p.ports))
                        for p in plan.placements],
        ))

    def report(self, row_id: str, state: ContainerState, health: Health | None = None, **extra: object) -> None:
        """The slave's report of the allocation row ``row_id`` is: it names the job and the allocation."""
        row = self.sm.jobs[row_id]
        status = AllocationStatus(alloc_id=row.alloc_id or "", job_id=row_id.split(".")[0], state=state,
                                  container_id="c" * 64, health=health, **extra)  # type: ignore[arg-type]
        assert row.slave_id is not None
        self.apply(ops.ReportAllocations(at=self.now, slave_id=row.slave_id, statuses=[status]))

    def run_all(self, job_id: str = "web") -> None:
        """Place what is pending and report every placed or stopping allocation's container as it would go."""
        self.schedule()
        for row in self.sm.rows(self.sm.jobs[job_id]):
            if row.state in (JobState.SCHEDULED, JobState.STARTING):
                self.report(row.id, ContainerState.RUNNING)
            elif row.state is JobState.STOPPING:
                self.report(row.id, ContainerState.EXITED, exit_code=143)

    def view(self, job_id: str = "web"):  # type: ignore[no-untyped-def]
        return self.sm.job_view(self.sm.jobs[job_id])

    def rollout_pass(self, job_id: str = "web") -> None:
        """What the leader's rollout loop does once: decide, and propose the step."""
        for head, facts in self.sm.rolling_out():
            if head.id != job_id:
                continue
            assert head.rollout is not None
            desired = self.sm.job_view(head)
            policy = desired.update or UpdatePolicy()
            decision = decide(head.rollout.version, policy, desired.count, head.rollout.started_at, facts, self.now)
            if decision is not None:
                assert self.apply(ops.RolloutStep(
                    at=self.now, job_id=job_id, version=head.rollout.version, replace=list(decision.replace),
                    outcome=decision.outcome, message=decision.message,
                )).ok
