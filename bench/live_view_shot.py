"""The README's picture of the live view: run by hand, never by a test.

Starts a 3-master loopback cluster with three simulated slaves and a few jobs,
opens /ui of a follower in headless Chromium at 1280x800, kills the leader so
that an election is on screen, and saves the page as docs/live-view.png. With
--partition, the cluster runs with --demo-faults and the leader is cut off with
the page's own partition button instead (docs/live-view-partition.png).

    .venv/bin/python bench/live_view_shot.py [--out docs/live-view.png]
    .venv/bin/python bench/live_view_shot.py --partition --out docs/live-view-partition.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.chromium import Chromium
from support.cluster import Cluster, wait_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "live-view.png")
    parser.add_argument("--after-kill", type=float, default=1.6, help="seconds between the kill and the picture")
    parser.add_argument("--partition", action="store_true", help="partition the leader from the page instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="claud-shot-") as workdir:
        cluster = Cluster(Path(workdir), net="127.0.9")
        try:
            faults = ["--demo-faults"] if args.partition else []
            cluster.start_masters(3, "--strategy", "spread", *faults)
            for name in ("s1", "s2", "s3"):
                cluster.start_slave(name, "--runtime", "simulated", "--cpus", "4", "--memory-mb", "4096", *faults)
            for i in range(6):
                cluster.submit(name=f"web-{i}", resources={"cpu": 0.5, "memory_mb": 256},
                               env={"CLAUD_SIM_SECONDS": "inf" if i % 3 else "2"})
            leader = cluster.wait_leader()
            follower = next(m for m in cluster.masters if m is not leader)
            with Chromium() as browser:
                session = browser.open(follower.url + "/ui")
                browser.resize(session, 1280, 800)
                wait_until(lambda: not browser.evaluate(session, "document.getElementById('login').hidden"), 20,
                           what="the token prompt")
                browser.evaluate(session, f"""(() => {{ document.getElementById('token').value = {cluster.token!r};
                    document.getElementById('sign-in').click(); }})()""")
                wait_until(lambda: browser.evaluate(session, "document.querySelectorAll('#masters .master').length")
                           == 3, 20, what="three masters drawn")
                time.sleep(3)  # a picture, not a test: let a few heartbeats and jobs show
                if args.partition:
                    browser.evaluate(session, f"""(() => {{
                        document.getElementById('fault-target').value = {str(leader.id)!r};
                        document.querySelector('button.fault[data-action=partition]').click(); }})()""")
                else:
                    leader.kill()
                time.sleep(args.after_kill)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                browser.screenshot(session, args.out)
                print(f"wrote {args.out}; console errors: {browser.console_errors()}")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
