"""UDP broadcast discovery: masters and slaves find each other without configuration.

Every process announces ``(cluster, id, role, HTTP address, term)`` on a UDP
broadcast port (8702 by default, ``--discovery-port``) every ``interval``
seconds, immediately at start and whenever what it announces changes, and
listens on the same port. A peer not heard from for ``expire_after`` seconds is
forgotten.

Wire format (version 2), one datagram per announcement::

    {"v":2,"cluster":"claud","id":"1","role":"master","address":"10.0.0.5:8700","term":3,"seq":1764093600123456789,"sent_at":1764093600.123}
    \n<64 hex digits>

The first line is compact JSON (never contains a raw newline); a newline and
the hex HMAC-SHA256 of the exact JSON bytes follow. The HMAC key is
``HMAC-SHA256(secret, b"claud-discovery-v1")`` so that discovery MACs are
domain-separated from any other use of the secret. There is no discovery
without a cluster secret: an unsigned announcement could name any address,
and masters send Raft traffic, secret attached, to the addresses they learn.

Everything a receiver uses is inside the signed part, never the datagram's
(unauthenticated) source address:

- ``address`` is used as announced, and must name a host: an announcement of
  a wildcard (``0.0.0.0:8700``) is refused, since completing it with the
  source address would let whoever resends a recorded datagram choose it.
- ``seq`` grows with every datagram a sender sends (it starts from the wall
  clock in nanoseconds, so it keeps growing across restarts); a receiver
  accepts from each sender only a ``seq`` above the last it accepted.
- ``sent_at`` (the sender's wall clock) must be within ``max_clock_skew`` of
  the receiver's: an old datagram replayed after the receiver forgot its
  sender is refused as stale.

Unknown JSON fields are ignored (forward compatible); another ``v`` is
rejected. Datagrams of other clusters, malformed, unauthenticated, stale and
replayed ones are counted and summarised in a rate-limited log line, never
logged one by one (exact duplicates, which every sender makes by sending to
each broadcast address, are counted only).

The pure parts (:func:`encode`, :func:`decode`, :class:`PeerTable`,
:func:`broadcast_addresses_from_ip_json`) take no sockets and no clock;
:class:`Discovery` is the asyncio shell around them.

Note: a socket bound to a unicast address (``bind_address="10.0.0.5"``) does not
receive broadcasts on Linux; keep the default ``""`` (all interfaces) unless
you know you want that.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claud.api.nodes import NodeRole
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.logfmt import log_event
from claud.daemon.waits import wait_set

log = logging.getLogger("claud.discovery")

#: Version of the wire format written in the ``v`` field.
WIRE_VERSION = 2
DEFAULT_PORT = 8702
DEFAULT_CLUSTER = "claud"
LIMITED_BROADCAST = "255.255.255.255"
#: Datagrams larger than this are not ours (an announcement is ~150 bytes).
MAX_DATAGRAM = 4096
MAC_HEX_LEN = 64
_MAC_DOMAIN = b"claud-discovery-v1"
#: How far a sender's clock may be from the receiver's (and how long a datagram stays usable).
DEFAULT_MAX_CLOCK_SKEW = 30.0

#: Why a datagram was dropped (the keys of :attr:`Discovery.ignored`).
RejectReason = Literal[
    "malformed", "version", "other_cluster", "unauthenticated", "wildcard_address", "stale", "replayed", "duplicate"
]


# --------------------------------------------------------------------------- model


class Announcement(BaseModel):
    """What one process says about itself."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    cluster: str = Field(DEFAULT_CLUSTER, min_length=1, max_length=64)
    id: str = Field(..., min_length=1, max_length=128, description="master ids are ints rendered as str")
    role: NodeRole
    address: str = Field(..., min_length=3, max_length=262, description="HTTP host:port")
    term: int = Field(0, ge=0, description="current term of a master; 0 for slaves")
    seq: int = Field(0, ge=0, lt=2**63, description="grows with every datagram of a sender (replay defence)")
    sent_at: float = Field(0.0, allow_inf_nan=False, description="sender's wall clock, seconds since the epoch")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if _is_wildcard(value):
            raise ValueError("address must name a host, not a wildcard (announce --advertise)")
        try:
            parse_host_port(value)
        except ValueError:
            raise ValueError("address must be host:port ([v6]:port for IPv6)") from None
        return value

    @property
    def key(self) -> tuple[str, str]:
        """(role, id): a master and a slave may share an id string."""
        return (str(self.role), self.id)


