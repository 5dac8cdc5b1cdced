"""Scale: N hollow slaves against 3 masters, then M jobs (issue 16's targets).

The slaves are real agents (``claud.slave.agent.Agent``) with the simulated
runtime, many to a process (``--slave-procs`` worker processes, each running
its share in one event loop over one HTTP client), each with its own id; like
Kubernetes' hollow nodes they exercise the agent, the protocol and the masters,
never Docker. Once the masters list every slave alive, 32 lean clients (one
hand-written HTTP/1.1 request per submit, as in bench/throughput.py; there is
no batch endpoint) submit M never-ending jobs to masters chosen at random (each slave has room for 25%
more than its even share, so binpack fills them all),
while a sampler times ``GET /v1/jobs?limit=100`` on the leader and another
reads its ``/metrics`` and both masters' CPU and RSS (psutil).

Prints, beside the issue's targets: submit and list p50/p99, placements per
second (scheduler placements over the span they took), the time from the
first submit until all M run, the scheduler's mean pass time and jobs per pass
(compare 100 and 1,000 slaves: a pass should cost what changed, not the
cluster), leader and follower CPU and RSS, the heartbeat rate the leader saw,
and the snapshots the leader took (size on disk, time). With ``--profile S``
it records the leader with py-spy for S seconds during the submits and prints
the functions that held its CPU most (own time, and with callees).

The hollow workers run at nice +10 from the bench (the masters get the CPU first), one HTTP
client per agent; their CPU and the fences their slaves made are printed with the masters'.
``--keep-logs DIR`` keeps every process's log (the masters log ``raft.clock_late``,
``raft.persist_slow`` and ``gc.pause`` when their loop, disk or collector held them).

    .venv/bin/python bench/scale.py [--slaves 100] [--jobs 5000] [--slave-procs 2] [--profile 10] [--keep-logs DIR]
    .venv/bin/python bench/scale.py --slaves 1000 --jobs 0 [--max-heartbeats-per-second 1000]  # idle only
    .venv/bin/python bench/scale.py --scheduler-only  # one pass in-process, 100 vs 1000 slaves
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

from claud.master.peer_http import PeerConnection, PeerHttpError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster, wait_until

TARGETS = {"api_p99_ms": 100.0, "placements_per_s": 1000.0, "leader_rss_mib": 1024.0}
JOB_CPU, JOB_MB = 0.01, 8
#: Each slave has room for this share more than its even part of the jobs: with binpack and
#: unlimited room, every job would land on the first slave.
HEADROOM = 1.25


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------ hollow slaves (worker process)


async def run_hollow(ids: list[str], masters: list[str], secret_file: Path, reconcile: float, slots: int) -> None:
    from claud.daemon.logfmt import configure_logging
    from claud.slave.agent import Agent
    from claud.slave.resources import Capacity, CgroupLimits, UsageProbe
    from claud.slave.runtime.simulated import SimulatedRuntime
    from claud.slave.settings import SlaveSettings

    configure_logging("slave", f"hollow-{ids[0]}", "warning")
    os.nice(10)  # the hollow slaves yield the CPU to the masters: the bench measures the masters
    usage = UsageProbe("/", limits=CgroupLimits())
    agents = []
    for slave_id in ids:
        settings = SlaveSettings(
            id=slave_id, masters=masters, runtime="simulated", cluster_secret_file=secret_file, no_discovery=True,
            reconcile_interval=reconcile,
        )
        # One HTTP client per agent, as a real slave has: httpcore's pool costs O(its connections) per
        # request, so one client shared by hundreds of agents spent the worker's CPU on its own bookkeeping.
        http = httpx.AsyncClient(trust_env=False)
        agents.append(Agent(settings, SimulatedRuntime(slave_id), http=http,
                            capacity=Capacity(round(slots * JOB_CPU, 3), slots * JOB_MB, "flag", "flag"), usage=usage))
    for agent in agents:
        await agent.start()
        await asyncio.sleep(0.005)  # a ramp, not a stampede of first heartbeats
    # Hundreds of agents' state in one process: frozen now and then, as the masters freeze their
    # rows (claud.master.collector), or a full collection of the worker would fence its slaves.
    while True:
        await asyncio.sleep(5)
        gc.collect(1)
        gc.freeze()


# ------------------------------------------------------------------ the run (main process)


def metrics(url: str, token: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10).text
    out: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'^(claud_jobs|claud_slaves)\{state="(\w+)"\} (\S+)$', line)
        if m:
            out[f"{m[1]}:{m[2]}"] = float(m[3])
            continue
        m = re.match(r"^(claud_scheduler_pass_seconds_(?:sum|count)|claud_scheduler_placements_total|claud_term|"
                     r"claud_jobs_lost_total) (\S+)$", line)
        if m:
            out[m[1]] = float(m[2])
            continue
        if line.startswith("claud_slave_heartbeats_total{"):
            out["heartbeats"] += float(line.rsplit(" ", 1)[1])
    return out


class Sampler(threading.Thread):
    """Every second: leader metrics, and CPU/RSS of every master."""

    def __init__(self, leader_url: str, token: str, procs: dict[str, psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.leader_url, self.token, self.procs = leader_url, token, procs
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.cpu: dict[str, list[float]] = {name: [] for name in procs}
        self.rss: dict[str, list[float]] = {name: [] for name in procs}
        self.stop = threading.Event()
        for proc in procs.values():
            proc.cpu_percent(None)

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for name, proc in self.procs.items():
                try:
                    self.cpu[name].append(proc.cpu_percent(None))
                    self.rss[name].append(proc.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            with contextlib.suppress(httpx.HTTPError):
                self.samples.append((time.monotonic(), metrics(self.leader_url, self.token)))

    def latest(self) -> dict[str, float]:
        return self.samples[-1][1] if self.samples else {}


async def submitters(
    urls: list[str], token: str, jobs: int, clients: int, latencies: list[float], give_up: float
) -> float:
    body = json.dumps({"name": "scale", "image": "claud/busybox", "env": {"CLAUD_SIM_SECONDS": "inf"},
                       "resources": {"cpu": JOB_CPU, "memory_mb": JOB_MB}}).encode()
    left = [jobs]
    started = time.monotonic()

    async def one() -> None:
        conns = {u: PeerConnection(None, {"Authorization": f"Bearer {token}"}) for u in urls}
        try:
            while left[0] > 0 and time.monotonic() < give_up:
                left[0] -= 1
                key = uuid.uuid4().hex
                while time.monotonic() < give_up:
                    url = random.choice(urls)
                    t0 = time.perf_counter()
                    try:
                        resp = await conns[url].post(url.removeprefix("http://"), "/v1/jobs", body, 30,
                                                     {"Idempotency-Key": key})
                    except PeerHttpError:
                        await asyncio.sleep(0.05)
                        continue
                    if resp.status in (200, 201):
                        latencies.append(time.perf_counter() - t0)
                        break
                    await asyncio.sleep(0.05)  # 503 while busy: retry with the same key
        finally:
            for c in conns.values():
                c.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return time.monotonic() - started


async def lister(url: str, token: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        while not stop.is_set():
            t0 = time.perf_counter()
            resp = await http.get("/v1/jobs", params={"limit": 100})
            if resp.status_code == 200:
                latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.2)


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "50",
                             "--format", "raw", "--full-filenames", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def summarise_profile(path: Path, top: int = 12) -> None:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [re.sub(r" \((?:.*/)?(?:site-packages|src)/", " (", f) for f in stack.split(";")]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"  py-spy: {total} samples of the leader")
    print("  own time:")
    for frame, n in own.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {frame[:150]}")
    print("  with callees (claud frames):")
    for frame, n in [(f, n) for f, n in inclusive.most_common(200) if "claud/" in f][:top]:
        print(f"    {100 * n / total:5.1f}%  {frame[:150]}")


def scheduler_pass_cost(slave_counts: list[int], placed_per_slave: int, batch: int, rounds: int = 5) -> None:
    """One scheduling pass in-process (no sockets, no consensus): what the leader's loop spends
    on ``scheduling_snapshot`` + ``schedule`` for ``batch`` new jobs, beside the cluster's size.

    A pass should cost what changed (the batch), not the cluster: compare the rows."""
    from claud.api import JobSpec, Resources
    from claud.master import ops
    from claud.master.ops import utcnow
    from claud.master.scheduler import Strategy, schedule
    from claud.master.state import StateMachine

    spec = JobSpec(name="scale", image="claud/busybox", resources=Resources(cpu=JOB_CPU, memory_mb=JOB_MB))
    slots = int(HEADROOM * placed_per_slave) + batch
    print(f"\nscheduler pass, in-process: {batch} new jobs, {placed_per_slave} placed per slave (ms, best of {rounds})")
    for count in slave_counts:
        sm, index = StateMachine(), 0

        def apply(op: ops.Operation) -> None:
            nonlocal index
            index += 1
            sm.apply(index, op)

        for i in range(count):
            apply(ops.RegisterSlave(at=utcnow(), slave_id=f"s{i:05d}", address=f"10.0.{i // 250}.{i % 250}:8701",
                                    labels={}, cpu_total=round(slots * JOB_CPU, 3), memory_mb_total=slots * JOB_MB))
        placed = [f"p{i:08x}" for i in range(count * placed_per_slave)]
        for job_id in placed:
            apply(ops.SubmitJob(at=utcnow(), job_id=job_id, spec=spec))
        for start in range(0, len(placed), 5000):
            chunk = placed[start:start + 5000]
            apply(ops.ApplyPlan(at=utcnow(), placements=[
                ops.PlacedJob(job_id=j, slave_id=f"s{(start + k) % count:05d}") for k, j in enumerate(chunk)
            ], unplaced={}))
        for i in range(batch):
            apply(ops.SubmitJob(at=utcnow(), job_id=f"n{i:08x}", spec=spec))
        snap_t, plan_t = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            slaves, jobs = sm.scheduling_snapshot(utcnow())
            t1 = time.perf_counter()
            plan = schedule(slaves, jobs, Strategy.BINPACK)
            t2 = time.perf_counter()
            snap_t.append(t1 - t0)
            plan_t.append(t2 - t1)
        print(f"  {count:5} slaves {len(placed):7} placed: snapshot {min(snap_t) * 1000:7.1f}  "
              f"schedule {min(plan_t) * 1000:7.1f}  ({len(plan.placements)} placed, "
              f"{min(plan_t) / max(1, len(plan.placements)) * 1e6:.0f} us/job)")


def snapshots(log_path: Path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if "event=snapshot.taken" in line]


def run(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="claud-scale-") as tmp:
        workdir = Path(tmp)
        cluster = Cluster(workdir)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            extra = ["--max-heartbeats-per-second", str(args.max_heartbeats_per_second)] \
                if args.max_heartbeats_per_second else []
            cluster.start_masters(3, *extra)
            leader = cluster.wait_leader()
            followers = [m for m in cluster.masters if m is not leader]
            token = cluster.token
            masters = [m.address for m in cluster.masters]
            ids = [f"{cluster.prefix}-h{i:05d}" for i in range(args.slaves)]
            per = -(-len(ids) // args.slave_procs)
            t0 = time.monotonic()
            for k in range(args.slave_procs):
                part = ids[k * per:(k + 1) * per]
                if not part:
                    continue
                log = open(workdir / f"hollow-{k}.log", "wb")  # noqa: SIM115 - lives as long as the worker
                workers.append(subprocess.Popen(
                    [sys.executable, __file__, "--worker", ",".join(part), "--masters", ",".join(masters),
                     "--secret-file", str(cluster.secret_file), "--reconcile", str(args.reconcile),
                     "--slots", str(max(1, int(HEADROOM * args.jobs / args.slaves) + 1))],
                    stdout=log, stderr=subprocess.STDOUT,
                ))
            procs = {"leader": psutil.Process(leader.popen.pid),
                     **{f"follower-{m.id}": psutil.Process(m.popen.pid) for m in followers},
                     **{f"hollow-{k}": psutil.Process(w.pid) for k, w in enumerate(workers)}}
            wait_until(lambda: metrics(leader.url, token).get("claud_slaves:alive", 0) >= args.slaves,
                       timeout=60 + args.slaves / 10, interval=1.0, what=f"{args.slaves} slaves alive")
            print(f"{args.slaves} hollow slaves alive after {time.monotonic() - t0:.1f}s "
                  f"({len(workers)} processes)")
            idle = metrics(leader.url, token)
            time.sleep(5)
            idle2 = metrics(leader.url, token)
            idle_cpu = procs["leader"].cpu_percent(None)
            time.sleep(5)
            idle_cpu = procs["leader"].cpu_percent(None)
            hb_rate = (idle2["heartbeats"] - idle["heartbeats"]) / 5
            print(f"idle: leader sees {hb_rate:.0f} heartbeats/s, CPU {idle_cpu:.0f}%, "
                  f"RSS {procs['leader'].memory_info().rss / 2**20:.0f} MiB")

            if args.jobs == 0:  # the heartbeat load alone
                return
            sampler = Sampler(leader.url, token, procs)
            sampler.start()
            submit_lat: list[float] = []
            list_lat: list[float] = []
            spy = profile(leader.popen.pid, args.profile, workdir / "leader.spy") if args.profile else None

            async def load() -> float:
                stop = asyncio.Event()
                listing = asyncio.create_task(lister(leader.url, token, stop, list_lat))
                took = await submitters([m.url for m in cluster.masters], token, args.jobs, args.clients, submit_lat,
                                         time.monotonic() + args.submit_timeout)
                stop.set()
                await listing
                return took

            started = time.monotonic()
            submit_seconds = asyncio.run(load())
            all_running = None
            deadline = time.monotonic() + args.settle
            while time.monotonic() < deadline:
                if sampler.latest().get("claud_jobs:running", 0) >= args.jobs:
                    all_running = time.monotonic() - started
                    break
                time.sleep(0.5)
            sampler.stop.set()
            sampler.join()
            final = metrics(leader.url, token)
            # placements/s: from the first sample with a placement to the first with all of them
            placed = [(t, s.get("claud_scheduler_placements_total", 0)) for t, s in sampler.samples]
            base = idle2.get("claud_scheduler_placements_total", 0)
            span = [t for t, p in placed if base < p < base + args.jobs]
            rate = (max(p for _, p in placed) - base) / max(1.0, (span[-1] - span[0]) if len(span) > 1 else 1.0) \
                if placed else float("nan")
            count_key, sum_key = "claud_scheduler_pass_seconds_count", "claud_scheduler_pass_seconds_sum"
            passes = final.get(count_key, 0) - idle2.get(count_key, 0)
            pass_sum = final.get(sum_key, 0) - idle2.get(sum_key, 0)
            load_after = os.getloadavg()

            print(f"\n== {args.slaves} slaves, {args.jobs} jobs, {args.clients} submitters; "
                  f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} cores)")
            if len(submit_lat) < args.jobs:
                print(f"SUBMITS GAVE UP after {args.submit_timeout:.0f}s: {len(submit_lat)} of {args.jobs} acked")
            print(f"submit    p50 {pct(submit_lat, .5) * 1000:7.1f} ms  p99 {pct(submit_lat, .99) * 1000:7.1f} ms  "
                  f"({len(submit_lat) / submit_seconds:.0f} acked/s)   target p99 <= {TARGETS['api_p99_ms']:.0f} ms")
            print(f"list 100  p50 {pct(list_lat, .5) * 1000:7.1f} ms  p99 {pct(list_lat, .99) * 1000:7.1f} ms  "
                  f"({len(list_lat)} lists under load)   target p99 <= {TARGETS['api_p99_ms']:.0f} ms")
            print(f"placements {rate:7.0f} /s   target >= {TARGETS['placements_per_s']:.0f}/s")
            print("all running " + (f"{all_running:.1f}s after the first submit" if all_running else
                                    f"NOT within {args.settle:.0f}s: {final.get('claud_jobs:running', 0):.0f} running, "
                                    f"{final.get('claud_jobs:pending', 0):.0f} pending"))
            print(f"stability: term {idle2.get('claud_term', 0):.0f} -> {final.get('claud_term', 0):.0f}, "
                  f"{final.get('claud_jobs_lost_total', 0):.0f} jobs lost (fenced slaves or dead ones)")
            if passes:
                print(f"scheduler {passes:.0f} passes, mean {pass_sum / passes * 1000:.1f} ms, "
                      f"{(final.get('claud_scheduler_placements_total', 0) - base) / passes:.0f} jobs/pass")
            for name in procs:
                cpu, rss = sampler.cpu[name], sampler.rss[name]
                if cpu:
                    print(f"{name:11} CPU mean {statistics.mean(cpu):4.0f}% max {max(cpu):4.0f}%   "
                          f"RSS max {max(rss):6.0f} MiB" + ("   target <= 1024 MiB" if name == "leader" else ""))
            for m in cluster.masters:
                text = m.log_path.read_text()
                print(f"master-{m.id}: {text.count('role=pre_candidate')} election timeouts, "
                      f"{text.count('event=leader.stepped_down')} step-downs, "
                      f"{text.count('event=node.suspect')} slaves suspected, {text.count('event=node.dead')} dead")
            hollow_logs = [(workdir / f"hollow-{k}.log").read_text(errors="replace") for k in range(len(workers))]
            print(f"hollow slaves: {sum(t.count('lease.expired') for t in hollow_logs)} fences (lease expired)")
            for line in snapshots(leader.log_path)[-3:]:
                print("snapshot  " + " ".join(p for p in line.split() if p.split("=")[0] in
                                               {"index", "jobs", "encode_ms", "ms"}))
            stored = sorted((leader.data_dir).rglob("*snap*"))
            for path in stored[-2:]:
                if path.is_file():
                    print(f"snapshot file {path.name}: {path.stat().st_size / 2**20:.1f} MiB")
            scheduler_pass_cost(sorted({100, args.slaves}), max(1, args.jobs // args.slaves), 500, rounds=3)
            if spy is not None:
                _, err = spy.communicate(timeout=args.profile + 60)
                if (workdir / "leader.spy").exists():
                    summarise_profile(workdir / "leader.spy")
                else:
                    print(f"  py-spy failed: {err.decode()[-500:]}")
        finally:
            if args.keep_logs is not None:  # the masters' and hollow slaves' logs, for a post-mortem
                import shutil
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for path in workdir.rglob("*.log"):
                    shutil.copy(path, args.keep_logs / path.name)
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(10)
                except subprocess.TimeoutExpired:
                    worker.kill()
            cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slaves", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--slave-procs", type=int, default=2, help="worker processes the hollow slaves share")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--reconcile", type=float, default=5.0, help="hollow slaves' --reconcile-interval")
    parser.add_argument("--max-heartbeats-per-second", type=float, default=None, help="the masters' (default theirs)")
    parser.add_argument("--submit-timeout", type=float, default=180, help="stop submitting after this, seconds")
    parser.add_argument("--settle", type=float, default=120, help="longest wait for all jobs running, seconds")
    parser.add_argument("--profile", type=float, default=0, help="py-spy the leader this many seconds")
    parser.add_argument("--scheduler-only", action="store_true", help="only the in-process pass cost, 100 vs 1000")
    parser.add_argument("--placed-per-slave", type=int, default=50, help="with --scheduler-only")
    parser.add_argument("--batch", type=int, default=500, help="new jobs per pass, with --scheduler-only")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy every process's log into this directory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--masters", help=argparse.SUPPRESS)
    parser.add_argument("--secret-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scheduler_only:
        scheduler_pass_cost([100, 1000], args.placed_per_slave, args.batch)
        return
    if args.worker:
        asyncio.run(run_hollow(args.worker.split(","), args.masters.split(","), args.secret_file, args.reconcile,
                               args.slots))
    else:
        run(args)


if __name__ == "__main__":
    main()
