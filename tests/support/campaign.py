"""A seeded fault campaign over 3 masters and 3 slaves, and its verdict.

One seed fixes the jobs (batch ``never`` / ``on-failure``, ``service``; some
that ignore SIGTERM, some that exit on it) and the faults with their
durations (support.faults). The campaign submits jobs through the API,
applies the faults one after another, heals everything, waits for the
cluster to settle, and judges:

(a) no job ever ran in two containers at once, and no batch job ran to exit
    code 0 twice, by Docker's own event history (support.docker_events, which
    judges with claud verify's own functions, claud.client.verify);
(b) every acknowledged job is present (claud verify's ``missing_jobs``), and either terminal for the right
    reason or (a service) running in exactly one container, the one the
    masters name;
(c) nothing is left pending, scheduled, starting, stopping or lost;
(d) no job is ``failed`` for a fault of ours: only containers killed from
    outside CLAUD (``docker kill``, a machine that died and came back before
    node_dead_after) may fail a job, and only as often as its policy allows.
    A drain is ours: a drained job is placed elsewhere, never failed, and a
    batch job that finished is never run again by it (a);
(e) nothing is placed on a slave while it drains (the masters' job events).

Every slave talks to its engine through a socket proxy of the campaign's
(support.docker_proxy), which the ``engine_unreachable`` fault switches off.

Used by tests/chaos/test_campaign.py (short) and bench/campaign.py (long).
"""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx

from claud.client.verify import missing_jobs
from support.cluster import Cluster, wait_until
from support.docker_events import EventRecorder, Overlap, RunInterval, overlaps, successful_exits
from support.docker_proxy import DockerSocketProxy
from support.faults import FaultInjector, FaultRecord, Outage, PlannedFault, Timing, plan
from support.firewall import LoopbackFirewall, firewall_available

SLAVES = ["a", "b", "c"]
#: Fixed capacity, so that placements do not depend on the host.
SLAVE_FLAGS = ["--cpus", "2", "--memory-mb", "2048"]
IMAGE = "claud/busybox:latest"
SETTLED_BATCH = {"completed", "failed", "stopped"}


@dataclass(frozen=True)
class PlannedJob:
    name: str
    kind: str  # never | on-failure | service
    spec: dict[str, Any]

    @property
    def allowed_failures(self) -> int:
        """External kills this job may take and still not be failed."""
        if self.kind == "service":
            return math.inf  # type: ignore[return-value]
        return int(self.spec["restart"].get("max_retries", 0)) if self.kind == "on-failure" else 0


#: Jobs submitted before the first fault, whatever the seed.
ANCHORS = 6


def plan_jobs(rnd: random.Random, count: int) -> list[PlannedJob]:
    jobs = []
    for i in range(count):
        # The first six are anchors, spread one of each per slave so that every slave fault
        # finds them running: three services, and three `never` batch jobs long enough to
        # meet a fault (a fenced one must come back, not fail). The rest are drawn.
        if i < ANCHORS:
            kind = "service" if i < 3 else "never"
        else:
            kind = rnd.choices(["never", "on-failure", "service"], [3, 2, 1])[0]
        # Half ignore SIGTERM (sleep as PID 1): only the SIGKILL after the grace stops them.
        polite = rnd.random() < 0.5
        seconds = 600 if kind == "service" else rnd.randint(12, 20) if i < ANCHORS else rnd.randint(2, 8)
        body = f"trap 'exit 143' TERM; sleep {seconds} & wait" if polite else f"exec sleep {seconds}"
        spec: dict[str, Any] = {
            "name": f"{kind}-{i}",
            "image": IMAGE,
            "command": ["sh", "-c", body],
            "resources": {"cpu": 0.05, "memory_mb": 16},
            "stop_timeout": 1,
        }
        if kind == "service":
            spec |= {"type": "service", "restart": {"policy": "always"}}
        elif kind == "on-failure":
            spec |= {"restart": {"policy": "on-failure", "max_retries": rnd.randint(1, 2)}}
        else:
            spec |= {"restart": {"policy": "never"}}
        jobs.append(PlannedJob(spec["name"], kind, spec))
    return jobs


@dataclass
class Submitted:
    job_id: str
    planned: PlannedJob
    acked_at: float


