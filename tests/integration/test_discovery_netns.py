"""UDP broadcast discovery between real network namespaces on one bridge.

Broadcast does not cross loopback, so the processes run in separate network
namespaces on a private bridge (see support/netns.py), each a real
``claud.daemon.discovery.Discovery`` that prints, as JSON lines, what it knows.
The test reads those lines and polls them against deadlines.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.netns import NetnsLab, NetnsUnavailable

SECRET = "correct horse battery staple"
INTERVAL = 0.2
EXPIRE_AFTER = 1.5
PORT = 8702

# One discovery node. argv[1] is a JSON config; stdin takes "term N" and "quit";
# stdout gets a JSON status line whenever the status changes.
NODE = r"""
import asyncio, json, sys
from claud.daemon.discovery import Announcement, Discovery
from claud.daemon.logfmt import configure_logging

cfg = json.loads(sys.argv[1])
configure_logging("discovery-test", cfg["id"], "debug")

async def main():
    me = Announcement(id=cfg["id"], role=cfg["role"], address=cfg["address"], term=cfg.get("term", 0))
    d = Discovery(me, port=cfg["port"], interval=cfg["interval"], expire_after=cfg["expire_after"],
                  secret=cfg["secret"])
    await d.start()
    loop = asyncio.get_running_loop()
    reader = loop.run_in_executor(None, sys.stdin.readline)
    last = None
    while True:
        status = {
            "me": d.me.id,
            "targets": d.broadcast_targets,
            "peers": {f"{a.role}/{a.id}": {"address": a.address, "term": a.term} for a in
                      [*d.peers("master").values(), *d.peers("slave").values()]},
            "ignored": d.ignored,
        }
        if status != last:
            print(json.dumps(status), flush=True)
            last = status
        done, _ = await asyncio.wait([reader], timeout=0.05)
        if done:
            line = reader.result().split()
            if not line or line[0] == "quit":
                break
            if line[0] == "term":
                d.update(term=int(line[1]))
            reader = loop.run_in_executor(None, sys.stdin.readline)
    await d.stop()

