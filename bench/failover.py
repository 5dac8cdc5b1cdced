"""Leader failover on a 3-master loopback cluster, under continuous submits.

Kills the leader (SIGKILL) N times, restarting it after each round so the
cluster stays at three, and prints seconds from the kill to the first write
acknowledged after it (p50/p99/max), then checks every acknowledged job is
still there, exactly once, on every master.

    .venv/bin/python bench/failover.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import Cluster, wait_until
from support.load import Submitter


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    gaps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_masters(3)
            with Submitter(cluster) as submitter:
                wait_until(lambda: submitter.count() >= 20, 30, what="writes before the first kill")
                for _ in range(args.rounds):
                    leader = cluster.wait_leader()
                    killed_at = time.monotonic()
                    leader.kill()
                    wait_until(lambda: any(t > killed_at for t in submitter.ack_times), 30, interval=0.01,
                               what="a write after the kill")
                    gaps.append(min(t for t in submitter.ack_times if t > killed_at) - killed_at)
                    cluster.start_master(leader.id)
                    cluster.wait_leader()
                    # Let the restarted master catch up (and take leadership back if lowest).
                    time.sleep(1.0)
            acked = dict(submitter.acked)
            headers = {"Authorization": f"Bearer {cluster.token}"}
            lost = 0
            for master in cluster.masters:
                jobs = httpx.get(f"{master.url}/v1/jobs", headers=headers, timeout=10).json()["jobs"]
                keys = [j["idempotency_key"] for j in jobs]
                lost = max(lost, sum(1 for key in acked if key not in keys))
                duplicates = len(keys) - len(set(keys))
                assert duplicates == 0, f"master {master.id} holds {duplicates} duplicate jobs"
        finally:
            cluster.close()

    print(f"leader failover, 3 masters, {len(gaps)} SIGKILLs, default settings:")
    print(f"  kill -> first acknowledged write: p50 {statistics.median(gaps):.2f} s, "
          f"p99 {percentile(gaps, 0.99):.2f} s, max {max(gaps):.2f} s")
    print(f"  acknowledged jobs: {len(acked)}, lost: {lost}")


if __name__ == "__main__":
    main()