@dataclass
class Verdict:
    seed: int
    flags: list[str]
    timeline: list[FaultRecord] = field(default_factory=list)
    submitted: list[Submitted] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    excused_overlaps: list[Overlap] = field(default_factory=list)
    repeated_successes: list[str] = field(default_factory=list)
    excused_reruns: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_outcome: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    wrongly_failed: list[str] = field(default_factory=list)
    placed_while_draining: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    job_histories: dict[str, str] = field(default_factory=dict)
    container_histories: dict[str, list[str]] = field(default_factory=dict)
    logs_kept_in: str | None = None
    origin_wall: float = 0.0
    elapsed: float = 0.0
    settled_after: float | None = None

    @property
    def ok(self) -> bool:
        return not (self.overlaps or self.repeated_successes or self.missing or self.wrong_outcome
                    or self.stuck or self.wrongly_failed or self.placed_while_draining or self.errors)

    def failed_checks(self) -> list[str]:
        checks = {
            "(a) overlaps": self.overlaps, "(a) batch ran to exit 0 twice": self.repeated_successes,
            "(b) acknowledged but missing": self.missing, "(b) wrong outcome": self.wrong_outcome,
            "(c) stuck": self.stuck, "(d) failed for a fault of ours": self.wrongly_failed,
            "(e) placed on a draining slave": self.placed_while_draining, "campaign errors": self.errors,
        }
        return [f"{name}: {len(items)}" for name, items in checks.items() if items]

    def report(self) -> str:
        lines = [f"campaign seed={self.seed} verdict={'PASS' if self.ok else 'FAIL'} "
                 f"elapsed={self.elapsed:.1f}s settled_after={self.settled_after}",
                 f"replay: CLAUD_CAMPAIGN_SEEDS={self.seed} pytest tests/chaos/test_campaign.py "
                 f"(or bench/campaign.py --runs 1 --seed {self.seed})",
                 f"master flags: {' '.join(self.flags)}",
                 f"jobs: {len(self.submitted)} acknowledged "
                 + ", ".join(f"{s.job_id}={s.planned.kind}" for s in self.submitted)
                 + (f"; not acknowledged: {self.unacknowledged}" if self.unacknowledged else ""),
                 "fault timeline (seconds since start):"]
        lines += ["  " + r.describe() for r in self.timeline]
        if not self.ok:
            lines.append("failed checks: " + "; ".join(self.failed_checks()))
        for title, items in [("(a) overlaps", [o.describe(self.origin_wall) for o in self.overlaps]),
                             ("(a) excused overlaps (agent not running, or its engine unreachable, "
                              "longer than node_dead_after)",
                              [o.describe(self.origin_wall) for o in self.excused_overlaps]),
                             ("(a) batch job ran to exit 0 more than once", self.repeated_successes),
                             ("(a) excused reruns (exit 0 unreported while the slave was away)", self.excused_reruns),
                             ("(b) acknowledged but missing", self.missing),
                             ("(b) wrong outcome", self.wrong_outcome),
                             ("(c) stuck after quiescence deadline", self.stuck),
                             ("(d) failed for a fault of ours", self.wrongly_failed),
                             ("(e) placed on a draining slave", self.placed_while_draining),
                             ("campaign errors", self.errors)]:
            if items:
                lines.append(title + ":")
                lines += ["  " + item for item in items]
        if not self.ok and self.job_histories:
            lines.append("histories of the jobs named above (seconds since start):")
            lines += [f"  {job_id}: {history}" for job_id, history in sorted(self.job_histories.items())]
            lines.append("their containers, from Docker's events (seconds since start):")
            for job_id, runs in sorted(self.container_histories.items()):
                lines += [f"  {job_id}: {run}" for run in runs]
        if self.logs_kept_in:
            lines.append(f"process logs kept in {self.logs_kept_in}")
        return "\n".join(lines)


