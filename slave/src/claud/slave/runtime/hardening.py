"""What a job container may do: the Docker host-config of its confinement.

A job is code from whoever holds the API token, run on the slave's engine. By
default it gets a bounded number of processes (a fork bomb exhausts its own
cgroup, not the machine's pid space), a bounded log (the engine's disk is the
slave's), no swap beyond its memory limit (its limit means what it says), no
way to gain privileges through setuid or file-capability binaries, and
Docker's default capabilities minus those a batch job or service has no use
for but an attacker does. Each of these is a slave flag (settings.py), so an
operator who needs one of them back gives it back on the slaves that need it.

Pure: the Docker runtime turns the result into the SDK's host config; tests
check the rules without an engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from claud.api import Allocation

MIB = 1024 * 1024

#: Docker's default capability set (moby's oci/caps/defaults.go), for the docs and the validation of flags.
DOCKER_DEFAULT_CAPS = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
#: Dropped by default, each for a reason a job's author will not miss:
#: NET_RAW: raw and packet sockets (ARP/DNS spoofing of the bridge's neighbours,
#: crafted packets); plain ICMP echo still works through ping sockets where the
#: engine allows them. MKNOD: device nodes (the device cgroup is the only other
#: fence). AUDIT_WRITE: forging lines in the host's audit log. SETFCAP: planting
#: file capabilities in images and volumes that others run.
DEFAULT_CAP_DROP = ("NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP")
DEFAULT_PIDS_LIMIT = 1024
DEFAULT_LOG_MAX_SIZE = "10m"
DEFAULT_LOG_MAX_FILES = 3

#: Every capability name of Linux 6.x (capability.h), as Docker spells them (no CAP_ prefix).
KNOWN_CAPS = DOCKER_DEFAULT_CAPS | frozenset({
    "AUDIT_CONTROL", "AUDIT_READ", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE", "DAC_READ_SEARCH",
    "IPC_LOCK", "IPC_OWNER", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "NET_ADMIN",
    "NET_BROADCAST", "PERFMON", "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_MODULE", "SYS_NICE",
    "SYS_PACCT", "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG",
    "WAKE_ALARM",
})
#: json-file's max-size: a number and an optional k, m or g (the driver's own grammar, units as docker's).
LOG_SIZE = re.compile(r"[1-9][0-9]{0,9}[kmg]?")


def parse_capability(name: str) -> str:
    """``net_raw``, ``CAP_NET_RAW`` or ``ALL`` to Docker's spelling; ValueError for anything else."""
    cap = name.strip().upper().removeprefix("CAP_")
    if cap != "ALL" and cap not in KNOWN_CAPS:
        raise ValueError(f"{name!r} is not a Linux capability (e.g. NET_RAW, MKNOD, or ALL)")
    return cap


def parse_log_size(value: str) -> str:
    size = value.strip().lower()
    if not LOG_SIZE.fullmatch(size):
        raise ValueError(f"{value!r} is not a size such as 10m, 512k or 1g")
    return size


@dataclass(frozen=True)
class Hardening:
    """A slave's confinement of its job containers (from its settings)."""

    pids_limit: int = DEFAULT_PIDS_LIMIT  # 0: no limit
    log_max_size: str = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES
    cap_drop: tuple[str, ...] = DEFAULT_CAP_DROP
    no_new_privileges: bool = True
    # "container:<id>" or "host"; None: the job's own namespace (the safe one).
    pid_mode: str | None = None

    def __post_init__(self) -> None:
        if self.pids_limit < 0:
            raise ValueError("pids_limit must be 0 (no limit) or more")
        if self.log_max_files < 1:
            raise ValueError("log_max_files must be at least 1")
        parse_log_size(self.log_max_size)
        for cap in self.cap_drop:
            parse_capability(cap)


def host_config_kwargs(alloc: Allocation, hardening: Hardening) -> dict[str, Any]:
    """Keyword arguments of ``APIClient.create_host_config`` for ``alloc``'s container."""
    memory = alloc.resources.memory_mb * MIB
    kwargs: dict[str, Any] = {
        "nano_cpus": round(alloc.resources.cpu * 1e9),
        "mem_limit": memory,
        # Memory plus swap equal to memory: no swap, so the limit is a limit and
        # an over-budget job is OOM-killed instead of thrashing the slave's disk.
        "memswap_limit": memory,
        "log_config": {
            "type": "json-file",
            "config": {"max-size": hardening.log_max_size, "max-file": str(hardening.log_max_files)},
        },
        "cap_drop": list(hardening.cap_drop) or None,
        "security_opt": ["no-new-privileges"] if hardening.no_new_privileges else None,
        "pid_mode": hardening.pid_mode,
    }
    if hardening.pids_limit:
        kwargs["pids_limit"] = hardening.pids_limit
    return kwargs

