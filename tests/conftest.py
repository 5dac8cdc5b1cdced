"""Shared test set-up: makes ``tests/support`` importable and skips Docker
tests (only) where no engine answers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.docker_engine import docker_available


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if docker_available():
        return
    skip = pytest.mark.skip(reason="no Docker engine answers (deploy/install-docker.sh installs one)")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cluster(tmp_path: Path):
    """Real master and slave processes on loopback; all removed afterwards."""
    from support.cluster import Cluster

    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three masters and one Docker slave, shared by the tests of one module that only add jobs."""
    from support.cluster import Cluster

    if not docker_available():
        pytest.skip("no Docker engine answers")
    c = Cluster(tmp_path_factory.mktemp("shared-cluster"))
    try:
        c.start_masters(3)
        c.start_slave("a")
        yield c
    finally:
        c.close()
