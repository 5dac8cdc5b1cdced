"""Acknowledged submits per second on a 3-master loopback cluster.

32 concurrent clients (asyncio tasks, one connection pool each) submit jobs
to masters chosen at random, so followers forward to the leader as real
clients would cause. Prints acknowledged jobs/s and submit latency p50/p99.

    .venv/bin/python bench/throughput.py [--clients 32] [--seconds 10] [--leader-only]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster  # noqa: E402


async def client_loop(urls: list[str], token: str, deadline: float, latencies: list[float]) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        while time.monotonic() < deadline:
            url = random.choice(urls)
            started = time.perf_counter()
            resp = await http.post(f"{url}/v1/jobs", json={"name": "load", "image": "claud/busybox"},
                                   headers={"Idempotency-Key": uuid.uuid4().hex})
            if resp.status_code in (200, 201):
                latencies.append(time.perf_counter() - started)


async def run(urls: list[str], token: str, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client_loop(urls, token, deadline, latencies) for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--leader-only", action="store_true", help="send every submit to the leader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_masters(3)
            leader = cluster.wait_leader()
            urls = [leader.url] if args.leader_only else [m.url for m in cluster.masters]
            asyncio.run(run(urls, cluster.token, 4, 1.0))  # warm up connections and caches
            started = time.monotonic()
            latencies = asyncio.run(run(urls, cluster.token, args.clients, args.seconds))
            elapsed = time.monotonic() - started
        finally:
            cluster.close()
    latencies.sort()
    print(f"3 masters, {args.clients} clients, {'leader only' if args.leader_only else 'random masters'}, "
          f"{args.seconds:g} s: {len(latencies) / elapsed:.0f} acknowledged jobs/s; "
          f"submit p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {latencies[int(0.99 * (len(latencies) - 1))] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
