"""Container starts, side by side: CLAUD, Docker Swarm and the bare Docker SDK on this engine.

Two measures, each the median of ``rounds`` runs, all three measured in this one run:

* one start: CLAUD from submit to the event stream saying "running"; Swarm
  from ``services.create`` (one replica) to the engine's ``start`` event of the
  task's container; the bare SDK ``containers.run`` (create + start);
* a burst: ``burst`` jobs / one-replica services / containers asked for at
  once, until the last one runs.

CLAUD is three masters and one slave with the real Docker runtime on loopback
(as tests/support/cluster.py starts them); Swarm is a one-node swarm the script
initialises on the local engine and leaves at the end (``docker swarm leave
--force``, also on error), and it is skipped when the engine is already part
of a swarm, which is someone else's. Every job, service and container gets the
same image (claud/busybox, local: Swarm is told not to resolve it, as
``--no-resolve-image`` does), command and CPU/memory limits. The systems run
one after another, each in a block with a warm-up start first, so no system's
idle load sits under another's figures. Installs nothing.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _settle(client: docker.DockerClient, label: str, timeout: float = 60) -> None:
    """Until no container with ``label`` is left (force-removing what lingers)."""
    remove_containers(label)
    wait_until(lambda: not client.containers.list(all=True, filters={"label": label}), timeout,
               interval=0.2, what=f"containers labelled {label} gone")


# ------------------------------------------------------------------ bare SDK


def _bare(rounds: int, burst: int) -> tuple[float, float]:
    client = docker.from_env(timeout=60)
    local = threading.local()
    tag = uuid.uuid4().hex[:8]
    label = f"{LABEL}={tag}"

    def run_one(cpu: float, mb: int) -> None:
        if not hasattr(local, "client"):
            local.client = docker.from_env(timeout=60)
        local.client.containers.run(IMAGE, COMMAND, detach=True, labels={LABEL: tag},
                                    nano_cpus=round(cpu * 1e9), mem_limit=f"{mb}m")

    def single() -> float:
        t0 = time.perf_counter()
        run_one(SINGLE_CPU, SINGLE_MB)
        return time.perf_counter() - t0

    def many() -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SDK_POOL) as pool:
            list(pool.map(lambda _: run_one(BURST_CPU, BURST_MB), range(burst)))
        return time.perf_counter() - t0

    try:
        single()
        _settle(client, label)
        singles, bursts = [], []
        for _ in range(rounds):
            singles.append(single())
            _settle(client, label)
        for _ in range(rounds):
            bursts.append(many())
            _settle(client, label)
        return _median(singles), _median(bursts)
    finally:
        remove_containers(label)
        client.close()


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


def _swarm_state(client: docker.DockerClient) -> str:
    return str(client.info().get("Swarm", {}).get("LocalNodeState", ""))


def _leave_swarm() -> None:
    subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60, check=False)


@contextlib.contextmanager
def _swarm() -> Iterator[None]:
    subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"], capture_output=True,
                   timeout=60, check=True)
    atexit.register(_leave_swarm)  # even if the run dies between here and the finally
    try:
        yield
    finally:
        _leave_swarm()
        atexit.unregister(_leave_swarm)


def _swarm_measure(rounds: int, burst: int) -> tuple[float, float]:
    client = docker.from_env(timeout=60)
    local = threading.local()
    tag = uuid.uuid4().hex[:8]
    label = f"{LABEL}={tag}"
    services: list[str] = []
    lock = threading.Lock()
    watcher = StartWatcher(label)

    def create(name: str, cpu: float, mb: int) -> None:
        if not hasattr(local, "client"):
            local.client = docker.from_env(timeout=60)
        # The API never resolves the image (the CLI's resolving is client-side): --no-resolve-image.
        service = local.client.services.create(
            IMAGE, COMMAND, name=name, labels={LABEL: tag},
            container_labels={LABEL: tag, f"{LABEL}.item": name},
            resources=docker.types.Resources(cpu_limit=round(cpu * 1e9), mem_limit=mb * 1024 * 1024),
            mode=docker.types.ServiceMode("replicated", replicas=1),
        )
        with lock:
            services.append(service.id)

    def clean() -> None:
        with lock:
            ids, services[:] = list(services), []
        for sid in ids:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_service(sid)
        _settle(client, label)

    def single() -> float:
        name = f"cb-{tag}-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        create(name, SINGLE_CPU, SINGLE_MB)
        return watcher.wait([name]) - t0

    def many() -> float:
        names = [f"cb-{tag}-{uuid.uuid4().hex[:6]}" for _ in range(burst)]
        t0 = time.perf_counter()
        with ThreadPoolExecutor(SDK_POOL) as pool:
            list(pool.map(lambda n: create(n, BURST_CPU, BURST_MB), names))
        return watcher.wait(names) - t0

    try:
        single()
        clean()
        singles, bursts = [], []
        for _ in range(rounds):
            singles.append(single())
            clean()
        for _ in range(rounds):
            bursts.append(many())
            clean()
        return _median(singles), _median(bursts)
    finally:
        watcher.close()
        with contextlib.suppress(Exception):
            clean()
        remove_containers(label)
        client.close()


def _swarm_run(rounds: int, burst: int) -> tuple[float, float] | str:
    """Swarm's figures, or why there are none."""
    client = docker.from_env(timeout=60)
    try:
        state = _swarm_state(client)
    finally:
        client.close()
    if state not in ("inactive", ""):
        return f"skipped: this engine is already in a swarm ({state}), someone else's"
    with _swarm():
        return _swarm_measure(rounds, burst)


