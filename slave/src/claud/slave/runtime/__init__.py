"""The small interface between the agent and whatever runs containers.

The agent is asyncio; the interface is async so that the simulated runtime can
run hundreds of slaves in one event loop without a thread each, while the
Docker runtime hides its blocking SDK calls in its own worker threads.

Containers are known only by their labels (``claud.slave``, ``claud.job``,
``claud.alloc``, ``claud.index``, ``claud.version``): a runtime keeps no record
of its own that a restart could lose, which is what lets a restarted agent find
its containers again.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from claud.api import Allocation

if TYPE_CHECKING:
    from claud.slave.settings import SlaveSettings


class Phase(StrEnum):
    """Where a container is in its life, reduced to what the agent acts on."""

    CREATED = "created"  # exists, never started (crash between create and start, or start failed)
    RUNNING = "running"  # running, paused or restarting: it holds its resources
    EXITED = "exited"  # ran and ended (or dead/being removed)


@dataclass(frozen=True, slots=True)
class Observed:
    """One CLAUD container of this slave, as the runtime sees it now."""

    container_id: str
    alloc_id: str
    job_id: str
    phase: Phase
    exit_code: int | None = None
    #: Why it could not start, or why it died (OOM); None when nothing went wrong.
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The main process's id in the engine host's PID namespace, while it runs (fencing's fast path).
    pid: int | None = None
    #: The allocation's index in its job (``claud.index``): with ``job_id``, the slot that
    #: at most one attempt may hold at a time. 0 for a container from before replicas.
    index: int = 0
    #: The job version it runs (``claud.version``); 0 when not labelled.
    version: int = 0


@dataclass(frozen=True, slots=True)
class ExecOutput:
    """What a command run in a container (``claud exec``) did; each stream cut at the caller's limit."""

    exit_code: int  # -1: unknown (the engine reported none)
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


class ExecTimeout(Exception):
    """The command did not end within its timeout (it may still be running in the container)."""


class ExecRefused(Exception):
    """The engine will not run the command there (the container is not running, or gone)."""


class StartFailed(Exception):
    """The container cannot run (missing image, bad command); retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RuntimeUnavailable(Exception):
    """The runtime cannot be reached at all (Docker engine down); worth retrying, never a job's fault."""


class StartAborted(Exception):
    """A start gave up before running anything (the lease ended meanwhile); no container is left."""


class Runtime(abc.ABC):
    """What the agent needs from a container engine; every call is safe to repeat."""

    name: str

    @abc.abstractmethod
    async def list(self) -> list[Observed]:
        """Every container labelled with this slave's id, whatever its state."""

    @abc.abstractmethod
    async def find(self, alloc_id: str) -> Observed | None:
        """The container of one allocation, if this slave has it."""

    @abc.abstractmethod
    async def start(self, alloc: Allocation, proceed: Callable[[], bool] | None = None) -> Observed:
        """Create and start the allocation's container, or adopt it if it already exists.

        Idempotent per allocation id: a second call never makes a second
        container. Raises StartFailed with a message fit for the user,
        RuntimeUnavailable when the engine does not answer (retry later), and
        StartAborted when ``proceed()``, asked just before the container would
        start (after a create that may take seconds), says no.
        """

    async def running(self) -> builtins.list[Observed]:  # `list` here is the method above
        """This slave's running containers, as cheaply as the runtime can: the fence's sweep."""
        return [o for o in await self.list() if o.phase is Phase.RUNNING]

    async def fence(self, targets: Mapping[str, float]) -> None:
        """Stop every target at once: SIGTERM now, SIGKILL ``targets[id]`` seconds from now.

        Its own path, independent of ordinary stops: however many containers,
        each is killed at its deadline. A gone container is not an error.
        """
        await asyncio.gather(*(self.stop(cid, grace) for cid, grace in targets.items()))

    @abc.abstractmethod
    async def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a gone container is not an error."""

    @abc.abstractmethod
    async def remove(self, container_id: str) -> None:
        """Delete an exited container (and its logs); a gone container is not an error."""

    @abc.abstractmethod
    def logs(self, container_id: str, *, follow: bool, tail: int | None) -> AsyncGenerator[bytes, None]:
        """The container's stdout and stderr, interleaved; ``tail=None`` means all of it.

        Closing the iterator (client gone) must release whatever feeds it.
        """

    @abc.abstractmethod
    def changes(self) -> AsyncIterator[None]:
        """Yields whenever a container of this slave started, died or vanished.

        A hint to reconcile now rather than at the next tick; it may repeat
        or coalesce notifications, the agent only needs "something changed".
        """

    async def exec(self, container_id: str, command: builtins.list[str]) -> int:
        """Run ``command`` in the running container; its exit code (a command health check).
        The caller bounds the wait."""
        raise NotImplementedError(f"the {self.name} runtime runs no commands in containers")

    async def exec_output(
        self, container_id: str, command: builtins.list[str], *, within: float, limit: int
    ) -> ExecOutput:
        """Run ``command`` in the running container and collect its output (``claud exec``):
        at most ``limit`` bytes of each stream; ExecTimeout after ``within`` seconds."""
        raise NotImplementedError(f"the {self.name} runtime runs no commands in containers")

    async def remove_job_volumes(self, job_id: str) -> tuple[builtins.list[str], builtins.list[str]]:
        """Remove this slave's named volumes of ``job_id`` (the masters collected the job):
        the names removed, and those kept because a container still uses them."""
        return [], []

    async def probe(self, alloc: Allocation) -> bool | None:
        """The runtime's own answer to the allocation's health check, or None: check it for real
        (the simulated runtime answers, having no ports to reach)."""
        return None

    def disk_path(self) -> str:
        """The filesystem whose free space is worth reporting (where images live)."""
        return "/"

    async def aclose(self) -> None:  # noqa: B027 - optional: most runtimes hold nothing
        """Release threads and connections; containers are left as they are."""


def make_runtime(settings: SlaveSettings) -> Runtime:
    """Build the runtime the settings name (imported lazily: simulated needs no Docker SDK)."""
    if settings.runtime == "docker":
        from claud.slave.runtime.docker import DockerRuntime

        return DockerRuntime(
            settings.id,
            workers=settings.docker_workers,
            api_timeout=settings.docker_timeout,
            pull_timeout=settings.pull_timeout,
            extra_labels=settings.container_labels,
            hardening=settings.hardening,
            docker_host=settings.docker_host,
            fence_workers=settings.fence_workers,
            host_volumes=tuple(settings.allow_host_volumes),
        )
    from claud.slave.runtime.simulated import SimulatedRuntime

    return SimulatedRuntime(settings.id, default_seconds=settings.sim_default_seconds)


__all__ = [
    "Observed",
    "Phase",
    "Runtime",
    "RuntimeUnavailable",
    "StartAborted",
    "StartFailed",
    "make_runtime",
]
