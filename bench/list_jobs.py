"""GET /v1/jobs with many jobs: the list route alone, in-process (no sockets, no consensus).

The jobs are applied straight to a master's state machine; requests go through
the whole ASGI app (token check, routing, rendering) over httpx's ASGI
transport. Prints p50/p99 of a warm list (each job's rendering kept), a page,
and a filtered list.

    .venv/bin/python bench/list_jobs.py [--jobs 3000] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from claud.api import JobSpec
from claud.master import ops
from claud.master.api import create_app
from claud.master.ops import utcnow
from claud.master.settings import MasterSettings


async def measure(app, token: str, rounds: int) -> None:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as http:
        for path in ("/v1/jobs", "/v1/jobs?limit=100", "/v1/jobs?state=pending"):
            started = time.perf_counter()
            first = await http.get(path)
            cold = time.perf_counter() - started
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                resp = await http.get(path)
                times.append(time.perf_counter() - started)
                assert resp.status_code == 200, resp.text[:300]
            times.sort()
            p50, p99 = times[len(times) // 2], times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
            print(f"{path:26} {len(first.json()['jobs']):5} jobs  first {cold * 1000:6.1f} ms  "
                  f"p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms  {len(resp.content) // 1024} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        app = create_app(MasterSettings(id=1, data_dir=Path(data), no_discovery=True))
        master = app.state.master
        spec = JobSpec(name="bench", image="claud/busybox:latest", command=["sh", "-c", "echo hi"], env={"A": "1"})
        for i in range(args.jobs):
            master.state.apply(i + 1, ops.SubmitJob(at=utcnow(), job_id=f"{i:012x}", spec=spec))
        asyncio.run(measure(app, master.token, args.rounds))


if __name__ == "__main__":
    main()
