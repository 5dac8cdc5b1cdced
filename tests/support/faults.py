"""Faults a slave (and its masters) can meet, drawn from a seed, on a real cluster.

Each fault is applied, held for a drawn duration (the duration *is* the
fault, not a synchronisation), then healed. Durations are drawn on both sides
of the timeouts that matter: a cut shorter than the lease, one between
lease + grace and node_dead_after (the "blip"), one longer than
node_dead_after. Every fault is written to a timeline with times relative to
the campaign's start, so a failing seed can be read and replayed.

``FaultInjector.heal_all`` undoes whatever is still in effect (frozen
processes, cut links, paused containers, dead slaves or masters) and is safe
to call at any time, failures included.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from support.cluster import Cluster
from support.firewall import LoopbackFirewall


@dataclass(frozen=True)
class Timing:
    """The masters' timeouts the campaign runs with, and the flags that set them.

    The defaults keep a campaign short and leave room for a start-up check
    that counts more terms (grace rounded up to whole seconds, election
    timeouts, the stop fan-out) than today's.
    """

    heartbeat: float = 0.3
    suspect_after: float = 1.5
    lease: float = 2.5
    fence_grace: float = 1.0
    dead_after: float = 7.0
    election_timeout: float = 0.6

    def master_flags(self) -> list[str]:
        return ["--heartbeat-interval", f"{self.heartbeat:g}", "--suspect-after", f"{self.suspect_after:g}",
                "--slave-lease", f"{self.lease:g}", "--fence-stop-grace", f"{self.fence_grace:g}",
                "--node-dead-after", f"{self.dead_after:g}", "--election-timeout", f"{self.election_timeout:g}",
                # Spread, so that every slave holds jobs when its fault comes.
                "--strategy", "spread"]

    def outage(self, rnd: random.Random) -> tuple[str, float]:
        """A drawn outage length for a slave that cannot act or be heard, named by the
        band it falls in: ``short`` (within the lease), ``blip`` (past lease + grace,
        short of node_dead_after) or ``long`` (past node_dead_after)."""
        band = rnd.choice(["short", "blip", "long"])
        if band == "short":
            return band, round(rnd.uniform(0.3, 0.8) * self.lease, 2)
        if band == "blip":
            low = self.lease + self.fence_grace + 0.5
            return band, round(rnd.uniform(low, max(low, self.dead_after - 1.0)), 2)
        return band, round(rnd.uniform(self.dead_after + 1.0, self.dead_after + 3.0), 2)


#: The faults and how often each is drawn.
KINDS: dict[str, int] = {
    "slave_kill": 2,  # SIGKILL of the agent, restarted after a while; its containers keep running
    "slave_freeze": 2,  # SIGSTOP of the agent, SIGCONT later
    "slave_cut": 3,  # the slave cannot reach any master, nor they it
    "machine_death": 2,  # the agent and its containers die at once; the machine comes back later
    "leader_kill": 1,  # SIGKILL of the leading master, restarted later
    "container_kill": 2,  # `docker kill` of one job's container: the job's own failure
    "engine_pause": 1,  # `docker pause` of a slave's job containers, unpaused later
}


@dataclass
class FaultRecord:
    """One line of the timeline."""

    at: float  # seconds since the campaign started
    kind: str
    target: str
    duration: float = 0.0
    band: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    healed_at: float | None = None

    def describe(self) -> str:
        healed = "" if self.healed_at is None else f", healed at {self.healed_at:7.2f}"
        band = f" [{self.band}]" if self.band else ""
        detail = "".join(f" {k}={v}" for k, v in self.detail.items())
        return f"{self.at:7.2f}s {self.kind:<15} {self.target:<22} hold {self.duration:5.2f}s{band}{healed}{detail}"


@dataclass(frozen=True)
class PlannedFault:
    """What the seed decided; the target container of a kill is chosen when it happens."""

    kind: str
    slave: str | None  # slave name, for slave faults
    duration: float
    band: str
    pick: float  # in [0, 1): which running container, for container faults


def plan(rnd: random.Random, timing: Timing, slave_names: list[str], count: int) -> list[PlannedFault]:
    """``count`` faults drawn from ``rnd``, so one seed is one campaign."""
    kinds = sorted(KINDS)
    weights = [KINDS[k] for k in kinds]
    faults = []
    for _ in range(count):
        kind = rnd.choices(kinds, weights)[0]
        slave = rnd.choice(slave_names)
        band, duration = timing.outage(rnd)
        if kind == "leader_kill":
            # A failover takes a few election timeouts; hold the old leader down
            # either briefly or for longer than a lease.
            band, duration = rnd.choice([("short", round(rnd.uniform(0.5, 2.0), 2)),
                                         ("long", round(timing.lease + rnd.uniform(0.5, 2.0), 2))])
        elif kind == "engine_pause":
            band, duration = "", round(rnd.uniform(0.5, 2.0) * timing.lease, 2)
        elif kind == "container_kill":
            band, duration = "", 0.0
        faults.append(PlannedFault(kind, slave, duration, band, rnd.random()))
    return faults


@dataclass(frozen=True)
class Outage:
    """A slave the masters could not hear (or whose agent did not run), in wall-clock
    seconds, Docker's clock: from ``began`` until it was back (registered again, thawed, healed)."""

    slave_id: str
    kind: str
    began: float
    back: float

    @property
    def agent_stopped(self) -> bool:
        """The agent itself did not run, so nothing could stop its containers."""
        return self.kind in ("slave_kill", "slave_freeze")

    def may_be_declared_dead(self, timing: Timing) -> bool:
        """Long enough that the masters may rightly have declared the slave dead
        (measured, not drawn: a slow restart makes a blip long)."""
        return self.back - self.began >= timing.dead_after - 1.0


