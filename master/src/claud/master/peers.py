"""Who the other masters are: id <-> address, self included.

The consensus core speaks of master ids; this maps them to HTTP addresses,
learnt from ``--peers`` (each asked for its id, see
:meth:`claud.master.transport.HttpTransport.resolve_peers`) and from UDP
discovery. Whoever must follow the membership (the replicated log, which
hands the core its peer set) watches it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from claud.daemon.logfmt import log_event

log = logging.getLogger("claud.master.peers")


class MasterDirectory:
    """id <-> address of every master known, self included."""

    def __init__(self, self_id: int, self_address: str) -> None:
        self.self_id = self_id
        self._addresses: dict[int, str] = {self_id: self_address}
        self._watchers: list[Callable[[], None]] = []

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever a master is learnt or moves."""
        self._watchers.append(on_change)

    def learn(self, master_id: int, address: str) -> None:
        if self._addresses.get(master_id) != address:
            known = master_id in self._addresses
            self._addresses[master_id] = address
            log_event(log, "peer.updated" if known else "peer.discovered", master=master_id, address=address)
            for on_change in self._watchers:
                on_change()

    def address(self, master_id: int | None) -> str | None:
        return None if master_id is None else self._addresses.get(master_id)

    def peer_ids(self) -> list[int]:
        return [i for i in sorted(self._addresses) if i != self.self_id]

    def items(self) -> list[tuple[int, str]]:
        return sorted(self._addresses.items())
