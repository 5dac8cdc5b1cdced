"""Acknowledged writes/s: a 3-master CLAUD beside a 3-member etcd, same machine, same generator.

Both clusters run on loopback and get the same load: one wrk per member, 11
keep-alive connections each, JSON over HTTP/1.1, for ``--seconds``. CLAUD
takes ``POST /v1/jobs`` (a unique ``Idempotency-Key`` per request, as the SDK
sends); etcd 3.4 takes ``POST /v3/kv/put`` through its JSON gateway (a unique
key per request, the job's JSON as the value). A write counts when it was
answered 2xx: for CLAUD once a quorum has the job, for etcd once its Raft
committed the put. The clusters run one after the other, never together.

Batched: CLAUD ``POST /v1/jobs:batch`` with ``--batch`` jobs (one log entry)
against etcd ``POST /v3/kv/txn`` with ``--batch`` puts (one Raft entry too,
etcd's own unit of an all-or-nothing write); the figure is jobs (puts) per
second.

Needs ``etcd`` and ``wrk`` on the PATH (Debian: ``bash deploy/install-bench-tools.sh``
as root installs both); this script installs nothing. ``run(seconds)`` returns
the rows for bench/compare.py.

    .venv/bin/python bench/compare_writes.py [--seconds 10] [--batch 100]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster, free_port, wait_until

#: Connections per wrk, one wrk per member: the figure the comparison is quoted at.
CONNECTIONS = 11
#: The job every CLAUD write submits, and (as bytes) every etcd write stores.
JOB = {"name": "load", "image": "claud/busybox"}
DEFAULT_BATCH = 100
#: Seconds of load before measuring: connections open, caches warm.
WARMUP_SECONDS = 1.0
ETCD_START_TIMEOUT = 30.0

# One Lua script for both clusters: it writes the body and headers of each
# request, so each has its own key. ``init`` gets the mode and a prefix unique to
# this wrk process; ``done`` prints the counts and latencies as one JSON line.
WRK_SCRIPT = r"""
local mode, prefix, token, batch = "job", "p", "", 1
local counter = 0
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({"", "==", "="})[#data % 3 + 1])
end

local job = '{"name":"load","image":"claud/busybox"}'
local job64 = b64(job)

function init(args)
  mode, prefix, token, batch = args[1], args[2], args[3], tonumber(args[4])
end

function request()
  counter = counter + 1
  local key = prefix .. "-" .. counter
  if mode == "claud" then
    return wrk.format("POST", "/v1/jobs", {["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token, ["Idempotency-Key"] = key}, job)
  elseif mode == "claud-batch" then
    local jobs = {}
    for i = 1, batch do jobs[i] = job end
    return wrk.format("POST", "/v1/jobs:batch", {["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token, ["Idempotency-Key"] = key},
      '{"jobs":[' .. table.concat(jobs, ",") .. ']}')
  elseif mode == "etcd" then
    return wrk.format("POST", "/v3/kv/put", {["Content-Type"] = "application/json"},
      '{"key":"' .. b64("jobs/" .. key) .. '","value":"' .. job64 .. '"}')
  else
    local puts = {}
    for i = 1, batch do
      puts[i] = '{"requestPut":{"key":"' .. b64("jobs/" .. key .. "-" .. i) .. '","value":"' .. job64 .. '"}}'
    end
    return wrk.format("POST", "/v3/kv/txn", {["Content-Type"] = "application/json"},
      '{"success":[' .. table.concat(puts, ",") .. ']}')
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"us":%d,"p50":%d,"p99":%d}\n',
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True, slots=True)
class Figure:
    """One system under one load: acknowledged writes per second and their latency."""

    writes_per_s: float
    p50_ms: float
    p99_ms: float
    #: Answers other than 2xx or 3xx.
    refused: int
    #: Requests wrk gave up on (no answer within its timeout) or whose connection failed.
    failed: int
    #: CPU seconds each process spent per acknowledged write, in ms (the leader's first).
    cpu_ms: dict[str, float]
    #: Terms the cluster went through while measured (each an election).
    elections: int = 0


def missing_tools() -> list[str]:
    return [tool for tool in ("etcd", "wrk") if shutil.which(tool) is None]


def _wrk(url: str, script: Path, seconds: float, args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script),
         url, "--", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = proc.communicate()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            parsed: dict[str, int] = json.loads(line.removeprefix("RESULT "))
            return parsed
    raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")


def _profile(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` while it is measured, as collapsed stacks (``--profile``)."""
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200",
         "--format", "raw", "--nonblocking", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def load(
    urls: list[str], mode: str, seconds: float, script: Path, processes: dict[str, psutil.Process],
    token: str = "", batch: int = 1, profile: Path | None = None, term: Callable[[], int] = lambda: 0,
) -> Figure:
    """One wrk per URL at once; writes/s counts the 2xx answers (times ``batch`` for a batch).
    With ``profile``, the leader and the first follower are sampled into that directory."""
    run = uuid.uuid4().hex[:8]

    def start(phase: str, duration: float) -> list[subprocess.Popen[str]]:
        return [_wrk(url, script, duration, [mode, f"{run}{phase}{i}", token, str(batch)])
                for i, url in enumerate(urls)]

    for proc in start("w", WARMUP_SECONDS):
        _result(proc)
    profilers = []
    if profile is not None:
        sampled = list(processes.items())[:2]
        profilers = [_profile(p.pid, seconds, profile / f"{mode}-{name.replace(' ', '')}.txt") for name, p in sampled]
    before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
    term_before = term()
    results = [_result(proc) for proc in start("m", seconds)]
    elections = term() - term_before
    used = {name: sum(p.cpu_times()[:2]) - before[name] for name, p in processes.items()}
    for profiler in profilers:
        profiler.wait()
    acked = sum(r["requests"] - r["non2xx"] for r in results)
    elapsed = max(r["us"] for r in results) / 1e6
    writes = acked * batch
    return Figure(
        writes_per_s=writes / elapsed,
        # Each wrk's own percentile, the worst of them: wrk keeps no mergeable histogram.
        p50_ms=max(r["p50"] for r in results) / 1000,
        p99_ms=max(r["p99"] for r in results) / 1000,
        refused=sum(r["non2xx"] for r in results),
        failed=sum(r["connect"] + r["read"] + r["write"] + r["timeout"] for r in results),
        cpu_ms={name: seconds_used * 1000 / max(1, writes) for name, seconds_used in used.items()},
        elections=elections,
    )


# ------------------------------------------------------------------ CLAUD


def measure_claud(
    workdir: Path, seconds: float, batch: int, script: Path, profile: Path | None = None
) -> tuple[Figure, Figure]:
    cluster = Cluster(workdir)
    try:
        cluster.start_masters(3)
        leader = cluster.wait_leader()
        processes = {"leader": psutil.Process(leader.popen.pid)}
        processes.update({f"follower {m.id}": psutil.Process(m.popen.pid) for m in cluster.masters if m is not leader})
        urls = [m.url for m in cluster.masters]

        def term() -> int:
            return max(int(m.cluster_view(cluster.token)["term"]) for m in cluster.masters)

        single = load(urls, "claud", seconds, script, processes, cluster.token, profile=profile, term=term)
        batched = load(urls, "claud-batch", seconds, script, processes, cluster.token, batch, profile, term)
    finally:
        cluster.close()
    return single, batched


# ------------------------------------------------------------------ etcd


@contextlib.contextmanager
def etcd_cluster(workdir: Path, batch: int) -> Iterator[tuple[list[str], list[psutil.Process]]]:
    """Three etcd members on loopback (each its own client and peer port), until the block ends."""
    members = [(f"e{i}", free_port(), free_port()) for i in range(1, 4)]
    initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in members)
    cluster_token = f"bench-{uuid.uuid4().hex[:8]}"  # one for the three: it seeds the cluster's id
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, client, peer in members:
            log = (workdir / f"{name}.log").open("wb")
            procs.append(subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", str(workdir / name),
                 "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", cluster_token,
                 "--max-txn-ops", str(max(128, batch)), "--log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
        urls = [f"http://127.0.0.1:{client}" for _, client, _ in members]

        def healthy() -> bool:
            for url in urls:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=1).json().get("health") == "true":
                        continue
                return False
            return True

        wait_until(healthy, ETCD_START_TIMEOUT, what="3 etcd members healthy")
        yield urls, [psutil.Process(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def etcd_leader(urls: list[str]) -> int:
    """The index in ``urls`` of the member that leads."""
    for i, url in enumerate(urls):
        status = httpx.post(f"{url}/v3/maintenance/status", json={}, timeout=2).json()
        if status["leader"] == status["header"]["member_id"]:
            return i
    raise RuntimeError("no etcd member says it leads")


def measure_etcd(workdir: Path, seconds: float, batch: int, script: Path) -> tuple[Figure, Figure]:
    with etcd_cluster(workdir, batch) as (urls, procs):
        leader = etcd_leader(urls)
        processes = {"leader": procs[leader]}
        processes.update({f"follower {i + 1}": p for i, p in enumerate(procs) if i != leader})
        def term() -> int:
            return max(int(httpx.post(f"{url}/v3/maintenance/status", json={}, timeout=2).json()["raftTerm"])
                       for url in urls)

        single = load(urls, "etcd", seconds, script, processes, term=term)
        batched = load(urls, "etcd-txn", seconds, script, processes, batch=batch, term=term)
    return single, batched


# ------------------------------------------------------------------ both


def _cpu(figure: Figure) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in figure.cpu_ms.items())


def run(
    seconds: float, batch: int = DEFAULT_BATCH, profile: Path | None = None, claud_only: bool = False
) -> list[tuple[str, str, str]]:
    """Measure both clusters; rows of (measure, CLAUD, etcd) for a table (etcd's "-" with ``claud_only``)."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"{' and '.join(missing)} not found; as root on Debian: bash deploy/install-bench-tools.sh")
    with tempfile.TemporaryDirectory(prefix="claud-compare-writes-") as tmp:
        script = Path(tmp) / "writes.lua"
        script.write_text(WRK_SCRIPT)
        (Path(tmp) / "claud").mkdir()
        (Path(tmp) / "etcd").mkdir()
        claud, claud_batch = measure_claud(Path(tmp) / "claud", seconds, batch, script, profile)
        if claud_only:
            nothing = Figure(0, 0, 0, 0, 0, {})
            etcd, etcd_batch = nothing, nothing
        else:
            etcd, etcd_batch = measure_etcd(Path(tmp) / "etcd", seconds, batch, script)
    return [
        ("acknowledged writes/s (1 per request)", f"{claud.writes_per_s:,.0f}", f"{etcd.writes_per_s:,.0f}"),
        ("write p50 / p99 ms", f"{claud.p50_ms:.1f} / {claud.p99_ms:.1f}", f"{etcd.p50_ms:.1f} / {etcd.p99_ms:.1f}"),
        ("refused (non-2xx) / failed (timeout, socket)", f"{claud.refused} / {claud.failed}",
         f"{etcd.refused} / {etcd.failed}"),
        ("CPU ms per write", _cpu(claud), _cpu(etcd)),
        ("elections while measured (writes, batches)", f"{claud.elections}, {claud_batch.elections}",
         f"{etcd.elections}, {etcd_batch.elections}"),
        (f"batched jobs/s ({batch} per request: CLAUD jobs:batch, etcd txn of {batch} puts)",
         f"{claud_batch.writes_per_s:,.0f}", f"{etcd_batch.writes_per_s:,.0f}"),
        ("batch request p50 / p99 ms", f"{claud_batch.p50_ms:.1f} / {claud_batch.p99_ms:.1f}",
         f"{etcd_batch.p50_ms:.1f} / {etcd_batch.p99_ms:.1f}"),
        ("batches refused / failed", f"{claud_batch.refused} / {claud_batch.failed}",
         f"{etcd_batch.refused} / {etcd_batch.failed}"),
        ("CPU ms per batched job", _cpu(claud_batch), _cpu(etcd_batch)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="jobs per batch (puts per etcd txn)")
    parser.add_argument("--profile", type=Path, help="sample CLAUD's leader and a follower with py-spy into DIR")
    parser.add_argument("--claud-only", action="store_true", help="measure CLAUD alone (while tuning it)")
    args = parser.parse_args()
    if args.profile is not None:
        if shutil.which("py-spy") is None:
            raise SystemExit("py-spy not found: it is in the test extra (pip install -e '.[test]')")
        args.profile.mkdir(parents=True, exist_ok=True)
    missing = missing_tools()
    if missing:
        print(f"{' and '.join(missing)} not found on PATH. As root on Debian: bash deploy/install-bench-tools.sh",
              file=sys.stderr)
        raise SystemExit(1)
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = run(args.seconds, args.batch, args.profile, args.claud_only)
    etcd_version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"3 CLAUD masters vs 3 etcd members ({etcd_version}), loopback, {os.cpu_count()} cores, "
          f"one wrk per member x {CONNECTIONS} connections, {args.seconds:g} s each; load average before: {load_avg}")
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'CLAUD':>28}  {'etcd':>28}")
    for measure, claud, etcd in rows:
        print(f"{measure:{width}}  {claud:>28}  {etcd:>28}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
