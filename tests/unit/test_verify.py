"""`claud verify`'s judge on synthetic histories, and the command over a saved event log
and a mocked API.

The overlap rule under test: a container runs over the half-open interval
[start, die); two containers of one job overlap iff some instant sees both
running. Touching (one dies at the very instant the other starts) is no overlap.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from claud.api.jobs import JobEvent, JobState
from claud.client.cli import CliConfig, ExitCode, cli
from claud.client.verify import (
    ACTIONS,
    ContainerEvent,
    ContainerInterval,
    EventLogError,
    JobHistory,
    Missing,
    judge,
    missing_jobs,
    overlaps,
    parse_instant,
    read_event_log,
    run_intervals,
    stuck_jobs,
)
from support import fake_wire

# A container on an integer clock: (container, job, start, end or None while it runs).
Run = tuple[str, str, int, int | None]


@st.composite
def runs(draw: st.DrawFn, max_size: int = 12) -> list[Run]:
    n_jobs = draw(st.integers(1, 4))
    out: list[Run] = []
    for c in range(draw(st.integers(0, max_size))):
        start = draw(st.integers(0, 40))
        end = draw(st.one_of(st.none(), st.integers(start, start + 20)))
        out.append((f"c{c}", f"j{draw(st.integers(0, n_jobs - 1))}", start, end))
    return out


def events_of(all_runs: list[Run]) -> list[ContainerEvent]:
    events = []
    for seq, (cid, job, start, end) in enumerate(all_runs):
        labels: dict[str, Any] = {"job_id": job, "alloc_id": f"{job}-{cid}", "slave_id": f"s{seq % 2}"}
        events.append(ContainerEvent(float(start), 2 * seq, "start", cid, **labels))
        if end is not None:
            events.append(ContainerEvent(float(end), 2 * seq + 1, "die", cid, exit_code=0, **labels))
    return events


def brute_force(all_runs: list[Run], horizon: int = 100) -> set[tuple[str, frozenset[str]]]:
    """The model: a pair overlaps iff some half-integer instant sees both in [start, end)."""
    pairs: set[tuple[str, frozenset[str]]] = set()
    for t2 in range(2 * horizon):
        t = t2 / 2
        running: dict[str, list[str]] = {}
        for cid, job, start, end in all_runs:
            if start <= t < (math.inf if end is None else end):
                running.setdefault(job, []).append(cid)
        for job, cids in running.items():
            pairs |= {(job, frozenset({a, b})) for i, a in enumerate(cids) for b in cids[i + 1:]}
    return pairs


def found_pairs(all_runs: list[Run]) -> set[tuple[str, frozenset[str]]]:
    return {(o.job_id, frozenset({o.first.container_id, o.second.container_id}))
            for o in overlaps(run_intervals(events_of(all_runs)))}


@settings(max_examples=300, deadline=None)
@given(runs())
def test_overlaps_are_exactly_the_brute_force_models(all_runs: list[Run]) -> None:
    assert found_pairs(all_runs) == brute_force(all_runs)


@settings(max_examples=200, deadline=None)
@given(runs(), st.integers(0, 60), st.integers(1, 10), st.integers(0, 9), st.data())
def test_a_planted_overlap_is_always_reported(all_runs: list[Run], start: int, length: int, into: int,
                                              data: st.DataObject) -> None:
    # A second container of one job, started while the first still runs (``into`` < ``length``).
    into = into % length
    end = data.draw(st.one_of(st.none(), st.integers(start + into + 1, start + into + 20)))
    planted = [("p1", "victim", start, start + length), ("p2", "victim", start + into, end)]
    assert ("victim", frozenset({"p1", "p2"})) in found_pairs(all_runs + planted)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=10), st.integers(0, 20), st.booleans())
def test_disjoint_or_touching_runs_of_one_job_never_overlap(gaps: list[int], first: int, last_runs: bool) -> None:
    # One job's containers back to back: each starts when (gap 0: the instant) or after the previous one dies.
    all_runs: list[Run] = []
    at = first
    for i, gap in enumerate(gaps):
        length = 1 + (gap * 7) % 5
        still_running = last_runs and i == len(gaps) - 1
        all_runs.append((f"c{i}", "j", at, None if still_running else at + length))
        at += length + gap
    assert found_pairs(all_runs) == set()


def test_an_overlap_with_a_container_still_running_lasts_until_the_window_ends() -> None:
    verdict = judge(events_of([("a", "j", 10, None), ("b", "j", 15, 30)]), [], since=0.0, until=100.0,
                    now=datetime.fromtimestamp(100, UTC))
    [overlap] = verdict.overlaps
    assert overlap.seconds == 15.0 and overlap.seconds_until(100.0) == 15.0
    verdict = judge(events_of([("a", "j", 10, None), ("b", "j", 15, None)]), [], since=0.0, until=40.0,
                    now=datetime.fromtimestamp(40, UTC))
    [overlap] = verdict.overlaps
    assert math.isinf(overlap.seconds) and overlap.seconds_until(40.0) == 25.0
    [finding] = verdict.as_json()["findings"]
    assert finding["seconds"] == 25.0 and finding["containers"][1]["end"] is None
    json.dumps(verdict.as_json(), allow_nan=False)  # no infinity in the machine's verdict


def test_events_outside_the_window_and_other_jobs_are_not_judged() -> None:
    events = events_of([("a", "j", 10, 20), ("b", "j", 15, 25), ("c", "k", 15, 25), ("d", "k", 16, 26)])
    now = datetime.fromtimestamp(100, UTC)
    assert {o.job_id for o in judge(events, [], since=0, until=100, now=now).overlaps} == {"j", "k"}
    assert {o.job_id for o in judge(events, [], since=0, until=100, now=now, only=frozenset({"k"})).overlaps} == {"k"}
    # From 21 on, "a" is gone (its die at 20 is outside), "b" seen dying first opens at 21: alone.
    assert [o.job_id for o in judge(events, [], since=21, until=100, now=now).overlaps] == ["k"]


# --- missing, stuck, unplaceable ---------------------------------------------------------

T0 = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def history(job_id: str, state: JobState, last: float, reason: str | None = None) -> JobHistory:
    events = (JobEvent(at=T0, state=JobState.PENDING), JobEvent(at=T0 + timedelta(seconds=last), state=state))
    return JobHistory(job_id, state, T0, reason, events)


def test_stuck_and_unplaceable_are_told_apart_by_the_pending_reason() -> None:
    jobs = [
        history("done", JobState.COMPLETED, 0),
        history("moving", JobState.RUNNING, 290),
        history("running", JobState.RUNNING, 10),  # running a long time is not stuck...
        history("stopping", JobState.STOPPING, 10),  # ...stopping that long is
        history("lost", JobState.LOST, 10),
        history("waiting", JobState.PENDING, 0),
        history("too-big", JobState.PENDING, 0, reason="no slave has 512 cpus free"),
    ]
    stuck, unplaceable = stuck_jobs(jobs, T0 + timedelta(seconds=300), stuck_after=120)
    assert [s.job_id for s in stuck] == ["lost", "stopping", "waiting"]
    assert [(u.job_id, u.reason, u.seconds) for u in unplaceable] == [("too-big", "no slave has 512 cpus free", 300)]
    assert stuck_jobs(jobs, T0 + timedelta(seconds=120), stuck_after=120) == ([], [])


def test_missing_are_the_acknowledged_ids_the_masters_do_not_know() -> None:
    assert missing_jobs(["a", "b", "c", "b"], ["a", "x"]) == [Missing("b"), Missing("c")]
    verdict = judge([], [history("a", JobState.COMPLETED, 1)], known={"a", "x"}, acknowledged=["a", "ghost"],
                    since=0, until=1, now=T0)
    assert [m.job_id for m in verdict.missing] == ["ghost"] and not verdict.ok
    assert verdict.as_json()["findings"] == [{"job_id": "ghost", "kind": "missing"}]
    assert judge([], [], known={"a"}, acknowledged=["a"], since=0, until=1, now=T0).ok


# --- a saved `docker events --format '{{json .}}'` log -------------------------------------


def record(action: str, container: str, job: str, nano: int, **attributes: str) -> str:
    """One line as `docker events --format '{{json .}}'` writes it (docker 24+)."""
    return json.dumps({
        "status": action, "id": container, "from": "claud/busybox:latest", "Type": "container", "Action": action,
        "Actor": {"ID": container, "Attributes": {"claud.job": job, "claud.alloc": f"{job}-1", "claud.slave": "s1",
                                                  "image": "claud/busybox:latest", "name": f"claud-{job}",
                                                  **attributes}},
        "scope": "local", "time": nano // 10**9, "timeNano": nano,
    })


SAVED = [
    record("create", "c1", "j1", 1_000_000_000_000_000_000),
    record("start", "c1", "j1", 1_000_000_001_000_000_000),
    json.dumps({"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {}},
                "time": 1_000_000_001, "timeNano": 1_000_000_001_000_000_001}),
    "",
    record("start", "c2", "j1", 1_000_000_002_500_000_000),
    record("exec_start: sh -c true", "c2", "j1", 1_000_000_002_600_000_000),
    record("kill", "c1", "j1", 1_000_000_003_000_000_000, signal="15"),
    record("die", "c1", "j1", 1_000_000_003_000_000_001, exitCode="143"),
    record("start", "c3", "j2", 1_000_000_004_000_000_000),
    "   ",
]


def test_a_saved_event_log_is_read_line_by_line() -> None:
    events = read_event_log(SAVED)
    assert [(e.action, e.container_id) for e in events] == [
        ("start", "c1"), ("start", "c2"), ("kill", "c1"), ("die", "c1"), ("start", "c3")]
    die = events[3]
    assert (die.at, die.exit_code, die.job_id, die.alloc_id, die.slave_id) == (
        1_000_000_003.0, 143, "j1", "j1-1", "s1")
    assert events[2].signal == 15
    intervals = run_intervals(events)
    assert [(i.container_id, i.start, i.end) for i in intervals] == [
        ("c1", 1_000_000_001.0, 1_000_000_003.0), ("c2", 1_000_000_002.5, math.inf), ("c3", 1_000_000_004.0, math.inf)]
    [overlap] = overlaps(intervals)
    assert overlap.job_id == "j1" and abs(overlap.seconds - 0.5) < 1e-6


@pytest.mark.parametrize(("line", "says"), [
    ("{not json", "line 2 is not JSON"),
    ("[1, 2]", "line 2 is not a JSON object"),
    ('"start"', "line 2 is not a JSON object"),
    ("[" * 100_000, "line 2 is not JSON"),
    (record("start", "c9", "j9", 0).replace('"timeNano": 0', '"timeNano": "soon"'), "line 2: timeNano 'soon'"),
    (record("start", "c9", "j9", 0).replace('"timeNano": 0', '"timeNano": null'), "line 2: timeNano is not"),
    (json.dumps({"Type": "container", "Action": "die", "Actor": {"ID": "c", "Attributes": {"claud.job": "j"}}}),
     "line 2: neither timeNano nor time"),
    (record("start", "c9", "j9", 10**400), "line 2: timeNano is out of range"),
    (record("start", "c9", "j9", 0).replace('"timeNano": 0', '"timeNano": "' + "9" * 5000 + '"'),
     "line 2: timeNano '9999"),
    (json.dumps({"Action": "die", "time": 1e300, "Actor": {"ID": "c", "Attributes": {"claud.job": "j"}}}),
     "line 2: time is out of range"),
])
def test_a_damaged_event_log_is_refused_naming_the_line(line: str, says: str) -> None:
    with pytest.raises(EventLogError, match=f"^{says}"):
        read_event_log([SAVED[1], line])


def test_records_that_are_not_claud_containers_are_skipped_whatever_their_shape() -> None:
    lines = [json.dumps(x) for x in (
        {}, {"Type": "container"}, {"Action": "start"}, {"Action": "start", "Actor": "x"},
        {"Action": "start", "Actor": {"ID": "c", "Attributes": ["claud.job"]}},
        {"Action": "start", "Actor": {"ID": "c", "Attributes": {"image": "x"}}, "timeNano": 5},
    )]
    assert read_event_log(lines) == []
    [event] = read_event_log([json.dumps({"Action": "die", "id": "c", "time": 7,
                                          "Actor": {"Attributes": {"claud.job": "j", "exitCode": "x"}}})])
    assert (event.at, event.exit_code, event.container_id) == (7.0, None, "c")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "Type": st.sampled_from(["container", "network"]) | JSON, "Action": st.sampled_from(sorted(ACTIONS)) | JSON,
    "status": JSON, "id": JSON, "time": JSON, "timeNano": JSON,
    "Actor": st.fixed_dictionaries({}, optional={"ID": JSON, "Attributes": st.dictionaries(
        st.sampled_from(["claud.job", "claud.alloc", "claud.slave", "exitCode", "signal"]), JSON) | JSON}) | JSON,
})


@settings(max_examples=300, deadline=None)
@given(st.lists(FIELDS | JSON, max_size=4))
def test_any_json_line_is_an_event_skipped_or_an_error_naming_its_line(records: list[Any]) -> None:
    lines = [json.dumps(r) for r in records]
    try:
        events = read_event_log(lines)
    except EventLogError as exc:
        assert str(exc).startswith("line ")
        return
    for event in events:
        assert event.action in ACTIONS and event.container_id and event.job_id and math.isfinite(event.at)


# --- instants -------------------------------------------------------------------------------


def test_since_and_until_take_rfc_3339_or_a_duration_ago() -> None:
    assert parse_instant("10m", T0) == T0 - timedelta(minutes=10)
    assert parse_instant("1.5h", T0) == T0 - timedelta(minutes=90)
    assert parse_instant("2026-12-02T13:00:00Z", T0) == T0 - timedelta(hours=1)
    assert parse_instant("2026-12-02T15:00:00+02:00", T0) == T0 - timedelta(hours=1)
    for bad, says in [("2026-12-02T13:00:00", "no UTC offset"), ("yesterday", "neither"), ("-5m", "neither"),
                      ("10 m", "neither"), ("5w", "neither"), ("", "neither")]:
        with pytest.raises(ValueError, match=says):
            parse_instant(bad, T0)


# --- the command, over a saved log and a mocked API -------------------------------------------


def api(jobs: list[dict[str, Any]], events: dict[str, list[dict[str, Any]]] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/jobs":
            return httpx.Response(200, json={"jobs": jobs, "index": 3})
        for job_id, kept in (events or {}).items():
            if path == f"/v1/jobs/{job_id}/events":
                return httpx.Response(200, json={"events": kept, "index": 3})
        return httpx.Response(404, json=fake_wire.error_json("not_found", f"no {path}"))

    return httpx.MockTransport(handle)


def invoke(transport: httpx.MockTransport, *args: str) -> Result:
    config = CliConfig(transport=transport, poll_interval=0, failover_timeout=0)
    return CliRunner().invoke(cli, list(args), obj=config)


def write_log(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


NOW_ISO = datetime.now(UTC).isoformat()


def test_a_clean_history_exits_0(tmp_path: Path) -> None:
    log = write_log(tmp_path, [record("start", "c1", "j1", 10**18), record("die", "c1", "j1", 10**18 + 10**9,
                                                                          exitCode="0")])
    transport = api([fake_wire.job_json(id="j1", state="completed", updated_at=NOW_ISO)])
    acked = tmp_path / "acked"
    acked.write_text("# ids the submitter was given\nj1\n\n")
    result = invoke(transport, "verify", "--docker-events", log, "--acknowledged", str(acked))
    assert result.exit_code == ExitCode.OK, result.output
    assert "1 jobs and 1 containers judged" in result.stdout and "nothing found" in result.stdout
    result = invoke(transport, "-o", "json", "verify", "--docker-events", log)
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is True and verdict["findings"] == [] and verdict["containers"] == 1
    future = invoke(transport, "-o", "json", "verify", "--docker-events", log, "--until", "2999-01-01T00:00:00Z")
    assert json.loads(future.stdout)["until"] < "2999"  # never later than now: an engine would wait for it


def test_every_kind_of_finding_is_reported_job_by_job_with_exit_6(tmp_path: Path) -> None:
    log = write_log(tmp_path, SAVED)
    old = "2026-01-01T00:00:00Z"
    jobs = [fake_wire.job_json(id="j1", state="running", updated_at=NOW_ISO),
            fake_wire.job_json(id="j2", state="starting", updated_at=old),
            fake_wire.job_json(id="j3", state="pending", pending_reason="no slave has 512 cpus free", updated_at=old)]
    transport = api(jobs, {"j1": [{"at": NOW_ISO, "state": "running"}], "j2": [{"at": old, "state": "starting"}],
                           "j3": [{"at": old, "state": "pending"}]})
    acked = tmp_path / "acked"
    acked.write_text("j1\nghost\n")
    args = ["verify", "--docker-events", log, "--acknowledged", str(acked), "--until", "2001-09-10T00:00:00Z"]
    result = invoke(transport, "-o", "json", *args)
    assert result.exit_code == ExitCode.VIOLATIONS == 6, result.output
    verdict = json.loads(result.stdout)
    assert [(f["job_id"], f["kind"]) for f in verdict["findings"]] == [
        ("ghost", "missing"), ("j1", "overlap"), ("j2", "stuck"), ("j3", "unplaceable")]
    assert verdict["counts"] == {"overlap": 1, "missing": 1, "stuck": 1, "unplaceable": 1}
    overlap = verdict["findings"][1]
    assert [c["container_id"] for c in overlap["containers"]] == ["c1", "c2"] and overlap["seconds"] == 0.5
    human = invoke(transport, *args)
    assert human.exit_code == 6
    assert "1 overlap, 1 missing, 1 stuck, 1 unplaceable" in human.stdout
    assert "no slave has 512 cpus free" in human.stdout
    only = invoke(transport, "-o", "json", *args, "--job", "j3")
    assert [f["job_id"] for f in json.loads(only.stdout)["findings"]] == ["j3"]


@pytest.mark.parametrize(("args", "says"), [
    (["--since", "soon"], "'--since'"),
    (["--until", "2026-12-02T13:00:00"], "no UTC offset"),
    (["--since", "1m", "--until", "2m"], "--since is after --until"),
    (["--stuck-after", "-1"], "--stuck-after"),
    (["--stuck-after", "nan"], "must be a number"),
    (["--docker-events", "/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl"),
    (["--docker-host", "unix:///x"], "not both"),
    (["--docker-host", "garbage"], "'garbage' is not an engine URL"),
    (["--job", "../x"], "'../x' is not a job id"),
    (["--docker-host", "tcp://a b"], "is not an engine URL"),
])
def test_bad_options_exit_2_naming_the_option(tmp_path: Path, args: list[str], says: str) -> None:
    log = write_log(tmp_path, SAVED)
    base = [] if "--docker-events" in args or "not an engine URL" in says else ["--docker-events", log]
    result = invoke(api([]), "verify", *base, *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert says in result.stderr


def test_a_bad_acknowledged_file_or_event_log_exits_2_naming_the_line(tmp_path: Path) -> None:
    acked = tmp_path / "acked"
    acked.write_text("j1\nnot an id\n")
    result = invoke(api([]), "verify", "--docker-events", write_log(tmp_path, SAVED), "--acknowledged", str(acked))
    assert result.exit_code == ExitCode.USAGE and "line 2" in result.stderr and "not a job id" in result.stderr
    result = invoke(api([]), "verify", "--docker-events", write_log(tmp_path, [SAVED[0], "{"]))
    assert result.exit_code == ExitCode.USAGE and "line 2 is not JSON" in result.stderr


def test_an_unreachable_engine_exits_3(tmp_path: Path) -> None:
    result = invoke(api([]), "verify", "--docker-host", f"unix://{tmp_path}/no-docker.sock")
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    assert f"{tmp_path}/no-docker.sock" in result.stderr


def test_a_container_interval_reads_as_the_campaign_wrote_it() -> None:
    # tests/support/docker_events re-exports the judge under the campaign's names.
    from support.docker_events import RunInterval

    assert RunInterval is ContainerInterval
    interval = ContainerInterval("abcdef0123456789", "j", "j-1", "s1", 1.0, 2.5, exit_code=0)
    assert interval.describe() == "abcdef012345 alloc=j-1 slave=s1 from 1.000 to 2.500 exit=0"
