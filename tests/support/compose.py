"""The compose demo cluster (compose.yaml) under test: bring it up, cut and kill
its members, look at it from the host and from inside its containers.

Each :class:`ComposeCluster` is its own compose project (``claudt<hex>``): its
containers are ``<project>-master1..3`` and ``<project>-slave1..3``, its network
``<project>-net``, its slaves' ids ``<project>-s1..3``, and every job container
its slaves start carries ``claud.compose=<project>``. :meth:`down` removes all
of it — containers, network, volumes, job containers — whatever state the
tests left it in. Host ports are chosen by Docker (no clash with a running
``make cluster-up`` or ``make demo``).
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
MASTER_IDS = (1, 2, 3)
SLAVE_NUMBERS = (1, 2, 3)
API_PORT = 8700


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    last_value: Any = None
    while True:
        try:
            last_value = predicate()
            if last_value:
                return last_value
        except Exception as exc:  # noqa: BLE001 - e.g. a master that is restarting
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else f" (last value: {last_value!r})"
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 120,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check).stdout.strip()


def images() -> tuple[str, ...]:
    """The images a compose cluster runs, as compose.yaml reads their names
    (``${VAR:-default}``: empty means the default), and the jobs' image."""
    return (
        os.environ.get("CLAUD_MASTER_IMAGE") or "claud/master:latest",
        os.environ.get("CLAUD_SLAVE_IMAGE") or "claud/slave:latest",
        "claud/busybox:latest",
    )


def missing_images() -> list[str]:
    """Those of :func:`images` the engine lacks.

    Tests never build them: from nothing, a build takes minutes (debootstrap,
    wheels), past the test timeout on a busy machine. `make images` builds
    them, and `make test` runs it before pytest.
    """
    return [image for image in images() if run(["docker", "image", "inspect", image], check=False).returncode]


