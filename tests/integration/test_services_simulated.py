"""Services through real master and slave processes with the simulated runtime (no Docker):
the slave reports its port range, the masters give ports and carry health both ways."""

from __future__ import annotations

from typing import Any

from support.cluster import Cluster, wait_until


def test_ports_health_and_an_unhealthy_restart_through_the_processes(cluster: Cluster) -> None:
    cluster.start_master(1)
    cluster.start_slave("s1", "--runtime", "simulated", "--port-range", "30000-30009")
    ok = cluster.submit(
        name="ok", type="service", env={"CLAUD_SIM_SECONDS": "inf"},
        ports=[{"name": "http", "container": 80}], check={"tcp": True, "port": "http", "interval": 0.2},
    )
    sick = cluster.submit(
        name="sick", type="service", env={"CLAUD_SIM_SECONDS": "inf", "CLAUD_SIM_HEALTHY": "0"},
        stop_timeout=0, check={"command": ["false"], "interval": 0.2, "failures": 2},
    )
    healthy = wait_until(lambda: (j := cluster.job(ok["id"]))["health"] == "healthy" and j, 30, what="healthy")
    (port,) = healthy["ports"]
    assert 30000 <= port["host_port"] <= 30009
    assert port["address"] == f"{cluster.slave('s1').ip}:{port['host_port']}"

    def restarted() -> dict[str, Any] | None:
        job = cluster.job(sick["id"])
        return job if job["attempts"] >= 2 else None

    job = wait_until(restarted, 30, what="the unhealthy service restarted")
    assert any(e.get("health") == "unhealthy" and e["attempt"] == 1 for e in job["events"]), job["events"]
    assert any("unhealthy" in e["message"] and "restarting the service" in e["message"] for e in job["events"])
    assert cluster.job(ok["id"])["attempts"] == 1  # the healthy one was left alone
    node = cluster.node(cluster.slave("s1").id)
    assert node is not None and node["state"] == "alive"


def test_a_bad_service_spec_is_a_422_naming_the_field(cluster: Cluster) -> None:
    cluster.start_master(1)
    bad = {"name": "x", "image": "claud/busybox:latest", "type": "service",
           "ports": [{"name": "http", "container": 80}], "check": {"http": "/", "port": "nope"}}
    answer = cluster.http.post("/v1/jobs", json=bad)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert "check" in error["message"] and "'nope' is not a port of this job" in error["message"], error
