"""Who the other masters are and how to reach them.

The consensus core speaks of master ids; this module maps ids to HTTP
addresses (from ``--peers``, asked for their id, and from UDP discovery) and
carries messages to each peer over its own link, so a slow or frozen peer
never delays the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from claud.daemon.logfmt import log_event
from claud.master.auth import cluster_secret_headers
from claud.master.peer_http import PeerConnection, PeerHttpError

log = logging.getLogger("claud.master.peers")

#: Messages queued for one peer beyond this are dropped (Raft tolerates loss).
LINK_QUEUE_LIMIT = 20_000
#: A message batch to a peer must be answered this fast, or it is dropped.
SEND_TIMEOUT = 1.0
#: How often unresolved --peers addresses are asked for their id.
RESOLVE_INTERVAL = 0.5


class MasterDirectory:
    """id <-> address of every master known, self included."""

    def __init__(self, self_id: int, self_address: str, on_change: Callable[[], None]) -> None:
        self.self_id = self_id
        self._addresses: dict[int, str] = {self_id: self_address}
        self._on_change = on_change

    def learn(self, master_id: int, address: str) -> None:
        if self._addresses.get(master_id) != address:
            known = master_id in self._addresses
            self._addresses[master_id] = address
            log_event(log, "peer.updated" if known else "peer.discovered", master=master_id, address=address)
            self._on_change()

    def address(self, master_id: int | None) -> str | None:
        return None if master_id is None else self._addresses.get(master_id)

    def ids(self) -> list[int]:
        return sorted(self._addresses)

    def peer_ids(self) -> list[int]:
        return [i for i in sorted(self._addresses) if i != self.self_id]

    def items(self) -> list[tuple[int, str]]:
        return sorted(self._addresses.items())


class PeerLink:
    """An ordered, batching, lossy message pipe to one peer."""

    def __init__(
        self, directory: MasterDirectory, peer_id: int, local_address: str | None, secret: str | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._directory, self.peer_id = directory, peer_id
        self._connection = PeerConnection(local_address, cluster_secret_headers(secret), tls)
        self._queue: list[dict[str, Any]] = []
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"peer-link-{peer_id}")
        self.reachable = True
        self._last_error_log = 0.0

    def send(self, message: dict[str, Any]) -> None:
        self._queue.append(message)
        if len(self._queue) > LINK_QUEUE_LIMIT:
            del self._queue[: len(self._queue) - LINK_QUEUE_LIMIT]
        self._wakeup.set()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._connection.close()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                address = self._directory.address(self.peer_id)
                if address is None:
                    break
                try:
                    resp = await self._connection.post(
                        address, "/v1/internal/raft", json.dumps({"messages": batch}).encode(), SEND_TIMEOUT
                    )
                    if resp.status >= 300:
                        raise PeerHttpError(f"answered {resp.status}: {resp.body[:200]!r}", sent=True)
                    if not self.reachable:
                        log_event(log, "peer.reachable", master=self.peer_id, address=address)
                    self.reachable = True
                except PeerHttpError as exc:
                    now = time.monotonic()
                    if self.reachable or now - self._last_error_log > 30:
                        log_event(log, "peer.unreachable", logging.WARNING, master=self.peer_id, address=address, error=str(exc))
                        self._last_error_log = now
                    self.reachable = False
                    # Back off a little: the core resends on its own schedule.
                    await asyncio.sleep(0.05)


async def resolve_peer_ids(
    http: httpx.AsyncClient, scheme: str, addresses: list[str], directory: MasterDirectory, secret: str | None
) -> None:
    """Ask each ``--peers`` address for its id until every one has answered, then keep checking slowly."""
    headers = cluster_secret_headers(secret)
    while True:
        unresolved = set(addresses) - {addr for _, addr in directory.items()}
        for address in sorted(unresolved):
            try:
                resp = await http.get(f"{scheme}://{address}/v1/internal/whoami", headers=headers, timeout=1.0)
                if resp.status_code == 200:
                    directory.learn(int(resp.json()["id"]), address)
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                pass
        await asyncio.sleep(RESOLVE_INTERVAL if unresolved else 5.0)
