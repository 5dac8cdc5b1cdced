"""CLAUD beside its peers, every figure measured in this one run: the project's side-by-side driver.

Runs each part whose module and tools are here, and prints one markdown
table with the machine's core count and load average (before and after: the
figures are only as quiet as the machine was):

* writes (bench/compare_writes.py, ``run(seconds)``): CLAUD vs etcd; needs etcd and wrk;
* failover (bench/compare_failover.py, ``run(rounds)``): CLAUD vs etcd; needs etcd;
* starts (bench/compare_starts.py, ``run(rounds)``): CLAUD vs Docker Swarm and the bare Docker SDK; needs Docker.

A part whose module is absent, or whose tool is missing, is skipped with a
line saying how to get it; the script installs nothing itself.

    .venv/bin/python bench/compare.py [--only starts,writes] [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
TOOLS_HINT = "bash deploy/install-bench-tools.sh"
DOCKER_HINT = "bash deploy/install-docker.sh"


@dataclass(frozen=True)
class Part:
    name: str
    module: str
    #: Executables it needs (on PATH), with how to get them.
    tools: tuple[tuple[str, str], ...]
    #: The peers' column names when the module does not say (its COLUMNS, CLAUD first).
    columns: tuple[str, ...]
    #: Calls the module's run with the command line's arguments.
    call: Callable[[ModuleType, argparse.Namespace], list[tuple[str, ...]]]


PARTS = (
    Part("writes", "compare_writes", (("etcd", TOOLS_HINT), ("wrk", TOOLS_HINT)), ("CLAUD", "etcd"),
         lambda m, a: m.run(a.seconds)),
    Part("failover", "compare_failover", (("etcd", TOOLS_HINT),), ("CLAUD", "etcd"),
         lambda m, a: m.run(a.rounds)),
    Part("starts", "compare_starts", (("docker", DOCKER_HINT),), ("CLAUD", "Swarm", "bare SDK"),
         lambda m, a: m.run(a.rounds)),
)


def _load(part: Part) -> ModuleType | str:
    """The part's module, or why it cannot run."""
    if not (BENCH / f"{part.module}.py").exists():
        return f"bench/{part.module}.py is not on this branch"
    for tool, hint in part.tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed: {hint}"
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    try:
        module = importlib.import_module(part.module)
    except Exception as exc:  # noqa: BLE001 - a part that cannot even import is reported, the others run
        return f"bench/{part.module}.py does not import: {exc!r}"
    if not callable(getattr(module, "run", None)):
        return f"bench/{part.module}.py has no run()"
    check: Any = getattr(module, "missing", None)
    if callable(check):
        problem = check()
        if problem:
            return str(problem)
    return module


def _load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def table(results: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]]) -> list[str]:
    """One markdown table: a column per system (CLAUD first), a row per measure, blank where a
    part has no such peer."""
    columns: list[str] = []
    for _, cols, _ in results:
        columns += [c for c in cols if c not in columns]
    lines = ["| part | measure | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for name, cols, rows in results:
        for row in rows:
            cells = dict(zip(cols, row[1:], strict=False))
            lines.append(f"| {name} | {row[0]} | " + " | ".join(cells.get(c, "") for c in columns) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated parts to run (default: all): "
                        + ", ".join(p.name for p in PARTS))
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per write measure")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each failover and start measure")
    args = parser.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {p.name for p in PARTS}
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")

    before = _load_average()
    began = time.monotonic()
    results: list[tuple[str, tuple[str, ...], list[tuple[str, ...]]]] = []
    notes: list[str] = []
    for part in PARTS:
        if wanted and part.name not in wanted:
            continue
        loaded = _load(part)
        if isinstance(loaded, str):
            notes.append(f"- {part.name}: skipped, {loaded}")
            print(f"compare: {part.name} skipped: {loaded}", file=sys.stderr)
            continue
        print(f"compare: running {part.name} ...", file=sys.stderr)
        try:
            rows = part.call(loaded, args)
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others' figures
            traceback.print_exc()
            notes.append(f"- {part.name}: failed, {exc!r}")
            continue
        columns = tuple(getattr(loaded, "COLUMNS", part.columns))
        results.append((part.name, columns, [tuple(str(c) for c in row) for row in rows]))

    print(f"{os.cpu_count()} cores; load average (1, 5, 15 min) {before} before, {_load_average()} after; "
          f"{time.monotonic() - began:.0f} s. Shared machines make these figures noisy.")
    print()
    if results:
        print("\n".join(table(results)))
    if notes:
        print()
        print("\n".join(notes))


if __name__ == "__main__":
    main()
