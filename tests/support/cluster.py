"""Real CLAUD processes on loopback ports, for integration and chaos tests.

Every slave id is unique per test (``t<hex>-s1``), so the containers a test
caused are exactly those labelled ``claud.slave=<its slave ids>``, and
``close`` removes them along with the processes. Each Cluster has its own
cluster secret file, given to every master and slave it starts (a process
started with ``--cluster-secret-file`` among its extra flags keeps that one).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from support.docker_engine import remove_containers
from support.tls import ClusterTls

T = TypeVar("T")

#: The README's fast profile: a dead slave's jobs run elsewhere within about
#: 5 s, and the masters' start-up invariant still holds (1 + 2*0.25 + 0.25 +
#: 1 + 1 = 3.75 s <= node-dead-after).
FAST_PROFILE = ["--heartbeat-interval", "0.25", "--slave-lease", "1", "--election-timeout", "0.25",
                "--fence-stop-grace", "1", "--suspect-after", "2", "--node-dead-after", "4"]


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
        except Exception as exc:  # noqa: BLE001 - a process still starting, say: kept for the timeout's message
            last_exc = exc
        if time.monotonic() > deadline:
            last = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{last}")
        time.sleep(interval)


class Process:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.env = {**os.environ, **(env or {})}
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.popen = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

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
    def __init__(
        self, master_id: int, ip: str, port: int, data_dir: Path, log_path: Path, extra: list[str],
        tls: ClusterTls | None = None,
    ) -> None:
        self.id, self.ip, self.port, self.data_dir = master_id, ip, port, data_dir
        self.address = f"{ip}:{port}"
        self.url = f"{'https' if tls else 'http'}://{self.address}"
        self.verify: ssl.SSLContext | bool = tls.client_context() if tls else True
        tls_flags = tls.flags("master", f"master-{master_id}", ip) if tls else []
        argv = [sys.executable, "-m", "claud.master", "--id", str(master_id), "--listen", self.address,
                "--data-dir", str(data_dir), "--no-discovery", *tls_flags, *extra]
        super().__init__(f"master-{master_id}", argv, log_path)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=10,
                            verify=self.verify)

    def cluster_view(self, token: str) -> dict[str, Any]:
        return httpx.get(
            f"{self.url}/v1/cluster", headers={"Authorization": f"Bearer {token}"}, timeout=2, verify=self.verify
        ).json()

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/readyz", timeout=1, verify=self.verify).status_code == 200

        wait_until(ready, timeout, what=f"{self.name} ready")


class Slave(Process):
    def __init__(
        self, slave_id: str, ip: str, port: int, masters: str, log_path: Path, extra: list[str],
        tls: ClusterTls | None = None,
    ) -> None:
        self.id, self.ip, self.port = slave_id, ip, port
        self.address = f"{ip}:{port}"
        tls_flags = tls.flags("slave", f"slave-{slave_id}", ip) if tls else []
        argv = [sys.executable, "-m", "claud.slave", "--id", slave_id, "--listen", self.address,
                "--masters", masters, "--no-discovery", *tls_flags, *extra]
        super().__init__(f"slave-{slave_id}", argv, log_path)


def _with_secret(secret_file: Path, extra: tuple[str, ...] | list[str]) -> list[str]:
    return list(extra) if "--cluster-secret-file" in extra else ["--cluster-secret-file", str(secret_file), *extra]


class Cluster:
    def __init__(self, workdir: Path, tls: ClusterTls | None = None, net: str = "127.0.0") -> None:
        """``tls``: every process serves HTTPS with a certificate from its CA. ``net`` is
        the first three octets of the loopback addresses this cluster's processes use;
        a test that cuts links picks its own, so that its firewall rules touch no other
        test running on the machine."""
        self.workdir = workdir
        self.tls = tls
        self.net = net
        self.prefix = "t" + uuid.uuid4().hex[:8]
        self.token_file = workdir / "token"
        self.token_file.write_text(uuid.uuid4().hex + "\n")
        self.secret_file = workdir / "cluster-secret"
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex + "\n")
        self.masters: list[Master] = []
        self.slaves: list[Slave] = []
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------ processes

    def _master_slot(self, master_id: int) -> tuple[str, int]:
        existing = next((m for m in self.masters if m.id == master_id), None)
        return (existing.ip, existing.port) if existing else (f"{self.net}.{10 + master_id}", free_port())

    def start_master(self, master_id: int = 1, *extra: str, wait: bool = True) -> Master:
        """Start (or restart, same address and data) master ``master_id``."""
        ip, port = self._master_slot(master_id)
        existing = next((m for m in self.masters if m.id == master_id), None)
        peers = [m.address for m in self.masters if m.id != master_id]
        args = ["--token-file", str(self.token_file), *_with_secret(self.secret_file, extra)]
        if peers and "--peers" not in extra:
            args += ["--peers", ",".join(peers), "--cluster-size", str(len(self.masters) + (0 if existing else 1))]
        master = Master(master_id, ip, port, self.workdir / f"m{master_id}", self.workdir / f"master-{master_id}.log",
                        args, self.tls)
        if existing:
            self.masters[self.masters.index(existing)] = master
        else:
            self.masters.append(master)
        master.start()
        if wait:
            master.wait_ready()
        return master

    def start_masters(self, count: int, *extra: str, leader_timeout: float = 20) -> list[Master]:
        """A cluster of ``count`` masters, each told the others' addresses; returns once one leads."""
        slots = {i: (f"{self.net}.{10 + i}", free_port()) for i in range(1, count + 1)}
        for i, (ip, port) in slots.items():
            peers = ",".join(f"{p_ip}:{p_port}" for j, (p_ip, p_port) in slots.items() if j != i)
            master = Master(i, ip, port, self.workdir / f"m{i}", self.workdir / f"master-{i}.log",
                            ["--token-file", str(self.token_file), "--peers", peers, "--cluster-size", str(count),
                             *_with_secret(self.secret_file, extra)],
                            self.tls)
            self.masters.append(master)
            master.start()
        self.wait_leader(timeout=leader_timeout)
        return self.masters

    def wait_leader(
        self, among: list[Master] | None = None, timeout: float = 20, other_than: Master | None = None
    ) -> Master:
        """The master that ``among`` (default: all live ones) agree leads, once they agree
        (on one that is not ``other_than``, when given)."""
        def agreed() -> Master | None:
            views = [m.cluster_view(self.token) for m in (among or [m for m in self.masters if m.alive])]
            leaders = {v["leader_id"] for v in views}
            if len(leaders) == 1 and None not in leaders and (other_than is None or other_than.id not in leaders):
                leader_id = leaders.pop()
                return next(m for m in self.masters if m.id == leader_id)
            return None

        return wait_until(agreed, timeout, what="an agreed leader")

    def start_slave(
        self, name: str = "s1", *extra: str, port: int | None = None, timeout: float = 20, wait: bool = True
    ) -> Slave:
        """Start (or restart, same address and state dir) slave ``name``; with ``wait``, until
        the masters list it alive (through this cluster's shared client: not from a thread)."""
        slave_id = f"{self.prefix}-{name}"
        existing = next((s for s in self.slaves if s.id == slave_id), None)
        ip = existing.ip if existing else f"{self.net}.{100 + len(self.slaves)}"
        port = port or (existing.port if existing else free_port())
        masters = ",".join(m.address for m in self.masters)
        args = _with_secret(self.secret_file, extra)
        if "--state-dir" not in args:  # the persisted lease stays with the test, not in /var/lib/claud
            args += ["--state-dir", str(self.workdir / f"slave-{name}-state")]
        slave = Slave(slave_id, ip, port, masters, self.workdir / f"slave-{name}.log", args, self.tls)
        if existing:
            self.slaves[self.slaves.index(existing)] = slave
        else:
            self.slaves.append(slave)
        slave.start()
        if wait:
            wait_until(lambda: (n := self.node(slave_id)) is not None and n["state"] == "alive",
                       timeout, what=f"slave {slave_id} registered")
        return slave

    def slave(self, name: str) -> Slave:
        return next(s for s in self.slaves if s.id == f"{self.prefix}-{name}")

    @property
    def master(self) -> Master:
        """The master the test's HTTP client talks to: the first live one."""
        return next(m for m in self.masters if m.alive)

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def secret(self) -> str:
        """The cluster secret every process of this cluster was given."""
        return self.secret_file.read_text().strip()

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
                base_url=self.master.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30,
                verify=self.master.verify,
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
