"""What one request or one pass costs against a big cluster, in-process (issue 16).

Builds a state machine with ``--jobs`` jobs (row 0 only, or ``--count`` rows each)
and ``--slaves`` slaves with a share of the jobs placed, then times, best and
median of ``--rounds``:

* ``GET /v1/jobs?limit=100&next=...``: ``paging.jobs_page`` for a page in the middle,
  unfiltered and filtered by state (``?state=running``);
* one ``/metrics`` tally: the ``claud_jobs`` gauge (``TableGauges.collect``);
* one scheduling pass: ``StateMachine.scheduling_snapshot`` and ``scheduler.schedule``
  for ``--batch`` new jobs, slaves registered in shuffled id order.

Compare runs before and after a change with the same arguments: what should cost
O(page) or O(change) must not grow with ``--jobs`` or ``--slaves``.

    .venv/bin/python bench/per_request_cost.py [--jobs 100000] [--slaves 1000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from claud.api import JobSpec, JobState, Resources
from claud.master import ops
from claud.master.paging import encode_cursor, job_cursor_key, jobs_page
from claud.master.scheduler import Strategy, schedule
from claud.master.state import StateMachine
from claud.master.telemetry import TableGauges

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def timed(label: str, rounds: int, work: Callable[[], object]) -> None:
    work()  # warm: kept encodings, caches
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    print(f"  {label:44} best {min(times) * 1000:8.3f} ms   median {statistics.median(times) * 1000:8.3f} ms")


def build(jobs: int, slaves: int, placed_share: float, count: int) -> tuple[StateMachine, int]:
    sm, index = StateMachine(), 0

    def apply(op: ops.Operation) -> None:
        nonlocal index
        index += 1
        sm.apply(index, op)

    ids = [f"s{i:05d}" for i in range(slaves)]
    random.Random(7).shuffle(ids)  # registered in no particular order, as slaves come up
    for n, slave_id in enumerate(ids):
        apply(ops.RegisterSlave(at=T0, slave_id=slave_id, address=f"10.0.{n // 250}.{n % 250}:8701", labels={},
                                cpu_total=64.0, memory_mb_total=1 << 20))
    spec = JobSpec(name="bench", image="claud/busybox", count=count, resources=Resources(cpu=0.01, memory_mb=8))
    for start in range(0, jobs, 1000):
        apply(ops.SubmitJobs(at=T0 + timedelta(milliseconds=start), jobs=[
            ops.SubmittedJob(job_id=f"j{i:08x}", spec=spec) for i in range(start, min(jobs, start + 1000))
        ]))
    pending = list(sm._pending)[: int(len(sm._pending) * placed_share)]
    for start in range(0, len(pending), 5000):
        chunk = pending[start:start + 5000]
        apply(ops.ApplyPlan(at=T0 + timedelta(hours=1), placements=[
            ops.PlacedJob(job_id=j, slave_id=ids[(start + k) % slaves]) for k, j in enumerate(chunk)
        ], unplaced={}))
    waiting = list(sm._pending)  # the rest were found to fit nowhere: a pass looks at new jobs only
    for start in range(0, len(waiting), 5000):
        apply(ops.ApplyPlan(at=T0 + timedelta(hours=1), placements=[],
                            unplaced=dict.fromkeys(waiting[start:start + 5000], "no room (bench)")))
    return sm, index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--slaves", type=int, default=1000)
    parser.add_argument("--count", type=int, default=1, help="allocations per job")
    parser.add_argument("--placed", type=float, default=0.5, help="share of the rows placed")
    parser.add_argument("--batch", type=int, default=10, help="new jobs per scheduling pass")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    started = time.perf_counter()
    sm, index = build(args.jobs, args.slaves, args.placed, args.count)
    print(f"{args.jobs} jobs x {args.count} rows, {args.slaves} slaves, {args.placed:.0%} placed "
          f"(built in {time.perf_counter() - started:.1f} s)")
    heads = sorted((job for job in sm.jobs.values() if job.index == 0), key=lambda j: (j.created_at, j.id))
    middle = encode_cursor(job_cursor_key(heads[len(heads) // 2]))
    timed("jobs_page limit=100 (first page)", args.rounds, lambda: jobs_page(sm, None, None, 100))
    timed("jobs_page limit=100 next=<middle>", args.rounds, lambda: jobs_page(sm, None, middle, 100))
    running = JobState.SCHEDULED  # what the placed ones are

    def wanted(job: object) -> bool:
        return sm.state_of(job) == running  # type: ignore[arg-type]

    timed("jobs_page limit=100 next=<middle> state=pending", args.rounds,
          lambda: jobs_page(sm, lambda job: sm.state_of(job) == JobState.PENDING, middle, 100))
    # The placed jobs are the older half: after the middle none is, and the filter tests every job.
    timed("jobs_page limit=100 next=<middle> state=scheduled", args.rounds, lambda: jobs_page(sm, wanted, middle, 100))
    gauges = TableGauges(lambda: (sm, 1, index, True))
    timed("/metrics tally (TableGauges.collect)", args.rounds, lambda: list(gauges.collect()))

    def one_commit() -> None:  # a heartbeat between two scrapes: the tables moved on
        nonlocal index
        index += 1
        sm.apply(index, ops.Noop(at=T0))
        list(gauges.collect())

    timed("/metrics tally after a commit", args.rounds, one_commit)
    spec = JobSpec(name="new", image="claud/busybox", resources=Resources(cpu=0.01, memory_mb=8))
    index += 1
    sm.apply(index, ops.SubmitJobs(at=T0 + timedelta(hours=2), jobs=[
        ops.SubmittedJob(job_id=f"n{i:04x}", spec=spec) for i in range(args.batch)
    ]))
    now = T0 + timedelta(hours=3)
    timed(f"scheduling_snapshot ({args.slaves} slaves)", args.rounds, lambda: sm.scheduling_snapshot(now, True))
    slaves, jobs = sm.scheduling_snapshot(now, True)
    timed(f"schedule ({len(jobs)} jobs, {len(slaves)} slaves)", args.rounds,
          lambda: schedule(slaves, jobs, Strategy.BINPACK))


if __name__ == "__main__":
    main()
