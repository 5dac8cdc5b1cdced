"""Slave capacity: flags, then cgroup limits (v1 and v2, read from fake files), then the host."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from claud.slave.resources import (
    MIB,
    CgroupLimits,
    UsageProbe,
    detect_capacity,
    read_cgroup_limits,
)

V1_UNLIMITED = "9223372036854771712"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


@pytest.fixture
def proc_cgroup(tmp_path: Path) -> Path:
    return tmp_path / "proc-self-cgroup"


def test_v2_limits(tmp_path: Path, proc_cgroup: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory io")
    write(root / "cpu.max", "150000 100000")
    write(root / "memory.max", str(512 * MIB))
    write(proc_cgroup, "0::/")
    limits = read_cgroup_limits(root, proc_cgroup)
    assert limits.cpus == 1.5
    assert limits.memory_bytes == 512 * MIB
    assert limits.memory_usage_file == root / "memory.current"


def test_v2_max_means_no_limit(tmp_path: Path, proc_cgroup: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "cpu.max", "max 100000")
    write(root / "memory.max", "max")
    write(proc_cgroup, "0::/")
    assert read_cgroup_limits(root, proc_cgroup) == CgroupLimits(None, None, None)


def test_v2_nested_takes_the_smallest_limit_on_the_way_up(tmp_path: Path, proc_cgroup: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    write(root / "memory.max", "max")
    write(root / "slice" / "memory.max", str(1024 * MIB))
    write(root / "slice" / "cpu.max", "max 100000")
    write(root / "slice" / "me" / "memory.max", "max")
    write(root / "slice" / "me" / "cpu.max", "200000 100000")
    write(proc_cgroup, "0::/slice/me")
    limits = read_cgroup_limits(root, proc_cgroup)
    assert limits.memory_bytes == 1024 * MIB
    assert limits.cpus == 2.0


def test_v1_limits(tmp_path: Path, proc_cgroup: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", str(256 * MIB))
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "50000")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    write(proc_cgroup, "4:memory:/\n2:cpu,cpuacct:/")
    limits = read_cgroup_limits(root, proc_cgroup)
    assert limits.cpus == 0.5
    assert limits.memory_bytes == 256 * MIB
    assert limits.memory_usage_file == root / "memory" / "memory.usage_in_bytes"


def test_v1_unlimited_values_are_no_limit(tmp_path: Path, proc_cgroup: Path) -> None:
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", V1_UNLIMITED)
    write(root / "cpu" / "cpu.cfs_quota_us", "-1")
    write(root / "cpu" / "cpu.cfs_period_us", "100000")
    write(proc_cgroup, "4:memory:/\n1:cpu:/")
    assert read_cgroup_limits(root, proc_cgroup) == CgroupLimits(None, None, None)


def test_v1_path_from_proc_absent_under_the_mount_reads_the_mount(tmp_path: Path, proc_cgroup: Path) -> None:
    # Inside a container the mount is our own cgroup, while /proc names the host path.
    root = tmp_path / "cgroup"
    write(root / "memory" / "memory.limit_in_bytes", str(128 * MIB))
    write(proc_cgroup, "4:memory:/docker/0123abcd")
    assert read_cgroup_limits(root, proc_cgroup).memory_bytes == 128 * MIB


def test_no_cgroup_filesystem(tmp_path: Path, proc_cgroup: Path) -> None:
    assert read_cgroup_limits(tmp_path / "absent", proc_cgroup) == CgroupLimits(None, None, None)


def test_flags_override_everything() -> None:
    cap = detect_capacity(
        3.5, 1000, limits=CgroupLimits(1.0, 64 * MIB), host_cpu_count=8, host_memory_bytes=16384 * MIB
    )
    assert (cap.cpus, cap.memory_mb, cap.cpus_source, cap.memory_source) == (3.5, 1000, "flag", "flag")


def test_cgroup_limit_lower_than_host_wins() -> None:
    cap = detect_capacity(
        None, None, limits=CgroupLimits(1.5, 512 * MIB), host_cpu_count=8, host_memory_bytes=16384 * MIB
    )
    assert (cap.cpus, cap.memory_mb, cap.cpus_source, cap.memory_source) == (1.5, 512, "cgroup", "cgroup")


def test_cgroup_limit_above_host_is_ignored() -> None:
    cap = detect_capacity(
        None, None, limits=CgroupLimits(32.0, 1 << 50), host_cpu_count=8, host_memory_bytes=16384 * MIB
    )
    assert (cap.cpus, cap.memory_mb, cap.cpus_source, cap.memory_source) == (8, 16384, "host", "host")


def test_one_flag_and_one_cgroup_limit_mix() -> None:
    cap = detect_capacity(
        None, 2048, limits=CgroupLimits(2.0, 512 * MIB), host_cpu_count=8, host_memory_bytes=16384 * MIB
    )
    assert (cap.cpus, cap.memory_mb, cap.cpus_source, cap.memory_source) == (2.0, 2048, "cgroup", "flag")


def test_usage_reports_what_the_cgroup_leaves_free(tmp_path: Path) -> None:
    usage_file = tmp_path / "memory.current"
    write(usage_file, str(100 * MIB))
    probe = UsageProbe(str(tmp_path), limits=CgroupLimits(None, 300 * MIB, usage_file))
    usage = probe.sample()
    assert usage.memory_mb_available == min(200, psutil.virtual_memory().available // MIB)
    assert usage.disk_mb_total > 0 and 0 <= usage.disk_mb_free <= usage.disk_mb_total
    assert probe.sample() is usage  # cached within min_interval


def test_usage_asks_where_the_disk_is_at_each_sample(tmp_path: Path) -> None:
    """The engine names its root directory only once it answers, maybe long after the start."""
    asked: list[str] = []

    def where() -> str:
        asked.append(str(tmp_path))
        return str(tmp_path)

    probe = UsageProbe(where, limits=CgroupLimits(), min_interval=0)
    probe.sample()
    probe.sample()
    assert asked == [str(tmp_path)] * 2
