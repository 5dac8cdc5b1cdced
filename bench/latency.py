"""Submit -> running latency on a real one-master, one-slave cluster.

Prints p50/p99 for single jobs on an idle cluster and for a burst of
concurrent jobs, beside the time the Docker SDK alone takes to start the same
number of containers in parallel (the floor any orchestrator sits on), and
where a single start's time goes (median of each step, from the job's events,
the leader's and the slave's logs: one machine, one clock).

    .venv/bin/python bench/latency.py [--singles 20] [--burst 50] [--masters 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster
from support.docker_engine import remove_containers

IMAGE = "claud/busybox:latest"
#: CPU of each burst job. A tiny quota (0.01) makes even runc's start-up crawl
#: under CFS throttling, for CLAUD and the bare SDK alike.
BURST_CPU = 0.1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class RunningWatcher:
    """Records when the event stream announces each job as running."""

    def __init__(self, url: str, token: str) -> None:
        self.running: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stop = False
        #: The stream has answered: submits from now on are seen.
        self.connected = False
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the cluster went away at the end of the run
            self._follow(url, token)

    def _follow(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{url}/v1/events", headers=headers, timeout=None) as resp:
            self.connected = True
            for line in resp.iter_lines():
                if self._stop:
                    return
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["type"] == "job" and event["state"] == "running":
                        with self._cond:
                            self.running.setdefault(event["id"], time.perf_counter())
                            self._cond.notify_all()

    def stop(self) -> None:
        """Stop recording (the thread ends with the next event or when the cluster goes)."""
        self._stop = True

    def wait(self, job_ids: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(j in self.running for j in job_ids):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{sum(j not in self.running for j in job_ids)} jobs never ran")
                self._cond.wait(remaining)


_LOG_LINE = re.compile(r"^ts=(\S+) .*?event=(\S+) .*?\bjob=(\S+)")
#: A single start's steps: (name, from, to), each point a job event's proposal
#: time (``at:state``), the leader's log of its commit (``leader:event``), the
#: slave's log (``slave:event``), or the client's own clock (``submit``, ``seen``).
STEPS = (
    ("submit request reaches the master", "submit", "at:pending"),
    ("submit commits", "at:pending", "leader:job.pending"),
    ("scheduler wakes and plans", "leader:job.pending", "at:scheduled"),
    ("placement commits", "at:scheduled", "leader:job.scheduled"),
    ("slave hears and decides to start", "leader:job.scheduled", "slave:container.starting"),
    ("docker create + start", "slave:container.starting", "slave:container.started"),
    ("slave looks again and heartbeats", "slave:container.started", "at:running"),
    ("running commits", "at:running", "leader:job.running"),
    ("event stream tells the client", "leader:job.running", "seen"),
)


def _log_times(text: str, job_id: str) -> dict[str, float]:
    """First time of each event about ``job_id`` in a process's log (epoch seconds)."""
    times: dict[str, float] = {}
    for line in text.splitlines():
        match = _LOG_LINE.match(line)
        if match and match.group(3) == job_id:
            at = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
            times.setdefault(match.group(2), at)
    return times


def breakdown(job: dict[str, Any], leader_log: str, slave_log: str, submit: float, seen: float) -> dict[str, float]:
    """Seconds of each of STEPS for one job (epoch clocks; logs have millisecond resolution)."""
    points: dict[str, float] = {"submit": submit, "seen": seen}
    for event in job["events"]:
        points.setdefault(f"at:{event['state']}", datetime.fromisoformat(event["at"]).timestamp())
    points |= {f"leader:{k}": v for k, v in _log_times(leader_log, job["id"]).items()}
    points |= {f"slave:{k}": v for k, v in _log_times(slave_log, job["id"]).items()}
    return {name: points[b] - points[a] for name, a, b in STEPS if a in points and b in points}


def bare_sdk_parallel_start(count: int) -> float:
    """Seconds for the Docker SDK alone to create and start ``count`` containers in parallel."""
    label = f"claud.bench={uuid.uuid4().hex[:8]}"
    local = threading.local()

    def start_one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = docker.from_env()
        local.client.containers.run(
            IMAGE, ["sleep", "30"], detach=True, labels={"claud.bench": label.split("=")[1]},
            nano_cpus=round(BURST_CPU * 1e9), mem_limit="16m",
        )

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(start_one, range(count)))
        return time.perf_counter() - started
    finally:
        remove_containers(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--singles", type=int, default=20, help="single-job rounds on an idle cluster")
    parser.add_argument("--burst", type=int, default=50, help="jobs submitted at once")
    parser.add_argument("--masters", type=int, default=1, help="masters in the cluster (3: a real quorum)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            if args.masters == 1:
                cluster.start_master(1)
            else:
                cluster.start_masters(args.masters)
            leader = cluster.wait_leader()
            # Advertise more cores than the machine has so that 50 jobs of 0.1 cpu fit;
            # each container's own CFS quota (0.1 core) is what Docker enforces.
            cluster.start_slave("s1", "--cpus", "8")
            watcher = RunningWatcher(leader.url, cluster.token)
            time.sleep(0.5)  # let the event stream connect before the first submit
            single = {"image": IMAGE, "command": ["sleep", "30"], "resources": {"cpu": 0.25, "memory_mb": 32},
                      "stop_timeout": 0}
            spec = {**single, "resources": {"cpu": BURST_CPU, "memory_mb": 16}}

            singles = []
            steps: dict[str, list[float]] = {}
            for i in range(args.singles):
                t0 = time.perf_counter()
                wall0 = time.time()
                job = cluster.submit(name=f"single{i}", **single)
                watcher.wait([job["id"]])
                singles.append(watcher.running[job["id"]] - t0)
                seen = wall0 + singles[-1]
                # The leader's log line of the commit is written as the commit applies: flushed by now.
                for name, seconds in breakdown(cluster.job(job["id"]), leader.log(), cluster.slaves[0].log(),
                                               wall0, seen).items():
                    steps.setdefault(name, []).append(seconds)
                cluster.http.delete(f"/v1/jobs/{job['id']}")

            submitted: dict[str, float] = {}

            def submit(i: int) -> None:
                t0 = time.perf_counter()
                job = cluster.submit(name=f"burst{i}", **spec)
                submitted[job["id"]] = t0

            burst_start = time.perf_counter()
            with ThreadPoolExecutor(args.burst) as pool:
                list(pool.map(submit, range(args.burst)))
            watcher.wait(list(submitted))
            burst_all = max(watcher.running[j] for j in submitted) - burst_start
            burst = [watcher.running[j] - t0 for j, t0 in submitted.items()]
            for job_id in submitted:
                cluster.http.delete(f"/v1/jobs/{job_id}")
        finally:
            cluster.close()

    bare = bare_sdk_parallel_start(args.burst)
    print(f"single job, idle cluster ({args.singles} rounds): submit->running "
          f"p50 {statistics.median(singles) * 1000:.0f} ms, p99 {percentile(singles, 0.99) * 1000:.0f} ms")
    for name, _, _ in STEPS:
        if name in steps:
            print(f"  {name:<36} {statistics.median(steps[name]) * 1000:6.0f} ms")
    print(f"{args.burst} concurrent jobs: submit->running p50 {statistics.median(burst) * 1000:.0f} ms, "
          f"p99 {percentile(burst, 0.99) * 1000:.0f} ms, all running after {burst_all:.2f} s")
    print(f"bare Docker SDK, {args.burst} containers in parallel: {bare:.2f} s "
          f"-> CLAUD/bare = {burst_all / bare:.2f}x")


if __name__ == "__main__":
    main()
