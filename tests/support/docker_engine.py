"""Is there a Docker engine, and cleaning up what a test left in it."""

from __future__ import annotations

import functools

import docker
import docker.errors


@functools.cache
def docker_available() -> bool:
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def remove_containers(label: str) -> int:
    """Force-remove every container carrying ``label`` (``key=value``); returns how many."""
    client = docker.from_env()
    try:
        containers = client.containers.list(all=True, filters={"label": label})
        for container in containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        return len(containers)
    finally:
        client.close()