asyncio.run(main())
"""


class Node:
    """A discovery process in a namespace, with its latest printed status."""

    def __init__(self, lab: NetnsLab, ns: str, cfg: dict[str, Any], log_dir: Path) -> None:
        self.name = f"{cfg['role']}/{cfg['id']}"
        self.log_path = log_dir / f"{cfg['role']}-{cfg['id']}.log"
        self.proc = lab.popen(ns, [sys.executable, "-c", NODE, json.dumps(cfg)], stderr_path=self.log_path)
        self.status: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.status = json.loads(line)

    @property
    def peers(self) -> dict[str, dict[str, Any]]:
        return self.status.get("peers", {})

    @property
    def ignored(self) -> dict[str, int]:
        return self.status.get("ignored", {})

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_until(what: str, cond: Callable[[], bool], nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        for node in nodes:
            if node.proc.poll() is not None and node.proc.returncode != -9:
                pytest.fail(f"{node.name} exited with {node.proc.returncode}:\n{node.log_tail()}")
        time.sleep(0.05)
    detail = "\n".join(f"--- {n.name}: {n.status}\n{n.log_tail()}" for n in nodes)
    pytest.fail(f"timed out after {timeout}s waiting until {what}\n{detail}")


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    try:
        lab = NetnsLab(["a", "b", "c", "d"]).create()
    except NetnsUnavailable as exc:
        pytest.skip(f"cannot create network namespaces: {exc}")
    try:
        yield lab
    finally:
        lab.close()
        assert lab.exists() == [], "network namespaces left behind"


def node_cfg(role: str, node_id: str, address: str, secret: str = SECRET, term: int = 0) -> dict[str, Any]:
    return {
        "id": node_id, "role": role, "address": address, "term": term, "secret": secret,
        "port": PORT, "interval": INTERVAL, "expire_after": EXPIRE_AFTER,
    }


def test_nodes_in_separate_namespaces_learn_each_other_and_ignore_a_stranger(lab: NetnsLab, tmp_path: Path) -> None:
    a, b, c = lab.addresses["a"], lab.addresses["b"], lab.addresses["c"]
    nodes = {
        "master/1": Node(lab, "a", node_cfg("master", "1", f"{a}:8700", term=3), tmp_path),
        # Shares namespace (host) and UDP port with master 1: SO_REUSEPORT at work.
        "slave/s2": Node(lab, "a", node_cfg("slave", "s2", f"{a}:8711"), tmp_path),
        "master/2": Node(lab, "b", node_cfg("master", "2", f"{b}:8700", term=3), tmp_path),
        "slave/s1": Node(lab, "c", node_cfg("slave", "s1", f"{c}:8701"), tmp_path),
    }
    # A stranger with the wrong secret claims to be a master with a high term.
    stranger = Node(lab, "d", node_cfg("master", "9", f"{lab.addresses['d']}:8700", secret="wrong", term=99), tmp_path)
    everyone = [*nodes.values(), stranger]
    expected = {
        "master/1": {"address": f"{a}:8700", "term": 3},
        "slave/s2": {"address": f"{a}:8711", "term": 0},
        "master/2": {"address": f"{b}:8700", "term": 3},
        "slave/s1": {"address": f"{c}:8701", "term": 0},
    }

    wait_until(
        "every node knows exactly the other three",
        lambda: all(n.peers == {k: v for k, v in expected.items() if k != name} for name, n in nodes.items()),
        everyone, timeout=10,
    )
    # The stranger's datagrams did arrive, and were dropped as unauthenticated;
    # it, in turn, accepted nothing from the cluster.
    wait_until(
        "every node has dropped the stranger's datagrams",
        lambda: all(n.ignored.get("unauthenticated", 0) >= 1 for n in everyone),
        everyone, timeout=5,
    )
    for name, node in nodes.items():
        assert "master/9" not in node.peers, name
        assert node.peers == {k: v for k, v in expected.items() if k != name}
        # Only the lab's own broadcast address (and the limited broadcast, which
        # cannot leave the namespace) is ever sent to.
        assert set(node.status["targets"]) <= {lab.broadcast, "255.255.255.255"}
        assert lab.broadcast in node.status["targets"]
    assert stranger.peers == {}
    # One log line per event, not per datagram: each peer discovered once, and
    # the stranger's repeated datagrams summarised in a single (rate-limited) line.
    for name, node in nodes.items():
        text = node.log_text()
        assert text.count("event=discovery.peer_discovered") == 3, (name, text)
        assert text.count("event=discovery.ignored") == 1, (name, text)

    # A new term is announced at once, not only at the next interval.
    nodes["master/2"].send("term 4")
    wait_until(
        "everyone sees master 2 at term 4",
        lambda: all(n.peers.get("master/2", {}).get("term") == 4 for name, n in nodes.items() if name != "master/2"),
        everyone, timeout=3,
    )


def test_a_silent_peer_expires(lab: NetnsLab, tmp_path: Path) -> None:
    a, b, c = lab.addresses["a"], lab.addresses["b"], lab.addresses["c"]
    m1 = Node(lab, "a", node_cfg("master", "1", f"{a}:8700", ), tmp_path)
    m2 = Node(lab, "b", node_cfg("master", "2", f"{b}:8700", ), tmp_path)
    s1 = Node(lab, "c", node_cfg("slave", "s1", f"{c}:8701", ), tmp_path)
    nodes = [m1, m2, s1]
    wait_until("all three know each other", lambda: all(len(n.peers) == 2 for n in nodes), nodes, timeout=10)

    s1.proc.kill()
    s1.proc.wait(timeout=5)
    killed_at = time.monotonic()
    wait_until(
        "the killed slave expires on both masters",
        lambda: all("slave/s1" not in n.peers and len(n.peers) == 1 for n in (m1, m2)),
        [m1, m2], timeout=EXPIRE_AFTER + 3,
    )
    assert time.monotonic() - killed_at >= EXPIRE_AFTER - 2 * INTERVAL  # not before its time
    assert m1.peers.keys() == {"master/2"} and m2.peers.keys() == {"master/1"}
    # The expiry is an event of its own: one log line on each master.
    wait_until(
        "both masters log the expiry",
        lambda: all(n.log_text().count("event=discovery.peer_expired") == 1 for n in (m1, m2)),
        [m1, m2], timeout=2,
    )


# Records the first datagram it hears from argv[1] (an IP), waits argv[2]
# seconds, then sends it again, from its own address, to argv[3] (the lab's
# broadcast address), argv[4] times; prints "replayed" when done.
REPLAYER = r"""
import socket, sys, time
source, wait, target, times, port = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("", port))
while True:
    data, (ip, _) = s.recvfrom(8192)
    if ip == source:
        break
time.sleep(wait)
for _ in range(times):
    s.sendto(data, (target, port))
    time.sleep(0.02)
print("replayed", flush=True)
"""


def test_a_recorded_datagram_replayed_from_another_address_is_refused(lab: NetnsLab, tmp_path: Path) -> None:
    """An attacker on the wire records master 2's signed announcement and sends it again from its own
    address: no receiver takes it, so no master's peer moves (or rolls back its term)."""
    a, b, c, d = (lab.addresses[n] for n in "abcd")
    m1 = Node(lab, "a", node_cfg("master", "1", f"{a}:8700", term=3), tmp_path)
    s1 = Node(lab, "c", node_cfg("slave", "s1", f"{c}:8701"), tmp_path)
    m2 = Node(lab, "b", node_cfg("master", "2", f"{b}:8700", term=3), tmp_path)
    nodes = [m1, m2, s1]
    wait_until("master 2 is known", lambda: all("master/2" in n.peers for n in (m1, s1)), nodes, timeout=10)
    replayer = lab.popen("d", [sys.executable, "-c", REPLAYER, b, "1.0", lab.broadcast, "5", str(PORT)],
                         stderr_path=tmp_path / "replayer.log")
    m2.send("term 4")  # while the recorded datagram (term 3) waits to be replayed
    assert replayer.stdout is not None
    assert replayer.stdout.readline().strip() == "replayed", (tmp_path / "replayer.log").read_text()
    replayer.wait(timeout=5)
    wait_until(
        "the replays are refused",
        lambda: all(n.ignored.get("replayed", 0) >= 5 for n in (m1, s1)),
        nodes, timeout=5,
    )
    for node in (m1, s1):
        assert node.peers["master/2"] == {"address": f"{b}:8700", "term": 4}, node.status
        assert f"address={d}" not in node.log_text()