# ------------------------------------------------------------------ CLAUD


def _claud(rounds: int, burst: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        watcher: RunningWatcher | None = None
        try:
            cluster.start_masters(3)
            # More cores than the machine has, so that the burst fits; each
            # container's own CFS quota is what Docker enforces.
            cluster.start_slave("s1", "--cpus", "64", "--memory-mb", "65536")
            leader = cluster.wait_leader()
            watcher = RunningWatcher(leader.url, cluster.token)
            http = leader.client(cluster.token)
            base = {"image": IMAGE, "command": COMMAND, "stop_timeout": 0}

            def submit(name: str, cpu: float, mb: int) -> str:
                resp = http.post("/v1/jobs", json={**base, "name": name,
                                                   "resources": {"cpu": cpu, "memory_mb": mb}})
                assert resp.status_code in (200, 201), resp.text
                return str(resp.json()["id"])

            def clean(ids: list[str]) -> None:
                for job_id in ids:
                    http.delete(f"/v1/jobs/{job_id}")
                wait_until(lambda: all(http.get(f"/v1/jobs/{j}").json()["state"] == "stopped" for j in ids),
                           60, interval=0.2, what="jobs stopped")
                slave = cluster.slaves[0].id
                remove_containers(f"claud.slave={slave}")

            def single() -> float:
                t0 = time.perf_counter()
                job_id = submit("single", SINGLE_CPU, SINGLE_MB)
                assert watcher is not None
                watcher.wait([job_id], TIMEOUT)
                seen = watcher.running[job_id] - t0
                clean([job_id])
                return seen

            def many() -> float:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(burst) as pool:
                    ids = list(pool.map(lambda i: submit(f"burst{i}", BURST_CPU, BURST_MB), range(burst)))
                assert watcher is not None
                watcher.wait(ids, TIMEOUT)
                seen = max(watcher.running[j] for j in ids) - t0
                clean(ids)
                return seen

            wait_until(lambda: watcher is not None and watcher.connected, 10, what="event stream connected")
            single()
            singles = [single() for _ in range(rounds)]
            bursts = [many() for _ in range(rounds)]
            http.close()
            return _median(singles), _median(bursts)
        finally:
            if watcher is not None:
                watcher.stop()
            cluster.close()


# ------------------------------------------------------------------ the table


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def run(rounds: int = 3, burst: int = 50) -> list[tuple[str, ...]]:
    """Rows (measure, CLAUD, Swarm, bare SDK), every figure measured in this call."""
    claud = _claud(rounds, burst)
    swarm = _swarm_run(rounds, burst)
    bare = _bare(rounds, burst)
    rows: list[tuple[str, ...]] = []
    names = (f"one start, submit -> running (median of {rounds})",
             f"{burst} at once, all running (median of {rounds})")
    for i, name in enumerate(names):
        swarm_cell = swarm if isinstance(swarm, str) else f"{swarm[i]:.2f} s"
        rows.append((name, f"{claud[i]:.2f} s", swarm_cell, f"{bare[i]:.2f} s"))
    for i, name in enumerate(("one start", f"{burst} at once")):
        swarm_cell = "-" if isinstance(swarm, str) else _ratio(claud[i], swarm[i])
        rows.append((f"{name}: CLAUD / peer", "1.00x", swarm_cell, _ratio(claud[i], bare[i])))
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
    parser.add_argument("--burst", type=int, default=50, help="jobs asked for at once")
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
