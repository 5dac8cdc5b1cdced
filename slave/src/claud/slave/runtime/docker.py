"""The real runtime: one Docker container per allocation, through the Docker SDK.

The SDK is blocking, so every call runs in a worker thread and each thread has
its own ``DockerClient`` (a requests session is not safe to share between
threads). Listing runs on its own single thread so that sixteen slow stops can
never keep the agent from seeing what runs; streams that may last forever
(events, followed logs) get dedicated threads and clients without a read
timeout, so they never occupy a pool worker.

A container is named ``claud-<alloc id>``: Docker refuses a second container
with the same name, so two racing starts (or an agent restarted between create
and start) can never make a duplicate; the loser adopts the existing one.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions

from claud.api import LABEL_ALLOC, LABEL_JOB, LABEL_SLAVE, Allocation
from claud.daemon.logfmt import log_event
from claud.slave.runtime import (
    ExecOutput,
    ExecRefused,
    ExecTimeout,
    Observed,
    Phase,
    Runtime,
    RuntimeUnavailable,
    StartAborted,
    StartFailed,
)
from claud.slave.runtime.hardening import Hardening, host_config_kwargs
from claud.slave.runtime.paths import path_allowed
from claud.slave.settings import docker_stop_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Docker events that change what the agent would report or do.
_INTERESTING_ACTIONS = frozenset({"create", "start", "die", "destroy", "oom", "pause", "unpause"})
_SETTLING_ACTIONS = frozenset({"die", "oom", "destroy"})
#: What a start of this runtime's own does to its container.
_OWN_START_ACTIONS = frozenset({"create", "start"})
_SETTLE_DELAYS = (0.1, 0.4)
#: The longest a command health check may take (HealthCheck.timeout's bound), seconds.
_EXEC_WAIT_MAX = 600.0
#: Threads for `claud exec` commands (more queue; each is bounded by its request's timeout).
_EXEC_WORKERS = 4
#: Added to an exec's timeout for its connection's read deadline (the command's own deadline comes first).
_EXEC_READ_SLACK = 5.0
_PHASES = {
    "created": Phase.CREATED,
    "running": Phase.RUNNING,
    "paused": Phase.RUNNING,
    "restarting": Phase.RUNNING,
    "exited": Phase.EXITED,
    "dead": Phase.EXITED,
    "removing": Phase.EXITED,
}
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
# Docker's client errors are spread over several hierarchies (its own, requests',
# the socket's); these are the ones meaning "the engine did not answer".
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def engine_trouble(exc: BaseException) -> bool:
    """Is this the engine failing (unreachable, timing out, a 5xx of its own), not the job?

    Such errors are retried and never make a job fail: the job did nothing
    wrong. A 4xx is the job's (bad image, bad command, bad limits).
    """
    if isinstance(exc, docker.errors.APIError):
        return exc.status_code is None or exc.status_code >= 500
    return isinstance(exc, requests.exceptions.RequestException | OSError) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.ImageNotFound)
    )


def container_name(alloc_id: str) -> str:
    return f"claud-{alloc_id}"


#: Labels of the named volumes a slave makes, beside claud.job and claud.slave.
LABEL_VOLUME = "claud.volume"
#: The allocation's index in its job: on its containers and its named volumes.
LABEL_INDEX = "claud.index"
#: The job version a container runs.
LABEL_VERSION = "claud.version"
_LABEL_NUMBER = re.compile(r"[0-9]{1,19}")  # up to MAX_VERSION (2**63 - 1), as Allocation allows
#: What follows the job id in the id of an allocation of index 1 and up: ``.<index>-<attempt>``.
_INDEXED_ALLOC = re.compile(r"\.([0-9]{1,19})-[0-9]+")


def _label_number(labels: Mapping[str, str], key: str) -> int | None:
    raw = labels.get(key)
    return int(raw) if raw is not None and _LABEL_NUMBER.fullmatch(raw) else None


def index_of(labels: Mapping[str, str]) -> int:
    """A container's allocation index: its ``claud.index`` label.

    A container without one was made by an agent from before replicas: index 0,
    unless its allocation id (``<job>.<index>-<attempt>``) says otherwise, as for
    a replica that agent ran for masters that already had them. Taking that one
    for index 0 would let a second attempt of its index start beside it.
    """
    labelled = _label_number(labels, LABEL_INDEX)
    if labelled is not None:
        return labelled
    job_id, alloc_id = labels.get(LABEL_JOB, ""), labels.get(LABEL_ALLOC, "")
    match = _INDEXED_ALLOC.fullmatch(alloc_id, len(job_id)) if job_id and alloc_id.startswith(job_id) else None
    return int(match.group(1)) if match else 0


def version_of(labels: Mapping[str, str]) -> int:
    """The job version a container runs (``claud.version``); 0 when not labelled (made before versions)."""
    return _label_number(labels, LABEL_VERSION) or 0


def volume_name(job_id: str, index: int, name: str) -> str:
    """``claud-<job>-<index>-<name>``: one per job, allocation index and volume name."""
    return f"claud-{job_id}-{index}-{name}"


def parse_docker_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 with nanoseconds; its zero time ("0001-01-01...") means never."""
    if not value or value.startswith("0001-01-01"):
        return None
    match = _TIMESTAMP.match(value)
    if not match:
        return None
    whole, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")


