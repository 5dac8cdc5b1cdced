"""Replicas, versions and rolling updates (issue 17) in the tables, the scheduler and the rollout
decision, without sockets or Docker.

A job of ``count`` N is N allocation rows that each live the lifecycle of a
job of one allocation; these tests hold the rules that join them: the job's
state from its allocations', spread, scale, the rollout's pace (never more
than ``max_parallel`` in flight, never the next before the last is healthy)
and its end (complete and stable, or failed and reverted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from tables import Tables

from claud.api import ContainerState, JobSpec, JobState, RolloutState, UpdatePolicy
from claud.master import ops
from claud.master.lifecycle import StopCause, job_state
from claud.master.rollout import AllocationFacts, decide
from claud.master.scheduler import PendingJob, SlaveCapacity, schedule
from claud.master.state import StateMachine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WEB = {"name": "web", "image": "claud/busybox:latest", "type": "service", "command": ["httpd", "-f"]}


def spec(**fields: object) -> JobSpec:
    return JobSpec.model_validate({**WEB, **fields})


# ------------------------------------------------------------------ replicas


def test_three_replicas_spread_over_three_slaves_and_the_job_reads_from_all_three() -> None:
    t = Tables(WEB)
    for s in ("s1", "s2", "s3"):
        t.slave(s)
    t.submit(count=3)
    assert sorted(t.sm.jobs) == ["web", "web.1", "web.2"]
    assert t.view().state is JobState.PENDING and (t.view().running, t.view().desired) == (0, 3)
    t.schedule()
    rows = t.sm.rows(t.sm.jobs["web"])
    assert sorted(row.slave_id or "" for row in rows) == ["s1", "s2", "s3"]
    assert [row.alloc_id for row in rows] == ["web-1", "web.1-1", "web.2-1"]
    allocations = {a.alloc_id: a for s in ("s1", "s2", "s3") for a in t.sm.desired_allocations(s)}
    assert {a.job_id for a in allocations.values()} == {"web"}  # containers carry claud.job=<job id>
    assert sorted(a.index for a in allocations.values()) == [0, 1, 2]
    t.report("web", ContainerState.RUNNING)
    t.report("web.1", ContainerState.RUNNING)
    view = t.view()
    assert view.state is JobState.SCHEDULED and (view.running, view.desired) == (2, 3)
    t.report("web.2", ContainerState.RUNNING)
    view = t.view()
    assert view.state is JobState.RUNNING and view.running == 3
    assert [(a.index, a.state, a.slave_id is not None) for a in view.allocations] == [
        (0, JobState.RUNNING, True), (1, JobState.RUNNING, True), (2, JobState.RUNNING, True)]
    # Only the job is listed; its allocation rows are not jobs of their own.
    assert t.sm.head("web.1") is None and t.sm.head("web") is not None


def test_spread_packs_only_when_no_other_slave_fits_and_spread_false_packs() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    t.submit(count=3)
    t.schedule()
    slaves = sorted(row.slave_id or "" for row in t.sm.rows(t.sm.jobs["web"]))
    assert set(slaves) == {"s1", "s2"}  # two slaves for three: one doubles, both used
    t.submit("packed", count=3, spread=False)
    t.schedule()
    assert len({row.slave_id for row in t.sm.rows(t.sm.jobs["packed"])}) == 1  # binpack, not spread


def test_a_dead_slave_s_replica_is_placed_again_elsewhere_and_the_others_keep_running() -> None:
    t = Tables(WEB)
    for s in ("s1", "s2", "s3", "s4"):
        t.slave(s)
    t.submit(count=3)
    t.run_all()
    victim = t.sm.jobs["web.1"]
    lost_on = victim.slave_id
    others = {r.id: (r.slave_id, r.alloc_id) for r in t.sm.rows(t.sm.jobs["web"]) if r.id != "web.1"}
    assert t.apply(ops.SetSlaveState(at=t.now, slave_id=lost_on or "", state="dead", reason="gone")).ok
    assert victim.state is JobState.PENDING
    assert t.view().state is JobState.PENDING and t.view().running == 2
    t.run_all()
    assert victim.slave_id not in (None, lost_on) and victim.alloc_id == "web.1-2"
    assert victim.slave_id not in {slave for slave, _ in others.values()}  # spread again
    assert {r.id: (r.slave_id, r.alloc_id) for r in t.sm.rows(t.sm.jobs["web"]) if r.id != "web.1"} == others
    assert t.view().state is JobState.RUNNING


def test_stop_stops_every_allocation_and_the_job_is_stopped_when_the_last_is() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    t.submit(count=2)
    t.run_all()
    assert t.apply(ops.StopJob(at=t.now, job_id="web")).ok
    assert t.view().state is JobState.STOPPING
    t.report("web", ContainerState.EXITED, exit_code=143)
    assert t.view().state is JobState.STOPPING
    t.report("web.1", ContainerState.EXITED, exit_code=143)
    assert t.view().state is JobState.STOPPED
    assert t.apply(ops.StopJob(at=t.now, job_id="web.1")).code == "not_found"


def test_scale_up_adds_allocations_and_scale_down_stops_then_forgets_the_surplus() -> None:
    t = Tables(WEB)
    for s in ("s1", "s2", "s3"):
        t.slave(s)
    t.submit()
    t.run_all()
    assert t.apply(ops.ScaleJob(at=t.now, job_id="web", count=3)).ok
    assert sorted(t.sm.jobs) == ["web", "web.1", "web.2"] and t.view().version == 1
    assert t.sm.jobs["web"].alloc_id == "web-1"  # nothing replaced
    t.run_all()
    assert t.view().running == 3 and t.view().desired == 3
    assert t.apply(ops.ScaleJob(at=t.now, job_id="web", count=1)).ok
    assert t.sm.jobs["web.1"].state is JobState.STOPPING and t.sm.jobs["web.1"].stop_cause is StopCause.SCALE
    t.report("web.1", ContainerState.EXITED, exit_code=143)
    t.report("web.2", ContainerState.EXITED, exit_code=143)
    assert sorted(t.sm.jobs) == ["web"] and t.view().state is JobState.RUNNING and t.view().desired == 1
    assert all(not t.sm.placed_jobs(s) or [j.id for j in t.sm.placed_jobs(s)] == ["web"] for s in ("s1", "s2", "s3"))


# ------------------------------------------------------------------ rollouts


def test_a_rolling_update_replaces_one_at_a_time_each_after_the_last_is_healthy() -> None:
    t = Tables(WEB)
    for s in ("s1", "s2", "s3"):
        t.slave(s)
    t.submit(count=3, update={"max_parallel": 1, "min_healthy_time": 5, "healthy_deadline": 60})
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(
        count=3, command=["httpd", "-f", "-v2"], update={"max_parallel": 1, "min_healthy_time": 5,
                                                         "healthy_deadline": 60}))).ok
    view = t.view()
    assert view.version == 1 and view.rollout is not None and view.rollout.state is RolloutState.RUNNING
    assert view.command == ["httpd", "-f", "-v2"]
    replaced: list[str] = []
    for _ in range(60):
        t.rollout_pass()
        rows = t.sm.rows(t.sm.jobs["web"])
        assert sum(1 for r in rows if r.state is JobState.RUNNING) >= 2  # two serve throughout
        for r in rows:
            if r.state is JobState.STOPPING:
                replaced.append(r.id)
        t.run_all()
        t.later(1)
        if t.view().rollout.state is RolloutState.COMPLETE:  # type: ignore[union-attr]
            break
    view = t.view()
    assert view.rollout is not None and view.rollout.state is RolloutState.COMPLETE
    assert sorted(replaced) == ["web", "web.1", "web.2"]
    assert all(a.version == 1 and a.state is JobState.RUNNING for a in view.allocations)
    assert all(t.sm.jobs[r].spec.command == ["httpd", "-f", "-v2"] for r in ("web", "web.1", "web.2"))
    versions = t.sm.versions_view(t.sm.jobs["web"])
    assert [(v.version, v.stable) for v in versions] == [(1, True), (0, True)]


def test_a_broken_version_fails_its_rollout_and_auto_revert_brings_the_stable_one_back() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    policy = {"max_parallel": 1, "min_healthy_time": 1, "healthy_deadline": 10, "auto_revert": True}
    t.submit(count=2, update=policy)
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(count=2, image="claud/broken:latest",
                                                                    update=policy))).ok
    for _ in range(30):
        t.rollout_pass()
        t.schedule()
        for row in t.sm.rows(t.sm.jobs["web"]):
            if row.state is JobState.STOPPING:
                t.report(row.id, ContainerState.EXITED, exit_code=143)
            elif row.state is JobState.SCHEDULED:
                ok = row.spec.image != "claud/broken:latest"
                t.report(row.id, ContainerState.RUNNING if ok else ContainerState.FAILED,
                         **({} if ok else {"message": "no such image"}))
        t.later(1)
        if t.view().version == 2:
            break
    view = t.view()
    assert view.version == 2 and view.image == "claud/busybox:latest"
    # The allocation the broken rollout never reached runs the reverted spec already: kept, not replaced.
    assert [a.attempt for a in view.allocations if a.version == 2 and a.attempt == 1]
    versions = t.sm.versions_view(t.sm.jobs["web"])
    assert [v.version for v in versions] == [2, 1, 0] and not versions[1].stable
    assert any("failed" in e.message for e in view.events or [])
    # The one allocation never replaced kept serving throughout.
    assert sum(1 for a in view.allocations if a.state is JobState.RUNNING) >= 1


def test_a_change_of_count_alone_replaces_nothing_and_a_same_spec_update_makes_no_version() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    t.submit(count=1)
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec())).ok
    assert t.view().version == 0
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(count=2))).ok
    view = t.view()
    assert view.version == 1 and view.rollout is None and t.sm.jobs["web"].alloc_id == "web-1"


def test_replicas_versions_and_rollouts_survive_a_snapshot() -> None:
    t = Tables(WEB)
    for s in ("s1", "s2"):
        t.slave(s)
    t.submit(count=2)
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(count=2, command=["x"]))).ok
    t.rollout_pass()
    restored = StateMachine.from_snapshot(t.sm.to_snapshot())
    assert restored.job_view(restored.jobs["web"]) == t.view()
    assert restored.rolling_out()[0][1] == t.sm.rolling_out()[0][1]
    assert restored.to_snapshot() == t.sm.to_snapshot()


def test_an_update_of_a_stopped_job_is_refused_and_type_cannot_change() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.submit()
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(type="batch"))).code == "conflict"
    assert t.apply(ops.StopJob(at=t.now, job_id="web")).ok
    assert t.apply(ops.ScaleJob(at=t.now, job_id="web", count=2)).code == "conflict"
    assert t.apply(ops.RevertJob(at=t.now, job_id="nope", version=0)).code == "not_found"


# ------------------------------------------------------------------ the rules alone


def test_the_job_state_rule() -> None:
    R, P, S, T = JobState.RUNNING, JobState.PENDING, JobState.STOPPING, JobState.STARTING
    assert job_state([(S, StopCause.DRAIN)]) is S  # one allocation reads as it always did
    assert job_state([(R, None), (R, None), (P, None)]) is P
    assert job_state([(R, None), (T, None)]) is T
    assert job_state([(R, None), (S, StopCause.UPDATE)]) is P
    assert job_state([(R, StopCause.USER), (S, StopCause.USER)]) is S
    assert job_state([(JobState.COMPLETED, None), (JobState.FAILED, None)]) is JobState.FAILED
    assert job_state([(JobState.COMPLETED, None), (JobState.STOPPED, None)]) is JobState.STOPPED
    assert job_state([(JobState.COMPLETED, None), (JobState.COMPLETED, None)]) is JobState.COMPLETED
    assert job_state([(JobState.COMPLETED, None), (R, None)]) is R


facts = st.builds(
    AllocationFacts,
    index=st.integers(0, 5),
    version=st.integers(0, 2),
    next_version=st.none() | st.integers(0, 2),
    state=st.sampled_from([JobState.PENDING, JobState.SCHEDULED, JobState.RUNNING, JobState.STOPPING,
                           JobState.COMPLETED]),
    healthy_since=st.none() | st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
    replaced_at=st.none() | st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(facts, max_size=6, unique_by=lambda a: a.index), st.integers(1, 3), st.integers(0, 200))
def test_a_rollout_never_has_more_than_max_parallel_in_flight(allocations, parallel, at) -> None:  # type: ignore[no-untyped-def]
    policy = UpdatePolicy(max_parallel=parallel, min_healthy_time=10, healthy_deadline=60)
    now = T0 + timedelta(seconds=at)
    count = max((a.index for a in allocations), default=0) + 1
    decision = decide(2, policy, count, T0, allocations, now)
    if decision is None or not decision.replace:
        return
    assert decision.outcome is None
    replaced = set(decision.replace)
    assert all(a.version != 2 and a.next_version != 2 for a in allocations if a.index in replaced)

    def done(a: AllocationFacts) -> bool:
        return a.state.terminal or (a.version == 2 and a.next_version is None and a.healthy_since is not None
                and (now - a.healthy_since).total_seconds() >= 10)
    in_flight = [a for a in allocations if (a.version == 2 or a.next_version == 2) and not done(a)]
    assert len(in_flight) + len(replaced) <= parallel


@st.composite
def spread_world(draw):  # type: ignore[no-untyped-def]
    slaves = [
        SlaveCapacity(f"s{i}", {}, draw(st.sampled_from([0.5, 1.0, 2.0])), 4096, 0.0, 0, True)
        for i in range(draw(st.integers(1, 5)))
    ]
    groups = draw(st.integers(1, 3))
    jobs = [PendingJob(f"g{g}.{i}", draw(st.sampled_from([0.25, 0.5])), 64, {}, group=f"g{g}")
            for g in range(groups) for i in range(draw(st.integers(1, 5)))]
    return slaves, jobs


@settings(max_examples=300, deadline=None)
@given(spread_world())
def test_the_scheduler_spreads_a_group_no_two_on_one_slave_while_another_fits(world) -> None:  # type: ignore[no-untyped-def]
    slaves, jobs = world
    plan = schedule(slaves, jobs)
    used = {s.id: 0 for s in slaves}
    by_group: dict[str, dict[str, int]] = {}
    for placement in plan.placements:
        job = next(j for j in jobs if j.id == placement.job_id)
        cap = next(s for s in slaves if s.id == placement.slave_id)
        held = by_group.setdefault(job.group or "", {})
        if held.get(placement.slave_id):
            # Doubled up: no slave without one of the group had room for it at that point.
            for other in slaves:
                if other.id not in held:
                    assert round(other.cpu_total * 1000) - used[other.id] < round(job.cpu * 1000)
        held[placement.slave_id] = held.get(placement.slave_id, 0) + 1
        used[cap.id] += round(job.cpu * 1000)


def test_stopping_a_job_ends_its_rollout_and_the_loop_proposes_nothing_more() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    t.submit(count=2)
    t.run_all()
    assert t.apply(ops.UpdateJob(at=t.now, job_id="web", spec=spec(count=2, command=["v2"]))).ok
    assert t.sm.rolling_out()
    assert t.apply(ops.StopJob(at=t.now, job_id="web")).ok
    assert t.sm.rolling_out() == []
    assert t.view().rollout is not None and t.view().rollout.state is RolloutState.FAILED


def test_a_replica_that_fits_nowhere_says_where_its_siblings_are() -> None:
    t = Tables(WEB)
    t.slave("s1", cpu=1)
    t.slave("s2", cpu=1)
    t.submit(count=3, resources={"cpu": 0.6, "memory_mb": 64})
    t.schedule()
    pending = [r for r in t.sm.rows(t.sm.jobs["web"]) if r.state is JobState.PENDING]
    assert len(pending) == 1
    reason = pending[0].pending_reason or ""
    assert "cpu" in reason and "spread: its job's other allocations are on s1, s2" in reason, reason
    assert t.view().allocations[pending[0].index].pending_reason == reason
    assert t.view().pending_reason == f"allocation {pending[0].index}: {reason}"


def test_the_kept_list_rendering_of_a_job_follows_every_change_of_its_allocations() -> None:
    from claud.master.paging import JobListRenderer

    t = Tables(WEB)
    t.slave("s1", cpu=1)
    t.slave("s2", cpu=1)
    renderer = JobListRenderer()
    head = None

    def current() -> None:
        assert head is not None
        fresh = t.sm.job_view(head, with_events=False).model_dump_json().encode()
        assert renderer.render(t.sm, head) == fresh

    t.submit(count=3, resources={"cpu": 0.6, "memory_mb": 64})
    head = t.sm.jobs["web"]
    current()
    t.schedule()  # two placed, one with a pending reason: both change rows past index 0
    current()
    t.report("web.1", ContainerState.RUNNING)
    current()
    before = t.sm.jobs["web.2"].pending_reason
    t.slave("s1", cpu=0.9)  # smaller now: the next pass changes only the waiting allocation's reason
    t.schedule()
    assert t.sm.jobs["web.2"].pending_reason != before
    current()
    assert t.apply(ops.ScaleJob(at=t.now, job_id="web", count=2)).ok
    current()
    t.run_all()
    current()


def test_replicas_with_a_static_port_take_one_slave_each_and_the_extra_one_waits_naming_the_port() -> None:
    t = Tables(WEB)
    t.slave("s1")
    t.slave("s2")
    t.submit(count=3, spread=False, ports=[{"name": "http", "container": 8080, "host": 8080}])
    t.schedule()
    rows = t.sm.rows(t.sm.jobs["web"])
    placed = [r for r in rows if r.slave_id is not None]
    assert sorted(r.slave_id or "" for r in placed) == ["s1", "s2"]  # even packed: one port, one per slave
    assert all(r.ports == [8080] for r in placed)
    (waiting,) = [r for r in rows if r.slave_id is None]
    assert "host port 8080 is taken" in (waiting.pending_reason or ""), waiting.pending_reason
    assert t.view().state is JobState.PENDING and "8080" in (t.view().pending_reason or "")
