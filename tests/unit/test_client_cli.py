"""The `claud` CLI through click's CliRunner, its client wired to an httpx.MockTransport.

The injection point is click's ``obj``: a CliConfig carrying the transport
(and a zero poll interval, so ``run --wait`` does not sleep).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from claud.api.protocol import ALLOC_ID_HEADER
from claud.client.cli import CliConfig, ExitCode, cli
from support import fake_wire
from support.fake_wire import NOW

Handler = Callable[[httpx.Request], httpx.Response]


job_json = partial(fake_wire.job_json, state="running", node_id="s1")
error_json = fake_wire.error_json


class Cluster:
    """Routes ``(method, path)`` to canned answers and records every request."""

    def __init__(self, routes: dict[tuple[str, str], Handler | Any] | None = None) -> None:
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json=error_json("not_found", f"no {request.url.path}"))
        return route(request) if callable(route) else httpx.Response(200, json=route)

    def invoke(self, *args: str, env: dict[str, str] | None = None, **options: Any) -> Result:
        config = CliConfig(transport=httpx.MockTransport(self), poll_interval=0, failover_timeout=0)
        return CliRunner().invoke(cli, list(args), obj=config, env=env, **options)


def created(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json=job_json(state="pending", **json.loads(request.content)))


def polled(*views: dict[str, Any]) -> Handler:
    remaining = list(views)
    return lambda request: httpx.Response(
        200, json=remaining.pop(0) if len(remaining) > 1 else remaining[0]
    )


# --- listing and showing ---------------------------------------------------------------


LISTING = {
    "jobs": [
        job_json(),
        job_json(
            id="j2",
            name="batchy",
            state="pending",
            node_id=None,
            pending_reason="no slave has 4 cpus free",
        ),
    ],
    "index": 12,
}


def test_jobs_prints_a_table() -> None:
    result = Cluster({("GET", "/v1/jobs"): LISTING}).invoke("jobs")
    assert result.exit_code == 0, result.output
    header, first, second = result.stdout.splitlines()
    assert header.split()[:4] == ["ID", "NAME", "TYPE", "STATE"]
    assert first.split()[:5] == ["j1", "hello", "batch", "running", "s1"]
    assert "no slave has 4 cpus free" in second
    assert "\x1b[" not in result.stdout  # no colour off a terminal
    assert result.stderr == ""


def test_jobs_json_is_pure_json_on_stdout() -> None:
    cluster = Cluster({("GET", "/v1/jobs"): LISTING})
    result = cluster.invoke("--output", "json", "jobs", "--state", "pending")
    assert result.exit_code == 0
    jobs = json.loads(result.stdout)
    assert [j["id"] for j in jobs] == ["j1", "j2"]
    assert cluster.requests[0].url.params["state"] == "pending"


def test_job_shows_details_and_events() -> None:
    events = [
        {"at": NOW, "state": "pending", "message": "submitted"},
        {"at": NOW, "state": "running", "node_id": "s1", "message": "[bold]started"},
    ]
    result = Cluster({("GET", "/v1/jobs/j1"): job_json(events=events)}).invoke("job", "j1")
    assert result.exit_code == 0
    assert "claud/busybox:latest" in result.stdout
    assert "Events" in result.stdout
    assert "submitted" in result.stdout
    assert "[bold]started" in result.stdout  # user text is never taken for markup


def test_an_unknown_job_exits_4_with_one_line_on_stderr() -> None:
    cluster = Cluster(
        {
            ("GET", "/v1/jobs/nope"): lambda r: httpx.Response(
                404, json=error_json("not_found", "no job 'nope'")
            )
        }
    )
    result = cluster.invoke("job", "nope")
    assert result.exit_code == ExitCode.NOT_FOUND == 4
    assert result.stdout == ""
    assert result.stderr.strip() == "Error: no job 'nope'"


def test_nodes_lists_drains_and_undrains() -> None:
    slave = {
        "id": "s1",
        "role": "slave",
        "address": "10.0.0.2:8701",
        "state": "alive",
        "labels": {"zone": "a"},
        "resources": {
            "cpu_total": 4,
            "cpu_free": 3.5,
            "memory_mb_total": 2048,
            "memory_mb_free": 1024,
        },
        "last_heartbeat": NOW,
    }
    cluster = Cluster(
        {
            ("GET", "/v1/nodes"): {"nodes": [slave], "index": 3},
            ("POST", "/v1/nodes/s1/drain"): {**slave, "state": "draining"},
            ("POST", "/v1/nodes/s1/undrain"): slave,
        }
    )
    listed = cluster.invoke("nodes")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[1].split()[:6] == [
        "s1",
        "slave",
        "10.0.0.2:8701",
        "alive",
        "3.5/4",
        "1024/2048",
    ]
    drained = cluster.invoke("nodes", "drain", "s1")
    assert (drained.exit_code, drained.stdout.strip()) == (0, "node s1 draining")
    undrained = cluster.invoke("-o", "json", "nodes", "undrain", "s1")
    assert json.loads(undrained.stdout)["state"] == "alive"
    assert cluster.invoke("nodes", "drain", "s9").exit_code == ExitCode.NOT_FOUND
    assert next(r.content for r in cluster.requests if r.url.path.endswith("/drain")) == b""


def test_nodes_drain_sends_the_deadline_and_refuses_a_bad_one() -> None:
    slave = {"id": "s1", "role": "slave", "address": "10.0.0.2:8701", "state": "draining"}
    cluster = Cluster({("POST", "/v1/nodes/s1/drain"): slave})
    drained = cluster.invoke("nodes", "drain", "s1", "--deadline", "60")
    assert drained.exit_code == 0, drained.stderr
    assert json.loads(cluster.requests[-1].content) == {"deadline": 60.0}
    from_env = cluster.invoke("nodes", "drain", "s1", env={"CLAUD_DRAIN_DEADLINE": "2.5"})
    assert from_env.exit_code == 0 and json.loads(cluster.requests[-1].content) == {"deadline": 2.5}
    sent = len(cluster.requests)
    for bad in ("-1", "nan", "inf", "soon", "1e9"):
        result = cluster.invoke("nodes", "drain", "s1", "--deadline", bad)
        assert result.exit_code == 2, (bad, result.stdout)
    assert len(cluster.requests) == sent  # nothing was sent for a bad deadline


def test_cluster_table_and_json() -> None:
    view = {
        "leader_id": 1,
        "leader_address": "127.0.0.1:8700",
        "term": 3,
        "commit_index": 42,
        "quorum": 2,
        "masters": [
            {"id": 1, "address": "127.0.0.1:8700", "role": "leader", "match_index": 42},
            {"id": 2, "address": "127.0.0.1:8710", "role": "follower", "reachable": False},
        ],
    }
    cluster = Cluster({("GET", "/v1/cluster"): view})
    table = cluster.invoke("cluster")
    assert "1 (127.0.0.1:8700)" in table.stdout
    assert "127.0.0.1:8710" in table.stdout
    assert json.loads(cluster.invoke("-o", "json", "cluster").stdout)["commit_index"] == 42


def test_logs_prints_the_output_verbatim() -> None:
    cluster = Cluster(
        {
            ("GET", "/v1/jobs/j1"): polled(
                job_json(alloc_id="j1-1"), job_json(state="completed", alloc_id="j1-1")
            ),
            ("GET", "/v1/jobs/j1/logs"): lambda r: httpx.Response(200, text="hi\nthere\n"),
        }
    )
    result = cluster.invoke("logs", "-f", "j1", "--tail", "5")
    assert (result.exit_code, result.stdout) == (0, "hi\nthere\n")
    (logs,) = [r for r in cluster.requests if r.url.path.endswith("/logs")]
    assert (logs.url.params["follow"], logs.url.params["tail"]) == ("true", "5")


def test_logs_follow_prints_each_attempt_and_notes_it_on_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("claud.client._client.DEFAULT_POLL_INTERVAL", 0)
    views = [
        job_json(alloc_id="j1-1", attempts=1),
        job_json(state="pending", alloc_id="j1-1", attempts=1),  # restarting after a failure
        job_json(alloc_id="j1-2", attempts=2),
        job_json(state="failed", alloc_id="j1-2", attempts=2, exit_code=1),
    ]
    output = {"j1-1": "first try\n", "j1-2": "second try\n"}
    current: dict[str, str] = {}

    def master(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/j1":
            view = views.pop(0) if len(views) > 1 else views[0]
            current["alloc"] = view["alloc_id"]
            return httpx.Response(200, json=view)
        alloc = current["alloc"]
        return httpx.Response(200, text=output[alloc], headers={ALLOC_ID_HEADER: alloc})

    config = CliConfig(transport=httpx.MockTransport(master), poll_interval=0, failover_timeout=0)
    result = CliRunner().invoke(cli, ["logs", "-f", "j1"], obj=config)
    assert (result.exit_code, result.stdout) == (0, "first try\nsecond try\n")
    assert "following attempt 2 (j1-2)" in result.stderr


def test_retries_are_noted_on_stderr_and_the_command_still_succeeds() -> None:
    answers = iter([httpx.Response(503, json=error_json("no_leader", "election"), headers={"Retry-After": "0"})])

    def master(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or httpx.Response(200, json={"jobs": [], "index": 1})

    config = CliConfig(transport=httpx.MockTransport(master), poll_interval=0, failover_timeout=5)
    result = CliRunner().invoke(cli, ["-o", "json", "jobs"], obj=config)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    assert "election; retrying" in result.stderr


def test_the_completion_script_is_produced() -> None:
    result = CliRunner().invoke(
        cli, [], prog_name="claud", env={"_CLAUD_COMPLETE": "bash_source"}, standalone_mode=True
    )
    assert result.exit_code == 0
    assert "_claud_completion()" in result.stdout
    assert "complete -o nosort -F _claud_completion claud" in result.stdout


def test_stop_and_events() -> None:
    change = {"type": "job", "id": "j1", "state": "stopped", "at": NOW, "node_id": "s1",
              "message": "stopped by user", "index": 9}  # fmt: skip
    stream = f": connected\n\nevent: job\ndata: {json.dumps(change)}\n\n"
    cluster = Cluster(
        {
            ("DELETE", "/v1/jobs/j1"): lambda r: httpx.Response(
                202, json=job_json(state="stopping")
            ),
            ("GET", "/v1/events"): lambda r: httpx.Response(200, text=stream),
        }
    )
    assert cluster.invoke("stop", "j1").stdout.strip() == "job j1 stopping"
    line = cluster.invoke("events").stdout.strip()
    assert line == "2026-01-01 00:00:00Z job j1 stopped on s1: stopped by user"
    event = json.loads(cluster.invoke("-o", "json", "events").stdout)
    assert event == change


# --- run -----------------------------------------------------------------------------------


def test_run_from_flags_builds_the_spec() -> None:
    cluster = Cluster({("POST", "/v1/jobs"): created})
    result = cluster.invoke(
        "run", "--image", "registry:5000/team/web:1.2", "--cpu", "0.5", "--memory-mb", "128",
        "--restart", "on-failure", "--max-retries", "2", "--type", "service",
        "-e", "A=1", "--env", "B=x=y", "--constraint", "zone=a",
        "--", "sh", "-c", "echo hi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "j1\n"
    assert json.loads(cluster.requests[0].content) == {
        "name": "web",
        "image": "registry:5000/team/web:1.2",
        "command": ["sh", "-c", "echo hi"],
        "resources": {"cpu": 0.5, "memory_mb": 128},
        "restart": {"policy": "on-failure", "max_retries": 2},
        "type": "service",
        "env": {"A": "1", "B": "x=y"},
        "constraints": {"labels": {"zone": "a"}},
    }


def test_run_count_asks_for_replicas_and_a_bad_count_names_the_field() -> None:
    cluster = Cluster({("POST", "/v1/jobs"): created})
    result = cluster.invoke("run", "--image", "claud/busybox:latest", "--type", "service", "--count", "3",
                            "--", "httpd", "-f")
    assert result.exit_code == 0, result.output
    assert json.loads(cluster.requests[0].content)["count"] == 3
    bad = cluster.invoke("run", "--image", "claud/busybox:latest", "--count", "0", "--", "true")
    assert bad.exit_code != 0 and "count" in bad.output, bad.output
    assert len(cluster.requests) == 1  # refused locally


def test_run_from_a_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(
        json.dumps({"name": "hello", "image": "claud/busybox:latest", "command": ["true"]})
    )
    cluster = Cluster({("POST", "/v1/jobs"): created})
    result = cluster.invoke("-o", "json", "run", str(spec))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["command"] == ["true"]
    assert cluster.requests[0].headers["Idempotency-Key"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "a job spec is a JSON object"),
        (
            '{"name": "x", "image": "busybox", "memroy_mb": 64}',
            "memroy_mb: Extra inputs are not permitted",
        ),
        (
            '{"name": "x", "image": "Not An Image"}',
            "image: 'Not An Image' is not a valid Docker image reference",
        ),
    ],
)
def test_a_bad_spec_file_is_one_line_and_exit_2_without_a_request(
    tmp_path: Path, content: str, expected: str
) -> None:
    spec = tmp_path / "job.json"
    spec.write_text(content)
    cluster = Cluster()
    result = cluster.invoke("run", str(spec))
    assert result.exit_code == ExitCode.USAGE == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert cluster.requests == []


def test_a_missing_spec_file_exits_2(tmp_path: Path) -> None:
    result = Cluster().invoke("run", str(tmp_path / "missing.json"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_run_usage_errors_exit_2() -> None:
    cluster = Cluster()
    assert cluster.invoke("run").exit_code == 2
    assert cluster.invoke("run", "job.json", "--cpu", "1").exit_code == 2
    assert cluster.invoke("run", "--image", "busybox", "--env", "NOEQUALS").exit_code == 2
    assert cluster.requests == []


def test_a_422_from_the_masters_prints_the_field_and_exits_2() -> None:
    refusal = error_json("invalid_spec", "no slave could ever fit 512 cpus", field="resources.cpu")
    cluster = Cluster({("POST", "/v1/jobs"): lambda r: httpx.Response(422, json=refusal)})
    result = cluster.invoke("run", "--image", "busybox", "--cpu", "512")
    assert result.exit_code == 2
    assert "resources.cpu: no slave could ever fit 512 cpus" in result.stderr


def test_run_wait_shows_progress_on_stderr_and_exits_0_when_completed() -> None:
    events = [{"at": NOW, "state": "pending"}, {"at": NOW, "state": "running", "node_id": "s1"}]
    done = [*events, {"at": NOW, "state": "completed", "node_id": "s1"}]
    cluster = Cluster(
        {
            ("POST", "/v1/jobs"): created,
            ("GET", "/v1/jobs/j1"): polled(
                job_json(state="pending", events=events[:1]),
                job_json(state="running", events=events),
                job_json(state="completed", exit_code=0, events=done),
            ),
        }
    )
    result = cluster.invoke("run", "--image", "busybox", "--wait", "--", "true")
    assert result.exit_code == 0, result.output
    assert result.stdout == "j1\n"
    progress = result.stderr.splitlines()
    assert [line.split()[4] for line in progress[:3]] == ["pending", "running", "completed"]
    assert "running on s1" in progress[1]
    assert progress[-1] == "job j1 completed (exit code 0)"


@pytest.mark.parametrize(("exit_code", "expected"), [(3, 3), (None, 1), (0, 1)])
def test_run_wait_exits_with_the_failed_jobs_exit_code(
    exit_code: int | None, expected: int
) -> None:
    cluster = Cluster(
        {
            ("POST", "/v1/jobs"): created,
            ("GET", "/v1/jobs/j1"): job_json(
                state="failed", exit_code=exit_code, message="container exited"
            ),
        }
    )
    result = cluster.invoke("-o", "json", "run", "--image", "busybox", "--wait")
    assert result.exit_code == expected
    assert json.loads(result.stdout)["state"] == "failed"  # only the final job: pure JSON
    assert "job j1 failed" in result.stderr


# --- reaching the cluster ------------------------------------------------------------------------


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_unreachable_masters_exit_3() -> None:
    result = Cluster({("GET", "/v1/jobs"): refuse}).invoke("--masters", "m1:8700,m2:8700", "jobs")
    assert result.exit_code == ExitCode.UNAVAILABLE == 3
    assert "m1:8700" in result.stderr and "m2:8700" in result.stderr


def test_no_leader_exits_3() -> None:
    cluster = Cluster(
        {
            ("POST", "/v1/jobs"): lambda r: httpx.Response(
                503, json=error_json("no_leader", "no quorum")
            )
        }
    )
    result = cluster.invoke("run", "--image", "busybox")
    assert result.exit_code == 3
    assert "no quorum" in result.stderr


def test_unauthorized_exits_5() -> None:
    cluster = Cluster(
        {
            ("GET", "/v1/jobs"): lambda r: httpx.Response(
                401, json=error_json("unauthorized", "bad token")
            )
        }
    )
    result = cluster.invoke("--token", "wrong", "jobs")
    assert result.exit_code == ExitCode.UNAUTHORIZED == 5
    assert cluster.requests[0].headers["Authorization"] == "Bearer wrong"


def test_masters_and_token_come_from_the_environment() -> None:
    cluster = Cluster({("GET", "/v1/jobs"): {"jobs": [], "index": 0}})
    result = cluster.invoke(
        "jobs", env={"CLAUD_MASTERS": "10.1.2.3:9000", "CLAUD_TOKEN": "envtoken"}
    )
    assert result.exit_code == 0
    request = cluster.requests[0]
    assert (request.url.host, request.url.port) == ("10.1.2.3", 9000)
    assert request.headers["Authorization"] == "Bearer envtoken"


def test_the_token_comes_from_a_file_so_that_no_command_line_shows_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  filetoken\n")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    listing = {("GET", "/v1/jobs"): {"jobs": [], "index": 0}}

    def sent(*args: str, env: dict[str, str] | None = None) -> str:
        cluster = Cluster(listing)
        result = cluster.invoke(*args, "jobs", env={"CLAUD_TOKEN": None, "CLAUD_TOKEN_FILE": None, **(env or {})})
        assert result.exit_code == 0, result.output
        return cluster.requests[0].headers["Authorization"]

    assert sent("--token-file", str(token_file)) == "Bearer filetoken"
    assert sent(env={"CLAUD_TOKEN_FILE": str(token_file)}) == "Bearer filetoken"
    # The command line beats the environment, whichever of the two it names.
    assert sent("--token-file", str(token_file), env={"CLAUD_TOKEN": "envtoken"}) == "Bearer filetoken"
    assert sent("--token", "flagtoken", env={"CLAUD_TOKEN_FILE": str(token_file)}) == "Bearer flagtoken"
    for args, env, expected in (
        (["--token-file", str(tmp_path / "missing")], {}, "cannot read"),
        (["--token-file", str(empty)], {}, "is empty"),
        (["--token", "t", "--token-file", str(token_file)], {}, "give the token once"),
        ([], {"CLAUD_TOKEN": "t", "CLAUD_TOKEN_FILE": str(token_file)}, "give the token once"),
    ):
        cluster = Cluster(listing)
        result = cluster.invoke(*args, "jobs", env=env)
        assert result.exit_code == ExitCode.USAGE, (args, env, result.output)
        assert expected in result.output, result.output
        assert cluster.requests == []


def test_a_bad_masters_option_is_a_usage_error() -> None:
    assert Cluster().invoke("--masters", "ftp://x", "jobs").exit_code == 2


def test_the_installed_entry_point_runs() -> None:
    claud = Path(sys.executable).with_name("claud")
    result = subprocess.run([str(claud), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("run", "jobs", "job", "logs", "stop", "nodes", "cluster", "events"):
        assert f"  {command} " in result.stdout


def test_a_write_whose_outcome_is_unknown_is_retried_with_the_same_idempotency_key() -> None:
    """503 outcome_unknown: the master cannot tell whether the job was created, so the
    CLI asks again with the same key, and the masters answer with the one job."""
    keys: list[str | None] = []
    answers = iter([
        httpx.Response(503, json=fake_wire.error_json("outcome_unknown", "no answer from leader 1 after forwarding"),
                       headers={"Retry-After": "0"}),
        httpx.Response(200, json=fake_wire.job_json(id="j1")),
    ])

    def master(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("Idempotency-Key"))
        return next(answers)

    config = CliConfig(transport=httpx.MockTransport(master), poll_interval=0, failover_timeout=5)
    result = CliRunner().invoke(cli, ["-o", "json", "run", "--image", "claud/busybox:latest", "--", "true"], obj=config)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["id"] == "j1"
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1]


def test_jobs_and_nodes_follow_every_page() -> None:
    def pages(key: str, items: list[dict[str, Any]]) -> Handler:
        def handle(request: httpx.Request) -> httpx.Response:
            start = int(request.url.params.get("next", "0"))
            end = start + 1  # one item per page, whatever the limit
            next_cursor = str(end) if end < len(items) else None
            return httpx.Response(200, json={key: items[start:end], "index": 3, "next": next_cursor})

        return handle

    slaves = [{"id": f"s{i}", "role": "slave", "address": f"h{i}:1", "state": "alive"} for i in range(3)]
    cluster = Cluster({
        ("GET", "/v1/jobs"): pages("jobs", LISTING["jobs"]),
        ("GET", "/v1/nodes"): pages("nodes", slaves),
    })
    result = cluster.invoke("-o", "json", "jobs")
    assert result.exit_code == 0, result.output
    assert [j["id"] for j in json.loads(result.stdout)] == ["j1", "j2"]
    result = cluster.invoke("-o", "json", "nodes")
    assert result.exit_code == 0, result.output
    assert [n["id"] for n in json.loads(result.stdout)] == ["s0", "s1", "s2"]
    assert [r.url.params.get("next") for r in cluster.requests] == [None, "1", None, "1", "2"]


MEMBERS = {
    "cluster_id": "c0ffee",
    "configuration_index": 7,
    "members": [
        {"id": 1, "address": "10.0.0.1:8700", "role": "voter", "match_index": 42, "member_id": "aa11"},
        {"id": 4, "address": "10.0.0.4:8700", "role": "learner", "match_index": 3},
    ],
}


def test_operator_members_lists_adds_and_removes() -> None:
    cluster = Cluster(
        {
            ("GET", "/v1/operator/members"): MEMBERS,
            ("POST", "/v1/operator/members"): MEMBERS,
            ("DELETE", "/v1/operator/members/3"): MEMBERS,
        }
    )
    table = cluster.invoke("operator", "members")
    assert table.exit_code == 0, table.stderr
    assert "c0ffee" in table.stdout and "learner" in table.stdout and "10.0.0.4:8700" in table.stdout
    added = cluster.invoke("operator", "members", "add", "4", "10.0.0.4:8700")
    assert added.exit_code == 0, added.stderr
    assert json.loads(cluster.requests[-1].content) == {"id": 4, "address": "10.0.0.4:8700"}
    removed = cluster.invoke("-o", "json", "operator", "members", "remove", "3")
    assert removed.exit_code == 0 and json.loads(removed.stdout)["configuration_index"] == 7
    assert cluster.requests[-1].method == "DELETE"
    sent = len(cluster.requests)
    assert cluster.invoke("operator", "members", "add", "zero", "h:1").exit_code == 2
    assert len(cluster.requests) == sent


def test_operator_members_says_why_a_change_is_refused() -> None:
    cluster = Cluster(
        {("POST", "/v1/operator/members"): lambda r: httpx.Response(
            409, json=error_json("conflict", "a configuration change is not committed yet"))}
    )
    result = cluster.invoke("operator", "members", "add", "5", "10.0.0.5:8700")
    assert result.exit_code != 0 and "not committed yet" in result.stderr


def test_cluster_shows_the_members() -> None:
    view = {"leader_id": 1, "leader_address": "10.0.0.1:8700", "term": 3, "commit_index": 42, "quorum": 1,
            "masters": [{"id": 1, "address": "10.0.0.1:8700", "role": "leader", "match_index": 42}],
            "cluster_id": "c0ffee", "members": MEMBERS["members"]}
    table = Cluster({("GET", "/v1/cluster"): view}).invoke("cluster")
    assert table.exit_code == 0 and "Members" in table.stdout and "c0ffee" in table.stdout


# --- the flags people reach for ---------------------------------------------------------


def test_output_is_accepted_after_the_subcommand_too() -> None:
    cluster = Cluster({("GET", "/v1/jobs"): LISTING})
    for args in (["-o", "json", "jobs"], ["jobs", "-o", "json"], ["jobs", "--output=json"],
                 ["-o", "table", "jobs", "-o", "json"]):
        result = cluster.invoke(*args)
        assert result.exit_code == 0, (args, result.output)
        assert [job["id"] for job in json.loads(result.stdout)] == ["j1", "j2"], args
    assert cluster.invoke("jobs", "-o", "yaml").exit_code == ExitCode.USAGE


def test_stop_timeout_and_idempotency_key_are_flags_of_run() -> None:
    cluster = Cluster({("POST", "/v1/jobs"): created})
    result = cluster.invoke("run", "--image", "claud/busybox:latest", "--stop-timeout", "12.5",
                            "--idempotency-key", "deploy-42", "--", "true")
    assert result.exit_code == 0, result.output
    sent = json.loads(cluster.requests[0].content)
    assert (sent["stop_timeout"], sent["idempotency_key"]) == (12.5, "deploy-42")
    bad = cluster.invoke("run", "--image", "claud/busybox:latest", "--stop-timeout", "-1", "--", "true")
    assert bad.exit_code == ExitCode.USAGE and "stop_timeout" in bad.output


def test_run_wait_says_at_once_why_a_job_cannot_be_placed_and_gives_up_after_its_timeout() -> None:
    waiting = job_json(state="pending", node_id=None, pending_reason="larger than any slave: needs 64.0 cpu")
    cluster = Cluster({("POST", "/v1/jobs"): created, ("GET", "/v1/jobs/j1"): waiting})
    result = cluster.invoke("run", "--image", "claud/busybox:latest", "--cpu", "64", "--wait", "--timeout", "0.2",
                            "--", "true")
    assert result.exit_code == ExitCode.TIMED_OUT, result.output
    assert "cannot be placed yet: larger than any slave: needs 64.0 cpu" in result.stderr
    assert result.stderr.count("cannot be placed yet") == 1  # once, not at every poll
    assert "gave up waiting after 0.2s" in result.stderr
    assert cluster.invoke("run", "--image", "claud/busybox:latest", "--timeout", "1", "--", "true").exit_code == 2


def test_events_filters_by_job_slave_and_kind() -> None:
    def sse(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'state': 'x', 'at': NOW, **data})}\n\n"

    stream = "".join([
        sse("job", id="j1", node_id="s1"), sse("job", id="j2", node_id="s2"), sse("node", id="s1"),
        sse("node", id="s2"), sse("job", id="j3", node_id=None),
    ])
    cluster = Cluster({("GET", "/v1/events"): lambda r: httpx.Response(200, text=stream)})

    def shown(*filters: str) -> list[str]:
        result = cluster.invoke("events", "-o", "json", *filters)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.stdout.splitlines()]

    assert shown() == ["j1", "j2", "s1", "s2", "j3"]
    assert shown("--job", "j1", "--job", "j3") == ["j1", "j3"]
    assert shown("--node", "s1") == ["j1", "s1"]
    assert shown("--node", "s1", "--type", "node") == ["s1"]
    assert shown("--type", "job") == ["j1", "j2", "j3"]
    assert shown("--job", "s1") == []  # a slave's id is not a job's


def test_a_table_in_a_pipe_is_one_line_per_row_without_trailing_padding() -> None:
    long_reason = "no slave has 4 cpus free; " * 12
    listing = {**LISTING, "jobs": [LISTING["jobs"][0], {**LISTING["jobs"][1], "pending_reason": long_reason}]}
    result = Cluster({("GET", "/v1/jobs"): listing}).invoke("jobs")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines  # the header and one line per job: nothing wrapped
    assert all(line == line.rstrip() for line in lines)
    assert long_reason.strip() in lines[2]


def test_logs_of_an_earlier_attempt() -> None:
    cluster = Cluster({("GET", "/v1/jobs/j1/logs"): lambda r: httpx.Response(
        200, text="second try\n", headers={ALLOC_ID_HEADER: "j1-2"})})
    result = cluster.invoke("logs", "j1", "--attempt", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout == "second try\n"
    assert cluster.requests[-1].url.params["attempt"] == "2"
    assert cluster.invoke("logs", "j1", "--attempt", "2", "-f").exit_code == ExitCode.USAGE
    assert cluster.invoke("logs", "j1", "--attempt", "0").exit_code == ExitCode.USAGE


def test_events_trace_streams_one_masters_trace_and_resumes_after_an_id() -> None:
    def sse(event_id: int, kind: str, **data: Any) -> str:
        body = {**data, "id": event_id, "at": 1_796_220_000.5, "master": 2, "kind": kind}
        return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(body)}\n\n"

    stream = ": connected\n\n" + sse(7, "role", role="leader", term=3) + sse(8, "vote.request", peer=1) \
        + sse(9, "job", job="j1", state="running", slave="s1")
    cluster = Cluster({("GET", "/v1/cluster/trace"): lambda r: httpx.Response(200, text=stream)})
    result = cluster.invoke("events", "--trace", "-o", "json")
    assert result.exit_code == 0, result.output
    assert [(e["id"], e["type"]) for e in map(json.loads, result.stdout.splitlines())] == [
        (7, "role"), (8, "vote.request"), (9, "job")]
    assert "last-event-id" not in cluster.requests[-1].headers

    human = cluster.invoke("events", "--trace", "--after", "6", "--type", "vote")
    assert human.exit_code == 0, human.output
    assert human.stdout.splitlines() == ["14:00:00.500 master 2 vote.request peer=1"]
    assert cluster.requests[-1].headers["last-event-id"] == "6"
    assert cluster.invoke("events", "--trace", "--job", "j1", "-o", "json").stdout.count("\n") == 1
    assert cluster.invoke("events", "--after", "6").exit_code == ExitCode.USAGE


def test_events_trace_all_masters_reads_the_merged_trace_and_resumes_by_cursor() -> None:
    def sse(cursor: str, master: int, event_id: int, kind: str, **data: Any) -> str:
        body = {**data, "id": event_id, "at": 1_796_220_000.5, "master": master, "kind": kind}
        return f"id: {cursor}\nevent: {kind}\ndata: {json.dumps(body)}\n\n"

    stream = (": connected\n\nevent: status\ndata: " + json.dumps({"master": 1, "role": "leader", "term": 3}) + "\n\n"
              + sse("1:7", 1, 7, "role", role="leader", term=3) + sse("1:7,2:40", 2, 40, "role", role="follower"))
    cluster = Cluster({("GET", "/v1/cluster/trace"): lambda r: httpx.Response(200, text=stream)})
    result = cluster.invoke("events", "--trace", "--all-masters", "--after", "1:6,2:39", "-o", "json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["type"], e["master"]) for e in lines] == [("status", 1), ("role", 1), ("role", 2)]
    assert lines[-1]["cursor"] == "1:7,2:40" and lines[-1]["id"] == 40
    assert cluster.requests[-1].url.params["masters"] == "all"
    assert cluster.requests[-1].headers["last-event-id"] == "1:6,2:39"
    assert cluster.invoke("events", "--trace", "--all-masters", "--after", "7").exit_code == ExitCode.USAGE
    assert cluster.invoke("events", "--all-masters").exit_code == ExitCode.USAGE


def test_events_resume_after_an_event_id() -> None:
    stream = "id: 12.1\nevent: job\ndata: " + json.dumps(
        {"type": "job", "id": "j1", "state": "running", "at": NOW, "event_id": "12.1"}) + "\n\n"
    cluster = Cluster({("GET", "/v1/events"): lambda r: httpx.Response(200, text=stream)})
    result = cluster.invoke("events", "--after", "12.0", "-o", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["event_id"] == "12.1"
    assert cluster.requests[-1].headers["last-event-id"] == "12.0"
    assert cluster.invoke("events", "--after", "12").exit_code == ExitCode.USAGE
    assert cluster.invoke("events", "--trace", "--after", "12.0").exit_code == ExitCode.USAGE


# --- replicas and versions ------------------------------------------------------------------------


def alloc_json(index: int, **fields: Any) -> dict[str, Any]:
    alloc = {"id": f"j1.{index}-1" if index else "j1-1", "index": index, "version": 3, "state": "running",
             "slave_id": f"s{index + 1}", "attempt": 1, "updated_at": NOW}
    alloc.update(fields)
    return alloc


def http_port(address: str | None) -> dict[str, Any]:
    return {"name": "http", "container": 8080, "host": 0, "host_port": 21417 if address else None, "address": address}


REPLICATED = job_json(
    type="service", count=3, version=3, desired=3, running=2, state="pending",
    ports=[http_port("10.0.0.1:21417")], check={"http": "/healthz", "port": "http"}, health="healthy",
    rollout={"version": 3, "state": "running", "message": "1 of 3 replaced", "updated_at": NOW},
    allocations=[
        alloc_json(0, health="healthy", ports=[http_port("10.0.0.1:21417")]),
        alloc_json(1, version=2, health="unhealthy", ports=[http_port("10.0.0.2:20001")]),
        alloc_json(2, id=None, state="pending", slave_id=None, attempt=0, ports=[http_port(None)],
                   pending_reason="spread: every slave that fits runs one already"),
    ],
    events=[{"at": NOW, "state": "running", "node_id": "s2", "attempt": 1, "index": 1, "message": "started"}],
)


def test_jobs_shows_running_over_desired() -> None:
    listing = {"jobs": [REPLICATED, *LISTING["jobs"]], "index": 12}
    result = Cluster({("GET", "/v1/jobs"): listing}).invoke("jobs")
    assert result.exit_code == 0, result.output
    header, replicated, running, pending = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TYPE", "STATE", "NODE", "RUNNING", "ATTEMPTS", "EXIT", "AGE", "INFO"]
    assert replicated.split()[:6] == ["j1", "hello", "service", "pending", "s1", "2/3"]
    # A view without the numbers (a master from before replicas): its one allocation runs when the job does.
    assert running.split()[5] == "1/1" and pending.split()[5] == "0/1"


def test_job_shows_the_version_the_rollout_and_one_line_per_allocation() -> None:
    result = Cluster({("GET", "/v1/jobs/j1"): REPLICATED}).invoke("job", "j1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "Version      3" in lines and "Replicas     2/3 running" in lines
    assert "Rollout      v3 running: 1 of 3 replaced" in lines
    assert "Port http    10.0.0.1:21417 -> container 8080/tcp" in lines  # index 0's, as before
    start = lines.index("Allocations")
    assert lines[start + 1].split() == ["INDEX", "ID", "VERSION", "STATE", "SLAVE", "HEALTH", "ADDRESSES", "INFO"]
    assert [line.split() for line in lines[start + 2:start + 5]] == [
        ["0", "j1-1", "3", "running", "s1", "healthy", "http=10.0.0.1:21417", "-"],
        ["1", "j1.1-1", "2", "running", "s2", "unhealthy", "http=10.0.0.2:20001", "-"],
        ["2", "-", "3", "pending", "-", "-", "-", *"spread: every slave that fits runs one already".split()],
    ]
    events = lines.index("Events")
    assert lines[events + 1].split() == ["TIME", "STATE", "INDEX", "ATTEMPT", "NODE", "MESSAGE"]
    assert lines[events + 2].split()[2:] == ["running", "1", "1", "s2", "started"]


def test_job_with_one_allocation_keeps_its_lines() -> None:
    single = job_json(alloc_id="j1-1", attempts=1, running=1, desired=1, allocations=[alloc_json(0, version=0)],
                      events=[{"at": NOW, "state": "running", "node_id": "s1", "attempt": 1}])
    result = Cluster({("GET", "/v1/jobs/j1"): single}).invoke("job", "j1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for line in ("ID           j1", "State        running", "Version      0", "Replicas     1/1 running",
                 "Node         s1", "Attempts     1"):
        assert line in lines, line
    assert not any(line.startswith("Rollout") for line in lines)
    assert lines[lines.index("Allocations") + 2].split() == ["0", "j1-1", "0", "running", "s1", "-", "-", "-"]
    assert lines[lines.index("Events") + 1].split() == ["TIME", "STATE", "ATTEMPT", "NODE", "MESSAGE"]


def test_claud_job_id_is_parsed_as_before() -> None:
    cluster = Cluster({("GET", "/v1/jobs/j1"): job_json()})
    for args in (["job", "j1"], ["job", "j1", "-o", "json"], ["job", "-o", "json", "j1"], ["-o", "json", "job", "j1"]):
        result = cluster.invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    assert json.loads(result.stdout)["id"] == "j1"
    missing = cluster.invoke("job")
    assert missing.exit_code == ExitCode.USAGE and "Missing argument 'ID'" in missing.stderr
    extra = cluster.invoke("job", "j1", "extra")
    assert extra.exit_code == ExitCode.USAGE and "Usage: cli job [OPTIONS] ID\n" in extra.stderr
    assert [r.url.path for r in cluster.requests] == ["/v1/jobs/j1"] * 4
    helped = cluster.invoke("job", "--help")
    assert helped.exit_code == 0 and "ID | COMMAND" in helped.stdout
    for command in ("scale", "update", "history", "revert"):
        assert f"  {command} " in helped.stdout


def rolled(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    count = body.get("count", 3)
    rollout = {"version": 4, "state": "running", "updated_at": NOW}
    return httpx.Response(200, json=job_json(version=4, count=count, desired=count, running=2,
                                             rollout=None if request.url.path.endswith("/scale") else rollout))


def test_job_scale_sends_the_count_and_says_what_it_did() -> None:
    cluster = Cluster({("POST", "/v1/jobs/j1/scale"): rolled})
    result = cluster.invoke("job", "scale", "j1", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == "job j1 scaled to 5: version 4, 2/5 running\n"
    assert json.loads(cluster.requests[-1].content) == {"count": 5}
    as_json = cluster.invoke("job", "scale", "j1", "5", "-o", "json")
    assert json.loads(as_json.stdout)["desired"] == 5
    sent = len(cluster.requests)
    for bad in ("0", "101", "many"):
        assert cluster.invoke("job", "scale", "j1", bad).exit_code == ExitCode.USAGE, bad
    assert len(cluster.requests) == sent


def test_job_update_puts_the_spec_file_and_shows_the_rollout(tmp_path: Path) -> None:
    spec = tmp_path / "web.json"
    spec.write_text(json.dumps({"name": "web", "image": "claud/busybox:1.36", "type": "service", "count": 3}))
    cluster = Cluster({("PUT", "/v1/jobs/j1"): rolled})
    result = cluster.invoke("job", "update", "j1", str(spec))
    assert result.exit_code == 0, result.output
    assert result.stdout == "job j1 updated: version 4, 2/3 running, rollout running\n"
    assert json.loads(cluster.requests[-1].content) == json.loads(spec.read_text())
    piped = cluster.invoke("-o", "json", "job", "update", "j1", "-", input=spec.read_text())
    assert piped.exit_code == 0 and json.loads(piped.stdout)["version"] == 4
    sent = len(cluster.requests)
    spec.write_text('{"name": "web", "image": "claud/busybox:1.36", "cuont": 3}')
    bad = cluster.invoke("job", "update", "j1", str(spec))
    assert bad.exit_code == ExitCode.USAGE and "cuont" in bad.stderr
    assert len(cluster.requests) == sent


def test_job_update_of_a_finished_job_is_a_conflict() -> None:
    refusal = error_json("conflict", "job j1 is completed: a finished job is not updated")
    cluster = Cluster({("PUT", "/v1/jobs/j1"): lambda r: httpx.Response(409, json=refusal)})
    result = cluster.invoke("job", "update", "j1", "-", input=json.dumps({"name": "w", "image": "claud/busybox"}))
    assert result.exit_code == ExitCode.FAILED
    assert result.stderr.strip() == "Error: job j1 is completed: a finished job is not updated"


HISTORY = {
    "versions": [
        {"version": 4, "at": NOW, "stable": False,
         "spec": {"name": "web", "image": "claud/busybox:1.36", "count": 3,
                  "command": ["httpd", "-f", "-p", "8080", "-h", "/www", "--a-rather-long-flag"]}},
        {"version": 3, "at": NOW, "stable": True, "spec": {"name": "web", "image": "claud/busybox:latest"}},
    ],
    "index": 20,
}


def test_job_history_is_a_table_newest_first() -> None:
    cluster = Cluster({("GET", "/v1/jobs/j1/versions"): HISTORY})
    result = cluster.invoke("job", "history", "j1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "VERSION  AT                    STABLE  IMAGE                 COUNT  COMMAND",
        "4        2026-01-01 00:00:00Z  no      claud/busybox:1.36    3      "
        "httpd -f -p 8080 -h /www --a-rather-lon\u2026",
        "3        2026-01-01 00:00:00Z  yes     claud/busybox:latest  1      (image default)",
    ]
    as_json = json.loads(cluster.invoke("job", "history", "j1", "-o", "json").stdout)
    assert [(v["version"], v["stable"]) for v in as_json] == [(4, False), (3, True)]
    assert as_json[0]["spec"]["count"] == 3


def test_job_revert_posts_the_version_and_an_unkept_one_exits_4() -> None:
    cluster = Cluster({
        ("POST", "/v1/jobs/j1/revert"): lambda r: (
            rolled(r) if json.loads(r.content)["version"] == 3
            else httpx.Response(404, json=error_json("not_found", "job j1 keeps no version 1"))),
    })
    result = cluster.invoke("job", "revert", "j1", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "job j1 reverted to version 3's spec: version 4, 2/3 running, rollout running\n"
    assert json.loads(cluster.requests[-1].content) == {"version": 3}
    assert json.loads(cluster.invoke("-o", "json", "job", "revert", "j1", "3").stdout)["version"] == 4
    gone = cluster.invoke("job", "revert", "j1", "1")
    assert gone.exit_code == ExitCode.NOT_FOUND and "keeps no version 1" in gone.stderr
    sent = len(cluster.requests)
    assert cluster.invoke("job", "revert", "j1", "-1").exit_code == ExitCode.USAGE
    assert cluster.invoke("job", "revert", "j1", "v3").exit_code == ExitCode.USAGE
    assert len(cluster.requests) == sent


def test_a_scale_whose_outcome_is_unknown_is_not_sent_again() -> None:
    unknown = error_json("outcome_unknown", "no answer from leader 1 after forwarding; retry with the same "
                         "idempotency key")
    calls: list[str] = []

    def master(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503, json=unknown, headers={"Retry-After": "0"})

    config = CliConfig(transport=httpx.MockTransport(master), poll_interval=0, failover_timeout=5)
    result = CliRunner().invoke(cli, ["job", "scale", "j1", "3"], obj=config)
    assert result.exit_code == ExitCode.FAILED, result.output
    assert "may have taken effect" in result.stderr and "idempotency" not in result.stderr
    assert calls == ["/v1/jobs/j1/scale"]


def test_claud_job_completes_its_subcommands_and_job_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.shell_completion import ShellComplete

    monkeypatch.setattr("claud.client.cli._complete_ids", lambda ctx, incomplete, what: [
        i for i in ("5c0ffee1a2b3", "5ca1ab1e0000") if i.startswith(incomplete)])
    complete = ShellComplete(cli, {}, "claud", "_CLAUD_COMPLETE")
    assert [c.value for c in complete.get_completions(["job"], "")] == [
        "history", "revert", "scale", "update", "5c0ffee1a2b3", "5ca1ab1e0000"]
    assert [c.value for c in complete.get_completions(["job"], "sc")] == ["scale"]
    assert [c.value for c in complete.get_completions(["job"], "5ca")] == ["5ca1ab1e0000"]
    assert [c.value for c in complete.get_completions(["job", "scale"], "5c0")] == ["5c0ffee1a2b3"]
