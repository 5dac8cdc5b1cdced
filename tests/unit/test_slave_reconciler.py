"""The slave's pure reconcile step: desired allocations vs observed containers -> actions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from claud.api import Allocation, ContainerState, DesiredState, Resources
from claud.slave.reconciler import ReconcileInput, ReconcileOutput, Slot, reconcile, slot_of
from claud.slave.runtime import Observed, Phase

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def alloc(alloc_id: str, desired: DesiredState = DesiredState.RUN, stop_timeout: float = 5.0) -> Allocation:
    return Allocation(
        alloc_id=alloc_id,
        job_id=f"job-{alloc_id}",
        attempt=1,
        desired=desired,
        image="claud/busybox:latest",
        command=["sleep", "60"],
        resources=Resources(cpu=0.1, memory_mb=16),
        stop_timeout=stop_timeout,
    )


def container(
    alloc_id: str,
    phase: Phase = Phase.RUNNING,
    *,
    cid: str | None = None,
    exit_code: int | None = None,
    error: str | None = None,
    finished_ago: timedelta | None = None,
    created_ago: timedelta = timedelta(minutes=5),
) -> Observed:
    return Observed(
        container_id=cid or f"c-{alloc_id}",
        alloc_id=alloc_id,
        job_id=f"job-{alloc_id}",
        phase=phase,
        exit_code=exit_code,
        error=error,
        created_at=NOW - created_ago,
        started_at=NOW - created_ago if phase is not Phase.CREATED else None,
        finished_at=NOW - finished_ago if finished_ago is not None else None,
    )


def run(desired: list[Allocation] | None, observed: list[Observed], **kw: object) -> ReconcileOutput:
    return reconcile(
        ReconcileInput(
            desired=None if desired is None else {a.alloc_id: a for a in desired},
            observed=observed,
            now=NOW,
            **kw,
        )
    )


def status_of(plan: ReconcileOutput, alloc_id: str) -> ContainerState:
    (status,) = [s for s in plan.statuses if s.alloc_id == alloc_id]
    return status.state


# --- before the first reply ---


def test_before_first_reply_nothing_is_touched_but_running_containers_are_reported() -> None:
    observed = [
        container("a"),
        container("b", Phase.EXITED, exit_code=0, finished_ago=timedelta(days=3)),
        container("c", Phase.CREATED),
    ]
    plan = run(None, observed)
    assert plan.starts == [] and plan.stops == [] and plan.removals == []
    assert [(s.alloc_id, s.state) for s in plan.statuses] == [("a", ContainerState.RUNNING)]


# --- desired = run ---


def test_missing_container_is_started_and_reported_starting() -> None:
    plan = run([alloc("a")], [])
    assert [a.alloc_id for a in plan.starts] == ["a"]
    assert status_of(plan, "a") is ContainerState.STARTING


def test_start_in_flight_is_not_repeated() -> None:
    plan = run([alloc("a")], [], starting=frozenset({"a"}))
    assert plan.starts == []
    assert status_of(plan, "a") is ContainerState.STARTING


def test_running_container_is_left_alone_and_reported() -> None:
    plan = run([alloc("a")], [container("a")])
    assert plan.starts == [] and plan.stops == []
    (status,) = plan.statuses
    assert status.state is ContainerState.RUNNING
    assert status.container_id == "c-a" and status.started_at is not None and status.exit_code is None


def test_exited_container_is_reported_with_its_exit_code_and_never_restarted() -> None:
    plan = run([alloc("a")], [container("a", Phase.EXITED, exit_code=3, finished_ago=timedelta(seconds=1))])
    assert plan.starts == []
    (status,) = plan.statuses
    assert (status.state, status.exit_code) == (ContainerState.EXITED, 3)
    assert status.finished_at == NOW - timedelta(seconds=1)


def test_created_but_never_started_container_is_started_not_duplicated() -> None:
    plan = run([alloc("a")], [container("a", Phase.CREATED)])
    assert [a.alloc_id for a in plan.starts] == ["a"]  # the runtime adopts it by name
    plan = run([alloc("a")], [container("a", Phase.CREATED)], starting=frozenset({"a"}))
    assert plan.starts == []


def test_container_whose_start_failed_is_reported_failed_and_not_retried() -> None:
    failed = container("a", Phase.CREATED, exit_code=127, error='exec: "nosuch": executable file not found')
    plan = run([alloc("a")], [failed])
    assert plan.starts == []
    (status,) = plan.statuses
    assert status.state is ContainerState.FAILED and "nosuch" in (status.message or "")


def test_start_failure_without_container_is_reported_failed() -> None:
    plan = run([alloc("a")], [], start_failures={"a": "image 'nosuch:1' not found"})
    assert plan.starts == []
    assert status_of(plan, "a") is ContainerState.FAILED


def test_container_removed_behind_our_back_is_missing_not_restarted() -> None:
    plan = run([alloc("a")], [], launched=frozenset({"a"}))
    assert plan.starts == []
    assert status_of(plan, "a") is ContainerState.MISSING


# --- desired = stop, and containers nobody wants ---


def test_desired_stop_stops_with_the_allocations_grace() -> None:
    plan = run([alloc("a", DesiredState.STOP, stop_timeout=7)], [container("a")])
    assert [(s.container_id, s.grace, s.reason) for s in plan.stops] == [("c-a", 7, "desired-stop")]
    assert status_of(plan, "a") is ContainerState.RUNNING


def test_stop_in_flight_is_not_repeated() -> None:
    plan = run([alloc("a", DesiredState.STOP)], [container("a")], busy=frozenset({"c-a"}))
    assert plan.stops == []


def test_desired_stop_without_container_is_missing_unless_a_start_is_in_flight() -> None:
    assert status_of(run([alloc("a", DesiredState.STOP)], []), "a") is ContainerState.MISSING
    plan = run([alloc("a", DesiredState.STOP)], [], starting=frozenset({"a"}))
    assert status_of(plan, "a") is ContainerState.STARTING and plan.starts == []


def test_desired_stop_exited_is_reported_exited() -> None:
    plan = run([alloc("a", DesiredState.STOP)], [container("a", Phase.EXITED, exit_code=137)])
    assert plan.stops == [] and status_of(plan, "a") is ContainerState.EXITED


def test_undesired_running_container_is_reported_then_stopped() -> None:
    plan = run([], [container("x")], default_grace=4, fence_grace=5)
    assert [(s.container_id, s.grace, s.reason) for s in plan.stops] == [("c-x", 4, "undesired")]
    assert status_of(plan, "x") is ContainerState.RUNNING


def test_a_container_whose_job_may_run_elsewhere_gets_no_more_grace_than_a_fence() -> None:
    """Its allocation is gone from the desired set: lost while the engine was away, say, with
    the lease intact, so no fence stops it; it is killed as quickly as a fence would."""
    plan = run([alloc("a")], [container("x"), container("a", cid="one"),
                              container("a", cid="two", created_ago=timedelta(minutes=1))],
               default_grace=5, fence_grace=1)
    assert sorted((s.reason, s.grace) for s in plan.stops) == [("duplicate", 1), ("undesired", 1)]


def test_duplicate_containers_keep_the_running_one() -> None:
    observed = [container("a", cid="one"), container("a", cid="two", created_ago=timedelta(minutes=1))]
    plan = run([alloc("a")], observed)
    assert len(plan.stops) == 1 and plan.stops[0].reason == "duplicate"
    (status,) = plan.statuses
    assert status.state is ContainerState.RUNNING
    assert status.container_id != plan.stops[0].container_id


# --- fencing ---


def test_fenced_stops_everything_running_and_starts_nothing() -> None:
    desired = [alloc("a", stop_timeout=30), alloc("b", stop_timeout=0.5), alloc("new")]
    observed = [container("a"), container("b"), container("x"), container("old", Phase.EXITED, exit_code=0)]
    plan = run(desired, observed, fenced=True, fence_grace=2)
    assert plan.starts == []
    assert {s.container_id: s.grace for s in plan.stops} == {"c-a": 2, "c-b": 0.5, "c-x": 2}
    assert {s.reason for s in plan.stops} == {"fenced"}


def test_fenced_before_first_reply_still_stops() -> None:
    plan = run(None, [container("a")], fenced=True)
    assert [s.container_id for s in plan.stops] == ["c-a"]


# --- garbage collection of exited containers ---


def test_old_exited_container_no_longer_desired_is_removed() -> None:
    observed = [
        container("old", Phase.EXITED, exit_code=0, finished_ago=timedelta(hours=2)),
        container("young", Phase.EXITED, exit_code=0, finished_ago=timedelta(minutes=2)),
        container("wanted", Phase.EXITED, exit_code=0, finished_ago=timedelta(days=2)),
    ]
    plan = run([alloc("wanted")], observed, retention=timedelta(hours=1))
    assert [(r.alloc_id, r.reason) for r in plan.removals] == [("old", "expired")]


def test_exited_containers_beyond_the_cap_go_oldest_first() -> None:
    observed = [
        container(f"e{i}", Phase.EXITED, exit_code=0, finished_ago=timedelta(minutes=10 - i))
        for i in range(5)
    ]
    plan = run([alloc("e0")], observed, max_exited=2)
    # e0 is desired (kept); the oldest others go until two remain.
    assert sorted(r.alloc_id for r in plan.removals) == ["e1", "e2", "e3"]
    assert {r.reason for r in plan.removals} == {"over-limit"}


# --- properties ---

ALLOC_IDS = [f"a{i}" for i in range(6)]


@st.composite
def scenarios(draw: st.DrawFn) -> ReconcileInput:
    desired: dict[str, Allocation] | None = None
    if draw(st.booleans()):
        ids = draw(st.lists(st.sampled_from(ALLOC_IDS), unique=True))
        desired = {i: alloc(i, draw(st.sampled_from(list(DesiredState)))) for i in ids}
    observed = []
    for n, alloc_id in enumerate(draw(st.lists(st.sampled_from(ALLOC_IDS), max_size=8))):
        phase = draw(st.sampled_from(list(Phase)))
        observed.append(
            container(
                alloc_id,
                phase,
                cid=f"c{n}",
                exit_code=0 if phase is Phase.EXITED else None,
                error=draw(st.sampled_from([None, "boom"])) if phase is not Phase.RUNNING else None,
                finished_ago=timedelta(minutes=draw(st.integers(0, 200))) if phase is Phase.EXITED else None,
                created_ago=timedelta(minutes=draw(st.integers(0, 300))),
            )
        )
    cids = [o.container_id for o in observed]
    return ReconcileInput(
        desired=desired,
        observed=observed,
        starting=frozenset(draw(st.lists(st.sampled_from(ALLOC_IDS)))),
        busy=frozenset(draw(st.lists(st.sampled_from(cids)))) if cids else frozenset(),
        start_failures={i: "failed" for i in draw(st.lists(st.sampled_from(ALLOC_IDS)))},
        launched=frozenset(draw(st.lists(st.sampled_from(ALLOC_IDS)))),
        fenced=draw(st.booleans()),
        now=NOW,
        retention=timedelta(minutes=60),
        max_exited=draw(st.integers(0, 4)),
    )


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_property_plans_are_safe(inp: ReconcileInput) -> None:
    plan = reconcile(inp)
    observed = list(inp.observed)
    desired = inp.desired or {}
    by_alloc: dict[str, list[Observed]] = {}
    for o in observed:
        by_alloc.setdefault(o.alloc_id, []).append(o)

    started = [a.alloc_id for a in plan.starts]
    assert len(started) == len(set(started)), "two starts for one allocation"
    for alloc_id in started:
        assert inp.desired is not None and not inp.fenced
        assert desired[alloc_id].desired is DesiredState.RUN
        assert alloc_id not in inp.starting
        # Only a never-started container may be "started" (adopted); never a second one.
        assert all(o.phase is Phase.CREATED and not o.error for o in by_alloc.get(alloc_id, []))

    stopped = [s.container_id for s in plan.stops]
    assert len(stopped) == len(set(stopped)), "two stops for one container"
    running = {o.container_id for o in observed if o.phase is Phase.RUNNING}
    assert set(stopped) <= running - inp.busy
    if inp.desired is None and not inp.fenced:
        assert plan.starts == [] and plan.stops == [] and plan.removals == []
    if inp.fenced:
        assert set(stopped) == running - inp.busy, "a fenced slave must stop everything running"
        assert plan.starts == []
    else:
        for alloc_id, a in desired.items():
            mine = {o.container_id for o in by_alloc.get(alloc_id, []) if o.phase is Phase.RUNNING}
            if a.desired is DesiredState.RUN and mine:
                assert mine - set(stopped), "stopped the container of a desired-running allocation"

    removed = {r.container_id for r in plan.removals}
    for o in observed:
        if o.container_id in removed:
            assert o.phase is not Phase.RUNNING
            assert o.alloc_id not in desired and o.alloc_id not in inp.starting
            assert o.container_id not in inp.busy

    reported = [s.alloc_id for s in plan.statuses]
    assert len(reported) == len(set(reported)), "one status per allocation"
    assert set(desired) <= set(reported)
    assert {o.alloc_id for o in observed if o.phase is Phase.RUNNING} <= set(reported)


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_property_applying_a_plan_converges(inp: ReconcileInput) -> None:
    """Carry out one plan, reconcile again: nothing is started or stopped twice."""
    plan = reconcile(inp)
    observed = {o.container_id: o for o in inp.observed}
    for a in plan.starts:
        # The runtime starts the one container named after the allocation, or creates it.
        mine = [cid for cid, o in observed.items() if o.alloc_id == a.alloc_id]
        if mine:
            observed[mine[0]] = replace(observed[mine[0]], phase=Phase.RUNNING)
        else:
            observed[f"new-{a.alloc_id}"] = container(a.alloc_id, cid=f"new-{a.alloc_id}")
    for s in plan.stops:
        observed[s.container_id] = replace(observed[s.container_id], phase=Phase.EXITED, exit_code=143)
    for r in plan.removals:
        del observed[r.container_id]
    again = reconcile(
        replace(
            inp,
            observed=list(observed.values()),
            launched=inp.launched | {a.alloc_id for a in plan.starts},
        )
    )
    # Level-triggered: once its plan is carried out, a second pass has nothing
    # left to start or stop (only garbage collection may find more to do).
    assert again.starts == []
    assert again.stops == []


# --- stop before start, may_start, fenced exits ---


def attempt(alloc_id: str, job_id: str, n: int, **kw: object) -> Allocation:
    return alloc(alloc_id).model_copy(update={"job_id": job_id, "attempt": n, **kw})


def of_job(o: Observed, job_id: str, index: int = 0) -> Observed:
    return replace(o, job_id=job_id, index=index)


def test_a_new_attempt_waits_while_the_old_one_of_its_job_still_runs() -> None:
    old = of_job(container("a2"), "J")
    plan = run([attempt("a3", "J", 3)], [old])
    assert plan.starts == []
    assert [(s.container_id, s.reason) for s in plan.stops] == [("c-a2", "undesired")]
    (status,) = [s for s in plan.statuses if s.alloc_id == "a3"]
    assert status.state is ContainerState.STARTING and "older attempt" in (status.message or "")
    # Still stopping (a stop in flight): still waiting.
    assert run([attempt("a3", "J", 3)], [old], busy=frozenset({"c-a2"})).starts == []
    # Once it has exited, the new attempt starts.
    gone = replace(old, phase=Phase.EXITED, exit_code=137, finished_at=NOW)
    assert [a.alloc_id for a in run([attempt("a3", "J", 3)], [gone]).starts] == ["a3"]


def test_two_attempts_of_one_job_never_start_in_one_pass_and_the_newest_wins() -> None:
    plan = run([attempt("a1", "J", 1), attempt("a2", "J", 2)], [])
    assert [a.alloc_id for a in plan.starts] == ["a2"]
    assert run([attempt("a2", "J", 2)], [], starting_slots=frozenset({("J", 0)})).starts == []


def test_an_attempt_the_masters_saw_start_is_missing_not_started_again() -> None:
    plan = run([attempt("a1", "J", 1, may_start=False)], [])
    assert plan.starts == []
    (status,) = plan.statuses
    assert status.state is ContainerState.MISSING and status.message == "container gone"


def test_an_exit_caused_by_fencing_is_reported_fenced_even_without_a_lease_now() -> None:
    fenced_at = NOW - timedelta(seconds=10)
    killed = container("a", Phase.EXITED, exit_code=137, finished_ago=timedelta(seconds=5))
    ended_before = container("b", Phase.EXITED, exit_code=0, finished_ago=timedelta(seconds=20))
    plan = run([alloc("a"), alloc("b")], [killed, ended_before], fenced_allocs={"a": fenced_at, "b": fenced_at})
    by_id = {s.alloc_id: s for s in plan.statuses}
    assert by_id["a"].fenced and by_id["a"].exit_code == 137
    assert not by_id["b"].fenced and by_id["b"].exit_code == 0  # it had ended on its own


JOBS = ["J1", "J2", "J3"]
#: Slots of few jobs and indexes, so that attempts of one slot and replicas of one job meet often.
SLOTS: list[Slot] = [(job, index) for job in JOBS[:2] for index in range(3)]


@st.composite
def job_scenarios(draw: st.DrawFn, planning: bool = False) -> ReconcileInput:
    """Several attempts per slot and several replicas per job, in every phase, with starts and
    stops in flight. ``planning``: a leader has spoken and the lease holds (so starts are planned)."""
    slot_of_alloc = {a: draw(st.sampled_from(SLOTS)) for a in ALLOC_IDS}
    desired: dict[str, Allocation] | None = None
    if planning or draw(st.booleans()):
        desired = {
            i: attempt(
                i,
                slot_of_alloc[i][0],
                draw(st.integers(0, 5)),
                index=slot_of_alloc[i][1],
                desired=draw(st.sampled_from(list(DesiredState))),
                may_start=draw(st.booleans()),
            )
            for i in draw(st.lists(st.sampled_from(ALLOC_IDS), unique=True))
        }
    observed = []
    for n, alloc_id in enumerate(draw(st.lists(st.sampled_from(ALLOC_IDS), max_size=8))):
        phase = draw(st.sampled_from(list(Phase)))
        observed.append(
            of_job(
                container(
                    alloc_id,
                    phase,
                    cid=f"c{n}",
                    exit_code=137 if phase is Phase.EXITED else None,
                    finished_ago=timedelta(seconds=draw(st.integers(0, 100))) if phase is Phase.EXITED else None,
                ),
                *slot_of_alloc[alloc_id],
            )
        )
    cids = [o.container_id for o in observed]
    return ReconcileInput(
        desired=desired,
        observed=observed,
        starting=frozenset(draw(st.lists(st.sampled_from(ALLOC_IDS)))),
        starting_slots=frozenset(draw(st.lists(st.sampled_from(SLOTS)))),
        busy=frozenset(draw(st.lists(st.sampled_from(cids)))) if cids else frozenset(),
        launched=frozenset(draw(st.lists(st.sampled_from(ALLOC_IDS)))),
        fenced=not planning and draw(st.booleans()),
        fenced_allocs={a: NOW - timedelta(seconds=50) for a in draw(st.lists(st.sampled_from(ALLOC_IDS)))},
        now=NOW,
    )


@settings(max_examples=500, deadline=None)
@given(job_scenarios())
def test_property_never_a_start_while_another_attempt_of_the_slot_runs(inp: ReconcileInput) -> None:
    plan = reconcile(inp)
    observed = list(inp.observed)
    started_slots = [slot_of(a) for a in plan.starts]
    assert len(started_slots) == len(set(started_slots)), "two attempts of one slot started in one pass"
    for a in plan.starts:
        others = [o for o in observed if slot_of(o) == slot_of(a) and o.alloc_id != a.alloc_id]
        assert not any(o.phase is Phase.RUNNING for o in others), f"{a.alloc_id} started beside a running attempt"
        assert slot_of(a) not in inp.starting_slots, f"{a.alloc_id} started while a start of its slot is in flight"
        if not a.may_start:
            assert any(o.alloc_id == a.alloc_id for o in observed), "a may_start=False attempt was started afresh"
    for s in plan.statuses:
        if s.fenced:
            assert s.state is ContainerState.EXITED and s.alloc_id in inp.fenced_allocs


@settings(max_examples=200, deadline=None)
@given(job_scenarios())
def test_property_carrying_out_plans_never_overlaps_two_attempts_of_a_slot(inp: ReconcileInput) -> None:
    """Run plans to a fixed point (stops land before the next pass): never two of one slot running."""
    observed = {o.container_id: o for o in inp.observed}
    state = replace(inp, starting=frozenset(), starting_slots=frozenset(), busy=frozenset())
    for _ in range(6):
        plan = reconcile(replace(state, observed=list(observed.values())))
        for s in plan.stops:
            observed[s.container_id] = replace(observed[s.container_id], phase=Phase.EXITED, exit_code=143)
        for a in plan.starts:
            mine = [cid for cid, o in observed.items() if o.alloc_id == a.alloc_id]
            cid = mine[0] if mine else f"new-{a.alloc_id}"
            observed[cid] = of_job(container(a.alloc_id, cid=cid), a.job_id, a.index)
        state = replace(state, launched=state.launched | {a.alloc_id for a in plan.starts})
        by_slot: dict[Slot, int] = {}
        for o in observed.values():
            if o.phase is Phase.RUNNING:
                by_slot[slot_of(o)] = by_slot.get(slot_of(o), 0) + 1
        # What ran twice before the agent looked is its input: it never adds a second.
        for a in plan.starts:
            assert by_slot[slot_of(a)] == 1, f"started {a.alloc_id} beside another attempt of {slot_of(a)}"


@settings(max_examples=300, deadline=None)
@given(job_scenarios(planning=True))
def test_property_replicas_of_a_job_never_hold_each_other_back(inp: ReconcileInput) -> None:
    """Slots are independent: a pass starts, for every slot, what it would start were that slot
    alone on the slave; so other replicas of the job, running or starting, delay nothing."""
    together = {a.alloc_id for a in reconcile(inp).starts}
    alone: set[str] = set()
    for slot in {*SLOTS}:
        only = replace(
            inp,
            desired=None if inp.desired is None else {i: a for i, a in inp.desired.items() if slot_of(a) == slot},
            observed=[o for o in inp.observed if slot_of(o) == slot],
            starting_slots=inp.starting_slots & {slot},
        )
        alone |= {a.alloc_id for a in reconcile(only).starts}
    assert together == alone


# --- replicas: one slot per (job, index) ---


def replica(job_id: str, index: int, n: int, **kw: object) -> Allocation:
    """Attempt ``n`` of index ``index`` of the job, with the id the masters give it."""
    alloc_id = f"{job_id}-{n}" if index == 0 else f"{job_id}.{index}-{n}"
    return attempt(alloc_id, job_id, n, index=index, **kw)


def replica_container(a: Allocation, phase: Phase = Phase.RUNNING, **kw: object) -> Observed:
    return of_job(container(a.alloc_id, phase, **kw), a.job_id, a.index)  # type: ignore[arg-type]


def test_two_replicas_of_one_job_on_one_slave_both_start_in_one_pass() -> None:
    replicas = [replica("web", 0, 1), replica("web", 1, 1), replica("web", 2, 1)]
    plan = run(replicas, [])
    assert sorted(a.alloc_id for a in plan.starts) == ["web-1", "web.1-1", "web.2-1"]
    assert {status_of(plan, a.alloc_id) for a in replicas} == {ContainerState.STARTING}


def test_a_replica_starts_beside_a_running_one_and_beside_a_start_in_flight() -> None:
    first, second, third = replica("web", 0, 1), replica("web", 1, 1), replica("web", 2, 1)
    plan = run([first, second, third], [replica_container(first)], starting=frozenset({"web.1-1"}),
               starting_slots=frozenset({("web", 1)}))
    assert [a.alloc_id for a in plan.starts] == ["web.2-1"]
    assert plan.stops == []


def test_a_new_attempt_of_a_replica_waits_for_its_own_old_attempt_only() -> None:
    old = replica("web", 1, 1)
    plan = run([replica("web", 0, 4), replica("web", 1, 2)], [replica_container(old)])
    # Index 0 starts at once; index 1's second attempt waits while its first is stopped.
    assert [a.alloc_id for a in plan.starts] == ["web-4"]
    assert [(s.alloc_id, s.reason) for s in plan.stops] == [("web.1-1", "undesired")]
    (status,) = [s for s in plan.statuses if s.alloc_id == "web.1-2"]
    assert status.state is ContainerState.STARTING and "older attempt of this allocation" in (status.message or "")
    gone = replica_container(old, Phase.EXITED, exit_code=143, finished_ago=timedelta(seconds=1))
    assert [a.alloc_id for a in run([replica("web", 1, 2)], [gone]).starts] == ["web.1-2"]


def test_two_attempts_of_one_index_never_start_in_one_pass() -> None:
    plan = run([replica("web", 1, 1), replica("web", 1, 2), replica("web", 0, 1)], [])
    assert sorted(a.alloc_id for a in plan.starts) == ["web-1", "web.1-2"]


def test_a_container_from_before_replicas_holds_index_0() -> None:
    # Observed's index defaults to 0: what a container without claud.index reads as.
    unlabelled = Observed("c-old", "web-1", "web", Phase.RUNNING, created_at=NOW)
    plan = run([replica("web", 0, 2), replica("web", 1, 1)], [unlabelled])
    assert [a.alloc_id for a in plan.starts] == ["web.1-1"]
