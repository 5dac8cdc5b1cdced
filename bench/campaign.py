"""Long seeded fault campaigns on real Docker: 3 masters, 3 slaves, random faults.

Each run is tests/support/campaign.py with more faults and jobs; run i uses
seed S + i, so any run can be replayed alone with ``--runs 1 --seed S+i``.
Prints one line per run (seed, faults, verdict) and the full report of each
failing run, then a summary: runs, overlaps found (and those excused: an agent
or its engine away past node-dead-after), lost jobs, wrongly failed jobs,
placements on draining slaves. Exits 1 when any run failed.

    .venv/bin/python bench/campaign.py --runs 3 --seed 100 [--faults 12] [--jobs 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.campaign import run_campaign
from support.faults import Timing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=12, help="faults per run (each holds up to ~10 s)")
    parser.add_argument("--jobs", type=int, default=16, help="jobs per run, half before the first fault")
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--dead-after", type=float, default=Timing.dead_after, help="masters' --node-dead-after")
    parser.add_argument("--lease", type=float, default=Timing.lease, help="masters' --slave-lease")
    parser.add_argument("--fence-grace", type=float, default=Timing.fence_grace, help="masters' --fence-stop-grace")
    parser.add_argument("--verbose", action="store_true", help="print every submission and fault as it happens")
    args = parser.parse_args()
    timing = Timing(lease=args.lease, fence_grace=args.fence_grace, dead_after=args.dead_after)

    totals: Counter[str] = Counter()
    failed_seeds: list[int] = []
    for i in range(args.runs):
        seed = args.seed + i
        with tempfile.TemporaryDirectory(prefix=f"claud-campaign-{seed}-") as tmp:
            verdict = run_campaign(Path(tmp), seed, faults=args.faults, jobs=args.jobs, timing=timing,
                                   settle_timeout=args.settle_timeout,
                                   log=print if args.verbose else (lambda line: None),
                                   keep_logs=Path(tempfile.gettempdir()) / f"claud-campaign-seed{seed}-logs")
        kinds = Counter(r.kind for r in verdict.timeline)
        print(f"run {i + 1}/{args.runs} seed={seed} faults={sum(kinds.values())} "
              f"({', '.join(f'{k}x{n}' for k, n in sorted(kinds.items()))}) "
              f"verdict={'PASS' if verdict.ok else 'FAIL'} {'; '.join(verdict.failed_checks())} "
              f"elapsed={verdict.elapsed:.0f}s", flush=True)
        if not verdict.ok:
            failed_seeds.append(seed)
            print(verdict.report(), flush=True)
        totals["runs"] += 1
        totals["jobs"] += len(verdict.submitted)
        totals["overlaps"] += len(verdict.overlaps)
        totals["excused overlaps"] += len(verdict.excused_overlaps)
        totals["batch reruns after exit 0"] += len(verdict.repeated_successes)
        totals["lost jobs"] += len(verdict.missing)
        totals["wrong outcomes"] += len(verdict.wrong_outcome)
        totals["stuck jobs"] += len(verdict.stuck)
        totals["wrongly failed jobs"] += len(verdict.wrongly_failed)
        totals["placed on a draining slave"] += len(verdict.placed_while_draining)
        totals["excused overlaps' seconds"] += round(sum(o.seconds for o in verdict.excused_overlaps), 1)
        totals["campaign errors"] += len(verdict.errors)
    print("summary: " + ", ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in totals.items())
          + f", failed runs={len(failed_seeds)} {failed_seeds}")
    return 1 if failed_seeds else 0


if __name__ == "__main__":
    sys.exit(main())
