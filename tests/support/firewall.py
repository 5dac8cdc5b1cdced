"""Cut links between processes on loopback, the way a partition would.

Each process of a test listens on (and connects from) its own loopback
address (127.0.0.11, 127.0.0.12, ...); iptables rules in a chain of this
test's own drop the packets between two of them in both directions. Dropped,
not refused: like a real partition, the other side just stops hearing.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid


def firewall_available() -> bool:
    if shutil.which("iptables") is None:
        return False
    return subprocess.run(["iptables", "-w", "-L", "INPUT", "-n"], capture_output=True).returncode == 0


class LoopbackFirewall:
    def __init__(self) -> None:
        self.chain = "CLAUD-" + uuid.uuid4().hex[:8].upper()
        self._run("-N", self.chain)
        self._run("-I", "INPUT", "1", "-j", self.chain)

    @staticmethod
    def _run(*args: str) -> None:
        subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between addresses ``a`` and ``b``."""
        self._run("-A", self.chain, "-s", a, "-d", b, "-j", "DROP")
        self._run("-A", self.chain, "-s", b, "-d", a, "-j", "DROP")

    def isolate(self, a: str, others: list[str]) -> None:
        for b in others:
            self.cut(a, b)

    def mend(self, a: str, others: list[str]) -> None:
        """Undo ``isolate(a, others)`` only: another process's cut stays in place."""
        for b in others:
            for src, dst in ((a, b), (b, a)):
                subprocess.run(["iptables", "-w", "-D", self.chain, "-s", src, "-d", dst, "-j", "DROP"],
                               capture_output=True)

    def heal(self) -> None:
        self._run("-F", self.chain)

    def close(self) -> None:
        subprocess.run(["iptables", "-w", "-D", "INPUT", "-j", self.chain], capture_output=True)
        subprocess.run(["iptables", "-w", "-F", self.chain], capture_output=True)
        subprocess.run(["iptables", "-w", "-X", self.chain], capture_output=True)
