"""Container starts, side by side: CLAUD, Docker Swarm and the bare Docker SDK on this engine.

Two measures, each the median of ``rounds`` runs, all three measured in this one run:

* one start: CLAUD from submit to the event stream saying "running"; Swarm
  from ``services.create`` (one replica) to the engine's ``start`` event of the
  task's container; the bare SDK ``containers.run`` (create + start);
* a burst: ``burst`` jobs / one-replica services / containers asked for at
  once, until the last one runs.

CLAUD is three masters and one slave with the real Docker runtime on loopback
(as tests/support/cluster.py starts them), seen on the leader's event stream;
Swarm is a one-node swarm the script initialises on the local engine and
leaves at the end (``docker swarm leave --force``, also on error), skipped
when the engine is already part of a swarm, which is someone else's. Every
job, service and container gets the same image (claud/busybox, local: Swarm is
not asked to resolve it, as ``--no-resolve-image``), command and CPU/memory
limits. All three are up for the whole run and measured round by round, each
round in a turned order, each measurement cleaned up (containers gone) before
the next: on a shared machine the load changes by the minute, and it then
falls on all three alike. Installs nothing.

    .venv/bin/python bench/compare_starts.py [--rounds 3] [--burst 50]

``run(rounds)`` returns the rows (measure, CLAUD, Swarm, bare SDK) for bench/compare.py.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import docker
import docker.errors
import docker.types

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import RunningWatcher

from support.cluster import Cluster, wait_until
from support.docker_engine import remove_containers

IMAGE = "claud/busybox:latest"
COMMAND = ["sleep", "3600"]
#: Column names of run()'s rows after the measure, for bench/compare.py.
COLUMNS = ("CLAUD", "Swarm", "bare SDK")
#: Limits of a single start and of each burst member (a tiny CPU quota slows
#: runc's own start-up under CFS throttling, for all three alike).
SINGLE_CPU, SINGLE_MB = 0.25, 32
BURST_CPU, BURST_MB = 0.1, 16
#: How many requests a client keeps in flight in a burst: CLAUD's submits are
#: cheap HTTP calls; Swarm's creates and the bare SDK's runs use a pool as a
#: reasonable SDK user would, the size of the slave's own Docker pool.
SDK_POOL = 16
LABEL = "claud.bench"
TIMEOUT = 120.0


def _settle(client: docker.DockerClient, label: str, timeout: float = 60) -> None:
    """Until no container with ``label`` is left (force-removing what lingers)."""
    remove_containers(label)
    wait_until(lambda: not client.containers.list(all=True, filters={"label": label}), timeout,
               interval=0.2, what=f"containers labelled {label} gone")


# ------------------------------------------------------------------ bare SDK


class BareSdk:
    """``containers.run`` on the local engine: create, start, return."""

    def __init__(self) -> None:
        self._client = docker.from_env(timeout=60)
        self._local = threading.local()
        self._tag = uuid.uuid4().hex[:8]
        self._label = f"{LABEL}={self._tag}"

    def _run_one(self, cpu: float, mb: int) -> None:
        if not hasattr(self._local, "client"):
            self._local.client = docker.from_env(timeout=60)
        self._local.client.containers.run(IMAGE, COMMAND, detach=True, labels={LABEL: self._tag},
                                          nano_cpus=round(cpu * 1e9), mem_limit=f"{mb}m")

    def single(self) -> float:
        t0 = time.perf_counter()
        self._run_one(SINGLE_CPU, SINGLE_MB)
        took = time.perf_counter() - t0
        _settle(self._client, self._label)
        return took

    def burst(self, count: int) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SDK_POOL) as pool:
            list(pool.map(lambda _: self._run_one(BURST_CPU, BURST_MB), range(count)))
        took = time.perf_counter() - t0
        _settle(self._client, self._label)
        return took

    def close(self) -> None:
        remove_containers(self._label)
        self._client.close()


# ------------------------------------------------------------------ Swarm


class StartWatcher:
    """When the engine announces each container with ``label`` started, by its ``item`` label."""

    def __init__(self, label: str) -> None:
        self.started: dict[str, float] = {}
        self._cond = threading.Condition()
        self._client = docker.from_env(timeout=None)  # type: ignore[arg-type] # a stream: no read deadline
        self._events = self._client.events(decode=True, filters={"type": "container", "event": "start",
                                                                 "label": label})
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # closed at the end of the run
            for event in self._events:
                seen = time.perf_counter()
                item = (event.get("Actor") or {}).get("Attributes", {}).get(f"{LABEL}.item")
                if item:
                    with self._cond:
                        self.started.setdefault(item, seen)
                        self._cond.notify_all()

    def wait(self, items: list[str], timeout: float = TIMEOUT) -> float:
        """The moment the last of ``items`` started."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(i in self.started for i in items):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{sum(i not in self.started for i in items)} containers never started")
                self._cond.wait(remaining)
            return max(self.started[i] for i in items)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._events.close()
        self._client.close()


