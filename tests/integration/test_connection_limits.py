"""Idle and trickling connections cannot lock anyone out of a master (issue 10).

A master limited to 1,024 open files is held by 1,100 sockets that connect and
send nothing; ``/healthz`` must still answer, and writes still commit. A
connection that trickles its headers is closed at the header timeout.
"""

from __future__ import annotations

import resource
import socket
import time
from pathlib import Path

import httpx

from support.cluster import Cluster, wait_until

IDLE_SOCKETS = 1100


def test_idle_sockets_cannot_lock_out_healthz(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # This process holds the idle sockets: it needs room for them.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    cluster = Cluster(tmp_path)
    sockets: list[socket.socket] = []
    try:
        master = cluster.start_master(1, wait=False)
        # The master runs with a 1,024-file limit, soft and hard, as a default systemd service would.
        master.terminate()
        master.argv = ["prlimit", "--nofile=1024:1024", "--", *master.argv]
        master.start()
        master.wait_ready()
        for _ in range(IDLE_SOCKETS):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((master.ip, master.port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        started = time.monotonic()
        resp = httpx.get(f"{master.url}/healthz", timeout=5)
        assert resp.status_code == 200
        assert time.monotonic() - started < 2
        submit = httpx.post(f"{master.url}/v1/jobs", json={"name": "x", "image": "claud/busybox:latest"},
                            headers={"Authorization": f"Bearer {cluster.token}"}, timeout=10)
        assert submit.status_code == 201, submit.text
        assert master.alive
    finally:
        for s in sockets:
            s.close()
        cluster.close()


def test_a_trickling_request_is_cut_off_at_the_header_timeout(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        master = cluster.start_master(1, "--request-header-timeout", "1.5")
        s = socket.create_connection((master.ip, master.port), timeout=10)
        started = time.monotonic()
        closed = False
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(20):
                time.sleep(0.5)  # the trickle itself, not synchronisation
                s.sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            closed = s.recv(1024) == b""
        s.close()
        assert closed, "the connection was still open after 10 s of trickled headers"
        assert time.monotonic() - started < 6
        wait_until(lambda: httpx.get(f"{master.url}/healthz", timeout=2).status_code == 200, 5, what="healthz")
    finally:
        cluster.close()