class Api:
    """The public API over whichever masters answer: writes retried with one idempotency key."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.http = httpx.Client(headers={"Authorization": f"Bearer {cluster.token}"}, timeout=5)

    def close(self) -> None:
        self.http.close()

    def leader_url(self) -> str:
        return self.cluster.wait_leader(timeout=30).url

    def submit(self, spec: dict[str, Any], deadline: float) -> str | None:
        key = uuid.uuid4().hex
        i = 0
        while time.monotonic() < deadline:
            alive = [m for m in self.cluster.masters if m.alive]
            if alive:
                master = alive[i % len(alive)]
                i += 1
                try:
                    resp = self.http.post(f"{master.url}/v1/jobs", json=spec, headers={"Idempotency-Key": key})
                    if resp.status_code in (200, 201):
                        return str(resp.json()["id"])
                    if resp.status_code != 503 and resp.status_code < 500:
                        raise AssertionError(f"submit refused: {resp.status_code} {resp.text[:300]}")
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        return None

    def jobs(self) -> dict[str, dict[str, Any]]:
        resp = self.http.get(f"{self.leader_url()}/v1/jobs")
        resp.raise_for_status()
        return {j["id"]: j for j in resp.json()["jobs"]}

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"{self.leader_url()}/v1/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()


def running_containers(engine: docker.DockerClient, slave_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Per job id, the labels of its live containers (running or paused) on the campaign's slaves."""
    out: dict[str, list[dict[str, str]]] = {}
    for sid in slave_ids:
        for status in ("running", "paused"):  # a paused container still holds its job
            for entry in engine.api.containers(filters={"label": f"claud.slave={sid}", "status": status}):
                labels = entry.get("Labels") or {}
                out.setdefault(labels.get("claud.job", "?"), []).append({**labels, "id": entry["Id"], "status": status})
    return out


def unsettled(submitted: list[Submitted], jobs: dict[str, dict[str, Any]],
              containers: dict[str, list[dict[str, str]]]) -> list[str]:
    """Why the cluster has not settled yet, one line per job (empty once it has)."""
    problems = []
    for s in submitted:
        job = jobs.get(s.job_id)
        if job is None:
            continue  # judged as missing
        running = containers.get(s.job_id, [])
        state = job["state"]
        if s.planned.kind == "service":
            if state != "running":
                problems.append(f"{s.job_id} (service) is {state}")
            elif len(running) != 1:
                problems.append(f"{s.job_id} (service) has {len(running)} live containers: "
                                f"{[(c.get('claud.alloc'), c.get('claud.slave')) for c in running]}")
            elif (running[0].get("claud.alloc"), running[0].get("claud.slave")) != (job.get("alloc_id"),
                                                                                   job.get("node_id")):
                problems.append(f"{s.job_id} (service) runs alloc {running[0].get('claud.alloc')} on "
                                f"{running[0].get('claud.slave')}, "
                                f"the masters say {job.get('alloc_id')} on {job.get('node_id')}")
        else:
            if state not in SETTLED_BATCH:
                problems.append(f"{s.job_id} ({s.planned.kind}) is {state}")
            elif running:
                problems.append(f"{s.job_id} ({s.planned.kind}) is {state} but {len(running)} container(s) still live")
    for job_id, running in containers.items():
        if job_id not in {s.job_id for s in submitted}:
            problems.append(f"container(s) of unknown job {job_id} live: {[c.get('claud.alloc') for c in running]}")
    return problems


def history(job: dict[str, Any], origin_wall: float) -> str:
    parts = []
    for e in job.get("events") or []:
        at = datetime.fromisoformat(str(e["at"]).replace("Z", "+00:00")).timestamp() - origin_wall
        where = f"@{str(e.get('node_id')).rsplit('-', 1)[-1]}" if e.get("node_id") else ""
        parts.append(f"{at:.2f} {e['state']}{where}#{e.get('attempt', '')} {e.get('message', '')!r}")
    return " | ".join(parts)


def excused_overlap(overlap: Overlap, outages: list[Outage], timing: Timing) -> bool:
    """The design's known limit: the agent is what stops containers, and it stops them
    through its engine. While the agent is killed or frozen, or its engine does not
    answer it, for longer than node_dead_after, its containers run on as the masters
    rightly start copies elsewhere. Such an overlap is excused only if, at every
    instant of it, one side's agent or engine was away, or back for less than
    fence_grace + 2 s (by then it must have stopped them); back-to-back outages add up.

    Why an unreachable engine counts although the agent runs: it heartbeats (runtime
    unhealthy) and so holds its lease, never fences, and after node_dead_after the
    masters lose its jobs and place them elsewhere; the agent, which cannot reach
    its engine, can neither see nor stop the old copies, and with its lease intact
    it has no reason to fence them (its pidfd fast path needs one). The moment the engine answers,
    their allocations are no longer desired and the agent kills them as a fence
    would (the fence's grace at most), which the fence_grace + 2 s bound holds it
    to. A cut, by contrast, leaves agent and engine working: the agent fences at
    its lease's end, and no overlap of a cut slave is ever excused."""
    start = max(overlap.first.start, overlap.second.start)
    end = min(overlap.first.end, overlap.second.end)
    for side in (overlap.first, overlap.second):
        windows = sorted((o.began, o.back + timing.fence_grace + 2.0) for o in outages
                         if o.nothing_could_stop_its_containers and o.may_be_declared_dead(timing)
                         and o.slave_id == side.slave_id)
        covered_to = start
        for began, until in windows:
            if began > covered_to:
                break
            covered_to = max(covered_to, until)
        if windows and windows[0][0] <= start and covered_to >= end:
            return True
    return False


