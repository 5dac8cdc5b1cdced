"""What a snapshot costs the event loop as the jobs table grows.

Builds a state machine of N submitted jobs, then times ``snapshot_parts`` (the
only part of taking a snapshot that runs on the event loop) the first time,
when every row is encoded, and again, when only rows changed since are; then
the join into one text (in the save thread) and the restore a restarting or
far-behind master pays.

    .venv/bin/python bench/snapshot.py [--jobs 20000 50000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from claud.api import JobSpec
from claud.master import ops
from claud.master.state import StateMachine, join_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[20_000, 50_000])
    args = parser.parse_args()
    spec = JobSpec(name="load", image="claud/busybox", command=["sh", "-c", "true"])
    for count in args.jobs:
        sm = StateMachine()
        for i in range(count):
            sm.apply(i + 1, ops.SubmitJob(at=datetime.now(UTC), job_id=f"{i:012x}", spec=spec))
        started = time.perf_counter()
        sm.snapshot_parts()
        first = time.perf_counter() - started
        for i in range(count // 100):  # 1% of the rows change between two snapshots
            sm.apply(count + i + 1, ops.StopJob(at=datetime.now(UTC), job_id=f"{i:012x}"))
        started = time.perf_counter()
        parts = sm.snapshot_parts()
        again = time.perf_counter() - started
        started = time.perf_counter()
        encoded = join_snapshot(parts)
        joined = time.perf_counter() - started
        started = time.perf_counter()
        StateMachine.from_snapshot(encoded)
        restore = time.perf_counter() - started
        print(f"{count} jobs ({len(encoded) / 1e6:.0f} MB): on the event loop {first * 1000:.0f} ms the first time, "
              f"{again * 1000:.0f} ms after 1% changed; join (save thread) {joined * 1000:.0f} ms; "
              f"restore {restore:.2f} s")

if __name__ == "__main__":
    main()
