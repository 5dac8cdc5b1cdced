"""Faults a slave (and its masters) can meet, drawn from a seed, on a real cluster.

Each fault is applied, held for a drawn duration (the duration *is* the
fault, not a synchronisation), then healed. Durations are drawn on both sides
of the timeouts that matter: a cut shorter than the lease, one between
lease + grace and node_dead_after (the "blip"), one longer than
node_dead_after. Every fault is written to a timeline with times relative to
the campaign's start, so a failing seed can be read and replayed.

Faults may overlap: the seed sometimes starts the next fault while the
previous one still holds (on another slave, or a leader kill during a slave
fault), never more than two at once. Each fault then runs on a thread of its
own; what they share (the sets of what is in effect) is behind one lock, and
each heals only what it broke, so that healing one leaves the other in place.

``FaultInjector.heal_all`` undoes whatever is still in effect (frozen
processes, cut links, paused containers, unreachable engines, drains, dead
slaves or masters) and is safe to call at any time, failures included.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
import httpx

from support.cluster import Cluster, wait_until
from support.docker_proxy import DockerSocketProxy
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
    "engine_unreachable": 2,  # the agent's Docker socket refuses it; the engine and its containers carry on
    "drain": 2,  # POST /v1/nodes/{id}/drain (maybe with a deadline, maybe the slave dies meanwhile), undrained later
}
#: The faults aimed at one slave: two of them at once never share a slave.
SLAVE_KINDS = frozenset(KINDS) - {"leader_kill", "container_kill"}
#: How often a fault starts while the previous one still holds.
OVERLAP_CHANCE = 0.35
#: How a draining slave may die, and how often it does.
DEATHS = ("slave_kill", "machine_death")
DEATH_CHANCE = 0.4


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
        return f"{self.at:7.2f}s {self.kind:<18} {self.target:<22} hold {self.duration:5.2f}s{band}{healed}{detail}"


@dataclass(frozen=True)
class Death:
    """A draining slave's death: ``kind`` (one of DEATHS), ``after`` seconds into the drain,
    for an outage of ``duration`` in ``band``."""

    kind: str
    after: float
    duration: float
    band: str


@dataclass(frozen=True)
class PlannedFault:
    """What the seed decided; the target container of a kill is chosen when it happens."""

    kind: str
    slave: str | None  # slave name, for slave faults
    duration: float
    band: str
    pick: float  # in [0, 1): which running container, for container faults
    #: A drain's deadline, seconds (None: every job moves at once).
    deadline: float | None = None
    #: A drain's slave dies while it drains.
    death: Death | None = None
    #: Starts this many seconds after the previous fault began, while that one holds
    #: (None: after it healed and a drawn gap).
    overlap: float | None = None

    @property
    def hold(self) -> float:
        """Roughly how long the fault lasts (a death within a drain may outlast it)."""
        if self.death is not None:
            return max(self.duration, self.death.after + self.death.duration)
        return self.duration


def plan(rnd: random.Random, timing: Timing, slave_names: list[str], count: int) -> list[PlannedFault]:
    """``count`` faults drawn from ``rnd``, so one seed is one campaign."""
    kinds = sorted(KINDS)
    weights = [KINDS[k] for k in kinds]
    faults: list[PlannedFault] = []
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
        pick = rnd.random()
        deadline = death = None
        if kind == "drain":
            deadline = rnd.choice([None, round(rnd.uniform(1.0, 4.0), 2)])
            # Rounded up, and before the deadline is added: rounding to the nearest could take it
            # below lease + deadline, which the drain needs to outlast.
            band, duration = "", math.ceil(rnd.uniform(1.0, 2.0) * timing.lease * 100) / 100 + (deadline or 0.0)
            if rnd.random() < DEATH_CHANCE:
                death_band, death_duration = timing.outage(rnd)
                death = Death(rnd.choice(DEATHS), round(rnd.uniform(0.2, 1.0), 2), death_duration, death_band)
        fault = PlannedFault(kind, slave, duration, band, pick, deadline, death)
        previous = faults[-1] if faults else None
        wants_overlap = rnd.random() < OVERLAP_CHANCE
        offset = rnd.uniform(0.2, 0.8)
        # At most two at once (a fault that overlaps is not overlapped), and never two
        # leader kills at once: with two of three masters down nothing commits.
        if (wants_overlap and previous is not None and previous.overlap is None
                and not (kind == previous.kind == "leader_kill")):
            if kind in SLAVE_KINDS and previous.kind in SLAVE_KINDS and slave == previous.slave:
                slave = rnd.choice([s for s in slave_names if s != previous.slave])
            fault = PlannedFault(kind, slave, duration, band, pick, deadline, death,
                                 overlap=round(offset * max(previous.hold, 0.5), 2))
        faults.append(fault)
    return faults


@dataclass(frozen=True)
class Outage:
    """A slave the masters could not hear, whose agent did not run, or whose engine the
    agent could not reach, in wall-clock seconds, Docker's clock: from ``began`` until it
    was back (registered again, thawed, healed, answering)."""

    slave_id: str
    kind: str
    began: float
    back: float

    @property
    def agent_stopped(self) -> bool:
        """The agent itself did not run, so nothing could stop its containers."""
        return self.kind in ("slave_kill", "slave_freeze")

    @property
    def engine_away(self) -> bool:
        """The agent ran, heartbeat and held its lease, but could not reach its engine."""
        return self.kind == "engine_unreachable"

    @property
    def nothing_could_stop_its_containers(self) -> bool:
        """Neither the agent (killed, frozen) nor, through its engine, anyone else could stop them."""
        return self.agent_stopped or self.engine_away

    def may_be_declared_dead(self, timing: Timing) -> bool:
        """Long enough that the masters may rightly have declared the slave dead, or its
        jobs lost for an engine away that long (measured, not drawn: a slow restart
        makes a blip long)."""
        return self.back - self.began >= timing.dead_after - 1.0


class FaultInjector:
    """Applies planned faults to ``cluster`` and remembers what it did, for the judge.

    ``slave_flags`` are each slave's flags (by name) for a restart; ``proxies`` the
    Docker socket proxy each slave talks to its engine through (support.docker_proxy).
    """

    def __init__(self, cluster: Cluster, timing: Timing, origin: float, firewall: LoopbackFirewall | None,
                 slave_flags: dict[str, list[str]], proxies: dict[str, DockerSocketProxy] | None = None) -> None:
        self.cluster = cluster
        self.timing = timing
        self.origin = origin
        self.firewall = firewall
        self.slave_flags = slave_flags
        self.proxies = proxies or {}
        self.timeline: list[FaultRecord] = []
        #: Containers killed from outside CLAUD, whose exits count as the job's own failure
        #: (a hand kill; a machine that died and came back: the agent cannot tell that from a
        #: crash): job id -> alloc ids.
        self.external_kills: dict[str, set[str]] = {}
        self.outages: list[Outage] = []
        #: (slave id, drained from, undrained at): the masters must place nothing there meanwhile.
        self.drains: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()
        self._frozen: set[str] = set()
        self._cut: set[str] = set()
        self._down_slaves: set[str] = set()
        self._down_masters: set[int] = set()
        self._paused: dict[str, set[str]] = {}  # slave name -> container ids
        self._unreachable: set[str] = set()
        self._draining: set[str] = set()
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

    def _external_kill(self, job: str, alloc: str) -> None:
        with self._lock:
            self.external_kills.setdefault(job, set()).add(alloc)

    def _ask_masters(self, call: Callable[[httpx.Client, str], httpx.Response], timeout: float) -> httpx.Response:
        """``call(client, master url)`` on whichever live master answers without a 5xx,
        retried until ``timeout``: a leader may be down in an overlapping fault. A client of
        its own per call, since faults run on threads of their own."""
        deadline = time.monotonic() + timeout
        last: str = "no master alive"
        with httpx.Client(headers={"Authorization": f"Bearer {self.cluster.token}"}, timeout=5) as http:
            while time.monotonic() < deadline:
                for master in [m for m in self.cluster.masters if m.alive]:
                    try:
                        resp = call(http, master.url)
                    except httpx.HTTPError as exc:
                        last = repr(exc)
                        continue
                    if resp.status_code < 500:
                        return resp
                    last = f"{resp.status_code} {resp.text[:200]}"
                time.sleep(0.2)
        raise AssertionError(f"no master answered within {timeout}s: {last}")

    def _node(self, slave_id: str) -> dict[str, Any] | None:
        resp = self._ask_masters(lambda http, url: http.get(f"{url}/v1/nodes"), timeout=10)
        resp.raise_for_status()
        return next((n for n in resp.json()["nodes"] if n["id"] == slave_id), None)

    # ---------------------------------------------------------------- apply

    def apply(self, fault: PlannedFault) -> FaultRecord:
        """Apply ``fault``, hold it, heal it; returns its timeline record."""
        record = FaultRecord(self.now(), fault.kind, fault.slave or "", fault.duration, fault.band)
        if fault.overlap is not None:
            record.detail["overlapping"] = "previous"
        with self._lock:
            self.timeline.append(record)
        try:
            getattr(self, f"_{fault.kind}")(fault, record)
        except BaseException:
            self.heal(fault)  # what this fault broke, not what another one holds
            raise
        finally:
            record.healed_at = self.now()
        return record

    def _slave_kill(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert fault.slave is not None
        self._die(fault.slave, "slave_kill", fault.duration, record)

    def _machine_death(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert fault.slave is not None
        self._die(fault.slave, "machine_death", fault.duration, record)

    def _die(self, name: str, kind: str, duration: float, record: FaultRecord) -> None:
        """The agent dies (``slave_kill``), or the machine with its containers (``machine_death``),
        for ``duration``; then it is started again."""
        slave = self.cluster.slave(name)
        with self._lock:
            self._down_slaves.add(name)
        began = time.time()
        slave.kill()
        if kind == "machine_death":
            # A dead machine runs nothing: keep killing, since a start the agent had in
            # flight at the engine still lands after the agent is gone.
            killed: set[str] = set()
            hold_until = time.monotonic() + duration
            while True:
                for entry in self.running_containers(slave.id):
                    if self._kill(entry):
                        labels = entry.get("Labels") or {}
                        alloc = labels.get("claud.alloc", "?")
                        killed.add(alloc)
                        self._external_kill(labels.get("claud.job", "?"), alloc)
                if time.monotonic() >= hold_until:
                    break
                time.sleep(0.2)
            record.detail["killed"] = ",".join(sorted(killed)) or "-"
        else:
            time.sleep(duration)
        self._restart_slave(name, record)
        self.outages.append(Outage(slave.id, kind, began, time.time()))

    def _slave_freeze(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert fault.slave is not None
        slave = self.cluster.slave(fault.slave)
        with self._lock:
            self._frozen.add(fault.slave)
        began = time.time()
        slave.signal(signal.SIGSTOP)
        time.sleep(fault.duration)
        slave.signal(signal.SIGCONT)
        with self._lock:
            self._frozen.discard(fault.slave)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _slave_cut(self, fault: PlannedFault, record: FaultRecord) -> None:
        if self.firewall is None:
            record.detail["skipped"] = "no iptables"
            return
        assert fault.slave is not None
        slave = self.cluster.slave(fault.slave)
        began = time.time()
        with self._lock:
            self._cut.add(fault.slave)
        self.firewall.isolate(slave.ip, [m.ip for m in self.cluster.masters])
        time.sleep(fault.duration)
        self._mend(fault.slave)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _leader_kill(self, fault: PlannedFault, record: FaultRecord) -> None:
        leader = self.cluster.wait_leader(timeout=20)
        record.target = f"master-{leader.id}"
        with self._lock:
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
            self._external_kill(job, alloc)

    def _engine_pause(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert fault.slave is not None
        slave = self.cluster.slave(fault.slave)
        paused = []
        for entry in self.running_containers(slave.id):
            with contextlib.suppress(docker.errors.APIError):
                self._engine.api.pause(entry["Id"])
                with self._lock:
                    self._paused.setdefault(fault.slave, set()).add(entry["Id"])
                paused.append((entry.get("Labels") or {}).get("claud.alloc", "?"))
        record.detail["paused"] = ",".join(sorted(paused)) or "-"
        time.sleep(fault.duration)
        self._unpause(fault.slave)

    def _engine_unreachable(self, fault: PlannedFault, record: FaultRecord) -> None:
        """The agent's engine socket refuses it; the engine and the job containers carry on.

        Not an agent that stopped: it heartbeats (unhealthy) and keeps its lease, so it
        never fences; it just cannot see or stop its containers until the engine answers."""
        assert fault.slave is not None
        proxy = self.proxies.get(fault.slave)
        if proxy is None:
            record.detail["skipped"] = "no proxy in front of this slave's engine"
            return
        slave = self.cluster.slave(fault.slave)
        with self._lock:
            self._unreachable.add(fault.slave)
        began = time.time()
        proxy.off()
        time.sleep(fault.duration)
        proxy.on()
        with self._lock:
            self._unreachable.discard(fault.slave)
        self.outages.append(Outage(slave.id, fault.kind, began, time.time()))

    def _drain(self, fault: PlannedFault, record: FaultRecord) -> None:
        assert fault.slave is not None
        slave = self.cluster.slave(fault.slave)
        if fault.deadline is not None:
            record.detail["deadline"] = fault.deadline
        began = time.monotonic()
        with self._lock:
            self._draining.add(fault.slave)
        self._set_drain(slave.id, True, fault.deadline)
        drained_from = time.time()  # committed by now: the masters answered
        try:
            if fault.death is not None:
                death = fault.death
                record.detail["then"] = f"{death.kind}@{death.after:g}s[{death.band}] hold {death.duration:g}s"
                time.sleep(death.after)
                self._die(fault.slave, death.kind, death.duration, record)
            time.sleep(max(0.0, began + fault.duration - time.monotonic()))
        finally:
            undrained_at = time.time()  # asked from now on: a placement may follow at once
            self._undrain(fault.slave)
            self.drains.append((slave.id, drained_from, undrained_at))

    # ----------------------------------------------------------------- heal

    def _set_drain(self, slave_id: str, draining: bool, deadline: float | None = None) -> None:
        verb = "drain" if draining else "undrain"
        body = {"deadline": deadline} if deadline is not None else None
        resp = self._ask_masters(lambda http, url: http.post(f"{url}/v1/nodes/{slave_id}/{verb}", json=body),
                                 timeout=30)
        if resp.status_code != 200:
            raise AssertionError(f"{verb} of {slave_id}: {resp.status_code} {resp.text[:300]}")

    def _undrain(self, name: str) -> None:
        self._set_drain(self.cluster.slave(name).id, False)
        with self._lock:
            self._draining.discard(name)

    def _mend(self, name: str) -> None:
        if self.firewall is not None:
            self.firewall.mend(self.cluster.slave(name).ip, [m.ip for m in self.cluster.masters])
        with self._lock:
            self._cut.discard(name)

    def _restart_slave(self, name: str, record: FaultRecord | None = None) -> None:
        if record is not None:
            record.detail["restart_at"] = round(self.now(), 2)
        old = self.cluster.slave(name)
        if old.alive:
            old.kill()  # a restart that timed out before: start_slave would orphan it
        slave = self.cluster.start_slave(name, *self.slave_flags[name], wait=False)

        def registered() -> bool:
            if not slave.alive:
                raise AssertionError(f"{slave.name} exited:\n{slave.log()[-2000:]}")
            node = self._node(slave.id)
            return node is not None and node["state"] in ("alive", "draining")  # a drain outlives a death

        wait_until(registered, 60, interval=0.2, what=f"slave {slave.id} registered again")
        with self._lock:
            self._down_slaves.discard(name)
        if record is not None:
            record.detail["registered_at"] = round(self.now(), 2)

    def _restart_master(self, master_id: int) -> None:
        old = next(m for m in self.cluster.masters if m.id == master_id)
        if old.alive:
            old.kill()  # a restart that timed out before: start_master would orphan it
        master = self.cluster.start_master(master_id, *self.timing.master_flags(), wait=False)
        master.wait_ready(timeout=60)  # a loaded machine takes long to start a Python process
        with self._lock:
            self._down_masters.discard(master_id)

    def _unpause(self, name: str) -> None:
        with self._lock:
            paused = self._paused.pop(name, set())
        for container_id in sorted(paused):
            with contextlib.suppress(docker.errors.APIError):
                self._engine.api.unpause(container_id)

    def heal(self, fault: PlannedFault) -> None:
        """Undo what ``fault`` may have left in effect, and nothing else; best effort."""
        if fault.kind == "leader_kill":
            with self._lock:
                down = sorted(self._down_masters)
            for master_id in down:
                with contextlib.suppress(Exception):
                    self._restart_master(master_id)
        elif fault.slave is not None:
            self._heal_slave(fault.slave)

    def _heal_slave(self, name: str) -> None:
        with self._lock:
            frozen, cut = name in self._frozen, name in self._cut
            unreachable, down = name in self._unreachable, name in self._down_slaves
            draining = name in self._draining
        if frozen:
            with contextlib.suppress(Exception):
                self.cluster.slave(name).signal(signal.SIGCONT)
            with self._lock:
                self._frozen.discard(name)
        if cut:
            with contextlib.suppress(Exception):
                self._mend(name)
        with contextlib.suppress(Exception):
            self._unpause(name)
        if unreachable and name in self.proxies:
            self.proxies[name].on()
            with self._lock:
                self._unreachable.discard(name)
        if down:
            with contextlib.suppress(Exception):
                self._restart_slave(name)
        if draining:
            with contextlib.suppress(Exception):
                self._undrain(name)

    def heal_all(self) -> None:
        """Undo every fault still in effect; best effort, so that cleanup always runs."""
        if self.firewall is not None:
            with contextlib.suppress(Exception):
                self.firewall.heal()
        with self._lock:
            self._cut.clear()
            down_masters = sorted(self._down_masters)
        for master_id in down_masters:
            with contextlib.suppress(Exception):
                self._restart_master(master_id)
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.on()
        for name in sorted(self.slave_flags):
            self._heal_slave(name)

    def close(self) -> None:
        self.heal_all()
        self._engine.close()