def excused_rerun(earlier: RunInterval, outages: list[Outage], timing: Timing,
                  excused_pairs: frozenset[frozenset[str]] = frozenset(), later: Sequence[RunInterval] = ()) -> bool:
    """A batch job that exited 0 while its slave could not report it (and long enough
    that the masters declared the slave dead, or lost its jobs for its engine) runs
    again elsewhere: at least once, not exactly once, is all a lost slave allows. So
    may one that ran at the same time as a later run in an excused overlap: the copy
    the masters started elsewhere finished first, the stale one, unstoppable, after."""
    margin = 2 * timing.heartbeat + 0.5  # an exit just before the outage whose report was still in flight
    if any(frozenset((earlier.container_id, run.container_id)) in excused_pairs for run in later):
        return True
    return any(o.slave_id == earlier.slave_id and o.may_be_declared_dead(timing)
               and o.began - margin <= earlier.end <= o.back for o in outages)


def placed_while_draining(jobs: dict[str, dict[str, Any]], drains: list[tuple[str, float, float]],
                          origin_wall: float) -> list[str]:
    """Every placement the masters committed on a slave between its drain's answer and
    the request to undrain it (their events' own times; one machine, one clock)."""
    found = []
    for job_id, job in sorted(jobs.items()):
        for e in job.get("events") or []:
            if e.get("state") != "scheduled" or not e.get("node_id"):
                continue
            at = datetime.fromisoformat(str(e["at"]).replace("Z", "+00:00")).timestamp()
            for slave_id, drained_from, undrained_at in drains:
                if e["node_id"] == slave_id and drained_from < at < undrained_at:
                    found.append(f"{job_id} placed on {slave_id} at {at - origin_wall:.2f}s (attempt "
                                 f"{e.get('attempt')}), drained from {drained_from - origin_wall:.2f}s "
                                 f"to {undrained_at - origin_wall:.2f}s")
    return found


