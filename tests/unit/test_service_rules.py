"""Services (issue 17, single allocation): ports, health checks and volumes, without sockets or Docker.

The spec's rules (each refusal names its field), the scheduler's port
accounting (never one host port twice on a slave, for any input), plan apply's
re-check, the pending reasons, the health transitions in the tables and the
lifecycle, the check's counting rule and the reconciler's stop of an
unhealthy container.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tables import Tables

from claud.api import (
    Allocation,
    AllocationStatus,
    ContainerState,
    DesiredState,
    Health,
    JobSpec,
    JobState,
    Resources,
)
from claud.api.slave_protocol import PortBinding, PortRange
from claud.master import ops
from claud.master.scheduler import PendingJob, SlaveCapacity, fits, ports_valid, schedule
from claud.master.state import StateMachine
from claud.slave.health import Verdicts
from claud.slave.reconciler import ReconcileInput, reconcile
from claud.slave.runtime import Observed, Phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = {"name": "web", "image": "claud/busybox:latest"}


def spec(**fields: object) -> JobSpec:
    return JobSpec.model_validate({**BASE, **fields})


def refusal(**fields: object) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        spec(**fields)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


# ------------------------------------------------------------------ the spec


def test_a_spec_without_the_new_fields_means_and_encodes_what_it_did() -> None:
    plain = spec()
    assert plain.ports == [] and plain.check is None and plain.volumes == []
    dumped = plain.model_dump_json()
    assert "ports" not in dumped and "check" not in dumped and "volumes" not in dumped
    assert JobSpec.model_validate_json(dumped) == plain


def test_a_whole_service_spec_is_accepted() -> None:
    web = spec(
        type="service", command=["httpd", "-f", "-p", "8080"],
        ports=[{"name": "http", "container": 8080, "host": 0}, {"name": "admin", "container": 9090, "host": 9090}],
        check={"http": "/healthz?deep=1", "port": "http", "interval": 5, "timeout": 2, "failures": 3, "grace": 10},
        volumes=[{"name": "data", "path": "/data"}, {"host_path": "/srv/claud/www", "path": "/www", "read_only": True}],
    )
    assert web.check is not None and web.check.kind == "http"
    assert JobSpec.model_validate_json(web.model_dump_json()) == web


@pytest.mark.parametrize(
    ("fields", "loc", "words"),
    [
        ({"ports": [{"name": "a", "container": 1}, {"name": "a", "container": 2}]}, ("ports",), "port name 'a'"),
        ({"ports": [{"name": "a", "container": 1}, {"name": "b", "container": 1}]}, ("ports",), "container port 1"),
        ({"ports": [{"name": "a", "container": 1, "host": 80}, {"name": "b", "container": 2, "host": 80}]},
         ("ports",), "host port 80"),
        ({"ports": [{"name": "A B", "container": 1}]}, ("ports", 0, "name"), "not a valid name"),
        ({"ports": [{"name": "a", "container": 0}]}, ("ports", 0, "container"), "greater than or equal to 1"),
        ({"ports": [{"name": "a", "container": 1, "host": 70000}]}, ("ports", 0, "host"), "less than or equal"),
        ({"ports": [{"name": "a", "container": 1, "protocol": "udp"}]}, ("ports", 0, "protocol"), "Extra inputs"),
        ({"check": {"tcp": True, "port": "a"}, "ports": [{"name": "a", "container": 1}]}, ("check",), "only a service"),
        ({"type": "service", "check": {"tcp": True, "port": "b"}, "ports": [{"name": "a", "container": 1}]},
         ("check",), "'b' is not a port"),
        ({"type": "service", "check": {"tcp": True, "http": "/", "port": "a"},
          "ports": [{"name": "a", "container": 1}]},
         ("check",), "exactly one of http, tcp, command"),
        ({"type": "service", "check": {"interval": 5}}, ("check",), "exactly one of"),
        ({"type": "service", "check": {"http": "/"}}, ("check",), "port: an http check names the port"),
        ({"type": "service", "check": {"tcp": False, "port": "a"}, "ports": [{"name": "a", "container": 1}]},
         ("check",), "tcp: must be true"),
        ({"type": "service", "check": {"http": "healthz", "port": "a"}, "ports": [{"name": "a", "container": 1}]},
         ("check", "http"), "must start with '/'"),
        ({"type": "service", "check": {"command": []}}, ("check", "command"), "at least one argument"),
        ({"type": "service", "check": {"command": ["true"], "failures": 0}}, ("check", "failures"), "greater"),
        ({"volumes": [{"path": "/d"}]}, ("volumes", 0), "exactly one of name, host_path"),
        ({"volumes": [{"name": "x", "host_path": "/a", "path": "/d"}]}, ("volumes", 0), "exactly one of"),
        ({"volumes": [{"host_path": "/a/../etc", "path": "/d"}]}, ("volumes", 0, "host_path"), "'..'"),
        ({"volumes": [{"host_path": "srv", "path": "/d"}]}, ("volumes", 0, "host_path"), "not an absolute path"),
        ({"volumes": [{"name": "x", "path": "/d/"}]}, ("volumes", 0, "path"), "not normalised"),
        ({"volumes": [{"name": "x", "path": "/"}]}, ("volumes", 0), "cannot be mounted on /"),
        ({"volumes": [{"name": "x", "path": "/a"}, {"name": "x", "path": "/b"}]}, ("volumes",), "volume name 'x'"),
        ({"volumes": [{"name": "x", "path": "/a"}, {"name": "y", "path": "/a"}]}, ("volumes",), "mount path '/a'"),
    ],
)
def test_each_refusal_names_its_field(fields: dict[str, object], loc: tuple[str | int, ...], words: str) -> None:
    errors = refusal(**fields)
    assert any(found == loc and words in msg for found, msg in errors), errors


NAMES = st.sampled_from(["a", "b", "c", "web", "db"])
PORTS = st.lists(
    st.fixed_dictionaries(
        {"name": NAMES, "container": st.integers(1, 6), "host": st.sampled_from([0, 0, 80, 81, 82])}
    ),
    max_size=5,
)


@given(ports=PORTS)
@settings(max_examples=200, deadline=None)
def test_ports_are_accepted_exactly_when_names_container_and_static_host_ports_are_unique(ports) -> None:
    statics = [p["host"] for p in ports if p["host"]]
    valid = (
        len({p["name"] for p in ports}) == len(ports)
        and len({p["container"] for p in ports}) == len(ports)
        and len(set(statics)) == len(statics)
    )
    try:
        spec(ports=ports)
    except ValidationError as exc:
        assert not valid
        assert all(e["loc"][0] == "ports" for e in exc.errors())
    else:
        assert valid


# ------------------------------------------------------------- the scheduler


def cap(slave_id: str, *, low: int = 20000, high: int = 20003, used: frozenset[int] = frozenset(),
        cpu: float = 8.0, host_volumes: tuple[str, ...] = ()) -> SlaveCapacity:
    return SlaveCapacity(slave_id, {}, cpu, 8192, 0.0, 0, True, (low, high), used, host_volumes)


def pjob(job_id: str, *ports: int, cpu: float = 0.1, paths: tuple[str, ...] = ()) -> PendingJob:
    return PendingJob(job_id, cpu, 16, {}, tuple(ports), paths)


def test_dynamic_ports_come_from_the_range_and_static_ones_as_asked() -> None:
    plan = schedule([cap("s1", low=20000, high=20002, used=frozenset({20000}))], [pjob("j1", 0, 8080, 0)])
    (placed,) = plan.placements
    assert placed.ports[1] == 8080 and {placed.ports[0], placed.ports[2]} == {20001, 20002}
    # The same inputs, the same plan; another attempt starts from elsewhere in the range.
    wide = [cap("s1", low=20000, high=29999)]
    assert schedule(wide, [pjob("j1", 0)]) == schedule(wide, [pjob("j1", 0)])
    starts = {schedule(wide, [replace(pjob("j1", 0), attempt=n)]).placements[0].ports for n in range(5)}
    assert len(starts) > 1


def test_a_static_port_taken_on_every_slave_leaves_the_job_pending_naming_the_port() -> None:
    slaves = [cap("s1", used=frozenset({8080})), cap("s2")]
    plan = schedule(slaves, [pjob("a", 8080), pjob("b", 8080), pjob("c", 8080)])
    assert [(p.job_id, p.slave_id, p.ports) for p in plan.placements] == [("a", "s2", (8080,))]
    assert set(plan.unplaced) == {"b", "c"}
    for reason in plan.unplaced.values():
        assert "host port 8080 is taken on every schedulable slave" in reason and "s1" in reason


def test_a_full_port_range_says_so() -> None:
    plan = schedule([cap("s1", low=20000, high=20001)], [pjob("a", 0, 0), pjob("b", 0)])
    assert [p.job_id for p in plan.placements] == ["a"]
    assert "free host port" in plan.unplaced["b"]


def test_host_paths_go_only_to_slaves_that_allow_them() -> None:
    slaves = [cap("s1", host_volumes=("/srv/claudx",)), cap("s2", host_volumes=("/srv/claud",))]
    plan = schedule(slaves, [pjob("a", paths=("/srv/claud/www",)), pjob("b", paths=("/etc",))])
    assert [(p.job_id, p.slave_id) for p in plan.placements] == [("a", "s2")]
    assert "allows host volume path /etc" in plan.unplaced["b"]


def test_fits_rechecks_the_plan_s_ports() -> None:
    s1, job = cap("s1", used=frozenset({20000})), pjob("j", 0, 8080)
    assert fits(s1, job, (20001, 8080))
    assert not fits(s1, job, (20000, 8080))  # held on the slave
    assert not fits(s1, job, (20001, 8081))  # not the static port asked
    assert not fits(s1, job, (19999, 8080))  # outside the range
    assert not fits(s1, job, (8080, 8080))  # twice
    assert not fits(s1, job, (20001,))  # one per declared port
    assert not ports_valid(replace(s1, port_range=None), job, (20001, 8080))


SLAVE_IDS = ["s1", "s2", "s3"]


@st.composite
def port_world(draw):  # type: ignore[no-untyped-def]
    slaves = []
    for slave_id in draw(st.lists(st.sampled_from(SLAVE_IDS), unique=True, min_size=1)):
        low = draw(st.integers(20000, 20005))
        high = draw(st.integers(low, low + 4))
        used = frozenset(draw(st.lists(st.integers(19998, 20010), max_size=4)))
        slaves.append(cap(slave_id, low=low, high=high, used=used, cpu=draw(st.sampled_from([0.2, 1.0, 8.0]))))
    jobs = []
    for i in range(draw(st.integers(0, 12))):
        ports = draw(st.lists(st.sampled_from([0, 0, 0, 20000, 20001, 20003, 20008]), max_size=3))
        statics = [p for p in ports if p]
        if len(set(statics)) != len(statics):
            continue  # the spec refuses it
        jobs.append(pjob(f"j{i}", *ports, cpu=draw(st.sampled_from([0.1, 0.5]))))
    return slaves, jobs


@given(world=port_world())
@settings(max_examples=300, deadline=None)
def test_the_scheduler_never_gives_one_host_port_twice_on_a_slave(world) -> None:  # type: ignore[no-untyped-def]
    slaves, jobs = world
    plan = schedule(slaves, jobs)
    by_id = {s.id: s for s in slaves}
    jobs_by_id = {j.id: j for j in jobs}
    held = {s.id: set(s.ports_used) for s in slaves}
    for placement in plan.placements:
        slave = replace(by_id[placement.slave_id], ports_used=frozenset(held[placement.slave_id]))
        # Each placement passes apply's re-check against the slave as the earlier ones left it ...
        assert ports_valid(slave, jobs_by_id[placement.job_id], placement.ports), placement
        # ... so no port is given twice on one slave, nor one already held.
        assert not held[placement.slave_id] & set(placement.ports)
        held[placement.slave_id].update(placement.ports)
    assert {p.job_id for p in plan.placements} | set(plan.unplaced) == {j.id for j in jobs}


# ------------------------------------------------------------------ the tables


def test_the_job_view_shows_each_port_s_address_and_the_allocation_carries_the_bindings() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("web", type="service", ports=[{"name": "http", "container": 8080}, {"name": "x", "container": 1,
                                                                                     "host": 7000}])
    t.schedule()
    job = t.sm.jobs["web"]
    given = job.ports[0]
    assert job.state == JobState.SCHEDULED and 20000 <= given <= 20010 and job.ports[1] == 7000
    view = t.sm.job_view(job)
    assert [(p.name, p.host, p.host_port, p.address) for p in view.ports] == [
        ("http", 0, given, f"10.0.0.1:{given}"), ("x", 7000, 7000, "10.0.0.1:7000")
    ]
    (alloc,) = t.sm.desired_allocations("s1")
    assert alloc.ports == [PortBinding(name="http", container=8080, host=given),
                           PortBinding(name="x", container=1, host=7000)]
    # Pending again, the job holds no port and shows no address.
    t.report("web", ContainerState.EXITED, exit_code=1)
    assert t.sm.jobs["web"].state == JobState.PENDING and t.sm.jobs["web"].ports == []
    assert [p.address for p in t.sm.job_view(t.sm.jobs["web"]).ports] == [None, None]


def test_a_slave_may_name_the_host_where_its_ports_are_reached() -> None:
    t = Tables()
    assert t.apply(ops.RegisterSlave(
        at=t.now, slave_id="s1", address="slave1:8701", cpu_total=4, memory_mb_total=4096,
        port_range=PortRange(low=20000, high=20000), ports_host="192.0.2.7",
    )).ok
    t.submit("web", ports=[{"name": "http", "container": 80}])
    t.schedule()
    assert [p.address for p in t.sm.job_view(t.sm.jobs["web"]).ports] == ["192.0.2.7:20000"]


def test_apply_rejects_a_placement_whose_port_the_slave_already_gave() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("a", ports=[{"name": "p", "container": 1}])
    t.submit("b", ports=[{"name": "p", "container": 1}])
    # A stale plan made both choose 20000: the second placement is refused, nothing raises.
    outcome = t.apply(ops.ApplyPlan(at=t.now, placements=[
        ops.PlacedJob(job_id="a", slave_id="s1", ports=[20000]),
        ops.PlacedJob(job_id="b", slave_id="s1", ports=[20000]),
    ]))
    assert outcome.ok and outcome.value == 1
    assert t.sm.jobs["a"].state == JobState.SCHEDULED and t.sm.jobs["b"].state == JobState.PENDING
    assert t.sm.rejected_entries == 0
    t.schedule()
    assert t.sm.jobs["b"].state == JobState.SCHEDULED and t.sm.jobs["b"].ports != [20000]


def test_a_static_port_in_use_leaves_the_second_job_pending_until_the_first_leaves() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("a", type="service", ports=[{"name": "p", "container": 80, "host": 8080}])
    t.submit("b", type="service", ports=[{"name": "p", "container": 80, "host": 8080}])
    t.schedule()
    assert t.sm.jobs["a"].state == JobState.SCHEDULED
    assert "host port 8080 is taken" in (t.sm.jobs["b"].pending_reason or "")
    assert t.apply(ops.StopJob(at=t.now, job_id="a")).ok
    t.report("a", ContainerState.EXITED, exit_code=0)
    assert t.sm.jobs["a"].state == JobState.STOPPED
    t.schedule()
    assert t.sm.jobs["b"].state == JobState.SCHEDULED and t.sm.jobs["b"].ports == [8080]


def test_host_path_jobs_wait_for_a_slave_that_allows_the_path() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("j", volumes=[{"host_path": "/srv/claud/a", "path": "/a"}])
    t.schedule()
    assert "allows host volume path /srv/claud/a" in (t.sm.jobs["j"].pending_reason or "")
    t.slave("s2", host_volumes=["/srv/claud"])
    t.schedule()
    assert t.sm.jobs["j"].slave_id == "s2"


def test_health_transitions_are_job_events_and_an_unhealthy_exit_restarts_charged() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("web", type="service", ports=[{"name": "http", "container": 80}],
             check={"http": "/", "port": "http"})
    t.schedule()
    t.report("web", ContainerState.RUNNING)
    job = t.sm.jobs["web"]
    assert job.state == JobState.RUNNING and job.health is None
    t.report("web", ContainerState.RUNNING, Health.HEALTHY)
    assert job.health is Health.HEALTHY and job.events[-1].health is Health.HEALTHY
    assert t.sm.relevant_statuses("s1", [AllocationStatus(
        alloc_id=job.alloc_id or "", job_id="web", state=ContainerState.RUNNING, health=Health.HEALTHY)]) == []
    changes = t.sm.drain_changes()
    assert changes[-1].message == "health: healthy" and changes[-1].as_dict()["health"] == "healthy"
    assert "health" not in changes[0].as_dict()
    t.report("web", ContainerState.RUNNING, Health.UNHEALTHY)
    assert job.health is Health.UNHEALTHY and t.sm.job_view(job).health is Health.UNHEALTHY
    t.report("web", ContainerState.EXITED, Health.UNHEALTHY, exit_code=143,
             message="unhealthy: http check: GET answered 500; stopped by its slave")
    assert job.state == JobState.PENDING and job.restarts == 1 and job.health is None
    assert "answered 500" in (job.message or "") and "restarting the service" in (job.message or "")


def test_health_in_the_first_running_report_is_recorded_too() -> None:
    t = Tables()
    t.slave("s1")
    t.submit("web", type="service", check={"command": ["true"]})
    t.schedule()
    t.report("web", ContainerState.RUNNING, Health.HEALTHY)
    job = t.sm.jobs["web"]
    assert job.state == JobState.RUNNING and job.health is Health.HEALTHY
    assert [e.health for e in job.events][-2:] == [None, Health.HEALTHY]


def test_the_tables_with_ports_and_health_survive_a_snapshot() -> None:
    t = Tables()
    t.slave("s1", host_volumes=["/srv"])
    t.submit("web", type="service", ports=[{"name": "http", "container": 80}], check={"tcp": True, "port": "http"},
             volumes=[{"name": "data", "path": "/data"}])
    t.schedule()
    t.report("web", ContainerState.RUNNING, Health.HEALTHY)
    restored = StateMachine.from_snapshot(t.sm.to_snapshot())
    assert restored.jobs["web"].model_dump() == t.sm.jobs["web"].model_dump()
    assert restored.slaves["s1"].model_dump() == t.sm.slaves["s1"].model_dump()
    assert restored.to_snapshot() == t.sm.to_snapshot()
    assert restored.capacity(restored.slaves["s1"]).ports_used == frozenset(t.sm.jobs["web"].ports)


# ------------------------------------------------------------------- the slave


def test_a_check_counts_failures_in_a_row_outside_the_grace_only() -> None:
    v = Verdicts(failures=2)
    assert v.record(False, in_grace=True) is None and v.in_a_row == 0
    assert v.record(True, in_grace=True) is Health.HEALTHY
    assert v.record(False, in_grace=False, why="500") is None
    assert v.record(True, in_grace=False) is None and v.in_a_row == 0
    assert v.record(False, in_grace=False) is None
    assert v.record(False, in_grace=False, why="refused") is Health.UNHEALTHY and v.reason == "refused"


def _alloc(**extra: object) -> Allocation:
    return Allocation(alloc_id="web-1", job_id="web", attempt=1, desired=DesiredState.RUN, image="x",
                      resources=Resources(), stop_timeout=3.0, **extra)  # type: ignore[arg-type]


def test_the_reconciler_stops_an_unhealthy_container_and_reports_why_it_ended() -> None:
    running = Observed("c1", "web-1", "web", Phase.RUNNING)
    base = ReconcileInput(desired={"web-1": _alloc()}, observed=[running])
    assert reconcile(base).stops == []
    healthy = reconcile(replace(base, health={"web-1": (Health.HEALTHY, None)}))
    assert healthy.stops == [] and healthy.statuses[0].health is Health.HEALTHY
    sick = reconcile(replace(base, health={"web-1": (Health.UNHEALTHY, "GET / answered 500")}))
    assert [(s.container_id, s.reason, s.grace) for s in sick.stops] == [("c1", "unhealthy", 3.0)]
    assert sick.statuses[0].health is Health.UNHEALTHY and sick.statuses[0].message == "GET / answered 500"
    # Fenced, it is the fence that stops it; busy, a stop is under way already.
    assert [s.reason for s in reconcile(replace(base, health={"web-1": (Health.UNHEALTHY, "x")}, fenced=True)).stops] \
        == ["fenced"]
    assert reconcile(replace(base, health={"web-1": (Health.UNHEALTHY, "x")}, busy=frozenset({"c1"}))).stops == []
    ended = Observed("c1", "web-1", "web", Phase.EXITED, exit_code=143, finished_at=T0 + timedelta(seconds=1))
    done = reconcile(replace(base, observed=[ended], health={"web-1": (Health.UNHEALTHY, "GET / answered 500")}))
    (status,) = done.statuses
    assert status.state is ContainerState.EXITED and status.health is Health.UNHEALTHY
    assert status.message == "unhealthy: GET / answered 500; stopped by its slave"


@st.composite
def plans(draw):  # type: ignore[no-untyped-def]
    """Jobs with ports and plans for them, some stale (made before others were applied)."""
    jobs = draw(st.lists(st.lists(st.sampled_from([0, 0, 20001, 20002]), max_size=2, unique=True), max_size=8))
    steps = draw(st.lists(st.tuples(st.sampled_from(["plan", "stale", "exit"]), st.integers(0, 7)), max_size=20))
    return jobs, steps


@given(world=plans())
@settings(max_examples=150, deadline=None)
def test_apply_never_gives_one_host_port_twice_on_a_slave_even_from_stale_plans(world) -> None:  # type: ignore[no-untyped-def]
    jobs, steps = world
    t = Tables()
    t.slave("s1")
    t.slave("s2")
    for i, ports in enumerate(jobs):
        t.submit(f"j{i}", type="service", ports=[{"name": f"p{k}", "container": k + 1, "host": h}
                                                   for k, h in enumerate(ports)])
    stale: list[ops.PlacedJob] = []
    for kind, n in steps:
        if kind == "plan":
            slaves, pending = t.sm.scheduling_snapshot(t.now)
            plan = schedule(slaves, pending)
            placed = [ops.PlacedJob(job_id=p.job_id, slave_id=p.slave_id, ports=list(p.ports))
                      for p in plan.placements]
            stale = placed or stale
            assert t.apply(ops.ApplyPlan(at=t.now, placements=placed)).ok
        elif kind == "stale":
            assert t.apply(ops.ApplyPlan(at=t.now, placements=stale)).ok
        elif (job := t.sm.jobs.get(f"j{n}")) is not None and job.state == JobState.SCHEDULED:
            t.report(job.id, ContainerState.EXITED, exit_code=1)
        t.now += timedelta(seconds=60)  # past any restart backoff
        assert t.sm.rejected_entries == 0
        for slave_id in t.sm.slaves:
            held = [port for job in t.sm.placed_jobs(slave_id) for port in job.ports]
            assert len(held) == len(set(held)), (slave_id, held)
            assert t.sm.capacity(t.sm.slaves[slave_id]).ports_used == frozenset(held)
        rebuilt = StateMachine.from_snapshot(t.sm.to_snapshot())
        assert rebuilt._ports_by_slave == t.sm._ports_by_slave


def test_claud_job_prints_the_addresses_and_the_health() -> None:
    from rich.console import Console

    from claud.client import _render

    t = Tables()
    t.slave("s1")
    t.submit("web", type="service", ports=[{"name": "http", "container": 8080}], check={"http": "/", "port": "http"},
             volumes=[{"name": "data", "path": "/data"}])
    t.schedule()
    t.report("web", ContainerState.RUNNING, Health.HEALTHY)
    console = Console(width=200, record=True)
    console.print(_render.job_details(t.sm.job_view(t.sm.jobs["web"])))
    out = console.export_text()
    port = t.sm.jobs["web"].ports[0]
    assert f"10.0.0.1:{port} -> container 8080/tcp" in out
    assert "healthy (http check)" in out and "volume data at /data" in out