def _leave_swarm() -> None:
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60, check=False)


def swarm_problem() -> str | None:
    """Why Swarm cannot be measured here (None: it can)."""
    client = docker.from_env(timeout=60)
    try:
        state = str(client.info().get("Swarm", {}).get("LocalNodeState", ""))
    finally:
        client.close()
    if state not in ("inactive", ""):
        return f"skipped: this engine is already in a swarm ({state}), someone else's"
    return None


class Swarm:
    """One-replica services on a one-node swarm of the local engine, initialised here and left at the end."""

    def __init__(self) -> None:
        init = subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                              text=True, timeout=60, check=False)
        atexit.register(_leave_swarm)  # even if the run dies before close()
        if init.returncode != 0:
            _leave_swarm()
            raise RuntimeError(f"docker swarm init failed: {init.stderr.strip()[:300]}")
        self._client = docker.from_env(timeout=60)
        self._local = threading.local()
        self._tag = uuid.uuid4().hex[:8]
        self._label = f"{LABEL}={self._tag}"
        self._services: list[str] = []
        self._lock = threading.Lock()
        try:
            self._watcher = StartWatcher(self._label)
        except BaseException:
            self._client.close()
            _leave_swarm()
            raise

    def _create(self, name: str, cpu: float, mb: int) -> None:
        if not hasattr(self._local, "client"):
            self._local.client = docker.from_env(timeout=60)
        # The API never resolves the image (the CLI's resolving is client-side): --no-resolve-image.
        service = self._local.client.services.create(
            IMAGE, COMMAND, name=name, labels={LABEL: self._tag},
            container_labels={LABEL: self._tag, f"{LABEL}.item": name},
            resources=docker.types.Resources(cpu_limit=round(cpu * 1e9), mem_limit=mb * 1024 * 1024),
            mode=docker.types.ServiceMode("replicated", replicas=1),
        )
        with self._lock:
            self._services.append(service.id)

    def _clean(self) -> None:
        with self._lock:
            ids, self._services = self._services, []
        for sid in ids:
            with contextlib.suppress(docker.errors.NotFound):
                self._client.api.remove_service(sid)
        _settle(self._client, self._label)

    def _name(self) -> str:
        return f"cb-{self._tag}-{uuid.uuid4().hex[:6]}"

    def single(self) -> float:
        name = self._name()
        t0 = time.perf_counter()
        self._create(name, SINGLE_CPU, SINGLE_MB)
        took = self._watcher.wait([name]) - t0
        self._clean()
        return took

    def burst(self, count: int) -> float:
        names = [self._name() for _ in range(count)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SDK_POOL) as pool:
            list(pool.map(lambda n: self._create(n, BURST_CPU, BURST_MB), names))
        took = self._watcher.wait(names) - t0
        self._clean()
        return took

    def close(self) -> None:
        try:
            self._watcher.close()
            with contextlib.suppress(Exception):
                self._clean()
            remove_containers(self._label)
            self._client.close()
        finally:
            _leave_swarm()
            atexit.unregister(_leave_swarm)


# ------------------------------------------------------------------ CLAUD