def run_campaign(workdir: Path, seed: int, faults: int = 5, jobs: int = 8, timing: Timing | None = None,
                 settle_timeout: float = 45.0, fault_budget: float = math.inf,
                 log: Callable[[str], None] = lambda line: None, keep_logs: Path | None = None) -> Verdict:
    """Run one seeded campaign in ``workdir``; always cleans up; never raises for what it judges.

    No fault starts later than ``fault_budget`` seconds into the campaign (a loaded
    machine slows every restart); the ones left out are on the timeline as skipped.
    When the verdict fails, the processes' logs are copied to ``keep_logs``.
    """
    timing = timing or Timing()
    rnd = random.Random(seed)
    fault_plan: list[PlannedFault] = plan(rnd, timing, SLAVES, faults)
    job_plan = plan_jobs(rnd, jobs)
    # Which jobs go in before the faults and which between them, also from the seed.
    waves: list[list[PlannedJob]] = [[] for _ in range(faults + 1)]
    for j, planned in enumerate(job_plan):
        waves[0 if j < max(ANCHORS, jobs // 2) else rnd.randint(1, faults) if faults else 0].append(planned)
    gaps = [round(rnd.uniform(0.5, 2.0), 2) for _ in range(faults)]

    verdict = Verdict(seed=seed, flags=timing.master_flags())
    started = time.monotonic()
    # Addresses of its own (not drawn from the seed): the cuts must touch no other test on the machine.
    own = random.SystemRandom()
    cluster = Cluster(workdir, net=f"127.{own.randint(64, 250)}.{own.randint(0, 255)}")
    firewall = LoopbackFirewall() if firewall_available() else None
    injector: FaultInjector | None = None
    recorder: EventRecorder | None = None
    api: Api | None = None
    engine = docker.from_env(timeout=60)
    slave_ids: list[str] = []
    proxies = {name: DockerSocketProxy().on() for name in SLAVES}
    slave_flags = {name: [*SLAVE_FLAGS, "--docker-host", proxies[name].url] for name in SLAVES}
    active: list[threading.Thread] = []

    def join_all() -> None:
        for thread in active:
            thread.join(timeout=300)  # a restart waits 60 s at most: a hung fault is a finding
            if thread.is_alive():
                verdict.errors.append(f"fault thread {thread.name} still running after 300 s")
        active.clear()

    try:
        # A shared, loaded machine can take tens of seconds to start six Python processes.
        cluster.start_masters(3, *timing.master_flags(), leader_timeout=120)
        for name in SLAVES:
            cluster.start_slave(name, *slave_flags[name], timeout=120)
        slave_ids = [s.id for s in cluster.slaves]
        api = Api(cluster)
        origin = time.monotonic()
        verdict.origin_wall = time.time()
        recorder = EventRecorder(slave_ids, since=verdict.origin_wall).start()
        injector = FaultInjector(cluster, timing, origin, firewall, slave_flags, proxies)
        verdict.timeline = injector.timeline

        def submit_wave(wave: list[PlannedJob]) -> None:
            for planned in wave:
                job_id = api.submit(planned.spec, deadline=time.monotonic() + 30)
                if job_id is None:
                    verdict.unacknowledged.append(planned.name)
                else:
                    verdict.submitted.append(Submitted(job_id, planned, injector.now()))
                    log(f"{injector.now():7.2f}s submitted {job_id} ({planned.kind})")

        submit_wave(waves[0])
        # The first fault should find jobs running, not still being placed.
        first = {s.job_id for s in verdict.submitted}
        with contextlib.suppress(AssertionError):
            wait_until(lambda: all(api.jobs()[j]["state"] in ("running", *SETTLED_BATCH) for j in first), 60,
                       interval=0.3, what="the first jobs running")
        log(f"{injector.now():7.2f}s first jobs running")

        def run_fault(fault: PlannedFault) -> None:
            try:
                record = injector.apply(fault)  # heals what it broke, even when it fails
                log(record.describe())
            except Exception as exc:  # noqa: BLE001 - a fault that cannot be healed is a finding, not a crash of the judge
                verdict.errors.append(f"fault {fault.kind} on {fault.slave}: {exc!r}")
                log(f"fault {fault.kind} failed: {traceback.format_exc(limit=3)}")

        previous_began = 0.0
        for i, fault in enumerate(fault_plan):
            # The plan lets a fault overlap only one that does not itself overlap: two at most.
            overlapping = fault.overlap is not None and bool(active)
            if not overlapping:
                join_all()
                time.sleep(gaps[i])  # jobs get going between faults: part of the drawn schedule
            submit_wave(waves[i + 1])
            if overlapping:
                time.sleep(max(0.0, previous_began + (fault.overlap or 0.0) - time.monotonic()))
            if injector.now() > fault_budget:
                injector.timeline.append(FaultRecord(injector.now(), fault.kind, fault.slave or "", fault.duration,
                                                     fault.band, {"skipped": "over the campaign's time budget"}))
                continue
            previous_began = time.monotonic()
            thread = threading.Thread(target=run_fault, args=(fault,), name=f"fault-{i}-{fault.kind}", daemon=True)
            thread.start()
            active.append(thread)
        join_all()
        injector.heal_all()

        # (c): settle, polling with a deadline; two clean looks a second apart.
        settle_deadline = time.monotonic() + settle_timeout
        clean_since: float | None = None
        problems: list[str] = ["not looked yet"]
        while time.monotonic() < settle_deadline:
            try:
                problems = unsettled(verdict.submitted, api.jobs(), running_containers(engine, slave_ids))
            except Exception as exc:  # noqa: BLE001 - an unreadable cluster is not settled: try again
                problems = [f"could not read the cluster: {exc!r}"]
            if problems:
                clean_since = None
            elif clean_since is None:
                clean_since = time.monotonic()
            elif time.monotonic() - clean_since >= 1.0:
                verdict.settled_after = round(injector.now(), 1)
                break
            time.sleep(0.5)
        else:
            verdict.stuck = problems

        # (b) and (d), from the leader's tables.
        final = api.jobs()
        missing = {m.job_id for m in missing_jobs((s.job_id for s in verdict.submitted), final)}
        for s in verdict.submitted:
            job = final.get(s.job_id)
            if job is None or s.job_id in missing:
                verdict.missing.append(f"{s.job_id} ({s.planned.kind}, acknowledged at {s.acked_at:.2f}s)")
                continue
            state, code = job["state"], job.get("exit_code")
            kills = len(injector.external_kills.get(s.job_id, set()))
            if s.planned.kind == "service":
                if state in SETTLED_BATCH:
                    verdict.wrong_outcome.append(
                        f"{s.job_id} (service) ended {state} (exit {code}): a service is kept running")
            elif state == "completed" and code != 0:
                verdict.wrong_outcome.append(f"{s.job_id} ({s.planned.kind}) completed with exit code {code}")
            elif state == "stopped":
                verdict.wrong_outcome.append(f"{s.job_id} ({s.planned.kind}) stopped, yet nobody stopped it")
            if state == "failed" and kills <= s.planned.allowed_failures:
                verdict.wrongly_failed.append(
                    f"{s.job_id} ({s.planned.kind}, max_retries={s.planned.spec['restart'].get('max_retries', 0)}) "
                    f"failed (exit {code}, {job.get('message')!r}) after {kills} external kill(s)")

        # (e), from the masters' own events.
        detailed = {}
        for s in verdict.submitted:
            with contextlib.suppress(Exception):
                detailed[s.job_id] = api.job(s.job_id)
        verdict.placed_while_draining = placed_while_draining(detailed, injector.drains, verdict.origin_wall)

        # (a), from Docker's history.
        intervals = recorder.intervals(until=time.time())
        for overlap in overlaps(intervals):
            excused = excused_overlap(overlap, injector.outages, timing)
            (verdict.excused_overlaps if excused else verdict.overlaps).append(overlap)
        excused_pairs = frozenset(frozenset((o.first.container_id, o.second.container_id))
                                  for o in verdict.excused_overlaps)
        batch = {s.job_id for s in verdict.submitted if s.planned.kind != "service"}
        for job_id, runs in successful_exits(intervals).items():
            runs = sorted(runs, key=lambda r: r.end)
            if job_id not in batch or len(runs) < 2:
                continue
            text = f"{job_id}: " + "; ".join(r.describe(verdict.origin_wall) for r in runs)
            if all(excused_rerun(r, injector.outages, timing, excused_pairs, runs[k + 1:])
                   for k, r in enumerate(runs[:-1])):
                verdict.excused_reruns.append(text)
            else:
                verdict.repeated_successes.append(text)

        named = {text.split(" ", 1)[0].split(":", 1)[0] for items in
                 (verdict.missing, verdict.wrong_outcome, verdict.stuck, verdict.wrongly_failed,
                  verdict.repeated_successes, verdict.placed_while_draining)
                 for text in items} | {o.job_id for o in verdict.overlaps + verdict.excused_overlaps}
        for job_id in sorted(named & set(final)):
            with contextlib.suppress(Exception):
                verdict.job_histories[job_id] = history(api.job(job_id), verdict.origin_wall)
            verdict.container_histories[job_id] = [
                i.describe(verdict.origin_wall) for i in intervals if i.job_id == job_id]
    except Exception as exc:  # noqa: BLE001 - the verdict records why the campaign stopped
        verdict.errors.append(f"campaign aborted: {exc!r}\n{traceback.format_exc(limit=5)}")
    finally:
        join_all()  # an aborted campaign still waits for its faults before healing them
        if recorder is not None:
            recorder.close()
        if injector is not None:
            with contextlib.suppress(Exception):
                injector.close()
        if firewall is not None:
            firewall.close()
        if api is not None:
            api.close()
        cluster.close()
        for proxy in proxies.values():
            proxy.close()
        engine.close()
        verdict.elapsed = time.monotonic() - started
        if keep_logs is not None and not verdict.ok:
            with contextlib.suppress(OSError):
                keep_logs.mkdir(parents=True, exist_ok=True)
                for path in workdir.glob("*.log"):
                    shutil.copy(path, keep_logs / path.name)
                verdict.logs_kept_in = str(keep_logs)
    return verdict
