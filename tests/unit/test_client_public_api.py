"""Pins what claud.client exports: adding a name is a decision, removing one a break."""

from __future__ import annotations

import inspect
import subprocess
import sys
import types

import claud.client
import claud.client.errors
from claud.client import AsyncClient, Client

EXPORTED = [
    "AsyncClient",
    "ClaudError",
    "Client",
    "ClusterView",
    "Conflict",
    "Event",
    "InvalidSpec",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobView",
    "NoLeader",
    "NodeView",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unreachable",
    "Untrusted",
    "WaitTimeout",
    "__version__",
]

ERRORS = [
    "ClaudError",
    "Conflict",
    "InvalidSpec",
    "JobNotFound",
    "NoLeader",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unreachable",
    "Untrusted",
    "WaitTimeout",
]


def test_exported_names_are_pinned() -> None:
    assert claud.client.__all__ == EXPORTED


def test_every_public_member_is_exported() -> None:
    public = sorted(
        name
        for name, value in vars(claud.client).items()
        if (not name.startswith("_") or name == "__version__")
        and not isinstance(value, types.ModuleType)
    )
    assert public == sorted(EXPORTED)


def test_errors_module_is_pinned_and_every_error_is_a_claud_error() -> None:
    assert claud.client.errors.__all__ == ERRORS
    for name in ERRORS:
        error = getattr(claud.client.errors, name)
        assert issubclass(error, claud.client.errors.ClaudError)
        assert getattr(claud.client, name) is error
    assert issubclass(claud.client.JobNotFound, claud.client.NotFound)
    assert issubclass(claud.client.WaitTimeout, TimeoutError)


def test_the_async_client_is_a_twin_of_the_sync_one() -> None:
    def public_methods(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name not in {"close", "aclose"}
        }

    assert public_methods(AsyncClient) == public_methods(Client)
    assert list(public_methods(Client)) == [
        "submit",
        "submit_batch",
        "jobs",
        "iter_jobs",
        "job",
        "job_events",
        "stop",
        "update",
        "scale",
        "versions",
        "revert",
        "exec",
        "logs",
        "watch",
        "wait",
        "nodes",
        "iter_nodes",
        "drain",
        "undrain",
        "cluster",
        "chaos",
        "members",
        "add_member",
        "remove_member",
        "events",
        "trace",
        "system_gc",
        "save_snapshot",
        "restore_snapshot",
    ]
    assert list(inspect.signature(Client).parameters) == [
        "masters",
        "token",
        "timeout",
        "failover_timeout",
        "transport",
        "ca_cert",
        "client_cert",
        "client_key",
    ]


def test_importing_the_sdk_and_cli_pulls_in_neither_fastapi_nor_docker() -> None:
    probe = (
        "import sys, claud.client, claud.client.cli\n"
        "banned = {'fastapi', 'starlette', 'uvicorn', 'docker'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in banned)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
