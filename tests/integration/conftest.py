"""Fixtures of the integration tests: the slave's (test_docker_runtime,
test_slave_agent; names start with ``slave_``, self-contained),
``masters_and_simulated_slave``, the small cluster the trace and metrics tests
share, and ``start_docker_cluster``, one master and one Docker slave whose
containers and volumes carry ``container_label`` (test_services, test_volume_gc).
Other helpers live in tests/support; these are handed out as fixtures
because two conftest modules cannot both be imported as ``conftest``.

Every container these tests cause carries ``claud.test=<uuid of the test>``,
and the ``slave_ids`` fixture removes them all afterwards, whatever the test did.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

if TYPE_CHECKING:
    from support.cluster import Cluster

T = TypeVar("T")

SLAVE_TEST_LABEL = "claud.test"
SLAVE_TEST_IMAGE = "claud/busybox:latest"


@dataclass(frozen=True)
class SlaveTestIds:
    """Unique names for one test: its slave id and the label its containers carry."""

    token: str

    @property
    def slave_id(self) -> str:
        return f"t{self.token[:10]}"

    @property
    def label(self) -> str:
        return f"{SLAVE_TEST_LABEL}={self.token}"

    def alloc(self, name: str) -> str:
        return f"{self.token[:10]}-{name}"


def _free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - e.g. a process still starting
            last_error = exc
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{suffix}")
        time.sleep(interval)


def _remove_test_containers(label: str) -> int:
    import docker
    import docker.errors

    client = docker.from_env(timeout=30)
    try:
        containers = client.containers.list(all=True, filters={"label": label})
        for container in containers:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return len(containers)
    finally:
        client.close()


@pytest.fixture
def slave_ids() -> Iterator[SlaveTestIds]:
    """Unique slave id and container label; removes the test's containers afterwards."""
    ids = SlaveTestIds(uuid.uuid4().hex)
    yield ids
    # Without an engine nothing was created either.
    with contextlib.suppress(Exception):
        _remove_test_containers(ids.label)


@pytest.fixture
def slave_docker() -> Iterator[object]:
    """A Docker SDK client for the test's own checks (inspect, list)."""
    import docker

    client = docker.from_env(timeout=30)
    yield client
    client.close()


@pytest.fixture
def slave_free_port() -> Callable[[], int]:
    return _free_port


@pytest.fixture
def slave_wait_for() -> Callable[..., object]:
    return _wait_for


@pytest.fixture
def masters_and_simulated_slave(tmp_path: Path) -> Iterator[Cluster]:
    """Three masters on loopback and one slave with the simulated runtime (no Docker)."""
    from support.cluster import Cluster

    cluster = Cluster(tmp_path)
    try:
        cluster.start_masters(3)
        cluster.start_slave("s1", "--runtime", "simulated")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def container_label() -> str:
    """``claud.test=<uuid>``, unique to the test: the label its Docker slave puts on every
    container and volume it makes, by which ``start_docker_cluster`` removes them."""
    return f"{SLAVE_TEST_LABEL}={uuid.uuid4().hex}"


@pytest.fixture
def start_docker_cluster(tmp_path: Path, container_label: str) -> Iterator[Callable[..., Cluster]]:
    """Starts, when called, one master (with ``master_args``) and one Docker slave ``s1``
    (with ``slave_args``) labelling what it makes ``container_label``. Afterwards the
    processes stop and every container and volume carrying the label is removed, however
    the test (or the start) ended. A factory, since each module starts its own flags."""
    from support.cluster import Cluster
    from support.docker_engine import remove_containers, remove_volumes

    cluster = Cluster(tmp_path)

    def start(master_args: Sequence[str] = (), slave_args: Sequence[str] = ()) -> Cluster:
        cluster.start_master(1, *master_args)
        cluster.start_slave("s1", *slave_args, "--container-labels", container_label)
        return cluster

    try:
        yield start
    finally:
        cluster.close()
        remove_containers(container_label)
        remove_volumes(container_label)
