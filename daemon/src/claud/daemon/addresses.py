"""host:port handling shared by every CLAUD process."""

from __future__ import annotations

import ipaddress
import re

#: Hosts that name every interface of a listener and no host at all to a peer.
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "*"})

# A host is a bracketed IPv6 address or one word without space, colon or slash
# (so no path, no second port, no unbracketed IPv6); the port is ASCII digits.
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/]+):(?P<port>[0-9]{1,5})")


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
