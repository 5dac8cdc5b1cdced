"""What this slave offers (capacity) and how loaded it is (usage).

Inside a container psutil sees the *host*: a slave limited to 2 CPUs on a
64-core machine would advertise 64 and the scheduler would over-commit it.
So the capacity is, in order: the operator's flags; else the cgroup limits
when they are lower than the host's; else psutil. Nested cgroups are walked up
to the root because the effective limit is the smallest on the way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from claud.api import HostUsage

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as a huge page-aligned number, not a word.
_V1_UNLIMITED = 1 << 60


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    cpus: float | None = None
    memory_bytes: int | None = None
    #: File holding the cgroup's current memory use, to report what is really free.
    memory_usage_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Capacity:
    cpus: float
    memory_mb: int
    #: Where each figure came from ("flag", "cgroup", "host"), for the startup log line.
    cpus_source: str
    memory_source: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _own_cgroup_paths(proc_self_cgroup: Path) -> dict[str, str]:
    """Controller name -> this process's cgroup path; the v2 hierarchy is under ''."""
    text = _read(proc_self_cgroup) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
        if controllers:
            paths[controllers] = path  # the joined name ("cpu,cpuacct") is also a mount dir
    return paths


def _walk_up(mount: Path, own_path: str | None) -> list[Path]:
    """The cgroup directories from ours up to the mount point that exist here.

    With a cgroup namespace (the usual inside a container) the mount already
    *is* our cgroup and the path from /proc is "/" or does not exist under it:
    then only the mount point itself is read.
    """
    dirs: list[Path] = []
    if own_path:
        current = mount / own_path.strip("/")
        while current != mount and mount in current.parents:
            if current.is_dir():
                dirs.append(current)
            current = current.parent
    dirs.append(mount)
    return dirs


def _parse_int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _v2_limits(root: Path, own: dict[str, str]) -> CgroupLimits:
    cpus: float | None = None
    memory: int | None = None
    usage_file: Path | None = None
    for directory in _walk_up(root, own.get("")):
        cpu_max = _read(directory / "cpu.max")
        if cpu_max:
            quota, _, period = cpu_max.partition(" ")
            q, p = _parse_int(quota), _parse_int(period or "100000")
            if q is not None and p:
                cpus = q / p if cpus is None else min(cpus, q / p)
        mem = _parse_int(_read(directory / "memory.max"))
        if mem is not None and (memory is None or mem < memory):
            memory = mem
            usage_file = directory / "memory.current"
    return CgroupLimits(cpus, memory, usage_file)


def _v1_limits(root: Path, own: dict[str, str]) -> CgroupLimits:
    cpus: float | None = None
    memory: int | None = None
    usage_file: Path | None = None
    cpu_mount = next(
        (root / name for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (root / name).is_dir()),
        None,
    )
    if cpu_mount is not None:
        for directory in _walk_up(cpu_mount, own.get("cpu")):
            quota = _parse_int(_read(directory / "cpu.cfs_quota_us"))
            period = _parse_int(_read(directory / "cpu.cfs_period_us"))
            if quota is not None and quota > 0 and period:
                cpus = quota / period if cpus is None else min(cpus, quota / period)
    memory_mount = root / "memory"
    if memory_mount.is_dir():
        for directory in _walk_up(memory_mount, own.get("memory")):
            mem = _parse_int(_read(directory / "memory.limit_in_bytes"))
            if mem is not None and mem < _V1_UNLIMITED and (memory is None or mem < memory):
                memory = mem
                usage_file = directory / "memory.usage_in_bytes"
    return CgroupLimits(cpus, memory, usage_file)


def read_cgroup_limits(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> CgroupLimits:
    """This process's CPU and memory limits; None where there is no limit (or no cgroup fs)."""
    own = _own_cgroup_paths(proc_self_cgroup)
    if (root / "cgroup.controllers").is_file():
        return _v2_limits(root, own)
    return _v1_limits(root, own)


def host_cpus() -> float:
    # The affinity mask is what the kernel will actually schedule us on (cpuset).
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return float(psutil.cpu_count(logical=True) or 1)


def detect_capacity(
    cpus: float | None,
    memory_mb: int | None,
    *,
    limits: CgroupLimits,
    host_cpu_count: float,
    host_memory_bytes: int,
) -> Capacity:
    """Flags win; else a cgroup limit lower than the host; else the host."""
    if cpus is not None:
        cpu_total, cpu_source = float(cpus), "flag"
    elif limits.cpus is not None and limits.cpus < host_cpu_count:
        cpu_total, cpu_source = round(limits.cpus, 3), "cgroup"
    else:
        cpu_total, cpu_source = host_cpu_count, "host"
    if memory_mb is not None:
        mem_total, mem_source = memory_mb, "flag"
    elif limits.memory_bytes is not None and limits.memory_bytes < host_memory_bytes:
        mem_total, mem_source = limits.memory_bytes // MIB, "cgroup"
    else:
        mem_total, mem_source = host_memory_bytes // MIB, "host"
    return Capacity(cpu_total, mem_total, cpu_source, mem_source)


def probe_capacity(cpus: float | None, memory_mb: int | None, limits: CgroupLimits | None = None) -> Capacity:
    return detect_capacity(
        cpus,
        memory_mb,
        limits=read_cgroup_limits() if limits is None else limits,
        host_cpu_count=host_cpus(),
        host_memory_bytes=psutil.virtual_memory().total,
    )


class UsageProbe:
    """Samples host load for heartbeats, at most once per ``min_interval``.

    Sharing one probe between many simulated agents in one process keeps the
    cost flat (and psutil's cpu_percent baseline is process-wide anyway).
    """

    def __init__(
        self,
        disk_path: str | Callable[[], str] = "/",
        limits: CgroupLimits | None = None,
        min_interval: float = 1.0,
    ) -> None:
        # A callable is asked at every sample: the engine names its root directory
        # only once it answers, which may be long after the agent started.
        self._disk_path = disk_path if callable(disk_path) else (lambda: disk_path)
        self._limits = limits if limits is not None else read_cgroup_limits()
        self._min_interval = min_interval
        self._last: HostUsage | None = None
        self._last_at = 0.0
        psutil.cpu_percent(interval=None)  # the first call only sets the baseline

    def _available_bytes(self) -> int:
        available: int = psutil.virtual_memory().available
        limit, usage_file = self._limits.memory_bytes, self._limits.memory_usage_file
        if limit is not None and usage_file is not None:
            used = _parse_int(_read(usage_file))
            if used is not None:
                available = min(available, max(0, limit - used))
        return available

    def sample(self) -> HostUsage:
        now = time.monotonic()
        if self._last is not None and now - self._last_at < self._min_interval:
            return self._last
        try:
            disk = psutil.disk_usage(self._disk_path())
        except OSError:
            disk = psutil.disk_usage("/")
        self._last = HostUsage(
            cpu_percent=psutil.cpu_percent(interval=None),
            memory_mb_available=self._available_bytes() // MIB,
            disk_mb_total=disk.total // MIB,
            disk_mb_free=disk.free // MIB,
        )
        self._last_at = now
        return self._last