class ComposeCluster:
    def __init__(self, workdir: Path, project: str | None = None, *, tls: bool = False) -> None:
        """``tls``: compose.tls.yaml on top, every process with its own certificate from a CA
        deploy/cluster.sh makes in ``cluster_dir/tls``."""
        self.project = project or f"claudt{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.tls = tls
        self.cluster_dir = workdir / "cluster"
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.project,
            "CLAUD_CLUSTER_DIR": str(self.cluster_dir),
            "CLAUD_SLAVE_ID_PREFIX": f"{self.project}-",
            # Empty: Docker picks free host ports (see ``url``).
            "CLAUD_M1_PORT": "",
            "CLAUD_M2_PORT": "",
            "CLAUD_M3_PORT": "",
            "CLAUD_TLS": "1" if tls else "0",
        }
        self._urls: dict[int, str] = {}
        self._http = httpx.Client(timeout=5)

    # ------------------------------------------------------------ lifecycle

    def up(self) -> None:
        run(["bash", "deploy/cluster.sh", "up"], env={**self.env, "SKIP_BUILD": "1"}, timeout=300)
        if self.tls:
            self._http.close()
            self._http = httpx.Client(timeout=5, verify=ssl.create_default_context(cafile=str(self.ca_file)))

    @property
    def ca_file(self) -> Path:
        return self.cluster_dir / "tls" / "claud-agent-ca.pem"

    def down(self) -> None:
        """Remove everything of this project, even after a failed or partial ``up``."""
        with contextlib.suppress(Exception):
            run(["bash", "deploy/cluster.sh", "down"], env=self.env, timeout=180, check=False)
        # Belt and braces: whatever the script could not remove.
        for label in (f"com.docker.compose.project={self.project}", f"claud.compose={self.project}"):
            ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
            if ids:
                docker("rm", "-f", "-v", *ids, check=False)
        for n in SLAVE_NUMBERS:
            ids = docker("ps", "-aq", "--filter", f"label=claud.slave={self.slave_id(n)}", check=False).split()
            if ids:
                docker("rm", "-f", "-v", *ids, check=False)
        docker("network", "rm", self.network, check=False)
        volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
                         check=False).split()
        if volumes:
            docker("volume", "rm", "-f", *volumes, check=False)
        self._http.close()

    def leftovers(self) -> list[str]:
        """Containers, networks and volumes of this project still on the engine."""
        found: list[str] = []
        for label in (f"com.docker.compose.project={self.project}", f"claud.compose={self.project}"):
            found += docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
            found += docker("volume", "ls", "-q", "--filter", f"label={label}", check=False).split()
        found += docker("network", "ls", "-q", "--filter", f"name=^{self.network}$", check=False).split()
        return found

    def logs(self, tail: int = 40) -> str:
        parts = []
        for name in [*(self.master(i) for i in MASTER_IDS), *(self.slave(n) for n in SLAVE_NUMBERS)]:
            proc = run(["docker", "logs", "--tail", str(tail), name], check=False, timeout=30)
            parts.append(f"--- {name}\n{proc.stdout}{proc.stderr}")
        return "\n".join(parts)

    # ------------------------------------------------------------ names

    @property
    def network(self) -> str:
        return f"{self.project}-net"

    @property
    def token(self) -> str:
        return (self.cluster_dir / "token").read_text().strip()

    def master(self, master_id: int) -> str:
        return f"{self.project}-master{master_id}"

    def slave(self, n: int) -> str:
        return f"{self.project}-slave{n}"

    def slave_id(self, n: int) -> str:
        return f"{self.project}-s{n}"

    def slave_number(self, slave_id: str) -> int:
        return int(slave_id.rsplit("-s", 1)[1])

    # ------------------------------------------------------------ faults

    def disconnect(self, container: str) -> None:
        docker("network", "disconnect", self.network, container)

    def connect(self, container: str) -> None:
        docker("network", "connect", self.network, container)
        self.forget_urls()

    def forget_urls(self) -> None:
        """After a master rejoins the network or restarts: Docker picks its random
        host port anew, and the old one may since belong to another container."""
        self._urls.clear()

    def connected(self, container: str) -> bool:
        networks = json.loads(docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", container))
        return self.network in (networks or {})

    def running(self, container: str) -> bool:
        return docker("inspect", "--format", "{{.State.Running}}", container, check=False) == "true"

    # ------------------------------------------------------------ HTTP from the host

    def url(self, master_id: int) -> str:
        if master_id not in self._urls:
            host_port = docker("port", self.master(master_id), f"{API_PORT}/tcp").splitlines()[0]
            scheme = "https" if self.tls else "http"
            self._urls[master_id] = f"{scheme}://" + host_port.replace("0.0.0.0:", "127.0.0.1:")
        return self._urls[master_id]

    def request(self, master_id: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        try:
            return self._http.request(method, self.url(master_id) + path, headers=headers, **kwargs)
        except httpx.TransportError:
            # Restarted or reconnected: maybe another host port, and the old one
            # may still accept (docker-proxy) before failing, not only refuse.
            self._urls.pop(master_id, None)
            raise

    def get(self, master_id: int, path: str) -> Any:
        response = self.request(master_id, "GET", path)
        response.raise_for_status()
        return response.json()

    def cluster_view(self, master_id: int) -> dict[str, Any]:
        return self.get(master_id, "/v1/cluster")

    def submit(self, master_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        response = self.request(master_id, "POST", "/v1/jobs", json=spec, timeout=15)
        assert response.status_code == 201, f"submit to master {master_id}: {response.status_code} {response.text}"
        return response.json()

    def job(self, master_id: int, job_id: str) -> dict[str, Any]:
        return self.get(master_id, f"/v1/jobs/{job_id}")

    def slaves(self, master_id: int) -> dict[str, dict[str, Any]]:
        return {n["id"]: n for n in self.get(master_id, "/v1/nodes")["nodes"] if n["role"] == "slave"}

    def agreed_leader(self, among: tuple[int, ...] = MASTER_IDS) -> tuple[int, int] | None:
        """(leader id, term) once every master of ``among`` names the same leader in the same term."""
        views = [self.cluster_view(i) for i in among]
        leaders = {(v["leader_id"], v["term"]) for v in views}
        if len(leaders) == 1:
            leader, term = leaders.pop()
            if leader is not None:
                return leader, term
        return None

    # ------------------------------------------------------------ HTTP from inside a container

    def exec_request(self, container: str, method: str, path: str, body: dict[str, Any] | None = None,
                     port: int = API_PORT, timeout: float = 20) -> tuple[int, Any]:
        """(status, JSON body) of a request a container makes to its own API on loopback:
        the one way to reach a master cut off from the network."""
        script = (
            "import json, sys, urllib.request, urllib.error\n"
            "method, url, body, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])\n"
            "token = open('/run/claud/token').read().strip()\n"
            "req = urllib.request.Request(url, method=method, data=body.encode() if body else None,\n"
            "    headers={'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'})\n"
            "try:\n"
            "    r = urllib.request.urlopen(req, timeout=timeout)\n"
            "    status, text = r.status, r.read().decode()\n"
            "except urllib.error.HTTPError as e:\n"
            "    status, text = e.code, e.read().decode()\n"
            "print(json.dumps({'status': status, 'body': text}))\n"
        )
        out = docker(
            "exec", container, "python3", "-c", script, method,
            f"http://127.0.0.1:{port}{path}", json.dumps(body) if body is not None else "", str(timeout - 2),
            timeout=timeout + 10,
        )
        result = json.loads(out.splitlines()[-1])
        try:
            parsed = json.loads(result["body"])
        except ValueError:
            parsed = result["body"]
        return int(result["status"]), parsed

    # ------------------------------------------------------------ job containers

    def job_containers(self, slave_id: str) -> list[dict[str, Any]]:
        """``docker inspect`` of every container that slave ``slave_id`` started."""
        ids = docker("ps", "-aq", "--filter", f"label=claud.slave={slave_id}").split()
        if not ids:
            return []
        return json.loads(docker("inspect", *ids))

    def container_of_alloc(self, alloc_id: str) -> dict[str, Any] | None:
        ids = docker("ps", "-aq", "--filter", f"label=claud.alloc={alloc_id}").split()
        return json.loads(docker("inspect", ids[0]))[0] if ids else None
