"""A master with no sockets: its parts for unit tests that drive one in memory.

:class:`LoneTransport` stands in for the HTTP transport of a one-master
cluster, where the core never sends a message and nothing is forwarded;
:func:`memory_master` wires a :class:`~claud.master.master.Master` from it, a
store in a temporary directory and an HTTP client that answers nothing.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from claud.master import ops
from claud.master.auth import Credentials
from claud.master.identity import Identity
from claud.master.master import Master, replicated_log
from claud.master.peers import MasterDirectory
from claud.master.raft_config import ConfChange
from claud.master.raft_messages import Message
from claud.master.recovery import recover_as_one_member_cluster
from claud.master.settings import MasterSettings
from claud.master.state import Outcome
from claud.master.storage import LogStore
from claud.master.transport import LeaderUnavailable

ADDRESS = "127.0.0.1:18700"


class LoneTransport:
    """The transport of a master without peers: what would be sent is kept, forwarding finds no leader."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.closed = False

    def send(self, message: Message) -> None:
        self.sent.append(message)

    def reachable(self, peer_id: int) -> bool:
        return False

    async def forward(
        self, leader_id: int, batch: list[ops.Operation], timeout: float
    ) -> tuple[list[Outcome | Exception], int]:
        raise LeaderUnavailable("a lone master forwards nothing")

    async def forward_conf_change(self, leader_id: int, change: ConfChange, timeout: float) -> int:
        raise LeaderUnavailable("a lone master forwards nothing")

    async def resolve_peers(self, addresses: list[str]) -> None:
        raise AssertionError("a lone master has no --peers to resolve")

    async def close(self) -> None:
        self.closed = True


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError(f"no slaves in memory: {request.url}")


def memory_master(data_dir: Path, **settings: object) -> tuple[Master, LoneTransport]:
    """A one-master cluster whose disk is a SQLite file under ``data_dir`` and whose network is in memory."""
    config = MasterSettings(id=1, listen=ADDRESS, data_dir=data_dir, no_discovery=True, **settings)  # type: ignore[arg-type]
    store = LogStore(data_dir / "claud.db")
    if config.recover_from_data_dir:  # as build_master does
        recover_as_one_member_cluster(store, config.id, config.advertised_address)
    directory = MasterDirectory(config.id, config.advertised_address)
    transport = LoneTransport()
    replicated = replicated_log(config, store, directory, transport)
    credentials = Credentials("test-token", data_dir / "token", "test-secret", data_dir / "cluster-secret")
    master = Master(
        config, credentials=credentials, store=store, directory=directory, replicated=replicated,
        transport=transport, slave_http=httpx.AsyncClient(transport=httpx.MockTransport(_refuse)),
        identity=Identity(config.id, store),
    )
    return master, transport
