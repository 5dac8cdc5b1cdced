"""host:port handling shared by every CLAUD process."""

from __future__ import annotations

import ipaddress
import re
import socket

#: Hosts that name every interface of a listener and no host at all to a peer.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})

# A host is a bracketed IPv6 address or one word without space, colon or slash
# (so no path, no second port, no unbracketed IPv6); the port is ASCII digits.
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/]+):(?P<port>[0-9]{1,5})")


def names_no_host(host: str) -> bool:
    """Is ``host`` a wildcard: every interface to a listener, no host at all to a peer?

    Beyond the spellings of WILDCARD_HOSTS, every form of the unspecified
    address counts (``::0``, ``0:0::``, ``::ffff:0.0.0.0``, and the shorthands
    the resolver reads as 0.0.0.0: ``0``, ``0x0``, ``0.0``): connecting to any
    of them reaches whatever listens on the connecting machine, not the peer.
    """
    host = host.strip().strip("[]")
    if host in WILDCARD_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        try:
            return socket.inet_aton(host) == bytes(4)
        except OSError:
            return False  # a name: concrete as far as this check can tell
    if address.is_unspecified:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and mapped.is_unspecified


def parse_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) -> (host without brackets, port); ValueError naming the problem.

    Every host:port a master, a slave or discovery reads goes through here.
    """
    match = _HOST_PORT.fullmatch(address.strip())
    if not match:
        raise ValueError(f"{address!r} is not host:port")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} in {address!r} is out of range 1-65535")
    return match["host"].strip("[]"), port


def outgoing_address(listen: str) -> str | None:
    """Connect from the listen address when it is one of loopback's many addresses.

    Processes on one machine then talk from distinct addresses (127.0.0.11,
    127.0.0.12, ...), so a firewall rule can cut one off from another, as
    tests and demos of partitions do. Any other listen address connects from
    wherever the kernel routes.
    """
    try:
        host = parse_host_port(listen)[0]
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return host if address.is_loopback and address.version == 4 else None
