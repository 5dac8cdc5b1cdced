"""The CLAUD Python SDK: submit and watch jobs on a CLAUD cluster.

::

    from claud.client import Client

    with Client("127.0.0.1:8700") as claud:
        job = claud.submit({"name": "hello", "image": "claud/busybox:latest",
                            "command": ["echo", "hi"]})
        done = claud.wait(job.id)
        print(done.state, done.exit_code)

Imports neither FastAPI nor Docker: the SDK installs alone (claud-client).
The wire models (:class:`JobSpec`, :class:`JobView`...) are those of
:mod:`claud.api`, re-exported here for convenience.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from claud.api.jobs import JobSpec, JobState, JobView
from claud.api.nodes import ClusterView, NodeView
from claud.client._async_client import AsyncClient
from claud.client._client import Client
from claud.client._events import Event
from claud.client.errors import (
    ClaudError,
    Conflict,
    InvalidSpec,
    JobNotFound,
    NoLeader,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
    Untrusted,
    WaitTimeout,
)

try:
    __version__ = _version("claud-client")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
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
