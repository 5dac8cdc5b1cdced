"""The `claud` CLI through its real entry point (a subprocess), against real
masters and a Docker slave: what it prints where, and its exit codes."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from claud.client import Client
from support.cluster import Cluster, free_port, wait_until

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"
SMALL = ["--cpu", "0.05", "--memory-mb", "16"]


def entry_point() -> list[str]:
    """The installed console script, as a user runs it; else the module."""
    script = Path(sys.executable).parent / "claud"
    return [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]


def cli_env() -> dict[str, str]:
    env = {
        **os.environ,
        # A CLI that hangs dumps its stack on SIGABRT (see finish).
        "PYTHONFAULTHANDLER": "1",
    }
    env.pop("CLAUD_FAILOVER_TIMEOUT", None)
    return env


#: Runs argv with SIGINT at its default. A test run started in the background
#: of a shell without job control (`make test &`, a CI step) ignores SIGINT,
#: a child inherits that, and a CLI rightly stays deaf to Ctrl-C then: every
#: test that sends SIGINT would fail in such a run and pass on a rerun.
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def spawn(*args: str, env: dict[str, str], stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    argv = [*entry_point(), *args]
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        argv = [sys.executable, "-c", _SIGINT_DEFAULT, *argv]
    return subprocess.Popen(argv, env=env, text=True, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Cli:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.env = {
            **cli_env(),
            "CLAUD_MASTERS": ",".join(m.url for m in cluster.masters),
            "CLAUD_TOKEN": cluster.token,
        }

    def popen(
        self, *args: str, env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL
    ) -> subprocess.Popen[str]:
        return spawn(*args, env={**self.env, **(env or {})}, stdin=stdin)

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = self.popen(*args, env=env, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE)
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def sdk(self) -> Client:
        return Client([m.url for m in self.cluster.masters], self.cluster.token)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler writes where it hangs to stderr
        try:
            stdout, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish in {timeout}s: {stderr[-4000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.fixture
def claud(shared_cluster: Cluster) -> Cli:
    return Cli(shared_cluster)


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# --- run, jobs, job, logs --------------------------------------------------------------------


def test_run_wait_exits_with_the_jobs_exit_code_and_the_job_can_be_inspected(claud: Cli) -> None:
    ok = claud.popen("run", "--image", IMAGE, *SMALL, "--name", "cli-ok", "--wait", "--",
                     "sh", "-c", "echo hello from the cli")  # fmt: skip
    three = claud.popen("run", "--image", IMAGE, *SMALL, "--wait", "--", "sh", "-c", "exit 3")
    ok_result, three_result = finish(ok), finish(three)

    assert ok_result.returncode == 0, ok_result.stderr
    job_id = ok_result.stdout.strip()
    assert len(ok_result.stdout.splitlines()) == 1  # only the id on stdout: JOB=$(claud run ...)
    assert "running" in ok_result.stderr and "completed" in ok_result.stderr  # progress on stderr
    assert three_result.returncode == 3, three_result.stderr
    no_traceback(three_result)

    listed = claud("-o", "json", "jobs")
    assert listed.returncode == 0
    jobs = json.loads(listed.stdout)  # nothing but JSON on stdout
    assert {job_id, three_result.stdout.strip()} <= {job["id"] for job in jobs}
    completed = json.loads(claud("-o", "json", "jobs", "--state", "completed").stdout)
    assert job_id in {job["id"] for job in completed} and all(j["state"] == "completed" for j in completed)

    details = claud("job", job_id)
    assert details.returncode == 0
    assert job_id in details.stdout and "cli-ok" in details.stdout and "completed" in details.stdout
    as_json = json.loads(claud("-o", "json", "job", job_id).stdout)
    assert (as_json["state"], as_json["exit_code"]) == ("completed", 0)
    assert [e["state"] for e in as_json["events"]][-1] == "completed"

    logs = claud("logs", job_id)
    assert (logs.returncode, logs.stdout) == (0, "hello from the cli\n")

    table = claud("jobs")
    assert table.returncode == 0 and job_id in table.stdout
    assert "\x1b[" not in table.stdout  # no colour off a terminal


def test_run_from_a_spec_file_and_from_stdin(claud: Cli, tmp_path: Path) -> None:
    spec = {"name": "from-file", "image": IMAGE, "command": ["sh", "-c", "exit 0"],
            "resources": {"cpu": 0.05, "memory_mb": 16}}  # fmt: skip
    path = tmp_path / "job.json"
    path.write_text(json.dumps(spec))
    result = claud("-o", "json", "run", str(path), "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "completed"
    piped = claud("run", "-", input=json.dumps({**spec, "name": "from-stdin"}))
    assert piped.returncode == 0, piped.stderr
    with claud.sdk() as sdk:
        assert sdk.job(piped.stdout.strip()).name == "from-stdin"


def test_logs_follow_keeps_printing_across_the_jobs_restarts(claud: Cli) -> None:
    run = claud("run", "--image", IMAGE, *SMALL, "--restart", "on-failure", "--max-retries", "2",
                "--", "sh", "-c", "echo attempt on $(hostname); exit 1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    follow = claud("logs", "-f", job_id, timeout=60)
    assert follow.returncode == 0, follow.stderr
    lines = follow.stdout.splitlines()
    # One line per attempt, each from its own container (its hostname is the container id).
    assert len(lines) == 3 and len(set(lines)) == 3, follow.stdout
    assert all(line.startswith("attempt on ") for line in lines)
    assert "following attempt 2" in follow.stderr and "following attempt 3" in follow.stderr
    with claud.sdk() as sdk:
        assert sdk.job(job_id).attempts == 3


def test_stop_a_running_job(claud: Cli) -> None:
    # A shell that ends on SIGTERM (as PID 1 it would ignore it), so the stop is quick.
    run = claud("run", "--image", IMAGE, *SMALL, "--", "sh", "-c",
                "trap 'exit 0' TERM; while true; do sleep 0.1; done")  # fmt: skip
    job_id = run.stdout.strip()
    with claud.sdk() as sdk:
        wait_until(lambda: sdk.job(job_id).state.value == "running", 30, what="the job to run")
        stopped = claud("stop", job_id)
        assert stopped.returncode == 0, stopped.stderr
        assert job_id in stopped.stdout
        assert sdk.wait(job_id, timeout=30).state.value == "stopped"


# --- nodes, cluster, events ------------------------------------------------------------------


def test_nodes_drain_undrain_and_cluster(claud: Cli, shared_cluster: Cluster) -> None:
    slave_id = shared_cluster.slave("a").id
    table = claud("nodes")
    assert table.returncode == 0 and slave_id in table.stdout
    nodes = json.loads(claud("-o", "json", "nodes").stdout)
    roles = {node["id"]: node["role"] for node in nodes}
    assert roles[slave_id] == "slave" and sorted(i for i, r in roles.items() if r == "master") == ["1", "2", "3"]

    try:
        drained = claud("-o", "json", "nodes", "drain", slave_id)
        assert drained.returncode == 0, drained.stderr
        assert json.loads(drained.stdout)["state"] == "draining"
    finally:
        undrained = claud("nodes", "undrain", slave_id)
    assert undrained.returncode == 0, undrained.stderr
    assert slave_id in undrained.stdout

    view = claud("cluster")
    assert view.returncode == 0 and "127.0.0.11" in view.stdout
    as_json = json.loads(claud("-o", "json", "cluster").stdout)
    assert as_json["leader_id"] == 1 and len(as_json["masters"]) == 3 and as_json["quorum"] == 2


def test_events_streams_lines_until_interrupted(claud: Cli) -> None:
    proc = claud.popen("-o", "json", "events")
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    # The reader owns stdout to its end; interrupt() reads only stderr, so two
    # readers never share the pipe.
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[dict[str, Any]] = []
    submitted: list[str] = []
    try:
        with claud.sdk() as sdk:

            def one_of_ours_completed() -> bool:
                if not submitted or sdk.job(submitted[-1]).state.terminal:
                    submitted.append(sdk.submit({"name": "ev", "image": IMAGE, "command": ["true"]}).id)
                while not lines.empty():
                    seen.append(json.loads(lines.get()))  # each line is one JSON object
                return any(e["id"] in submitted and e["state"] == "completed" for e in seen)

            wait_until(one_of_ours_completed, 30, interval=0.1, what="the stream to show a job completing")
    except BaseException:
        proc.kill()  # not streaming: whatever SIGINT did now would hide why
        proc.communicate()
        raise
    result = interrupt(proc, stdout_reader=reader)
    assert result.returncode == 130, result.stderr
    no_traceback(result)
    assert all(e["type"] in ("job", "node") for e in seen)


# --- Ctrl-C at awkward moments ---------------------------------------------------------------
# No cluster needed: each case holds the CLI at one moment with a listener of its own, and
# waits (with a deadline) until the CLI is there before sending SIGINT.


def interrupt(
    proc: subprocess.Popen[str], *, stdout_reader: threading.Thread | None = None, within: float = 10
) -> subprocess.CompletedProcess[str]:
    """SIGINT, then the CLI must be gone within ``within`` seconds.

    Loose enough for a loaded machine (exiting alone can take a second there),
    tight enough to fail a CLI that waits for the master's next byte: the
    listeners here send none, and a real master's keep-alives are 15 s apart.
    """
    proc.send_signal(signal.SIGINT)
    if stdout_reader is None:
        return finish(proc, within)
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler writes where it hangs to stderr
        proc.wait(5)
        assert proc.stderr is not None
        raise AssertionError(f"{proc.args} did not finish in {within}s: {proc.stderr.read()[-4000:]}") from None
    stdout_reader.join(5)
    assert proc.stderr is not None
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.read())


def loading_pydantic(pid: int) -> bool:
    """Whether the process has mapped pydantic's compiled core: the CLI's imports are under way."""
    return "_pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_ctrl_c_while_the_cli_is_still_loading_exits_130_without_a_traceback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # should the CLI get that far
        proc = spawn("events", env={**cli_env(), "CLAUD_MASTERS": f"127.0.0.1:{silent.getsockname()[1]}"})
        # Not earlier: while the interpreter itself starts (site, encodings) a SIGINT is
        # Python's own "Fatal Python error", before any code of ours runs.
        wait_until(lambda: proc.poll() is None and loading_pydantic(proc.pid), 20, interval=0.001, what="imports")
        result = interrupt(proc)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "", result.stderr


@pytest.mark.parametrize("moment", ["awaiting the answer", "on a quiet stream"])
def test_ctrl_c_before_the_first_event_exits_130(moment: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        proc = spawn("events", env={**cli_env(), "CLAUD_MASTERS": f"127.0.0.1:{server.getsockname()[1]}"})
        server.settimeout(20)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(20)
            assert b"/v1/events" in conn.recv(65536)  # the request is in: the CLI now waits on its read
            if moment == "on a quiet stream":
                # Headers and the comment a master sends first; then nothing for a while, as
                # between a real master's keep-alives (15 s apart).
                comment = b": connected\n\n"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                    + b"%x\r\n%s\r\n" % (len(comment), comment)
                )
            result = interrupt(proc)
    assert result.returncode == 130, result.stderr
    no_traceback(result)


def test_ctrl_c_while_retrying_an_unreachable_master_exits_130() -> None:
    closed = f"127.0.0.1:{free_port()}"
    proc = spawn("--failover-timeout", "60", "events", env={**cli_env(), "CLAUD_MASTERS": closed})
    assert proc.stderr is not None
    first_note = proc.stderr.readline()  # the CLI says so before each pause between attempts
    assert "retrying" in first_note, first_note
    result = interrupt(proc)
    assert result.returncode == 130, first_note + result.stderr
    no_traceback(result)


# --- exit codes ----------------------------------------------------------------------------


def test_usage_and_bad_specs_exit_2(claud: Cli, tmp_path: Path) -> None:
    assert claud("run").returncode == 2
    assert claud("no-such-command").returncode == 2
    bad_field = tmp_path / "bad.json"
    bad_field.write_text(json.dumps({"name": "x", "image": IMAGE, "resources": {"cpu": 0.1, "memroy_mb": 1}}))
    result = claud("run", str(bad_field))
    assert result.returncode == 2 and "resources.memroy_mb" in result.stderr
    not_json = tmp_path / "broken.json"
    not_json.write_text("{nope")
    assert claud("run", str(not_json)).returncode == 2
    negative = claud("run", "--image", IMAGE, "--cpu", "-1", "--", "true")
    assert negative.returncode == 2 and "resources.cpu" in negative.stderr
    no_traceback(negative)


def test_an_unreachable_cluster_exits_3_within_seconds_saying_it_retries(claud: Cli) -> None:
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = claud("jobs", env={"CLAUD_MASTERS": closed})
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 8, f"took {elapsed:.1f}s to give up"
    assert "retrying" in result.stderr and closed in result.stderr
    assert result.stdout == ""
    no_traceback(result)
    quick = claud("--failover-timeout", "0", "jobs", env={"CLAUD_MASTERS": closed})
    assert quick.returncode == 3


def test_unknown_ids_exit_4(claud: Cli) -> None:
    for args in (["job", "nope"], ["logs", "nope"], ["logs", "-f", "nope"], ["stop", "nope"],
                 ["nodes", "drain", "nope"]):  # fmt: skip
        result = claud(*args)
        assert result.returncode == 4, (args, result.stderr)
        assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1


def test_a_bad_token_exits_5(claud: Cli) -> None:
    result = claud("jobs", env={"CLAUD_TOKEN": "wrong"})
    assert result.returncode == 5
    assert result.stderr.startswith("Error: unauthorized")
    assert claud("--token", "", "cluster", env={"CLAUD_TOKEN": ""}).returncode == 5


# --- completion ----------------------------------------------------------------------------


def test_shell_completion_script_and_job_ids(claud: Cli) -> None:
    script = claud(env={"_CLAUD_COMPLETE": "bash_source"})
    assert script.returncode == 0
    assert "_claud_completion()" in script.stdout and "_CLAUD_COMPLETE=bash_complete" in script.stdout
    assert "zsh" in claud(env={"_CLAUD_COMPLETE": "zsh_source"}).stdout

    with claud.sdk() as sdk:
        job_id = sdk.submit({"name": "completed-id", "image": IMAGE, "command": ["true"]}).id
    words = claud(env={"_CLAUD_COMPLETE": "bash_complete", "COMP_WORDS": f"claud job {job_id[:4]}",
                       "COMP_CWORD": "2"})  # fmt: skip
    assert f"plain,{job_id}" in words.stdout.splitlines()
    commands = claud(env={"_CLAUD_COMPLETE": "bash_complete", "COMP_WORDS": "claud no", "COMP_CWORD": "1"})
    assert commands.stdout.splitlines() == ["plain,nodes"]
