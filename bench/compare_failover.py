"""Leader failover, CLAUD beside a 3-member etcd, measured in the same run.

For each system, on loopback, at its default timings (CLAUD: election_timeout
0.6 s, peer_gone_delay 0.15 s; etcd 3.4: heartbeat 100 ms, election timeout
1000 ms, as Debian ships it):

- the leader is SIGKILLed ``rounds`` times (restarted after each round, so the
  cluster stays at three); the figure is seconds from the kill to the first
  acknowledged write *sent after* the kill. The same open-loop writer drives
  both: a write to the next live member every 10 ms whatever is in flight,
  each with a 5 s timeout, so neither side's figure depends on a client's
  retry policy (a blocked etcd request does not hold the next one back);
- then ``load_seconds`` of full write load (32 lean keep-alive clients, the
  generator of bench/throughput.py, against members chosen at random) while
  counting elections: CLAUD's term increments on /v1/cluster, etcd's
  ``etcd_server_leader_changes_seen_total`` from /metrics.

Other processes share the machine, so the load average is printed beside the
figures. ``run(rounds)`` returns the rows (measure, CLAUD, etcd) for
bench/compare.py; run as a script it prints them.

    .venv/bin/python bench/compare_failover.py [--rounds 5] [--load-seconds 30]

etcd comes from Debian's etcd-server: ``bash deploy/install-bench-tools.sh``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from claud.master.peer_http import PeerConnection, PeerHttpError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster, free_port, wait_until

PROBE_EVERY = 0.01
PROBE_TIMEOUT = 5.0
LOAD_CLIENTS = 32
CLAUD_JOB = json.dumps({"name": "failover", "image": "claud/busybox"}).encode()

Row = tuple[str, str, str]


# ------------------------------------------------------------ what both sides share


@dataclass(frozen=True)
class Write:
    """How to send one write to a member: path, body, headers; which statuses acknowledge it."""

    path: str
    body: Callable[[], bytes]
    headers: Callable[[], dict[str, str]]
    ok: tuple[int, ...] = (200, 201)


class Prober:
    """Open-loop writes from a thread of its own: one to the next live member
    every PROBE_EVERY, without waiting for the ones in flight; remembers when
    each acknowledged write was sent and answered."""

    def __init__(self, live: Callable[[], list[str]], write: Write, auth: dict[str, str]) -> None:
        self._live, self._write, self._auth = live, write, auth
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged), time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(PROBE_TIMEOUT + 5)

    def first_ack_sent_after(self, moment: float) -> float | None:
        acked = [ack for sent, ack in list(self.acks) if sent >= moment]
        return min(acked) if acked else None

    def flowing(self) -> bool:
        """A write sent in the last half second was acknowledged."""
        return bool(self.acks) and self.acks[-1][0] > time.monotonic() - 0.5

    async def _main(self) -> None:
        idle: dict[str, list[PeerConnection]] = {}
        tasks: set[asyncio.Task[None]] = set()
        turn = 0
        while not self._stop.is_set():
            members = self._live()
            if members:
                turn += 1
                address = members[turn % len(members)]
                task = asyncio.create_task(self._one(address, idle.setdefault(address, [])))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(PROBE_EVERY)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pool in idle.values():
            for connection in pool:
                connection.close()

    async def _one(self, address: str, pool: list[PeerConnection]) -> None:
        connection = pool.pop() if pool else PeerConnection(None, self._auth)
        sent = time.monotonic()
        try:
            resp = await connection.post(address, self._write.path, self._write.body(), PROBE_TIMEOUT,
                                         self._write.headers())
        except PeerHttpError:
            return
        finally:
            pool.append(connection)
        if resp.status in self._write.ok:
            self.acks.append((sent, time.monotonic()))


async def full_load(addresses: list[str], write: Write, auth: dict[str, str], seconds: float) -> int:
    """LOAD_CLIENTS closed-loop clients for ``seconds``, each to members chosen at random; acknowledged writes."""
    deadline = time.monotonic() + seconds
    acked = 0

    async def client() -> None:
        nonlocal acked
        connections = {address: PeerConnection(None, auth) for address in addresses}
        try:
            while time.monotonic() < deadline:
                address = random.choice(addresses)
                try:
                    resp = await connections[address].post(address, write.path, write.body(), 10, write.headers())
                except PeerHttpError:
                    await asyncio.sleep(0.01)
                    continue
                if resp.status in write.ok:
                    acked += 1
        finally:
            for connection in connections.values():
                connection.close()

    await asyncio.gather(*(client() for _ in range(LOAD_CLIENTS)))
    return acked


@dataclass
class Figures:
    gaps: list[float]
    elections: int
    load_seconds: float
    writes_per_second: float
    load_average: tuple[float, float]  # 1-minute load average before and after

    def row_values(self) -> list[str]:
        return [
            f"{statistics.median(self.gaps):.2f} s",
            f"{percentile(self.gaps, 0.99):.2f} s",
            f"{max(self.gaps):.2f} s",
            f"{self.elections * 60 / self.load_seconds:.1f} ({self.elections} in {self.load_seconds:g} s)",
            f"{self.writes_per_second:.0f}",
            f"{self.load_average[0]:.1f} -> {self.load_average[1]:.1f}",
        ]


MEASURES = [
    "kill -> first acknowledged write, median",
    "kill -> first acknowledged write, p99",
    "kill -> first acknowledged write, max",
    "elections per minute under full write load",
    "acknowledged writes/s during that load",
    "load average (1 min) before -> after",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load_average() -> float:
    return os.getloadavg()[0]


# ------------------------------------------------------------ CLAUD


def claud_figures(rounds: int, load_seconds: float, workdir: Path) -> Figures:
    cluster = Cluster(workdir)
    try:
        cluster.start_masters(3)
        wait_until(lambda: cluster.wait_leader().id == 1, 30, what="master 1 to lead")
        auth = {"Authorization": f"Bearer {cluster.token}"}
        write = Write("/v1/jobs", lambda: CLAUD_JOB, lambda: {"Idempotency-Key": uuid.uuid4().hex})
        before = load_average()
        gaps = []
        with Prober(lambda: [m.address for m in cluster.masters if m.alive], write, auth) as prober:
            wait_until(prober.flowing, 30, what="CLAUD writes flowing")
            for _ in range(rounds):
                leader = cluster.wait_leader()
                wait_until(prober.flowing, 30, what="CLAUD writes flowing before the kill")
                killed_at = time.monotonic()
                leader.kill()
                first = wait_until(lambda: prober.first_ack_sent_after(killed_at), 30, interval=0.01,
                                   what="a CLAUD write after the kill")
                gaps.append(first - killed_at)
                cluster.start_master(leader.id)
                wait_until(lambda: cluster.wait_leader().id == 1, 30, what="master 1 to lead again")
                wait_until(prober.flowing, 30, what="CLAUD writes flowing after the restart")
        term = cluster.wait_leader().cluster_view(cluster.token)["term"]
        acked = asyncio.run(full_load([m.address for m in cluster.masters], write, auth, load_seconds))
        elections = max(m.cluster_view(cluster.token)["term"] for m in cluster.masters) - term
        return Figures(gaps, elections, load_seconds, acked / load_seconds, (before, load_average()))
    finally:
        cluster.close()


# ------------------------------------------------------------ etcd


class EtcdCluster:
    """Three etcd members on loopback, each restartable on its address and data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.names = ["e0", "e1", "e2"]
        self.client = {n: f"127.0.0.1:{free_port()}" for n in self.names}
        self.peer = {n: f"127.0.0.1:{free_port()}" for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, state: str = "new") -> None:
        initial = ",".join(f"{n}=http://{self.peer[n]}" for n in self.names)
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(
            ["etcd", "--name", name, "--data-dir", str(self.workdir / name),
             "--listen-client-urls", f"http://{self.client[name]}", "--advertise-client-urls",
             f"http://{self.client[name]}", "--listen-peer-urls", f"http://{self.peer[name]}",
             "--initial-advertise-peer-urls", f"http://{self.peer[name]}", "--initial-cluster", initial,
             "--initial-cluster-state", state, "--initial-cluster-token", f"bench-{self.workdir.name}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def live_addresses(self) -> list[str]:
        return [self.client[n] for n in self.names if self.alive(n)]

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def leader(self) -> str | None:
        """The member every live one names as leader, if they agree."""
        seen = set()
        by_id = {}
        for name in self.names:
            if not self.alive(name):
                continue
            try:
                status = httpx.post(f"http://{self.client[name]}/v3/maintenance/status", json={}, timeout=1).json()
            except (httpx.HTTPError, ValueError):
                return None
            by_id[status["header"]["member_id"]] = name
            seen.add(status.get("leader"))
        if len(seen) != 1:
            return None
        return by_id.get(seen.pop())

    def leader_changes(self) -> int:
        """The most leader changes any live member has seen."""
        most = 0
        for name in self.names:
            if self.alive(name):
                text = httpx.get(f"http://{self.client[name]}/metrics", timeout=5).text
                found = re.search(r"^etcd_server_leader_changes_seen_total (\S+)$", text, re.MULTILINE)
                most = max(most, int(float(found.group(1))) if found else 0)
        return most

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def etcd_put_body() -> bytes:
    key = base64.b64encode(f"/failover/{uuid.uuid4().hex}".encode()).decode()
    return json.dumps({"key": key, "value": base64.b64encode(CLAUD_JOB).decode()}).encode()


def etcd_figures(rounds: int, load_seconds: float, workdir: Path) -> Figures:
    etcd = EtcdCluster(workdir)
    try:
        for name in etcd.names:
            etcd.start(name)
        wait_until(etcd.leader, 30, what="an etcd leader")
        write = Write("/v3/kv/put", etcd_put_body, dict, ok=(200,))
        before = load_average()
        gaps = []
        with Prober(etcd.live_addresses, write, {}) as prober:
            wait_until(prober.flowing, 30, what="etcd writes flowing")
            for _ in range(rounds):
                leader = wait_until(etcd.leader, 30, what="an agreed etcd leader")
                wait_until(prober.flowing, 30, what="etcd writes flowing before the kill")
                killed_at = time.monotonic()
                etcd.kill(leader)
                first = wait_until(lambda: prober.first_ack_sent_after(killed_at), 30, interval=0.01,
                                   what="an etcd write after the kill")
                gaps.append(first - killed_at)
                etcd.start(leader, state="existing")
                wait_until(lambda: len(etcd.live_addresses()) == 3 and etcd.leader(), 30,
                           what="etcd back at three members")
                wait_until(prober.flowing, 30, what="etcd writes flowing after the restart")
        changes = etcd.leader_changes()
        acked = asyncio.run(full_load(etcd.live_addresses(), write, {}, load_seconds))
        elections = etcd.leader_changes() - changes
        return Figures(gaps, elections, load_seconds, acked / load_seconds, (before, load_average()))
    finally:
        etcd.close()


# ------------------------------------------------------------ both


@contextmanager
def workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"compare-failover-{name}-") as tmp:
        yield Path(tmp)


def run(rounds: int = 5, load_seconds: float = 30.0) -> list[Row]:
    """(measure, CLAUD, etcd) rows: failover over ``rounds`` SIGKILLs each, and elections under load."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    with workdir("claud") as tmp:
        claud = claud_figures(rounds, load_seconds, tmp).row_values()
    if shutil.which("etcd"):
        with workdir("etcd") as tmp:
            etcd = etcd_figures(rounds, load_seconds, tmp).row_values()
    else:
        etcd = ["not installed (bash deploy/install-bench-tools.sh)"] * len(MEASURES)
    rows = [(f"{measure} ({rounds} rounds)" if "kill" in measure else measure, c, e)
            for measure, c, e in zip(MEASURES, claud, etcd, strict=True)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = run(args.rounds, args.load_seconds)
    width = max(len(r[0]) for r in rows)
    cwidth = max(len(r[1]) for r in rows)
    print(f"leader failover on loopback, 3 members each, {os.cpu_count()} CPUs")
    print(f"{'':{width}}  {'CLAUD':{cwidth}}  etcd")
    for measure, claud, etcd in rows:
        print(f"{measure:{width}}  {claud:{cwidth}}  {etcd}")


if __name__ == "__main__":
    main()
