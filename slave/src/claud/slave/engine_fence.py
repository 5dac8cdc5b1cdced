"""Self-fencing when the container engine stops answering: kills without the engine.

The lease (``fencing``) covers a slave cut off from its masters. It does not
cover a slave whose masters hear it well but whose Docker engine has stopped
answering (daemon hung, socket gone): its heartbeats keep renewing the lease
while saying the runtime is unhealthy, and once that has lasted node-dead-after
the leader declares the slave's jobs lost and runs them elsewhere
(``claud.master.node._check_runtime``). The containers carry on meanwhile
(containerd-shim keeps their processes alive) and an engine that does not
answer cannot stop them: the job would run twice until the engine returns.

So the engine is treated as a second lease, one that stopped renewing the
moment this agent first marked its engine unhealthy. The masters count from a
heartbeat carrying that mark, so from later: fencing at that lease's end, on
the lease fence's own schedule (SIGTERM at ``away + lease``, SIGKILL
``kill_window`` later), lands the kill by ``away + lease + grace``, which
``MasterSettings.fencing_bound`` keeps at or before ``away + node-dead-after``.
``away`` is only forgotten once a heartbeat saying "healthy" was answered: until
a master has heard that, it may still be counting from the first failure.

The signals go through pidfds, not the engine: one is opened for each running
container's main process (``State.Pid``) while the engine answers, and checked
then to sit in that container's cgroup. A pidfd pins one process, so it can
never signal another that later reuses the PID. One is held per running
container and closed when that container is gone, has exited or has a new
process, so they are bounded by what runs here. A process that cannot be
pinned (the agent does not share the engine's PID namespace, EPERM) leaves that
container without this protection: said once per container in the log.

This module decides and signals; the agent feeds it observations, engine
health and the lease terms, and owns the timer (``Agent._engine_fence_loop``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field

from claud.daemon.logfmt import log_event
from claud.slave.fencing import kill_window
from claud.slave.runtime import Observed, Phase

logger = logging.getLogger(__name__)


def fence_times(away_since: float, lease: float, grace: float, round_trip: float) -> tuple[float, float]:
    """(SIGTERM at, SIGKILL at) for an engine away since ``away_since``: the lease fence's schedule.

    ``lease`` is the lease this slave applies (``fencing.honour`` already ended
    it early when the grace is shorter than a kill round trip), ``grace`` the
    container's fence grace; the kill then lands ``round_trip`` after SIGKILL,
    by ``away_since`` + the masters' lease + grace at the latest.
    """
    term_at = away_since + max(0.0, lease)
    return term_at, term_at + kill_window(grace, round_trip)


def open_pinned(container_id: str, pid: int) -> int:
    """A pidfd on ``pid``, checked to be the main process of ``container_id``; raises OSError.

    The check comes after the open: the pidfd holds that very process, so a
    PID reused between the engine's inspect and the open is caught here, and
    so is a PID that means another process in this agent's own namespace.
    Signal 0 asks the kernel whether a real signal would be allowed (EPERM).
    """
    fd = os.pidfd_open(pid)
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as cgroup:
            if container_id not in cgroup.read():
                raise OSError(errno.ESRCH, f"pid {pid} is not in the cgroup of container {container_id[:12]}")
        signal.pidfd_send_signal(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass(slots=True)
class Pin:
    """One container's main process, held by a pidfd."""

    container_id: str
    alloc_id: str
    job_id: str
    pid: int
    fd: int
    closed: bool = False


