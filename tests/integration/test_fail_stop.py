"""A master whose disk fails stops, and comes back whole (issue 10: fail-stop).

The data directory sits on a small tmpfs; a filler file takes the rest of its
space; writes go on until the log cannot grow. The master must then exit
non-zero with one clear line (not serve frozen tables while saying it is
ready), and once space is back, a restart on the same directory must hold
every job it acknowledged and commit new ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from support.cluster import Cluster, wait_until

SPEC = {"name": "fill", "image": "claud/busybox:latest", "command": ["true"], "env": {"PAD": "p" * 2000}}


@pytest.fixture
def small_disk(tmp_path: Path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_master_whose_disk_fills_exits_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1, "--snapshot-every", "1000000")
        # Put the data directory on the small disk: restart on it.
        master.terminate()
        shutil.copytree(master.data_dir, small_disk / "m1")
        master.data_dir = small_disk / "m1"
        data_index = master.argv.index("--data-dir") + 1
        master.argv[data_index] = str(small_disk / "m1")
        master.start()
        master.wait_ready()

        filler = small_disk / "filler"
        with filler.open("wb") as f:
            free = shutil.disk_usage(small_disk).free
            f.write(b"\0" * max(0, free - 2 * 1024 * 1024))  # leave ~2 MiB for the log

        acknowledged: list[str] = []
        refused = 0
        with master.client(cluster.token) as http:
            for _ in range(5000):
                if not master.alive:
                    break
                try:
                    resp = http.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": uuid.uuid4().hex})
                except httpx.HTTPError:
                    break
                if resp.status_code == 201:
                    acknowledged.append(resp.json()["id"])
                else:
                    refused += 1
                    assert resp.status_code == 503, resp.text
        wait_until(lambda: not master.alive, 15, what="the master to stop once its disk is full")
        code = master.popen.wait(10)
        assert code not in (0, None), code
        lines = [line for line in master.log().splitlines() if "master.fail_stop" in line]
        assert len(lines) == 1 and "exiting" in lines[0], master.log()[-3000:]
        assert acknowledged, "some writes were acknowledged before the disk filled"

        filler.unlink()
        master.start()
        master.wait_ready(timeout=30)
        with master.client(cluster.token) as http:
            for job_id in acknowledged:
                assert http.get(f"/v1/jobs/{job_id}").status_code == 200, f"acknowledged job {job_id} lost"
            resp = http.post("/v1/jobs", json={**SPEC, "env": {}})
            assert resp.status_code == 201, resp.text
    finally:
        cluster.close()
