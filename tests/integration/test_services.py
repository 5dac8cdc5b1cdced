"""Services with real Docker (issue 17, one allocation each): ports people reach, health, volumes.

One master and one Docker slave with a port range of its own (``--port-range``,
below the kernel's ephemeral ports); every container carries
``claud.test=<uuid>`` and every volume the slave made is removed afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.cluster import Cluster, free_port, wait_until

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"
SMALL = {"cpu": 0.05, "memory_mb": 32}
PORT_RANGE = "21000-21999"
#: An httpd serving "hello" from /www on port 8080, in the foreground.
HTTPD = ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]


@pytest.fixture
def services(start_docker_cluster: Callable[..., Cluster]) -> Cluster:
    return start_docker_cluster(slave_args=("--port-range", PORT_RANGE))


def service(cluster: Cluster, **spec: Any) -> str:
    job = cluster.submit(type="service", resources=SMALL, **spec)
    return str(job["id"])


def cli(cluster: Cluster, *args: str) -> str:
    script = Path(sys.executable).parent / "claud"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "claud.client.cli"]
    env = {**os.environ, "CLAUD_MASTERS": cluster.master.url, "CLAUD_TOKEN": cluster.token, "COLUMNS": "250"}
    done = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_httpd_service_is_reached_on_the_address_claud_prints(services: Cluster) -> None:
    job_id = service(services, name="web", command=HTTPD, ports=[{"name": "http", "container": 8080}],
                     check={"http": "/", "port": "http", "interval": 0.5, "timeout": 2})
    wait_until(lambda: services.job(job_id)["health"] == "healthy", 60, what="the service healthy")
    shown = cli(services, "job", job_id)
    match = re.search(r"Port http\s+(\S+:\d+) -> container 8080/tcp", shown)
    assert match, shown
    address = match[1]
    low, high = map(int, PORT_RANGE.split("-"))
    host, port = address.rsplit(":", 1)
    assert host == services.slave("s1").ip and low <= int(port) <= high
    assert re.search(r"Health\s+healthy \(http check\)", shown), shown
    answer = wait_until(lambda: httpx.get(f"http://{address}/", timeout=2), 20, what=f"httpd on {address}")
    assert answer.status_code == 200 and answer.text == "hello\n"
    view = services.job(job_id)
    assert view["ports"] == [
        {"name": "http", "container": 8080, "host": 0, "host_port": int(port), "address": address}
    ]
    assert any(e.get("health") == "healthy" for e in view["events"])


def test_a_static_port_in_use_leaves_the_second_job_pending_with_that_reason(services: Cluster) -> None:
    port = free_port()
    ports = [{"name": "http", "container": 8080, "host": port}]
    first = service(services, name="first", command=HTTPD, ports=ports)
    services.wait_state(first, "running", timeout=60)
    second = service(services, name="second", command=HTTPD, ports=ports)
    pending = wait_until(lambda: (j := services.job(second))["pending_reason"] and j, 30, what="a pending reason")
    assert pending["state"] == "pending"
    assert f"host port {port} is taken" in pending["pending_reason"]
    assert httpx.get(f"http://{services.slave('s1').ip}:{port}/", timeout=5).text == "hello\n"
    # The port is free again once the first is stopped: the second runs on it.
    services.http.delete(f"/v1/jobs/{first}").raise_for_status()
    services.wait_state(first, "stopped", timeout=60)
    placed = services.wait_state(second, "running", timeout=60)
    assert placed["ports"][0]["host_port"] == port


def test_a_failing_http_check_makes_the_allocation_unhealthy_and_restarts_it(services: Cluster) -> None:
    job_id = service(services, name="sick", command=HTTPD, ports=[{"name": "http", "container": 8080}],
                     stop_timeout=1,
                     check={"http": "/missing", "port": "http", "interval": 0.5, "timeout": 1, "failures": 2})

    def restarted() -> dict[str, Any] | None:
        job = services.job(job_id)
        return job if job["attempts"] >= 2 else None

    job = wait_until(restarted, 90, what="the unhealthy service restarted")
    events = job["events"]
    unhealthy = [e for e in events if e.get("health") == "unhealthy"]
    assert unhealthy and unhealthy[0]["attempt"] == 1, events
    assert "answered 404" in unhealthy[0]["message"]
    ended = next(e for e in events if e["attempt"] == 1 and e["state"] == "pending" and "restart" in e["message"])
    assert "unhealthy" in ended["message"] and "restarting the service" in ended["message"], ended


def test_data_in_a_named_volume_survives_a_restart_of_the_allocation(services: Cluster) -> None:
    import docker

    # Each attempt prints how many attempts wrote before it, writes, and exits (a service: restarted).
    command = ["sh", "-c", "echo seen $(cat /data/log 2>/dev/null | wc -l); echo x >> /data/log; sleep 1; exit 3"]
    job_id = service(services, name="keeper", command=command, volumes=[{"name": "data", "path": "/data"}])
    wait_until(lambda: services.job(job_id)["attempts"] >= 3, 90, what="three attempts")
    client = docker.from_env(timeout=30)
    try:
        def outputs() -> set[str]:
            containers = client.containers.list(all=True, filters={"label": f"claud.job={job_id}"})
            return {c.logs().decode().strip() for c in containers}

        seen = wait_until(lambda: (o := outputs()) >= {"seen 0", "seen 1"} and o, 30, what="the attempts' output")
        assert "seen 1" in seen, seen
        volume = client.volumes.get(f"claud-{job_id}-0-data")
        assert volume.attrs["Labels"]["claud.job"] == job_id
        assert volume.attrs["Labels"]["claud.slave"] == services.slave("s1").id
    finally:
        client.close()


def test_a_host_path_outside_the_allowed_prefixes_waits_with_a_reason(services: Cluster) -> None:
    job_id = service(services, name="hostpath", command=["sleep", "60"],
                     volumes=[{"host_path": "/srv/claud-test", "path": "/data"}])
    job = wait_until(lambda: (j := services.job(job_id))["pending_reason"] and j, 30, what="a pending reason")
    assert "allows host volume path /srv/claud-test" in job["pending_reason"]


def test_tcp_and_command_checks_through_docker(services: Cluster) -> None:
    tcp = service(services, name="tcp", command=HTTPD, ports=[{"name": "http", "container": 8080}],
                  check={"tcp": True, "port": "http", "interval": 0.5})
    # docker exec takes a while on a loaded machine: generous timeouts, so only the exit code decides.
    ok = service(services, name="cmd", command=["sleep", "3600"],
                 check={"command": ["true"], "interval": 0.5, "timeout": 15})
    bad = service(services, name="cmdbad", command=["sleep", "3600"], stop_timeout=1,
                  check={"command": ["sh", "-c", "exit 4"], "interval": 0.5, "timeout": 15, "failures": 1})
    for job_id in (tcp, ok):
        wait_until(lambda j=job_id: services.job(j)["health"] == "healthy", 60, what=f"{job_id} healthy")
    events = wait_until(lambda: [e for e in services.job(bad)["events"] if e.get("health") == "unhealthy"], 60,
                        what="the failing command check")
    assert "exited with 4" in events[0]["message"], events