class Claud:
    """Three masters and one Docker slave on loopback; a start is seen on the leader's event stream."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self._cluster = Cluster(Path(self._tmp.name))
        self._watcher: RunningWatcher | None = None
        try:
            self._cluster.start_masters(3)
            # More cores than the machine has, so that the burst fits; each
            # container's own CFS quota is what Docker enforces.
            self._cluster.start_slave("s1", "--cpus", "64", "--memory-mb", "65536")
            leader = self._cluster.wait_leader()
            self._watcher = RunningWatcher(leader.url, self._cluster.token)
            self._http = leader.client(self._cluster.token)
            watcher = self._watcher
            wait_until(lambda: watcher.connected, 10, what="event stream connected")
        except BaseException:
            self.close()
            raise

    def _submit(self, name: str, cpu: float, mb: int) -> str:
        resp = self._http.post("/v1/jobs", json={"image": IMAGE, "command": COMMAND, "stop_timeout": 0, "name": name,
                                                 "resources": {"cpu": cpu, "memory_mb": mb}})
        assert resp.status_code in (200, 201), resp.text
        return str(resp.json()["id"])

    def _clean(self, ids: list[str]) -> None:
        for job_id in ids:
            self._http.delete(f"/v1/jobs/{job_id}")
        http = self._http
        wait_until(lambda: all(http.get(f"/v1/jobs/{j}").json()["state"] == "stopped" for j in ids),
                   60, interval=0.2, what="jobs stopped")
        remove_containers(f"claud.slave={self._cluster.slaves[0].id}")

    def single(self) -> float:
        assert self._watcher is not None
        t0 = time.perf_counter()
        job_id = self._submit("single", SINGLE_CPU, SINGLE_MB)
        self._watcher.wait([job_id], TIMEOUT)
        took = self._watcher.running[job_id] - t0
        self._clean([job_id])
        return took

    def burst(self, count: int) -> float:
        assert self._watcher is not None
        t0 = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            ids = list(pool.map(lambda i: self._submit(f"burst{i}", BURST_CPU, BURST_MB), range(count)))
        self._watcher.wait(ids, TIMEOUT)
        took = max(self._watcher.running[j] for j in ids) - t0
        self._clean(ids)
        return took

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        with contextlib.suppress(AttributeError):
            self._http.close()
        self._cluster.close()
        self._tmp.cleanup()


# ------------------------------------------------------------------ the table


class System(Protocol):
    def single(self) -> float: ...
    def burst(self, count: int) -> float: ...
    def close(self) -> None: ...


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def measure(rounds: int, burst: int) -> tuple[dict[str, list[float]], dict[str, list[float]], str | None]:
    """Every system's singles and bursts, interleaved round by round (the order turning each
    round, so that no system always follows another's clean-up), and why Swarm is missing if it is."""
    swarm_skipped = swarm_problem()
    factories: list[tuple[str, Callable[[], System]]] = [("CLAUD", Claud), ("bare SDK", BareSdk)]
    if swarm_skipped is None:
        factories.insert(1, ("Swarm", Swarm))
    with contextlib.ExitStack() as stack:
        systems: dict[str, System] = {}
        for name, factory in factories:
            try:
                system = factory()
            except RuntimeError as exc:
                if name != "Swarm":
                    raise
                swarm_skipped = f"skipped: {exc}"
                continue
            stack.callback(system.close)
            systems[name] = system
        for system in systems.values():
            system.single()  # warm-up: first container of the run, first clients, first threads
        names = list(systems)
        singles: dict[str, list[float]] = {n: [] for n in names}
        bursts: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                singles[name].append(systems[name].single())
        for r in range(rounds if burst else 0):
            for name in names[r % len(names):] + names[:r % len(names)]:
                bursts[name].append(systems[name].burst(burst))
    return singles, bursts, swarm_skipped


def run(rounds: int = 3, burst: int = 50) -> list[tuple[str, ...]]:
    """Rows (measure, CLAUD, Swarm, bare SDK), every figure measured in this call."""
    singles, bursts, swarm_skipped = measure(rounds, burst)
    rows: list[tuple[str, ...]] = []
    measures = [(f"one start, submit -> running (median of {rounds})", "one start", singles)]
    if burst:
        measures.append((f"{burst} at once, all running (median of {rounds})", f"{burst} at once", bursts))
    for long_name, _, figures in measures:
        cells = [f"{statistics.median(figures[c]):.2f} s" if c in figures else (swarm_skipped or "-")
                 for c in COLUMNS]
        rows.append((long_name, *cells))
    for _, short, figures in measures:
        claud = statistics.median(figures["CLAUD"])
        cells = [_ratio(claud, statistics.median(figures[c])) if c in figures else "-" for c in COLUMNS]
        rows.append((f"{short}: CLAUD / system", *cells))
    return rows


def missing() -> str | None:
    """Why this part cannot run here (None: it can), for bench/compare.py."""
    try:
        client = docker.from_env(timeout=5)
    except docker.errors.DockerException as exc:
        return f"no Docker engine ({exc}): bash deploy/install-docker.sh"
    try:
        client.ping()
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {IMAGE} missing: bash deploy/build-busybox-image.sh"
    except Exception as exc:  # noqa: BLE001 - any failure means no engine to measure
        return f"the Docker engine does not answer ({exc}): bash deploy/install-docker.sh"
    finally:
        client.close()
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measure (the median is shown)")
    parser.add_argument("--burst", type=int, default=50, help="jobs asked for at once (0: single starts only)")
    args = parser.parse_args()
    problem = missing()
    if problem:
        sys.exit(f"compare_starts: {problem}")
    rows = run(args.rounds, args.burst)
    header = ("measure", *COLUMNS)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
