"""GC removes a collected job's named volumes on its slave (real Docker), and nothing else's.

One master collecting terminal jobs at once (``--job-gc-after 0.5 --job-gc-keep 0``)
and one Docker slave; containers and volumes carry ``claud.test=<uuid>`` and are
removed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from support.cluster import Cluster, wait_until

pytestmark = pytest.mark.docker

IMAGE = "claud/busybox:latest"
SMALL = {"cpu": 0.05, "memory_mb": 32}


def volumes(label: str) -> set[str]:
    import docker

    client = docker.from_env(timeout=30)
    try:
        return {str(v.name) for v in client.volumes.list(filters={"label": label})}
    finally:
        client.close()


@pytest.fixture
def cluster(start_docker_cluster: Callable[..., Cluster]) -> Cluster:
    return start_docker_cluster(master_args=("--job-gc-after", "0.5", "--job-gc-keep", "0", "--gc-interval", "0.5"))


def test_a_collected_jobs_volumes_go_and_a_running_jobs_stay(cluster: Cluster, container_label: str) -> None:
    keeper = cluster.submit(name="keeper", type="service", image=IMAGE, resources=SMALL, command=["sleep", "600"],
                            volumes=[{"name": "data", "path": "/data"}])
    cluster.wait_state(str(keeper["id"]), "running", timeout=60)
    done = cluster.submit(name="writer", image=IMAGE, resources=SMALL, command=["sh", "-c", "echo x > /data/f"],
                          volumes=[{"name": "data", "path": "/data"}])
    done_id = str(done["id"])
    wait_until(lambda: f"claud-{done_id}-0-data" in volumes(container_label), 60, what="the writer's volume made")
    # Completed, collected (404), then its volume is gone; the running job's stays.
    wait_until(lambda: cluster.http.get(f"/v1/jobs/{done_id}").status_code == 404, 60, what="the writer collected")
    wait_until(lambda: f"claud-{done_id}-0-data" not in volumes(container_label), 60,
               what="the writer's volume removed")
    assert f"claud-{keeper['id']}-0-data" in volumes(container_label)
    assert cluster.job(str(keeper["id"]))["state"] == "running"
