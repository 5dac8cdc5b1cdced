"""``GET /metrics`` as an operator's Prometheus sees it: after a leader is elected,
a slave heartbeats and a job runs, the telemetry counts and times each of them,
and Prometheus' own ``promtool check metrics`` finds nothing to fault."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from claud.api.protocol import CLUSTER_SECRET_HEADER
from support.cluster import Cluster, wait_until

REPO = Path(__file__).resolve().parents[2]


def promtool() -> str | None:
    return shutil.which("promtool") or next(
        (str(p) for p in [REPO / ".build" / "tools" / "promtool"] if p.is_file()), None
    )


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def cluster(masters_and_simulated_slave: Cluster) -> Cluster:
    return masters_and_simulated_slave


def scrape(cluster: Cluster, master_index: int | None = None) -> str:
    master = cluster.masters[master_index] if master_index is not None else cluster.wait_leader()
    response = httpx.get(f"{master.url}/metrics", headers={"Authorization": f"Bearer {cluster.token}"}, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def test_the_leader_counts_and_times_what_it_does_and_promtool_accepts_it(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    slave_id = cluster.slaves[0].id
    job = cluster.http.post("/v1/jobs", json={"name": "m", "image": "claud/busybox:latest", "command": ["true"]})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    wait_until(lambda: cluster.http.get(f"/v1/jobs/{job_id}").json()["state"] == "completed", 30,
               what="the job completes")

    leader_index = cluster.masters.index(leader)
    def counted_heartbeats() -> str | None:
        text = scrape(cluster, leader_index)
        return text if sample(text, "claud_slave_heartbeats_total", slave=slave_id) >= 2 else None

    text = wait_until(counted_heartbeats, 20, what="heartbeats counted")
    assert sample(text, "claud_is_leader") == 1
    assert sample(text, "claud_raft_commit_seconds_count") >= 2  # the job's submission, its placement...
    assert sample(text, "claud_raft_apply_seconds_count") >= 1
    assert sample(text, "claud_raft_elections_started_total", kind="election") >= 1
    assert sample(text, "claud_raft_leader_changes_total") >= 1
    assert sample(text, "claud_scheduler_placements_total") >= 1
    assert sample(text, "claud_scheduler_pass_seconds_count") >= 1
    for state in ("pending", "scheduled", "running", "completed"):
        assert sample(text, "claud_job_transitions_total", state=state) >= 1, state
    assert sample(text, "claud_jobs", state="completed") == 1
    assert sample(text, "claud_http_request_seconds_count", method="POST", route="/v1/jobs", status="2xx") >= 1
    assert sample(text, "claud_http_request_seconds_count", method="GET", route="/v1/jobs/{job_id}",
                  status="2xx") >= 1

    # A follower applies the same transitions; a stranger's paths do not grow the label set.
    follower_index = next(i for i, m in enumerate(cluster.masters) if m is not leader)
    for path in ("/no/such/path/1", "/no/such/path/2"):
        httpx.get(f"{cluster.masters[follower_index].url}{path}", timeout=5)
    follower = scrape(cluster, follower_index)
    assert sample(follower, "claud_is_leader") == 0
    assert sample(follower, "claud_job_transitions_total", state="completed") == 1
    assert "/no/such/path" not in follower
    assert sample(follower, "claud_http_request_seconds_count", method="GET", route="unmatched", status="4xx") >= 2

    # The slave serves its own, behind the cluster secret like all its routes.
    slave_url = f"http://{cluster.slaves[0].address}/metrics"
    assert httpx.get(slave_url, timeout=5).status_code == 401
    answer = httpx.get(slave_url, headers={CLUSTER_SECRET_HEADER: cluster.secret}, timeout=5)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    slave = answer.text
    assert sample(slave, "claud_slave_container_starts_total") >= 1
    assert sample(slave, "claud_slave_lease_seconds_left") > 0
    assert sample(slave, "claud_slave_fenced") == 0

    tool = promtool()
    if tool is None:
        pytest.skip("promtool is not installed (deploy/install-test-tools.sh fetches it)")
    for exposition in (text, follower, slave):
        checked = subprocess.run([tool, "check", "metrics"], input=exposition, capture_output=True, text=True,
                                 timeout=30, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
