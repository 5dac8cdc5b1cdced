"""A runtime that only pretends: containers "run" as timers in the event loop.

For benchmarks that put hundreds of slaves in one process (like Kubernetes'
hollow nodes). It never touches Docker, so nothing measured with it says
anything about Docker; it exercises the agent, the protocol and the masters.

How long a simulated container runs, from its allocation:

* ``env["CLAUD_SIM_SECONDS"]``: seconds as a float; ``inf`` runs until stopped;
* otherwise a command ``["sleep", "N"]`` (or ``/bin/sleep N``) runs N seconds;
* otherwise the runtime's ``default_seconds`` (``--sim-default-seconds``, 1.0).

It then exits with ``env["CLAUD_SIM_EXIT_CODE"]`` (default 0). A stopped one
exits with 143 (it honours SIGTERM at once). ``env["CLAUD_SIM_START_ERROR"]``
makes the start fail with that message, to exercise failure paths.
Ports and volumes are accepted and do nothing; a health check is answered by
``env["CLAUD_SIM_HEALTHY"]`` (``0``: every check fails; default: all pass).

All state lives in the instance: any number of them can share one event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import math
import secrets
import shlex
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from claud.api import Allocation
from claud.slave.runtime import ExecOutput, Observed, Phase, Runtime, RuntimeUnavailable, StartAborted, StartFailed

SIM_SECONDS = "CLAUD_SIM_SECONDS"
SIM_EXIT_CODE = "CLAUD_SIM_EXIT_CODE"
SIM_START_ERROR = "CLAUD_SIM_START_ERROR"
SIM_HEALTHY = "CLAUD_SIM_HEALTHY"
STOPPED_EXIT_CODE = 143  # 128 + SIGTERM


def simulated_duration(alloc: Allocation, default_seconds: float) -> float:
    """Seconds the allocation's container should run (math.inf: until stopped)."""
    raw = alloc.env.get(SIM_SECONDS)
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            raise StartFailed(f"{SIM_SECONDS}={raw!r} is not a number of seconds") from None
        return max(0.0, seconds)
    command = alloc.command
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        try:
            return max(0.0, float(command[1]))
        except ValueError:
            pass
    return default_seconds


@dataclass
class _SimContainer:
    observed: Observed
    timer: asyncio.TimerHandle | None = None


class SimulatedRuntime(Runtime):
    """In-memory containers for one slave; see the module docstring for the knobs."""

    name = "simulated"

    def __init__(self, slave_id: str, *, default_seconds: float = 1.0) -> None:
        self._slave_id = slave_id
        self._default_seconds = default_seconds
        self._containers: dict[str, _SimContainer] = {}  # by container id
        self._by_alloc: dict[str, str] = {}  # alloc id -> container id
        self._changed = asyncio.Event()
        self._counter = itertools.count(1)

    def _notify(self) -> None:
        self._changed.set()

    async def list(self) -> list[Observed]:
        return [c.observed for c in self._containers.values()]

    async def find(self, alloc_id: str) -> Observed | None:
        cid = self._by_alloc.get(alloc_id)
        return self._containers[cid].observed if cid else None

    async def start(self, alloc: Allocation, proceed: Callable[[], bool] | None = None) -> Observed:
        existing = self._by_alloc.get(alloc.alloc_id)
        if existing is not None:
            return self._containers[existing].observed
        if proceed is not None and not proceed():
            raise StartAborted(f"start of allocation {alloc.alloc_id} abandoned: the lease ended")
        if SIM_START_ERROR in alloc.env:
            raise StartFailed(alloc.env[SIM_START_ERROR] or "simulated start failure")
        seconds = simulated_duration(alloc, self._default_seconds)
        try:
            # A process's exit status is a byte, as Docker reports it.
            exit_code = int(alloc.env.get(SIM_EXIT_CODE, "0")) % 256
        except ValueError:
            raise StartFailed(f"{SIM_EXIT_CODE}={alloc.env[SIM_EXIT_CODE]!r} is not an integer") from None
        now = datetime.now(UTC)
        # Looks like a Docker id (64 hex) so that nothing downstream special-cases it.
        cid = f"{next(self._counter):08x}{secrets.token_hex(28)}"
        container = _SimContainer(
            Observed(
                container_id=cid,
                alloc_id=alloc.alloc_id,
                job_id=alloc.job_id,
                phase=Phase.RUNNING,
                created_at=now,
                started_at=now,
                index=alloc.index,
                version=alloc.version,
            )
        )
        if math.isfinite(seconds):
            container.timer = asyncio.get_running_loop().call_later(seconds, self._exit, cid, exit_code)
        self._containers[cid] = container
        self._by_alloc[alloc.alloc_id] = cid
        self._notify()
        return container.observed

    def _exit(self, cid: str, exit_code: int) -> None:
        container = self._containers.get(cid)
        if container is None or container.observed.phase is not Phase.RUNNING:
            return
        if container.timer is not None:
            container.timer.cancel()
            container.timer = None
        container.observed = replace(
            container.observed,
            phase=Phase.EXITED,
            exit_code=exit_code,
            finished_at=datetime.now(UTC),
        )
        self._notify()

    async def stop(self, container_id: str, grace: float) -> None:
        self._exit(container_id, STOPPED_EXIT_CODE)

    async def exec(self, container_id: str, command: builtins.list[str]) -> int:
        return 0

    async def exec_output(
        self, container_id: str, command: builtins.list[str], *, within: float, limit: int
    ) -> ExecOutput:
        """A fixed answer: nothing runs, the output says so."""
        if container_id not in self._containers:
            raise RuntimeUnavailable(f"no simulated container {container_id}")
        return ExecOutput(exit_code=0, stdout=f"simulated exec: {shlex.join(command)}\n".encode()[:limit])

    async def probe(self, alloc: Allocation) -> bool | None:
        return alloc.env.get(SIM_HEALTHY, "1") not in ("0", "false", "no")

    async def remove(self, container_id: str) -> None:
        container = self._containers.pop(container_id, None)
        if container is None:
            return
        if container.timer is not None:
            container.timer.cancel()
        if self._by_alloc.get(container.observed.alloc_id) == container_id:
            del self._by_alloc[container.observed.alloc_id]
        self._notify()

    async def logs(self, container_id: str, *, follow: bool, tail: int | None) -> AsyncGenerator[bytes, None]:
        container = self._containers.get(container_id)
        if container is None:
            return
        if tail != 0:
            o = container.observed
            line = (
                f"simulated container of allocation {o.alloc_id} (job {o.job_id}) on slave {self._slave_id}"
            )
            yield (line + "\n").encode()
        # Following a running container ends when it exits, as with Docker.
        # Polled: no event marks one simulated container's exit, and a follower
        # may wait a tenth of a second longer without harm.
        while follow and container.observed.phase is Phase.RUNNING:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    async def changes(self) -> AsyncIterator[None]:
        while True:
            await self._changed.wait()
            self._changed.clear()
            yield None
