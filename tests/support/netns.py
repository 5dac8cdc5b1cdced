"""A throw-away L2 network of Linux network namespaces, for tests of broadcast.

``NetnsLab(["a", "b", "c"])`` creates one namespace per name, each with an
``eth0`` on ``10.233.7.0/24`` (``a`` = .1, ``b`` = .2, ...), all joined by a
bridge that lives in a namespace of its own. Nothing is created in, or routed
through, the host's namespace, so no test traffic can leave the lab. Names carry
a random suffix, so concurrent runs do not collide, and :meth:`close` (or the
``with`` block) kills the processes started in the lab and deletes every
namespace, which takes the veths and the bridge with them.

Needs root and iproute2; :func:`unavailable_reason` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any

DEFAULT_SUBNET = IPv4Network("10.233.7.0/24")


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be created here."""


def _ip() -> str | None:
    return shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.path.exists(p)), None)


def unavailable_reason() -> str | None:
    """Why namespaces surely cannot be created here, or None if they may be."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "network namespaces need root"
    if _ip() is None:
        return "iproute2 (`ip`) is not installed"
    return None


class NetnsLab:
    def __init__(self, names: Sequence[str], subnet: IPv4Network = DEFAULT_SUBNET) -> None:
        if len(names) > subnet.num_addresses - 2:
            raise ValueError("subnet too small")
        reason = unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        self.ip = _ip() or "ip"
        self.suffix = secrets.token_hex(3)
        self.subnet = subnet
        self.bridge_ns = f"claud-{self.suffix}-br"
        self.namespaces = {name: f"claud-{self.suffix}-{name}" for name in names}
        hosts = list(subnet.hosts())
        self.addresses = {name: str(hosts[i]) for i, name in enumerate(names)}
        self.broadcast = str(subnet.broadcast_address)
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._files: list[IO[Any]] = []

    # -- set-up / tear-down ------------------------------------------------

    def _run(self, *args: str) -> None:
        res = subprocess.run([self.ip, *args], capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")

    def create(self) -> NetnsLab:
        try:
            self._run("netns", "add", self.bridge_ns)
        except RuntimeError as exc:
            raise NetnsUnavailable(f"cannot create a network namespace: {exc}") from exc
        self._created.append(self.bridge_ns)
        try:
            br = self.bridge_ns
            self._run("-n", br, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
            self._run("-n", br, "link", "set", "br0", "up")
            for i, (name, ns) in enumerate(self.namespaces.items()):
                self._run("netns", "add", ns)
                self._created.append(ns)
                port = f"p{i}"
                self._run("-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
                self._run("-n", br, "link", "set", port, "master", "br0", "up")
                self._run("-n", ns, "link", "set", "lo", "up")
                self._run("-n", ns, "addr", "add", f"{self.addresses[name]}/{self.subnet.prefixlen}",
                          "broadcast", "+", "dev", "eth0")
                self._run("-n", ns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for f in self._files:
            f.close()
        self._procs.clear()
        self._files.clear()
        for ns in reversed(self._created):
            subprocess.run([self.ip, "netns", "del", ns], capture_output=True, timeout=10)
        self._created.clear()

    def __enter__(self) -> NetnsLab:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes -----------------------------------------------------------

    def popen(
        self, name: str, argv: Sequence[str], stderr_path: Path | None = None, **kw: Any
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside namespace ``name``; stdin/stdout are text pipes.

        ``ip netns exec`` execs the command, so the Popen is the process itself.
        """
        stderr: Any = subprocess.DEVNULL
        if stderr_path is not None:
            stderr = open(stderr_path, "w")  # noqa: SIM115 - closed in close()
            self._files.append(stderr)
        proc = subprocess.Popen(
            [self.ip, "netns", "exec", self.namespaces[name], *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1, **kw,
        )
        self._procs.append(proc)
        return proc

    def exists(self) -> list[str]:
        """The lab's namespaces that still exist (for tests of the tear-down)."""
        out = subprocess.run([self.ip, "netns", "list"], capture_output=True, text=True, timeout=10).stdout
        present = {line.split()[0] for line in out.splitlines() if line.strip()}
        return [ns for ns in [self.bridge_ns, *self.namespaces.values()] if ns in present]