@dataclass(slots=True)
class EngineFence:
    """Pidfds of the running containers, and since when the engine has been away.

    Used from the event loop only: a pin is closed and signalled on the same
    thread, so a closed pidfd's number (which the kernel hands out again) is
    never signalled.
    """

    slave_id: str
    #: Seconds (the lease clock) since which the masters may count the engine as away; None if not.
    away_since: float | None = None
    #: Does the engine fail now? (``away_since`` outlives it until a master heard "healthy".)
    down: bool = False
    _pins: dict[str, Pin] = field(default_factory=dict)
    #: Containers whose process could not be pinned (logged once), with that process's id.
    _unpinnable: dict[str, int | None] = field(default_factory=dict)
    #: Containers fenced in this outage: never signalled twice by one fence.
    _fired: set[str] = field(default_factory=set)

    # --- pidfds ---

    def observe(self, observed: Iterable[Observed]) -> None:
        """A full listing from the engine: pin what runs, release what does not."""
        running = {o.container_id: o for o in observed if o.phase is Phase.RUNNING}
        for container_id in [c for c in self._pins if c not in running]:
            self._release(container_id)
        for container_id in [c for c in self._unpinnable if c not in running]:
            del self._unpinnable[container_id]
        for o in running.values():
            self.pin(o)

    def pin(self, o: Observed) -> None:
        """Hold a pidfd on the process of one running container (one just started, say)."""
        held = self._pins.get(o.container_id)
        if held is not None and held.pid == o.pid:
            return
        if held is not None:  # a new process for the same container: the old pidfd pins nothing of use
            self._release(o.container_id)
        if o.pid is None:
            if o.container_id not in self._unpinnable:
                self._unpinnable[o.container_id] = None
                log_event(
                    logger, "engine_fence.no_pid", logging.DEBUG,
                    slave=self.slave_id, job=o.job_id, alloc=o.alloc_id, container=o.container_id[:12],
                )
            return
        if self._unpinnable.get(o.container_id, -1) == o.pid:
            return
        try:
            fd = open_pinned(o.container_id, o.pid)
        except OSError as exc:
            self._unpinnable[o.container_id] = o.pid
            log_event(
                logger,
                "engine_fence.unpinned",
                logging.WARNING,
                slave=self.slave_id,
                job=o.job_id,
                alloc=o.alloc_id,
                container=o.container_id[:12],
                pid=o.pid,
                error=exc.strerror or str(exc),
                consequence="this container cannot be stopped without its engine "
                "(does the agent share the host's PID namespace?)",
            )
            return
        self._unpinnable.pop(o.container_id, None)
        self._pins[o.container_id] = Pin(o.container_id, o.alloc_id, o.job_id, o.pid, fd)

    def _release(self, container_id: str) -> None:
        held = self._pins.pop(container_id, None)
        if held is not None and not held.closed:
            held.closed = True
            os.close(held.fd)

    @property
    def pinned(self) -> int:
        return len(self._pins)

    def close(self) -> None:
        for container_id in list(self._pins):
            self._release(container_id)
        self._unpinnable.clear()

    # --- the engine's health ---

    def engine_failed(self, now: float) -> None:
        """An engine call failed and the agent reports the engine unhealthy from now on."""
        self.down = True
        if self.away_since is None:
            self.away_since = now

    def engine_answered(self) -> None:
        """The engine answers again; a later outage fences again."""
        self.down = False
        self._fired.clear()

    def healthy_heard(self) -> None:
        """A master answered a heartbeat saying "healthy": it stopped counting, so do we."""
        if not self.down:
            self.away_since = None

    def term_at(self, lease: float) -> float | None:
        """When to begin the fence (SIGTERM), if the engine is away now; else None."""
        if not self.down or self.away_since is None:
            return None
        return fence_times(self.away_since, lease, 0.0, 0.0)[0]

    # --- the fence ---

    def take_targets(self) -> list[Pin]:
        """The pinned containers not yet fenced in this outage, marked fenced now."""
        todo = [p for cid, p in self._pins.items() if cid not in self._fired]
        self._fired.update(p.container_id for p in todo)
        return todo

    def send(self, target: Pin, sig: signal.Signals) -> bool:
        """Signal a pinned process; False if it is gone (or its pidfd was released)."""
        if target.closed:
            return False
        try:
            signal.pidfd_send_signal(target.fd, sig)
        except ProcessLookupError:
            return False
        except OSError as exc:
            log_event(
                logger,
                "engine_fence.signal_failed",
                logging.WARNING,
                slave=self.slave_id,
                job=target.job_id,
                alloc=target.alloc_id,
                container=target.container_id[:12],
                signal=sig.name,
                error=exc.strerror or str(exc),
            )
            return False
        return True

    def killed(self, target: Pin) -> None:
        """SIGKILL sent: the pidfd has done its work (a later listing pins anew what still runs)."""
        if self._pins.get(target.container_id) is target:
            self._release(target.container_id)
