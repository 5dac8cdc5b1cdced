"""Real CLAUD processes on loopback ports, for integration and chaos tests.

Every slave id is unique per test (``t<hex>-s1``), so the containers a test
caused are exactly those labelled ``claud.slave=<its slave ids>``, and
``close`` removes them along with the processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from support.docker_engine import remove_containers

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # a process still starting, say
            last_exc = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


class Process:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()

    def signal(self, sig: int) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(10)

    def terminate(self, timeout: float = 10) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Master(Process):
    def __init__(self, master_id: int, port: int, data_dir: Path, log_path: Path, extra: list[str]) -> None:
        self.id, self.port, self.data_dir = master_id, port, data_dir
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        argv = [sys.executable, "-m", "claud.master", "--id", str(master_id), "--listen", self.address,
                "--data-dir", str(data_dir), "--no-discovery", *extra]
        super().__init__(f"master-{master_id}", argv, log_path)

    @property
    def token(self) -> str:
        return (self.data_dir / "token").read_text().strip()

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200

        wait_until(ready, timeout, what=f"{self.name} ready")


class Slave(Process):
    def __init__(self, slave_id: str, port: int, masters: str, log_path: Path, extra: list[str]) -> None:
        self.id, self.port = slave_id, port
        self.address = f"127.0.0.1:{port}"
        argv = [sys.executable, "-m", "claud.slave", "--id", slave_id, "--listen", self.address,
                "--masters", masters, "--no-discovery", *extra]
        super().__init__(f"slave-{slave_id}", argv, log_path)


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.prefix = "t" + uuid.uuid4().hex[:8]
        self.masters: list[Master] = []
        self.slaves: list[Slave] = []
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------ processes

    def start_master(self, master_id: int = 1, *extra: str) -> Master:
        data_dir = self.workdir / f"m{master_id}"
        existing = next((m for m in self.masters if m.id == master_id), None)
        port = existing.port if existing else free_port()
        master = Master(master_id, port, data_dir, self.workdir / f"master-{master_id}.log", list(extra))
        if existing:
            self.masters.remove(existing)
        self.masters.append(master)
        master.start()
        master.wait_ready()
        return master

    def start_slave(self, name: str = "s1", *extra: str, port: int | None = None) -> Slave:
        slave_id = f"{self.prefix}-{name}"
        existing = next((s for s in self.slaves if s.id == slave_id), None)
        port = port or (existing.port if existing else free_port())
        masters = ",".join(m.address for m in self.masters)
        slave = Slave(slave_id, port, masters, self.workdir / f"slave-{name}.log", list(extra))
        if existing:
            self.slaves.remove(existing)
        self.slaves.append(slave)
        slave.start()
        wait_until(lambda: self.node(slave_id) is not None and self.node(slave_id)["state"] == "alive",
                   20, what=f"slave {slave_id} registered")
        return slave

    def slave(self, name: str) -> Slave:
        return next(s for s in self.slaves if s.id == f"{self.prefix}-{name}")

    @property
    def master(self) -> Master:
        return self.masters[0]

    def close(self) -> None:
        if self._http:
            self._http.close()
        for proc in [*self.slaves, *self.masters]:
            proc.terminate()
        for slave in self.slaves:
            remove_containers(f"claud.slave={slave.id}")

    # ----------------------------------------------------------------- HTTP

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.master.url, headers={"Authorization": f"Bearer {self.master.token}"}, timeout=30
            )
        return self._http

    def reconnect(self) -> None:
        if self._http:
            self._http.close()
        self._http = None

    def submit(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("image", "claud/busybox:latest")
        spec.setdefault("name", "test")
        resp = self.http.post("/v1/jobs", json=spec)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/jobs/{job_id}")
        resp.raise_for_status()
        return resp.json()

    def node(self, node_id: str) -> dict[str, Any] | None:
        nodes = self.http.get("/v1/nodes").json()["nodes"]
        return next((n for n in nodes if n["id"] == node_id), None)

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        try:
            return wait_until(reached, timeout, what=f"job {job_id} in {states}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; job is {self.job(job_id)}") from None