class Rejected(ValueError):
    """A datagram that is not a valid announcement for us."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RejectReason = reason


# ------------------------------------------------------------------ encode/decode


def mac_key(secret: str) -> bytes:
    """The HMAC key derived from a cluster secret (domain-separated)."""
    return hmac.new(secret.encode("utf-8"), _MAC_DOMAIN, hashlib.sha256).digest()


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode("ascii")


def encode(ann: Announcement, secret: str) -> bytes:
    """One datagram for ``ann``: compact JSON, then ``\\n<hmac>``."""
    if not secret:
        raise ValueError("discovery needs a cluster secret")
    body: dict[str, Any] = {"v": WIRE_VERSION}
    body.update(ann.model_dump(mode="json"))
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return payload + b"\n" + _mac(mac_key(secret), payload)


def decode(data: bytes, cluster: str = DEFAULT_CLUSTER, *, secret: str) -> Announcement:
    """Parse and check one datagram; raise :class:`Rejected` with the reason."""
    if not secret:
        raise ValueError("discovery needs a cluster secret")
    return _decode(data, cluster, mac_key(secret))


def _decode(data: bytes, cluster: str, key: bytes) -> Announcement:
    if len(data) > MAX_DATAGRAM:
        raise Rejected("malformed", f"{len(data)} bytes")
    payload, sep, mac = data.partition(b"\n")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("malformed", "not JSON") from exc
    if not isinstance(body, dict):
        raise Rejected("malformed", "not an object")
    if body.get("v") != WIRE_VERSION:
        raise Rejected("version", repr(body.get("v"))[:32])
    if body.get("cluster", DEFAULT_CLUSTER) != cluster:
        raise Rejected("other_cluster", str(body.get("cluster"))[:64])
    # Checked before validation so that strangers' data is never trusted, but
    # after the cluster so that a neighbour cluster with its own secret is
    # reported as such rather than as an attack.
    if not sep or len(mac) != MAC_HEX_LEN or not hmac.compare_digest(_mac(key, payload), mac.lower()):
        raise Rejected("unauthenticated", "bad or missing MAC" if sep else "no MAC")
    address = body.get("address")
    if isinstance(address, str) and _is_wildcard(address):
        raise Rejected("wildcard_address", f"{address[:64]} names no host; the sender must announce --advertise")
    try:
        return Announcement.model_validate(body)
    except ValidationError as exc:
        raise Rejected("malformed", exc.errors()[0].get("msg", "invalid")) from exc


def _is_wildcard(address: str) -> bool:
    # Not parse_host_port: ":8700" (no host at all) is a wildcard too, said as such.
    host, sep, port = address.rpartition(":")
    return bool(sep) and port.isdigit() and names_no_host(host)


class ReplayGuard:
    """Admit each sender's datagrams once, in order, and only while fresh.

    Keyed by (role, id) like the peer table, but kept apart from it: a peer
    that expired from the table must not make its old datagrams new again.
    A sender's record is dropped once anything at or below it would be stale
    anyway, so the guard stays as small as the set of live senders. The clock
    (seconds since the epoch, the receiver's) is always passed in.
    """

    def __init__(self, max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW) -> None:
        if max_clock_skew <= 0:
            raise ValueError("max_clock_skew must be positive")
        self.max_clock_skew = max_clock_skew
        self._last: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (seq, accepted at)

    def admit(self, ann: Announcement, now: float) -> None:
        """Raise :class:`Rejected` unless ``ann`` is fresh and newer than its sender's last one."""
        if abs(now - ann.sent_at) > self.max_clock_skew:
            raise Rejected("stale", f"sent_at {ann.sent_at:.3f} is {now - ann.sent_at:+.1f}s from this clock")
        last = self._last.get(ann.key)
        if last is not None:
            if ann.seq == last[0]:
                raise Rejected("duplicate", f"seq {ann.seq}")
            if ann.seq < last[0]:
                raise Rejected("replayed", f"seq {ann.seq} after {last[0]}")
        self._last[ann.key] = (ann.seq, now)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        horizon = 2 * self.max_clock_skew  # a datagram accepted before this is refused as stale anyway
        old = [k for k, (_, at) in self._last.items() if now - at > horizon]
        for key in old:
            del self._last[key]


# ------------------------------------------------------------------- peer table


PeerEventKind = Literal["discovered", "updated", "expired"]


@dataclass(frozen=True)
class PeerEvent:
    """A change in what we know: a new peer, a changed address/term, a peer gone silent."""

    kind: PeerEventKind
    peer: Announcement
    previous: Announcement | None = None


@dataclass
class _Entry:
    ann: Announcement
    last_seen: float  # receiver's monotonic clock


class PeerTable:
    """The peers heard from, keyed by (role, id); the clock is always passed in."""

    def __init__(self, me: Announcement, expire_after: float) -> None:
        if expire_after <= 0:
            raise ValueError("expire_after must be positive")
        self.me = me
        self.expire_after = expire_after
        self._entries: dict[tuple[str, str], _Entry] = {}

    def is_self(self, ann: Announcement) -> bool:
        return ann.key == self.me.key

    def observe(self, ann: Announcement, now: float) -> PeerEvent | None:
        """Record one announcement; return the change it makes, if any.

        Announcements from self are ignored (see :meth:`is_self`), as are ones
        older (by the sender's ``sent_at``) than the last one accepted from
        that peer: UDP reorders, and a replayed old datagram must not roll an
        address or a term back.
        """
        if self.is_self(ann):
            return None
        entry = self._entries.get(ann.key)
        if entry is not None and now - entry.last_seen > self.expire_after:
            entry = None  # expired but not swept yet: a fresh start
        if entry is None:
            self._entries[ann.key] = _Entry(ann, now)
            return PeerEvent("discovered", ann)
        if ann.sent_at < entry.ann.sent_at:
            return None
        previous = entry.ann
        entry.ann, entry.last_seen = ann, now
        if (previous.address, previous.term) != (ann.address, ann.term):
            return PeerEvent("updated", ann, previous)
        return None

    def expire(self, now: float) -> list[PeerEvent]:
        """Forget the peers silent for longer than ``expire_after``."""
        gone = [k for k, e in self._entries.items() if now - e.last_seen > self.expire_after]
        return [PeerEvent("expired", self._entries.pop(k).ann) for k in gone]

    def next_expiry(self) -> float | None:
        """When (same clock as ``now``) the next peer expires if not heard again."""
        if not self._entries:
            return None
        return min(e.last_seen for e in self._entries.values()) + self.expire_after

    def last_seen(self, role: str, peer_id: str) -> float | None:
        entry = self._entries.get((role, peer_id))
        return entry.last_seen if entry else None

    def peers(self, now: float, role: NodeRole | str | None = None) -> dict[str, Announcement]:
        """Fresh peers by id (of one role, or all; on an id shared by a master
        and a slave, the master is listed)."""
        result: dict[str, Announcement] = {}
        for (r, peer_id), entry in sorted(self._entries.items(), key=lambda kv: kv[0][0] != "master"):
            if role is not None and r != str(role):
                continue
            if now - entry.last_seen <= self.expire_after:
                result.setdefault(peer_id, entry.ann)
        return result


# ----------------------------------------------------------- broadcast addresses


def broadcast_addresses_from_ip_json(interfaces: Iterable[dict[str, Any]]) -> list[str]:
    """The IPv4 broadcast addresses of the up, non-loopback interfaces in ``ip -j addr``."""
    found: list[str] = []
    for iface in interfaces:
        flags = set(iface.get("flags") or [])
        if "UP" not in flags or "LOOPBACK" in flags or "BROADCAST" not in flags:
            continue
        for info in iface.get("addr_info") or []:
            if info.get("family") != "inet":
                continue
            brd = info.get("broadcast")
            if not brd:
                try:
                    net = IPv4Interface(f"{info['local']}/{info['prefixlen']}").network
                except (KeyError, ValueError):
                    continue
                if net.prefixlen >= 31:
                    continue
                brd = str(net.broadcast_address)
            if brd not in found:
                found.append(brd)
    return found


def _from_ip_command() -> list[str] | None:
    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        out = subprocess.run([ip, "-j", "-4", "addr", "show"], capture_output=True, timeout=3, check=True).stdout
        return broadcast_addresses_from_ip_json(json.loads(out or b"[]"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _from_ioctls() -> list[str]:
    """Primary IPv4 broadcast address of each interface, via SIOCGIF* ioctls (Linux)."""
    try:
        import fcntl
    except ImportError:
        return []
    siocgifflags, siocgifbrdaddr = 0x8913, 0x8919
    iff_up, iff_broadcast, iff_loopback = 0x1, 0x2, 0x8
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            req = struct.pack("16s24x", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), siocgifflags, req), 16)[0]
                if not flags & iff_up or not flags & iff_broadcast or flags & iff_loopback:
                    continue
                res = fcntl.ioctl(s.fileno(), siocgifbrdaddr, req)
            except OSError:
                continue  # no IPv4 address on it
            brd = socket.inet_ntoa(res[20:24])
            if brd != "0.0.0.0" and brd not in found:
                found.append(brd)
    return found


def local_broadcast_addresses() -> list[str]:
    """Every interface's IPv4 broadcast address, then 255.255.255.255 (blocking; run in a thread)."""
    found = _from_ip_command()
    if found is None:
        found = _from_ioctls()
    return [*found, LIMITED_BROADCAST] if LIMITED_BROADCAST not in found else found


# ---------------------------------------------------------------------- asyncio


@dataclass
class _IgnoredLog:
    counts: dict[str, int] = field(default_factory=dict)
    logged_at: float | None = None
    last_source: str = ""
    last_detail: str = ""


class Discovery:
    """Announce ``me`` and learn the peers on a UDP broadcast port.

    Usage::

        d = Discovery(Announcement(id="1", role="master", address="10.0.0.5:8700", term=3),
                      secret=secret, on_change=lambda ev: ...)
        await d.start()
        d.peers("master")      # {"2": Announcement(...), ...}, fresh ones only, never self
        d.update(term=4)       # announced at once, then every interval
        await d.changed.wait(); d.changed.clear()
        await d.stop()

    Everything runs on the event loop that called :meth:`start`; call
    :meth:`update` and :meth:`peers` from that loop.
    """

    #: A summary of dropped datagrams is logged at most this often.
    IGNORED_LOG_EVERY = 60.0
    #: Interfaces are looked at again this often (when not given explicitly).
    REFRESH_INTERFACES_EVERY = 30.0

    def __init__(
        self,
        me: Announcement,
        port: int = DEFAULT_PORT,
        interval: float = 1.0,
        expire_after: float = 5.0,
        secret: str = "",
        broadcast_addresses: list[str] | None = None,
        bind_address: str = "",
        on_change: Callable[[PeerEvent], None] | None = None,
        logger: logging.Logger | None = None,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        if not secret:
            raise ValueError("discovery needs a cluster secret (--cluster-secret-file), or turn it off")
        if not 0 < port < 65536:
            raise ValueError(f"discovery port {port} out of range")
        if interval <= 0:
            raise ValueError("discovery interval must be positive")
        if expire_after <= interval:
            raise ValueError(f"expire_after ({expire_after}) must exceed the interval ({interval})")
        self.port = port
        self.interval = interval
        self.expire_after = expire_after
        self.bind_address = bind_address
        self._secret = secret
        self._key = mac_key(secret)
        self._replays = ReplayGuard(max_clock_skew)
        # Starts from the wall clock so that it keeps growing across a restart.
        self._seq = time.time_ns()
        self._fixed_targets = list(broadcast_addresses) if broadcast_addresses is not None else None
        self._targets: list[str] = list(self._fixed_targets or [])
        self._table = PeerTable(me, expire_after)
        self._on_change = on_change
        self._log = logger or log
        #: Set whenever a peer is discovered, updated or expired; callers clear it.
        self.changed = asyncio.Event()
        self.sent = 0
        self.received = 0
        self._ignored = _IgnoredLog()
        self._conflicts: set[str] = set()
        self._own_addresses: set[str] = {me.address}  # so a late datagram of ours is no conflict
        self._failing: dict[str, str] = {}  # target -> error, logged once until it recovers
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # -- public -------------------------------------------------------------

    @property
    def me(self) -> Announcement:
        return self._table.me

    @property
    def broadcast_targets(self) -> list[str]:
        return list(self._targets)

    @property
    def ignored(self) -> dict[str, int]:
        """Datagrams dropped so far, by reason."""
        return dict(self._ignored.counts)

    @property
    def running(self) -> bool:
        return self._task is not None

    def peers(self, role: NodeRole | str | None = None) -> dict[str, Announcement]:
        """Fresh peers (heard within ``expire_after``) by id; never self."""
        return self._table.peers(time.monotonic(), role)

    def update(self, *, term: int | None = None, address: str | None = None) -> None:
        """Change what is announced; a change is sent at once."""
        changes: dict[str, Any] = {}
        if term is not None and term != self.me.term:
            changes["term"] = term
        if address is not None and address != self.me.address:
            changes["address"] = address
        if not changes:
            return
        self._table.me = Announcement.model_validate({**self.me.model_dump(), **changes})
        self._own_addresses.add(self.me.address)
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        """Bind the port and start announcing (the first announcement goes out now)."""
        if self._task is not None:
            raise RuntimeError("discovery already started")
        self._loop = asyncio.get_running_loop()
        if self._fixed_targets is None:
            self._targets = await asyncio.to_thread(local_broadcast_addresses)
        self._sock = self._open_socket()
        self._wake = asyncio.Event()
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        log_event(
            self._log, "discovery.started", port=self.port, bind=self.bind_address or "*",
            targets=",".join(self._targets), cluster=self.me.cluster, role=str(self.me.role),
            id=self.me.id, address=self.me.address, auth="hmac",
        )
        self._send_announcement()
        self._task = asyncio.create_task(self._run(), name="claud-discovery")

    async def stop(self) -> None:
        """Stop announcing and listening (idempotent). Known peers are kept but go stale."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            log_event(self._log, "discovery.stopped", port=self.port, sent=self.sent, received=self.received)

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ----------------------------------------------------------

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            sock.bind((self.bind_address, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_send = loop.time() + self.interval
        next_refresh = loop.time() + self.REFRESH_INTERFACES_EVERY
        while True:
            timeout = next_send - loop.time()
            expiry = self._table.next_expiry()
            if expiry is not None:  # wake when a peer goes stale, so `changed` is prompt
                timeout = min(timeout, expiry - time.monotonic() + 0.001)
            await wait_set(self._wake, max(0.0, timeout))
            now = loop.time()
            if self._wake.is_set() or now >= next_send:
                self._wake.clear()
                self._send_announcement()
                next_send = now + self.interval
            for event in self._table.expire(time.monotonic()):
                self._emit(event)
            if self._fixed_targets is None and now >= next_refresh:
                next_refresh = now + self.REFRESH_INTERFACES_EVERY
                try:
                    targets = await asyncio.to_thread(local_broadcast_addresses)
                except Exception:  # noqa: BLE001 - never let a probe kill discovery
                    targets = self._targets
                if targets != self._targets:
                    log_event(self._log, "discovery.targets", targets=",".join(targets))
                    self._targets = targets

    def _send_announcement(self) -> None:
        if self._sock is None:
            return
        self._seq = max(self._seq + 1, time.time_ns())
        self._table.me = self.me.model_copy(update={"sent_at": round(time.time(), 3), "seq": self._seq})
        datagram = encode(self.me, self._secret)
        for target in self._targets:
            try:
                self._sock.sendto(datagram, (target, self.port))
            except BlockingIOError:
                continue  # buffer full: the next interval will do
            except OSError as exc:
                error = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                if self._failing.get(target) != error:
                    self._failing[target] = error
                    level = logging.DEBUG if target == LIMITED_BROADCAST else logging.WARNING
                    log_event(self._log, "discovery.send_failed", level, target=target, port=self.port, error=error)
                continue
            self.sent += 1
            if self._failing.pop(target, None) is not None:
                log_event(self._log, "discovery.send_recovered", target=target, port=self.port)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(256):  # drain, but let the loop breathe
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ICMP errors surfacing on the socket; nothing to do
            self.datagram_received(data, source[0])

    def datagram_received(self, data: bytes, source_ip: str) -> None:
        """Handle one datagram (called by the socket reader; tests call it directly)."""
        self.received += 1
        try:
            ann = _decode(data, self.me.cluster, self._key)
        except Rejected as exc:
            self._count_ignored(exc, source_ip)
            return
        if ann.key == self.me.key:
            if ann.address not in self._own_addresses and ann.address not in self._conflicts:
                self._conflicts.add(ann.address)
                log_event(
                    self._log, "discovery.id_conflict", logging.ERROR, role=str(ann.role), id=ann.id,
                    other_address=ann.address, source=source_ip, address=self.me.address,
                )
            return
        try:
            self._replays.admit(ann, time.time())
        except Rejected as exc:
            self._count_ignored(exc, source_ip)
            return
        event = self._table.observe(ann, time.monotonic())
        if event is not None:
            self._emit(event, source_ip)

    def _emit(self, event: PeerEvent, source_ip: str | None = None) -> None:
        peer, prev = event.peer, event.previous
        if event.kind == "discovered":
            log_event(self._log, "discovery.peer_discovered", role=str(peer.role), peer=peer.id,
                      address=peer.address, term=peer.term, source=source_ip)
        elif event.kind == "updated":
            log_event(self._log, "discovery.peer_updated", role=str(peer.role), peer=peer.id,
                      address=peer.address, term=peer.term,
                      previous_address=prev.address if prev and prev.address != peer.address else None,
                      previous_term=prev.term if prev and prev.term != peer.term else None)
        else:
            log_event(self._log, "discovery.peer_expired", role=str(peer.role), peer=peer.id,
                      address=peer.address, after=self.expire_after)
        self.changed.set()
        if self._on_change is not None:
            try:
                self._on_change(event)
            except Exception:  # noqa: BLE001 - a bad callback must not stop discovery
                self._log.exception("discovery on_change callback failed")

    def _count_ignored(self, exc: Rejected, source_ip: str) -> None:
        ig = self._ignored
        ig.counts[exc.reason] = ig.counts.get(exc.reason, 0) + 1
        if exc.reason == "duplicate":
            return  # one datagram per broadcast address: expected, not worth a line
        ig.last_source, ig.last_detail = source_ip, str(exc)
        now = time.monotonic()
        if ig.logged_at is None or now - ig.logged_at >= self.IGNORED_LOG_EVERY:
            ig.logged_at = now
            log_event(self._log, "discovery.ignored", logging.WARNING, last_source=source_ip,
                      last_reason=str(exc), **{f"total_{k}": v for k, v in sorted(ig.counts.items())})
