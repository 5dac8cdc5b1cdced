"""Slave death to all its jobs running elsewhere, on real Docker, default settings.

Each round puts N service jobs on one slave, then "kills its machine" (SIGKILL
of the agent and `docker kill` of its containers) and times until all N run
on another slave. Prints p50/max over the rounds and the settings used.

    .venv/bin/python bench/reschedule.py [--jobs 10] [--rounds 3] [--fast] [-- extra master flags]

``--fast`` runs the README's fast profile (support.cluster.FAST_PROFILE), whose
target is every job running elsewhere within 5 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.cluster import FAST_PROFILE, Cluster, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fast", action="store_true", help="the README's fast profile (jobs elsewhere within 5 s)")
    parser.add_argument("master_flags", nargs="*", help="extra claud-master flags (default settings otherwise)")
    args = parser.parse_args()
    master_flags = [*(FAST_PROFILE if args.fast else []), *args.master_flags]

    times: list[float] = []
    phases: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_master(1, *master_flags)
            names = ["a", "b"]
            for name in names:
                cluster.start_slave(name)
            engine = docker.from_env()
            for round_no in range(args.rounds):
                victim, survivor = (cluster.slave(n) for n in (names if round_no % 2 == 0 else names[::-1]))
                cluster.http.post(f"/v1/nodes/{survivor.id}/drain").raise_for_status()
                jobs = [
                    cluster.submit(name=f"r{round_no}-{i}", type="service", restart={"policy": "always"},
                                   command=["sleep", "600"], stop_timeout=1,
                                   resources={"cpu": 0.05, "memory_mb": 16})["id"]
                    for i in range(args.jobs)
                ]
                for job_id in jobs:
                    wait_until(lambda: cluster.job(job_id)["state"] == "running", 60, what="jobs running")
                cluster.http.post(f"/v1/nodes/{survivor.id}/undrain").raise_for_status()
                died = time.monotonic()
                victim.kill()
                for container in engine.containers.list(filters={"label": f"claud.slave={victim.id}"}):
                    container.kill()

                marks: dict[str, float] = {}

                def all_moved() -> bool:
                    now = time.monotonic() - died
                    nodes = {n["id"]: n for n in cluster.http.get("/v1/nodes").json()["nodes"]}
                    if nodes.get(victim.id, {}).get("state") == "dead":
                        marks.setdefault("dead", now)
                    listed = {j["id"]: j for j in cluster.http.get("/v1/jobs").json()["jobs"]}
                    placed = [listed[j] for j in jobs if listed[j]["node_id"] == survivor.id]
                    if placed:
                        marks.setdefault("first placed", now)
                    if len(placed) == len(jobs):
                        marks.setdefault("all placed", now)
                    if any(j["state"] == "running" for j in placed):
                        marks.setdefault("first running", now)
                    return len(placed) == len(jobs) and all(j["state"] == "running" for j in placed)

                wait_until(all_moved, 60, interval=0.05, what="all jobs running elsewhere")
                times.append(time.monotonic() - died)
                phases.append(marks)
                print(f"  round {round_no + 1}: {times[-1]:.2f} s ("
                      + ", ".join(f"{k} at {v:.2f} s" for k, v in marks.items()) + ")", flush=True)
                for job_id in jobs:
                    cluster.http.delete(f"/v1/jobs/{job_id}")
                cluster.start_slave(victim.id.rsplit("-", 1)[1])
            bare = bare_sdk_start(engine, args.jobs)
            engine.close()
        finally:
            cluster.close()
    settings = " ".join(master_flags) or "defaults (node-dead-after 10 s, heartbeat 1 s, lease 4 s)"
    print(f"slave machine death, {args.jobs} jobs, {len(times)} rounds, settings: {settings}")
    print(f"  death -> all jobs running elsewhere: p50 {statistics.median(times):.2f} s, max {max(times):.2f} s")
    dead = [m["dead"] for m in phases if "dead" in m]
    if dead:
        print(f"  of which declared dead after: p50 {statistics.median(dead):.2f} s")
    print(f"  peer, same machine, same run: the bare Docker SDK starts {args.jobs} such containers at once "
          f"in {bare:.2f} s (so the floor is node-dead-after + that)")


def bare_sdk_start(engine: docker.DockerClient, count: int) -> float:
    """Seconds for the Docker SDK alone to run ``count`` containers at once (threads, as the slave does)."""
    from concurrent.futures import ThreadPoolExecutor

    label = {"claud.bench": "reschedule-bare-sdk"}
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: engine.containers.run("claud/busybox:latest", ["sleep", "600"], detach=True,
                                                          labels=label), range(count)))
        return time.monotonic() - began
    finally:
        for container in engine.containers.list(all=True, filters={"label": "claud.bench=reschedule-bare-sdk"}):
            container.remove(force=True)


if __name__ == "__main__":
    main()
