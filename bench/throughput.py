"""Acknowledged submits per second on a 3-master loopback cluster.

32 concurrent clients (asyncio tasks, one keep-alive connection per master
each) submit jobs to masters chosen at random, so followers forward to the
leader as real clients would cause. Prints acknowledged jobs/s and submit
latency p50/p99.

The load generator shares the machine's cores with the masters, so by default
it is a lean one (a hand-written HTTP/1.1 request per submit, as wrk or hey
would send): measured with the SDK's client library (httpx), the generator
itself costs more CPU per job than the leader does. ``--client httpx`` shows
that figure.

    .venv/bin/python bench/throughput.py [--clients 32] [--seconds 10] [--leader-only] [--client raw|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

from claud.master.peer_http import PeerConnection, PeerHttpError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster

JOB = json.dumps({"name": "load", "image": "claud/busybox"}).encode()


async def raw_client_loop(urls: list[str], token: str, deadline: float, latencies: list[float]) -> None:
    connections = {url: PeerConnection(None, {"Authorization": f"Bearer {token}"}) for url in urls}
    try:
        while time.monotonic() < deadline:
            url = random.choice(urls)
            started = time.perf_counter()
            try:
                resp = await connections[url].post(
                    url.removeprefix("http://"), "/v1/jobs", JOB, 10, {"Idempotency-Key": uuid.uuid4().hex}
                )
            except PeerHttpError:
                continue
            if resp.status in (200, 201):
                latencies.append(time.perf_counter() - started)
    finally:
        for connection in connections.values():
            connection.close()


async def httpx_client_loop(urls: list[str], token: str, deadline: float, latencies: list[float]) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        while time.monotonic() < deadline:
            url = random.choice(urls)
            started = time.perf_counter()
            resp = await http.post(f"{url}/v1/jobs", json={"name": "load", "image": "claud/busybox"},
                                   headers={"Idempotency-Key": uuid.uuid4().hex})
            if resp.status_code in (200, 201):
                latencies.append(time.perf_counter() - started)


async def run(urls: list[str], token: str, clients: int, seconds: float, client: str = "raw") -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    loop = raw_client_loop if client == "raw" else httpx_client_loop
    await asyncio.gather(*(loop(urls, token, deadline, latencies) for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--leader-only", action="store_true", help="send every submit to the leader")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="the load generator's HTTP client")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_masters(3)
            leader = cluster.wait_leader()
            urls = [leader.url] if args.leader_only else [m.url for m in cluster.masters]
            asyncio.run(run(urls, cluster.token, 4, 1.0, args.client))  # warm up connections and caches
            processes = {"leader": psutil.Process(leader.popen.pid)}
            processes.update(
                {f"follower {m.id}": psutil.Process(m.popen.pid) for m in cluster.masters if m is not leader}
            )
            processes["generator"] = psutil.Process()
            cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in processes.items()}
            started = time.monotonic()
            latencies = asyncio.run(run(urls, cluster.token, args.clients, args.seconds, args.client))
            elapsed = time.monotonic() - started
            cpu_used = {name: sum(p.cpu_times()[:2]) - cpu_before[name] for name, p in processes.items()}
        finally:
            cluster.close()
    latencies.sort()
    targets = "leader only" if args.leader_only else "random masters"
    print(f"3 masters, {args.clients} {args.client} clients, {targets}, "
          f"{args.seconds:g} s: {len(latencies) / elapsed:.0f} acknowledged jobs/s; "
          f"submit p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms")
    # Where the cores went: the first thing to look at when the figure moves.
    print("CPU per acknowledged job: " + ", ".join(
        f"{name} {used * 1000 / len(latencies):.2f} ms ({used * 100 / elapsed:.0f}% of a core)"
        for name, used in cpu_used.items()
    ))


if __name__ == "__main__":
    main()