def _explain(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        text = exc.explanation
        return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return str(exc) or type(exc).__name__


def _close_quietly(stream: Any) -> None:
    """Close an SDK stream from any thread; it unblocks a reader stuck in it."""
    if stream is None:
        return
    # Closing a stream the engine already broke raises; there is nothing left to do.
    with contextlib.suppress(Exception):
        stream.close()


def observed_from_inspect(info: dict[str, Any]) -> Observed | None:
    """Reduce ``docker inspect`` output to what the agent reports; None if not ours."""
    labels = (info.get("Config") or {}).get("Labels") or {}
    alloc_id = labels.get(LABEL_ALLOC)
    if not alloc_id:
        return None
    state = info.get("State") or {}
    phase = _PHASES.get(state.get("Status", ""), Phase.EXITED)
    error = state.get("Error") or None
    if state.get("OOMKilled"):
        error = "killed: out of memory (OOM)"
    exited = phase is Phase.EXITED or (phase is Phase.CREATED and error)
    pid = state.get("Pid")
    return Observed(
        container_id=info["Id"],
        alloc_id=alloc_id,
        job_id=labels.get(LABEL_JOB, ""),
        phase=phase,
        exit_code=state.get("ExitCode") if exited else None,
        error=error,
        created_at=parse_docker_time(info.get("Created")),
        started_at=parse_docker_time(state.get("StartedAt")),
        finished_at=parse_docker_time(state.get("FinishedAt")),
        pid=pid if phase is Phase.RUNNING and isinstance(pid, int) and pid > 0 else None,
        index=index_of(labels),
        version=version_of(labels),
    )


def kill_directly(container_id: str, pid: int | None, sig: int) -> bool:
    """Signal a container's main process from this host, without the engine; False if not possible.

    Docker's kill waits for the engine's exit bookkeeping, which it does one
    container at a time: forty kills take seconds to land. A signal through a
    pidfd lands at once. The pidfd pins one process, so checking *after*
    opening it that the process sits in the container's cgroup leaves no race
    with PID reuse; a slave that does not share the host's PID namespace finds
    no such process and falls back to the engine.
    """
    if pid is None or not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/cgroup", encoding="ascii", errors="replace") as cgroup:
            if container_id not in cgroup.read():
                return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class DockerRuntime(Runtime):
    """Containers on the local Docker engine, labelled with this slave's id."""

    name = "docker"

    def __init__(
        self,
        slave_id: str,
        *,
        workers: int = 16,
        api_timeout: float = 30.0,
        pull_timeout: float = 120.0,
        extra_labels: dict[str, str] | None = None,
        hardening: Hardening | None = None,
        docker_host: str | None = None,
        fence_workers: int = 64,
        host_volumes: tuple[str, ...] = (),
    ) -> None:
        self._slave_id = slave_id
        self._host_volumes = host_volumes
        self._hardening = hardening or Hardening()
        self._environment = {**os.environ, "DOCKER_HOST": docker_host} if docker_host else None
        self._api_timeout = api_timeout
        self._pull_timeout = pull_timeout
        self._extra_labels = dict(extra_labels or {})
        self._local = threading.local()
        self._clients: list[docker.DockerClient] = []
        self._clients_lock = threading.Lock()
        self._actions = ThreadPoolExecutor(workers, thread_name_prefix=f"docker-{slave_id}")
        self._observer = ThreadPoolExecutor(1, thread_name_prefix=f"docker-list-{slave_id}")
        # Fencing has threads of its own: it must never queue behind ordinary
        # stops (each holding a thread for its grace) nor behind a slow list.
        self._fence_pool = ThreadPoolExecutor(fence_workers, thread_name_prefix=f"docker-fence-{slave_id}")
        # `claud exec` has threads of its own too: a slow user command never holds up a start or a stop.
        self._exec_pool = ThreadPoolExecutor(_EXEC_WORKERS, thread_name_prefix=f"docker-exec-{slave_id}")
        # Pinning the API version saves every new per-thread client a /version call;
        # learnt (with the root directory) when the engine first answers, which may
        # be long after the agent started (_pin_sync).
        self._api_version = "auto"
        self._root_dir = "/"
        self._pinned = False
        # Inspect results of containers whose Docker state has not changed since:
        # a reconcile pass then costs one list call, not one inspect per container.
        self._inspected: dict[str, tuple[str, Observed]] = {}
        self._inspected_lock = threading.Lock()
        #: Allocations whose start is in flight in a worker thread (guarded by the same lock).
        self._starting: set[str] = set()
        self._closed = False

    # --- clients and threads ---

    def _new_client(self, timeout: float | None) -> docker.DockerClient:
        # A timeout of None is what long-lived streams need: no read deadline.
        # The SDK hands `timeout` to requests, which takes float seconds (None: no
        # deadline); the stub follows the SDK's docstring, which says int.
        return docker.DockerClient.from_env(
            version=self._api_version, timeout=timeout, environment=self._environment  # type: ignore[arg-type]
        )

    def _api(self) -> docker.APIClient:
        client: docker.DockerClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client(self._api_timeout)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client.api

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise RuntimeUnavailable("docker runtime is closed")
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def ping(self) -> None:
        """Check the engine answers, learning its API version and root directory (blocking).

        Called once before the agent starts; should the engine not answer then,
        the first list that reaches it does the same (a slave starts without
        its engine and picks up when it comes)."""
        try:
            client = docker.DockerClient.from_env(
                # float seconds: see _new_client
                timeout=min(self._api_timeout, 10.0), environment=self._environment  # type: ignore[arg-type]
            )
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"cannot reach the Docker engine: {_explain(exc)}") from None
        try:
            client.ping()
            self._api_version = client.api.api_version
            root = client.info().get("DockerRootDir")
            if root and os.path.isdir(root):
                self._root_dir = root
            self._pinned = True
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"cannot reach the Docker engine: {_explain(exc)}") from None
        finally:
            client.close()

    def disk_path(self) -> str:
        return self._root_dir

    async def aclose(self) -> None:
        self._closed = True
        self._actions.shutdown(wait=False, cancel_futures=True)
        self._observer.shutdown(wait=False, cancel_futures=True)
        self._fence_pool.shutdown(wait=False, cancel_futures=True)
        self._exec_pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # --- observation ---

    def _label_filter(self, *extra: str) -> dict[str, Any]:
        return {"label": [f"{LABEL_SLAVE}={self._slave_id}", *extra]}

    def _list_sync(self, *extra_labels: str) -> list[Observed]:
        if not self._pinned:
            self.ping()
        api = self._api()
        rows = api.containers(all=True, filters=self._label_filter(*extra_labels))
        found: list[Observed] = []
        seen: set[str] = set()
        for row in rows:
            cid: str = row["Id"]
            state: str = row.get("State", "")
            seen.add(cid)
            with self._inspected_lock:
                cached = self._inspected.get(cid)
            if cached is not None and cached[0] == state:
                found.append(cached[1])
                continue
            row_observed = self._in_flight_row(row)
            if row_observed is not None:
                found.append(row_observed)
                continue
            try:
                info = api.inspect_container(cid)
            except docker.errors.NotFound:
                continue  # removed between the list and the inspect
            observed = observed_from_inspect(info)
            if observed is None:
                continue
            # A created container gains an error when its start fails without
            # changing state, so only settled states are worth remembering.
            if observed.phase is not Phase.CREATED:
                with self._inspected_lock:
                    self._inspected[cid] = (state, observed)
            found.append(observed)
        if not extra_labels:
            with self._inspected_lock:
                for cid in set(self._inspected) - seen:
                    del self._inspected[cid]
        return found

    def _in_flight_row(self, row: dict[str, Any]) -> Observed | None:
        """A created container whose start this runtime has in flight, from the list row alone.

        In a burst, every pass would otherwise inspect each of the (up to a pool's
        worth of) containers between create and start, competing with the starts
        for the engine; the error a failed start leaves shows once the start has
        returned, when the next pass inspects the container as usual."""
        labels = row.get("Labels") or {}
        alloc_id = labels.get(LABEL_ALLOC)
        if row.get("State") != "created" or not alloc_id:
            return None
        with self._inspected_lock:
            if alloc_id not in self._starting:
                return None
        created = row.get("Created")
        return Observed(
            container_id=row["Id"],
            alloc_id=alloc_id,
            job_id=labels.get(LABEL_JOB, ""),
            phase=Phase.CREATED,
            created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
            index=index_of(labels),
            version=version_of(labels),
        )

    async def list(self) -> list[Observed]:
        try:
            return await self._run(self._observer, self._list_sync)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc

    async def find(self, alloc_id: str) -> Observed | None:
        try:
            found = await self._run(self._observer, self._list_sync, f"{LABEL_ALLOC}={alloc_id}")
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc
        # Prefer the one that runs, should a hand-made duplicate exist.
        found.sort(key=lambda o: o.phase is not Phase.RUNNING)
        return found[0] if found else None

    # --- actions ---

    def _pull_sync(self, image: str) -> None:
        repository, tag = docker.utils.parse_repository_tag(image)
        client = self._new_client(self._pull_timeout)
        try:
            # Without a tag the SDK would pull every tag of the repository.
            if tag is None:
                tag = "latest"
            if tag.startswith("sha256:"):
                client.images.pull(f"{repository}@{tag}")
            else:
                client.images.pull(repository, tag=tag)
        except (requests.exceptions.ConnectionError, ConnectionError) as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc
        except _ENGINE_ERRORS as exc:
            # A registry that refuses or lacks the image answers through the
            # engine too (even as a 500): that is the image's problem.
            raise StartFailed(
                f"image {image!r} not found on slave {self._slave_id} and could not be pulled: "
                f"{_explain(exc)}"
            ) from None
        finally:
            client.close()

    def _create_sync(self, alloc: Allocation) -> str:
        api = self._api()
        labels = {
            **self._extra_labels,
            LABEL_SLAVE: self._slave_id,
            LABEL_JOB: alloc.job_id,
            LABEL_ALLOC: alloc.alloc_id,
            LABEL_INDEX: str(alloc.index),
            LABEL_VERSION: str(alloc.version),
        }
        extra: dict[str, Any] = {}
        if alloc.ports:
            # tcp on every interface of the slave: the job view's address is the slave's host.
            extra["port_bindings"] = {f"{p.container}/tcp": p.host for p in alloc.ports}
        if alloc.volumes:
            extra["binds"] = self._binds_sync(alloc)
        host_config = api.create_host_config(**host_config_kwargs(alloc, self._hardening), **extra)
        created = api.create_container(
            ports=[(p.container, "tcp") for p in alloc.ports] or None,
            volumes=[v.path for v in alloc.volumes] or None,
            image=alloc.image,
            command=list(alloc.command) or None,
            environment=dict(alloc.env),
            user=alloc.user or None,
            labels=labels,
            name=container_name(alloc.alloc_id),
            host_config=host_config,
            detach=True,
        )
        return str(created["Id"])

    def _binds_sync(self, alloc: Allocation) -> dict[str, dict[str, str]]:
        """The allocation's mounts: named volumes made here (they outlive the allocation's
        attempts on this slave), host paths only under a prefix this slave allows."""
        api = self._api()
        binds: dict[str, dict[str, str]] = {}
        for volume in alloc.volumes:
            mode = "ro" if volume.read_only else "rw"
            if volume.host_path is not None:
                if not path_allowed(volume.host_path, self._host_volumes):
                    raise StartFailed(
                        f"host path {volume.host_path!r} is not under a prefix slave {self._slave_id} allows "
                        f"(--allow-host-volumes {','.join(self._host_volumes) or 'is empty'})"
                    )
                binds[volume.host_path] = {"bind": volume.path, "mode": mode}
                continue
            assert volume.name is not None
            name = volume_name(alloc.job_id, alloc.index, volume.name)
            # Creating a volume that exists returns it: the data of an earlier attempt stays.
            api.create_volume(name=name, labels={
                **self._extra_labels, LABEL_SLAVE: self._slave_id, LABEL_JOB: alloc.job_id,
                LABEL_VOLUME: volume.name, LABEL_INDEX: str(alloc.index),
            })
            binds[name] = {"bind": volume.path, "mode": mode}
        return binds

    @staticmethod
    def _exit_code(api: docker.APIClient, exec_id: str, deadline: float) -> int | None:
        """The exec's exit code once it has ended, -1 if the engine gives none; None: still running at ``deadline``."""
        while True:
            info = api.exec_inspect(exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if isinstance(code, int) else -1
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def _exec_sync(self, container_id: str, command: builtins.list[str]) -> int:
        api = self._api()
        created = api.exec_create(container_id, command, stdout=False, stderr=False)
        api.exec_start(created["Id"])
        # Without output to stream, the start returns before the command ends: wait for its exit
        # (the caller gives up after the check's timeout; this thread after the longest one).
        code = self._exit_code(api, created["Id"], time.monotonic() + _EXEC_WAIT_MAX)
        return -1 if code is None else code

    async def exec(self, container_id: str, command: builtins.list[str]) -> int:
        try:
            # The caller bounds the wait (the check's timeout); a command that hangs holds a worker until it ends.
            return await self._run(self._actions, self._exec_sync, container_id, command)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker exec: {_explain(exc)}") from exc

    def _remove_job_volumes_sync(self, job_id: str) -> tuple[builtins.list[str], builtins.list[str]]:
        api = self._api()
        found = api.volumes(filters={"label": [f"{LABEL_SLAVE}={self._slave_id}", f"{LABEL_JOB}={job_id}"]})
        removed: builtins.list[str] = []
        kept: builtins.list[str] = []
        for volume in (found or {}).get("Volumes") or []:
            name = str(volume["Name"])
            try:
                api.remove_volume(name)  # never forced: the engine refuses one a container still uses
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                kept.append(name)
                continue
            removed.append(name)
        return removed, kept

    async def remove_job_volumes(self, job_id: str) -> tuple[builtins.list[str], builtins.list[str]]:
        try:
            return await self._run(self._actions, self._remove_job_volumes_sync, job_id)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker volume rm: {_explain(exc)}") from exc

    def _exec_output_sync(
        self, container_id: str, command: builtins.list[str], timeout: float, limit: int
    ) -> ExecOutput:
        deadline = time.monotonic() + timeout
        # A client of its own: the shared ones' read deadline (api_timeout) would cut a quiet command short.
        client = self._new_client(timeout + _EXEC_READ_SLACK)
        try:
            api = client.api
            created = api.exec_create(container_id, command, stdout=True, stderr=True)
            streams = (bytearray(), bytearray())
            truncated = False
            try:
                for chunks in api.exec_start(created["Id"], stream=True, demux=True):
                    for kept, chunk in zip(streams, chunks, strict=True):
                        if chunk:
                            room = max(limit - len(kept), 0)
                            truncated = truncated or len(chunk) > room
                            kept += chunk[:room]
                    if time.monotonic() > deadline:
                        raise ExecTimeout(f"still running after {timeout:g}s")
            except requests.exceptions.ReadTimeout:
                raise ExecTimeout(f"still running after {timeout:g}s") from None
            code = self._exit_code(api, created["Id"], max(deadline, time.monotonic() + 1.0))
            if code is None:
                raise ExecTimeout(f"still running after {timeout:g}s")
            return ExecOutput(exit_code=code, stdout=bytes(streams[0]), stderr=bytes(streams[1]), truncated=truncated)
        finally:
            client.close()

    async def exec_output(
        self, container_id: str, command: builtins.list[str], *, within: float, limit: int
    ) -> ExecOutput:
        try:
            return await self._run(self._exec_pool, self._exec_output_sync, container_id, command, within, limit)
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 409):  # not running, or gone: the engine's answer, not its absence
                raise ExecRefused(_explain(exc)) from exc
            raise RuntimeUnavailable(f"docker exec: {_explain(exc)}") from exc
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker exec: {_explain(exc)}") from exc

    def _create_or_find(self, alloc: Allocation) -> tuple[str, bool]:
        """The id of the allocation's container, creating it (pulling if need be) if absent,
        and whether this call created it (then it is ours and never started: no inspect needed)."""
        api = self._api()
        name = container_name(alloc.alloc_id)
        deadline = time.monotonic() + self._api_timeout
        while True:
            try:
                try:
                    return self._create_sync(alloc), True
                except docker.errors.ImageNotFound:
                    log_event(logger, "image.pull", image=alloc.image, alloc=alloc.alloc_id)
                    self._pull_sync(alloc.image)
                    return self._create_sync(alloc), True
            except docker.errors.APIError as exc:
                if engine_trouble(exc):
                    raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc
                if exc.status_code != 409:
                    raise StartFailed(
                        f"cannot create the container of allocation {alloc.alloc_id}: {_explain(exc)}"
                    ) from None
            # 409: the name is taken, so the container exists (adopt it) or another
            # create of it is still in progress (its id appears in a moment).
            try:
                return str(api.inspect_container(name)["Id"]), False
            except docker.errors.NotFound:
                if time.monotonic() > deadline:
                    raise StartFailed(
                        f"the name {name!r} stays reserved but no such container appears"
                    ) from None
                time.sleep(0.05)

    def _start_sync(self, alloc: Allocation, proceed: Callable[[], bool] | None) -> Observed:
        with self._inspected_lock:
            self._starting.add(alloc.alloc_id)
        try:
            return self._start_or_adopt(alloc, proceed)
        finally:
            with self._inspected_lock:
                self._starting.discard(alloc.alloc_id)

    def _start_or_adopt(self, alloc: Allocation, proceed: Callable[[], bool] | None) -> Observed:
        api = self._api()
        name = container_name(alloc.alloc_id)
        if proceed is not None and not proceed():
            raise StartAborted(f"start of allocation {alloc.alloc_id} abandoned before create: the lease ended")
        container_id, created = self._create_or_find(alloc)
        status: str | None = "created"
        if not created:
            # Someone else's create, or an earlier agent's: whose, and how far it got, is for the engine to say.
            info = api.inspect_container(container_id)
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_ALLOC) != alloc.alloc_id or labels.get(LABEL_SLAVE) != self._slave_id:
                raise StartFailed(
                    f"a container named {name!r} exists but does not belong to allocation "
                    f"{alloc.alloc_id} on slave {self._slave_id}"
                )
            status = (info.get("State") or {}).get("Status")
        if status == "created":
            # The create may have taken seconds: the lease is asked again at the last moment.
            if proceed is not None and not proceed():
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_container(container_id, force=True)
                raise StartAborted(f"start of allocation {alloc.alloc_id} abandoned after create: the lease ended")
            try:
                api.start(container_id)
            except docker.errors.APIError as exc:
                if engine_trouble(exc):
                    raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc
                raise StartFailed(
                    f"container of allocation {alloc.alloc_id} could not start: {_explain(exc)}"
                ) from None
            info = api.inspect_container(container_id)
        observed = observed_from_inspect(info)
        assert observed is not None  # ours: created with the labels, or checked above
        if observed.phase is Phase.RUNNING:
            # Known (with its PID) to a fence that comes before the next list.
            with self._inspected_lock:
                self._inspected[observed.container_id] = ((info.get("State") or {}).get("Status", ""), observed)
        return observed

    async def start(self, alloc: Allocation, proceed: Callable[[], bool] | None = None) -> Observed:
        try:
            return await self._run(self._actions, self._start_sync, alloc, proceed)
        except (StartFailed, StartAborted, RuntimeUnavailable):
            raise
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc

    def _stop_sync(self, container_id: str, grace: float) -> None:
        with contextlib.suppress(docker.errors.NotFound):  # gone already: stopped enough
            self._api().stop(container_id, timeout=docker_stop_seconds(grace))

    async def stop(self, container_id: str, grace: float) -> None:
        try:
            await self._run(self._actions, self._stop_sync, container_id, grace)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc

    # --- fencing: its own threads, every container at once, a kill at each deadline ---

    def _signal_sync(self, container_id: str, sig: str) -> None:
        try:
            self._api().kill(container_id, signal=sig)
        except docker.errors.NotFound:
            pass  # gone: fenced enough
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            # 409: not running (any more), which is the goal; or paused, which
            # Docker will not signal: a frozen job still holds its work, so it
            # is thawed and killed at once.
            if sig == "SIGKILL" and "paused" in _explain(exc).lower():
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    self._api().unpause(container_id)
                    self._api().kill(container_id, signal="SIGKILL")

    def _running_sync(self) -> builtins.list[Observed]:  # `list` here is the method above
        rows = self._api().containers(filters={**self._label_filter(), "status": ["running", "paused", "restarting"]})
        found = []
        for row in rows:
            labels = row.get("Labels") or {}
            if labels.get(LABEL_ALLOC):
                found.append(
                    Observed(
                        container_id=row["Id"],
                        alloc_id=labels[LABEL_ALLOC],
                        job_id=labels.get(LABEL_JOB, ""),
                        phase=Phase.RUNNING,
                        index=index_of(labels),
                        version=version_of(labels),
                    )
                )
        return found

    async def running(self) -> builtins.list[Observed]:
        try:
            return await self._run(self._fence_pool, self._running_sync)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc

    def _pid_of(self, container_id: str) -> int | None:
        with self._inspected_lock:
            cached = self._inspected.get(container_id)
        return cached[1].pid if cached is not None else None

    async def fence(self, targets: Mapping[str, float]) -> None:
        began = time.monotonic()
        direct: list[str] = []

        async def term(container_id: str) -> None:
            # A courtesy: its failure or slowness must not delay the kill.
            if not kill_directly(container_id, self._pid_of(container_id), signal.SIGTERM):
                with contextlib.suppress(*_ENGINE_ERRORS):
                    await self._run(self._fence_pool, self._signal_sync, container_id, "SIGTERM")

        async def one(container_id: str, grace: float) -> None:
            courtesy = None
            if grace > 0:
                courtesy = asyncio.create_task(term(container_id))
                await asyncio.sleep(max(0.0, began + grace - time.monotonic()))
            if kill_directly(container_id, self._pid_of(container_id), signal.SIGKILL):
                direct.append(container_id)
            # Through the engine as well: the only way when the PID is not ours
            # to see, and what makes the engine record the exit.
            try:
                await self._run(self._fence_pool, self._signal_sync, container_id, "SIGKILL")
            finally:
                if courtesy is not None:
                    courtesy.cancel()

        results = await asyncio.gather(*(one(cid, grace) for cid, grace in targets.items()), return_exceptions=True)
        log_event(
            logger,
            "fence.killed",
            logging.WARNING,
            containers=len(targets),
            direct=len(direct),
            seconds=round(time.monotonic() - began, 3),
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RuntimeUnavailable(f"docker: {len(errors)} fence kills failed, first: {_explain(errors[0])}")

    def _remove_sync(self, container_id: str) -> None:
        try:
            self._api().remove_container(container_id, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise

    async def remove(self, container_id: str) -> None:
        try:
            await self._run(self._actions, self._remove_sync, container_id)
        except _ENGINE_ERRORS as exc:
            raise RuntimeUnavailable(f"docker: {_explain(exc)}") from exc

    # --- streams ---

    async def logs(self, container_id: str, *, follow: bool, tail: int | None) -> AsyncGenerator[bytes, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        # Bounds how far the reader thread runs ahead of a slow HTTP client.
        slots = threading.BoundedSemaphore(64)
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def post(item: bytes | BaseException | None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
                return True
            except RuntimeError:  # the event loop is gone
                return False

        def pump() -> None:
            client = None
            try:
                client = self._new_client(None)
                stream = client.api.logs(
                    container_id,
                    stdout=True,
                    stderr=True,
                    stream=True,
                    follow=follow,
                    tail="all" if tail is None else tail,
                )
                holder["stream"] = stream
                if stop.is_set():
                    return
                for chunk in stream:
                    while not slots.acquire(timeout=0.5):
                        if stop.is_set():
                            return
                    if stop.is_set() or not post(chunk):
                        return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides
                if not stop.is_set():
                    post(exc)
            finally:
                post(None)
                _close_quietly(holder.pop("stream", None))
                if client is not None:
                    client.close()

        thread = threading.Thread(target=pump, name=f"docker-logs-{container_id[:12]}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, docker.errors.NotFound):
                        return
                    raise RuntimeUnavailable(f"docker logs: {_explain(item)}") from item
                slots.release()
                yield item
        finally:
            stop.set()
            _close_quietly(holder.get("stream"))  # the thread's read returns, the thread ends

    def _own_start(self, event: Mapping[str, Any]) -> bool:
        """Is this the create or start of a container whose start this runtime has in flight?

        That start's own end wakes a reconcile pass; a pass for each of its steps
        would only compete with it for the engine (a list, an inspect and a
        heartbeat, twice per start). Best effort: an event read after the start
        returned wakes a pass as before."""
        if event.get("Action") not in _OWN_START_ACTIONS:
            return False
        alloc_id = ((event.get("Actor") or {}).get("Attributes") or {}).get(LABEL_ALLOC)
        with self._inspected_lock:
            return alloc_id is not None and alloc_id in self._starting

    async def changes(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        stop = threading.Event()
        holder: dict[str, Any] = {}

        def settle() -> None:
            wake.set()
            # Docker announces "die" ~50 ms before a list shows the container as
            # exited: look again shortly, or the exit would wait for the next tick.
            for delay in _SETTLE_DELAYS:
                loop.call_later(delay, wake.set)

        def notify(action: str | None = None) -> bool:
            try:
                loop.call_soon_threadsafe(settle if action in _SETTLING_ACTIONS else wake.set)
                return True
            except RuntimeError:
                return False

        def pump() -> None:
            backoff = 0.5
            while not stop.is_set():
                client = None
                try:
                    client = self._new_client(None)
                    stream = client.api.events(
                        filters={"type": "container", **self._label_filter()}, decode=True
                    )
                    holder["stream"] = stream
                    # Reconnected: whatever happened while we were away is unknown.
                    if stop.is_set() or not notify():
                        return
                    for event in stream:
                        if stop.is_set():
                            return
                        backoff = 0.5
                        action = event.get("Action")
                        if action in _INTERESTING_ACTIONS and not self._own_start(event) and not notify(action):
                            return
                except _ENGINE_ERRORS as exc:
                    if not stop.is_set():
                        log_event(logger, "docker.events_error", logging.DEBUG, error=_explain(exc))
                finally:
                    _close_quietly(holder.pop("stream", None))
                    if client is not None:
                        client.close()
                if stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)

        thread = threading.Thread(target=pump, name=f"docker-events-{self._slave_id}", daemon=True)
        thread.start()
        try:
            while True:
                await wake.wait()
                wake.clear()
                yield None
        finally:
            stop.set()
            _close_quietly(holder.get("stream"))
