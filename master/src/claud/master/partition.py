"""A partitioned master's network: ``claud chaos partition`` (``--demo-faults`` only).

The other half of a partition is :class:`claud.daemon.faults.FaultMiddleware`,
which answers the peers' requests 503 ``partitioned``; this one keeps the
master from reaching them.
"""

from __future__ import annotations

from claud.daemon.faults import Faults
from claud.master import ops
from claud.master.raft_config import ConfChange
from claud.master.raft_messages import Message
from claud.master.state import Outcome
from claud.master.transport import LeaderUnavailable, MasterTransport


class PartitionedTransport:
    """A :class:`~claud.master.transport.MasterTransport` that is cut off while
    this master is partitioned: consensus messages are dropped (Raft takes them
    for lost), forwarded writes and configuration changes fail at once as if no
    leader answered, and no peer counts as reachable."""

    def __init__(self, inner: MasterTransport, faults: Faults) -> None:
        self._inner, self._faults = inner, faults

    def _refuse(self) -> None:
        if self._faults.partitioned:
            raise LeaderUnavailable("this master is partitioned from its peers (claud chaos partition)")

    def send(self, message: Message) -> None:
        if not self._faults.partitioned:
            self._inner.send(message)

    def reachable(self, peer_id: int) -> bool:
        return not self._faults.partitioned and self._inner.reachable(peer_id)

    async def forward(
        self, leader_id: int, batch: list[ops.Operation], timeout: float,  # noqa: ASYNC109 - as MasterTransport
    ) -> tuple[list[Outcome | Exception], int]:
        self._refuse()
        return await self._inner.forward(leader_id, batch, timeout)

    async def forward_conf_change(
        self, leader_id: int, change: ConfChange, timeout: float,  # noqa: ASYNC109 - as MasterTransport
    ) -> int:
        self._refuse()
        return await self._inner.forward_conf_change(leader_id, change, timeout)

    async def resolve_peers(self, addresses: list[str]) -> None:
        await self._inner.resolve_peers(addresses)

    async def close(self) -> None:
        await self._inner.close()