class FaultInjector:
    """Applies planned faults to ``cluster`` and remembers what it did, for the judge."""

    def __init__(self, cluster: Cluster, timing: Timing, origin: float, firewall: LoopbackFirewall | None,
                 slave_flags: list[str]) -> None:
        self.cluster = cluster
        self.timing = timing
        self.origin = origin
        self.firewall = firewall
        self.slave_flags = slave_flags
        self.timeline: list[FaultRecord] = []
        #: Containers killed from outside CLAUD, whose exits count as the job's own failure
        #: (a hand kill; a machine that died and came back: the agent cannot tell that from a
        #: crash): job id -> alloc ids.
        self.external_kills: dict[str, set[str]] = {}
        self.outages: list[Outage] = []
        self._frozen: set[str] = set()
        self._down_slaves: set[str] = set()
        self._down_masters: set[int] = set()
        self._paused: set[str] = set()
        self._engine = docker.from_env(timeout=60)

    def now(self) -> float:
        return time.monotonic() - self.origin

    # -------------------------------------------------------------- helpers

    def running_containers(self, slave_id: str | None = None) -> list[dict[str, Any]]:
        """The engine's list entries (no per-container inspect that a removal could race)."""
        ids = [slave_id] if slave_id else [s.id for s in self.cluster.slaves]
        found: list[dict[str, Any]] = []
        for sid in ids:
            found += self._engine.api.containers(filters={"label": f"claud.slave={sid}", "status": "running"})
        return sorted(found, key=lambda c: ((c.get("Labels") or {}).get("claud.job", ""), c["Id"]))

    def _kill(self, entry: dict[str, Any]) -> bool:
        try:
            self._engine.api.kill(entry["Id"])
            return True
        except docker.errors.APIError:
            return False  # it ended or went meanwhile

    # ---------------------------------------------------------------- apply

    def apply(self, fault: PlannedFault) -> FaultRecord:
        """Apply ``fault``, hold it, heal it; returns its timeline record."""
        record = FaultRecord(self.now(), fault.kind, fault.slave or "", fault.duration, fault.band)
        self.timeline.append(record)
        try:
            getattr(self, f"_{fault.kind}")(fault, record)
        finally:
            record.healed_at = self.now()
        return record

    def _slave_kill(self, fault: PlannedFault, record: FaultRecord) -> None:
        slave = self.cluster.slave(fault.slave)
        self._down_slaves.add(fault.slave)
        began = time.time()
        slave.kill()
        time.sleep(fault.duration)
        self._restart_slave(fault.slave, record)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _slave_freeze(self, fault: PlannedFault, record: FaultRecord) -> None:
        slave = self.cluster.slave(fault.slave)
        self._frozen.add(fault.slave)
        began = time.time()
        slave.signal(signal.SIGSTOP)
        time.sleep(fault.duration)
        slave.signal(signal.SIGCONT)
        self._frozen.discard(fault.slave)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _slave_cut(self, fault: PlannedFault, record: FaultRecord) -> None:
        if self.firewall is None:
            record.detail["skipped"] = "no iptables"
            return
        slave = self.cluster.slave(fault.slave)
        began = time.time()
        self.firewall.isolate(slave.ip, [m.ip for m in self.cluster.masters])
        time.sleep(fault.duration)
        self.firewall.heal()
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _machine_death(self, fault: PlannedFault, record: FaultRecord) -> None:
        slave = self.cluster.slave(fault.slave)
        self._down_slaves.add(fault.slave)
        began = time.time()
        slave.kill()
        # A dead machine runs nothing: keep killing, since a start the agent had in
        # flight at the engine still lands after the agent is gone.
        killed: set[str] = set()
        hold_until = time.monotonic() + fault.duration
        while True:
            for entry in self.running_containers(slave.id):
                if self._kill(entry):
                    labels = entry.get("Labels") or {}
                    alloc = labels.get("claud.alloc", "?")
                    killed.add(alloc)
                    self.external_kills.setdefault(labels.get("claud.job", "?"), set()).add(alloc)
            if time.monotonic() >= hold_until:
                break
            time.sleep(0.2)
        record.detail["killed"] = ",".join(sorted(killed)) or "-"
        self._restart_slave(fault.slave, record)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _leader_kill(self, fault: PlannedFault, record: FaultRecord) -> None:
        leader = self.cluster.wait_leader(timeout=20)
        record.target = f"master-{leader.id}"
        self._down_masters.add(leader.id)
        leader.kill()
        time.sleep(fault.duration)
        self._restart_master(leader.id)
        record.detail["back_after"] = round(self.now() - record.at, 2)

    def _container_kill(self, fault: PlannedFault, record: FaultRecord) -> None:
        running = self.running_containers()
        if not running:
            record.detail["skipped"] = "nothing running"
            return
        entry = running[int(fault.pick * len(running))]
        labels = entry.get("Labels") or {}
        job, alloc = labels.get("claud.job", "?"), labels.get("claud.alloc", "?")
        record.target = f"{labels.get('claud.slave', '?').rsplit('-', 1)[-1]}:{alloc}"
        if self._kill(entry):
            self.external_kills.setdefault(job, set()).add(alloc)

    def _engine_pause(self, fault: PlannedFault, record: FaultRecord) -> None:
        slave = self.cluster.slave(fault.slave)
        paused = []
        for entry in self.running_containers(slave.id):
            with contextlib.suppress(docker.errors.APIError):
                self._engine.api.pause(entry["Id"])
                self._paused.add(entry["Id"])
                paused.append((entry.get("Labels") or {}).get("claud.alloc", "?"))
        record.detail["paused"] = ",".join(sorted(paused)) or "-"
        time.sleep(fault.duration)
        self._unpause_all()

    # ----------------------------------------------------------------- heal

    def _restart_slave(self, name: str, record: FaultRecord | None = None) -> None:
        if record is not None:
            record.detail["restart_at"] = round(self.now(), 2)
        self.cluster.reconnect()
        old = self.cluster.slave(name)
        if old.alive:
            old.kill()  # a restart that timed out before: start_slave would orphan it
        self.cluster.start_slave(name, *self.slave_flags, timeout=60)
        self._down_slaves.discard(name)
        if record is not None:
            record.detail["registered_at"] = round(self.now(), 2)

    def _restart_master(self, master_id: int) -> None:
        old = next(m for m in self.cluster.masters if m.id == master_id)
        if old.alive:
            old.kill()  # a restart that timed out before: start_master would orphan it
        master = self.cluster.start_master(master_id, *self.timing.master_flags(), wait=False)
        master.wait_ready(timeout=60)  # a loaded machine takes long to start a Python process
        self._down_masters.discard(master_id)
        self.cluster.reconnect()

    def _unpause_all(self) -> None:
        for container_id in sorted(self._paused):
            with contextlib.suppress(docker.errors.APIError):
                self._engine.api.unpause(container_id)
        self._paused.clear()

    def heal_all(self) -> None:
        """Undo every fault still in effect; best effort, so that cleanup always runs."""
        for name in sorted(self._frozen):
            with contextlib.suppress(Exception):
                self.cluster.slave(name).signal(signal.SIGCONT)
        self._frozen.clear()
        if self.firewall is not None:
            with contextlib.suppress(Exception):
                self.firewall.heal()
        with contextlib.suppress(Exception):
            self._unpause_all()
        for master_id in sorted(self._down_masters):
            with contextlib.suppress(Exception):
                self._restart_master(master_id)
        for name in sorted(self._down_slaves):
            with contextlib.suppress(Exception):
                self._restart_slave(name)

    def close(self) -> None:
        self.heal_all()
        self._engine.close()
