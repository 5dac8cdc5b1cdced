"""The masters' internal protocol, both ends of each message in one place.

Three exchanges travel between masters, each over ``/v1/internal/*``
(:mod:`claud.api.protocol` names the paths and headers) and the one client of
:mod:`claud.master.peer_http`:

- consensus messages (``RAFT_PATH``): a batch one way, answered 204, lossy
  (Raft resends); :class:`PeerLink` sends, :func:`decode_raft_batch` reads;
- forwarded writes (``PROPOSE_PATH``): a follower's batch of operations,
  answered per operation with an outcome or a typed refusal;
  :meth:`HttpTransport.forward` sends and parses, :func:`answer_proposals`
  decodes and answers;
- ``WHOAMI_PATH``: how a ``--peers`` address tells its id;
  :meth:`HttpTransport.resolve_peers` asks, :func:`whoami` answers;
- snapshots (``SNAPSHOT_CHUNK_PATH``): an ``InstallSnapshot`` the core emits
  is not put in a batch but streamed in chunks by
  :class:`~claud.master.snapshot_stream.SnapshotSenders`, and assembled by
  the follower's :class:`~claud.master.snapshot_stream.SnapshotReceiver`.

The typed outcomes a write may end in besides an :class:`Outcome` are defined
here too, each with the wire code it travels (and is rendered) as, so the
follower raises exactly what the leader raised. The HTTP routes only hand
bodies to these functions; the replicated log talks to a
:class:`MasterTransport`, which a unit test replaces with one in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from claud.api.protocol import MEMBERS_PATH, PROPOSE_PATH, RAFT_PATH, WHOAMI_PATH
from claud.daemon.logfmt import log_event
from claud.master import ops, strict_json
from claud.master.auth import cluster_secret_headers
from claud.master.peer_http import PeerConnection, PeerHttpError, refuses
from claud.master.peers import MasterDirectory
from claud.master.raft_config import ChangeKind, ConfChange, ConfChangeRefused
from claud.master.raft_messages import InstallSnapshot, Message, message_from_dict, message_to_dict
from claud.master.snapshot_stream import CHUNK_BYTES, SnapshotSenders, SnapshotSource
from claud.master.state import Outcome

if TYPE_CHECKING:
    from claud.master.replication import ReplicatedLog

log = logging.getLogger("claud.master.transport")

#: Messages queued for one peer beyond this are dropped (Raft tolerates loss).
LINK_QUEUE_LIMIT = 20_000
#: A message batch to a peer must be answered this fast, or it is dropped.
SEND_TIMEOUT = 1.0
#: How long a ``--peers`` address has to tell its id.
WHOAMI_TIMEOUT = 1.0
#: How often unresolved --peers addresses are asked for their id; resolved ones are checked slowly.
RESOLVE_INTERVAL = 0.5
RESOLVED_CHECK_INTERVAL = 5.0
#: A link logs its peer unreachable again after this long, while it stays so.
UNREACHABLE_LOG_EVERY = 30.0
#: After a failed batch a link waits this long: the core resends on its own schedule.
LINK_BACKOFF = 0.05
#: The default for how long a probe of a peer that hung up may take (--peer-gone-probe-timeout).
PEER_GONE_PROBE_TIMEOUT = 0.5


# ------------------------------------------------------------ typed outcomes


class NotLeader(Exception):
    """This master cannot serve a leader-only request; says who can (HTTP 421)."""

    def __init__(self, leader_id: int | None, leader_address: str | None) -> None:
        super().__init__(f"not the leader; leader is {leader_id}")
        self.leader_id, self.leader_address = leader_id, leader_address


class LeaderUnavailable(Exception):
    """No leader is known, or it cannot be reached: the write may be retried (503 ``no_leader``)."""

    code = "no_leader"


class NotCommitted(Exception):
    """The entry was overwritten by another leader's: it did not and will not commit."""

    code = "not_committed"


class OutcomeUnknown(Exception):
    """The write may or may not commit: it timed out after the leader took it, or
    a snapshot superseded it. Retrying with the same idempotency key is safe."""

    code = "outcome_unknown"


#: A forwarded write's refusal, by the code it travels as.
REFUSALS: dict[str, type[Exception]] = {cls.code: cls for cls in (LeaderUnavailable, NotCommitted, OutcomeUnknown)}


class MalformedRequest(ValueError):
    """An internal request body that is not what its route takes (HTTP 400 with ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------ consensus messages


def encode_raft_batch(messages: list[dict[str, Any]]) -> bytes:
    """Messages already in their JSON form (:func:`claud.master.raft_messages.message_to_dict`)."""
    return json.dumps({"messages": messages}).encode()


def decode_raft_batch(body: bytes) -> list[Message]:
    """The messages of a ``RAFT_PATH`` body; MalformedRequest (nothing taken) if any is malformed."""
    try:
        return [message_from_dict(raw) for raw in strict_json.loads(body)["messages"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedRequest("malformed_message", f"not a batch of consensus messages: {exc}") from None


# ------------------------------------------------------------ forwarded writes


def encode_proposals(batch: list[ops.Operation]) -> bytes:
    """Each write as its entry, a JSON string: the leader validates it once and logs those very
    bytes, instead of validating an object, encoding it and checking the encoding again."""
    return json.dumps({"entries": [ops.encode(op) for op in batch]}).encode()


def decode_proposals(body: bytes) -> list[ops.Encoded]:
    """The writes of a ``PROPOSE_PATH`` body, each checked to decode; MalformedRequest if any does not.
    ``{"ops": [operation, ...]}`` is what a master of an earlier version forwards."""
    try:
        batch = strict_json.loads(body)
        if "entries" in batch:
            entries = batch["entries"]
            if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
                raise TypeError("entries must be a list of strings")
            return [ops.decode_entry(entry) for entry in entries]
        return [ops.encode_checked(ops.operation_adapter.validate_python(raw)) for raw in batch["ops"]]
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError included
        raise MalformedRequest("malformed_operation", f"not a batch of operations: {exc}") from None


def outcome_to_dict(outcome: Outcome) -> dict[str, Any]:
    return {"ok": outcome.ok, "value": outcome.value, "code": outcome.code, "message": outcome.message}


def outcome_from_dict(data: dict[str, Any]) -> Outcome:
    value = data.get("value")
    return Outcome(ok=data["ok"], value=tuple(value) if isinstance(value, list) else value,
                   code=data.get("code", ""), message=data.get("message", ""))


async def answer_proposals(replicated: ReplicatedLog, body: bytes) -> dict[str, Any]:
    """The leader's end of ``PROPOSE_PATH``: each write answered once committed, like a direct one.

    Raises MalformedRequest for a body that is not a batch of operations and
    NotLeader on a follower; any other exception of a write is a bug (500)."""
    batch = decode_proposals(body)
    if not replicated.is_leader:
        raise NotLeader(replicated.leader_id, replicated.leader_address)
    results: list[dict[str, Any]] = []
    for result in await asyncio.gather(*(replicated.propose_local(op) for op in batch), return_exceptions=True):
        if isinstance(result, Outcome):
            results.append(outcome_to_dict(result))
        elif isinstance(result, LeaderUnavailable | NotCommitted | OutcomeUnknown):
            results.append({"error": {"code": result.code, "message": str(result)}})
        else:
            raise result
    return {"results": results, "index": replicated.commit_index}


def parse_proposal_answer(
    leader_id: int, status: int, body: bytes, expected: int
) -> tuple[list[Outcome | Exception], int]:
    """The follower's end of ``PROPOSE_PATH``: an outcome or a refusal per write, and the index to wait for.

    An answer other than 200 refuses the whole batch (LeaderUnavailable): the
    leader said it took none of it."""
    try:
        answer = json.loads(body)
        if status == 200:
            raw_results, index = list(answer["results"]), answer["index"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise TypeError(f"index {index!r} is not an integer")
        else:
            message = answer["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace")
    else:
        if status == 200:
            results = [_result(raw) for raw in raw_results[:expected]]
            # A leader that answered fewer results than writes took the batch: their fate is unknown.
            results += [OutcomeUnknown(f"leader {leader_id} did not answer for this write")] * (expected - len(results))
            return results, index
    raise LeaderUnavailable(f"leader {leader_id} answered {status}: {message}")


def _result(raw: Any) -> Outcome | Exception:
    try:
        error = raw.get("error")
        if error is None:
            return outcome_from_dict(raw)
        refusal = REFUSALS.get(error.get("code"), LeaderUnavailable)
        return refusal(error.get("message", "the leader refused"))
    except (AttributeError, KeyError, TypeError) as exc:
        return OutcomeUnknown(f"the leader's answer for this write is malformed: {exc!r}")


# ------------------------------------------------------------ forwarded configuration changes

#: How a refused configuration change travels, and the status it is answered with.
CONF_CHANGE_STATUS = {"not_leader": 503, "in_flight": 409, "already_member": 409, "unknown_member": 404,
                      "invalid": 422}


def encode_conf_change(change: ConfChange) -> bytes:
    return json.dumps({"kind": change.kind.value, "id": change.id, "address": change.address}).encode()


def decode_conf_change(body: bytes) -> ConfChange:
    try:
        raw = strict_json.loads(body)
        member_id, address = raw["id"], raw["address"]
        if isinstance(member_id, bool) or not isinstance(member_id, int) or not isinstance(address, str):
            raise TypeError("id must be an integer and address a string")
        return ConfChange(ChangeKind(raw["kind"]), member_id, address)
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedRequest("malformed_change", f"not a configuration change: {exc}") from None


async def answer_conf_change(replicated: ReplicatedLog, body: bytes) -> tuple[int, dict[str, Any]]:
    """The leader's end of ``MEMBERS_PATH``: the index the change committed at, or its refusal."""
    change = decode_conf_change(body)
    if not replicated.is_leader:
        raise NotLeader(replicated.leader_id, replicated.leader_address)
    try:
        index = await replicated.change_membership(change)
    except ConfChangeRefused as exc:
        return CONF_CHANGE_STATUS[exc.reason], {"error": {"code": exc.reason, "message": str(exc)}}
    return 200, {"index": index}


def parse_conf_change_answer(leader_id: int, status: int, body: bytes) -> int:
    """The follower's end of ``MEMBERS_PATH``: the index, ConfChangeRefused, or LeaderUnavailable."""
    try:
        answer = json.loads(body)
        if status == 200:
            return int(answer["index"])
        code, message = answer["error"]["code"], answer["error"]["message"]
    except (ValueError, KeyError, TypeError):
        raise LeaderUnavailable(f"leader {leader_id} answered {status}: {body[:200]!r}") from None
    if code in CONF_CHANGE_STATUS:
        raise ConfChangeRefused(code, message)
    if code == OutcomeUnknown.code:
        raise OutcomeUnknown(message)
    raise LeaderUnavailable(f"leader {leader_id} answered {status}: {message}")


# ------------------------------------------------------------ whoami


def whoami(master_id: int, address: str, term: int, leader_id: int | None) -> dict[str, Any]:
    return {"id": master_id, "address": address, "term": term, "leader_id": leader_id}


def parse_whoami(body: bytes) -> int:
    """The id in a ``WHOAMI_PATH`` answer; ValueError if there is none."""
    try:
        return int(json.loads(body)["id"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a whoami answer: {exc!r}") from None


# ------------------------------------------------------------ the client end


class MasterTransport(Protocol):
    """What the replicated log needs from the network: the client end of the internal routes."""

    def send(self, message: Message) -> None:
        """Queue one consensus message for its destination; lossy, never blocks."""

    def reachable(self, peer_id: int) -> bool:
        """Whether the last batch sent to ``peer_id`` was answered."""

    async def forward(
        self, leader_id: int, batch: list[ops.Operation], timeout: float,  # noqa: ASYNC109 - the request's own budget
    ) -> tuple[list[Outcome | Exception], int]:
        """Send writes to the leader in one request: an outcome or refusal each, and the leader's commit index."""

    async def forward_conf_change(
        self, leader_id: int, change: ConfChange, timeout: float,  # noqa: ASYNC109 - the request's own budget
    ) -> int:
        """Ask the leader to make a configuration change: the index it committed at."""

    async def resolve_peers(self, addresses: list[str]) -> None:
        """Learn the ids of ``addresses`` into the directory; runs until cancelled."""

    async def close(self) -> None: ...


class HttpTransport:
    """:class:`MasterTransport` over :class:`~claud.master.peer_http.PeerConnection`.

    One link (one connection) per peer for consensus messages, so a slow or
    frozen peer never delays the others; a small pool of connections to the
    leader for forwarded writes, one per request in flight; a connection per
    snapshot transfer, so heartbeats never wait behind a snapshot.
    ``snapshot_source`` reads the stored snapshot (``LogStore.snapshot_blob``),
    which is what a transfer streams.

    ``on_peer_gone``, when set, is told a peer's id once its port refuses
    connections (see :class:`PeerLink`): the consensus core's hint that its
    leader may be gone, which is all it is ever used for."""

    on_peer_gone: Callable[[int], None] | None = None

    def __init__(
        self, directory: MasterDirectory, local_address: str | None, secret: str | None,
        tls: ssl.SSLContext | None = None, identity: Callable[[], dict[str, str]] | None = None,
        snapshot_source: SnapshotSource | None = None, snapshot_chunk_bytes: int = CHUNK_BYTES,
        peer_gone_probe_timeout: float = PEER_GONE_PROBE_TIMEOUT,
    ) -> None:
        """``identity`` gives the headers naming this master on each request (claud.master.identity)."""
        self._directory = directory
        self._probe_timeout = peer_gone_probe_timeout
        self._identity = identity or dict
        self._local_address, self._headers, self._tls = local_address, cluster_secret_headers(secret), tls
        self._links: dict[int, PeerLink] = {}
        #: Idle connections to the leader for forwarding.
        self._forward_connections: list[PeerConnection] = []
        self.snapshots = SnapshotSenders(
            directory, self.new_connection, snapshot_source, snapshot_chunk_bytes, self._identity
        )

    def new_connection(self) -> PeerConnection:
        """A connection of this master's (its local address, TLS and cluster secret), for any exchange with a peer."""
        return PeerConnection(self._local_address, self._headers, self._tls)

    def send(self, message: Message) -> None:
        if isinstance(message, InstallSnapshot):
            self.snapshots.send(message)
            return
        link = self._links.get(message.dst)
        if link is None:
            link = self._links[message.dst] = PeerLink(
                self._directory, message.dst, self.new_connection(), self._identity,
                on_gone=self._peer_gone, probe_timeout=self._probe_timeout, local_address=self._local_address,
            )
        link.send(message_to_dict(message))

    def reachable(self, peer_id: int) -> bool:
        link = self._links.get(peer_id)
        return link.reachable if link else False

    def _peer_gone(self, peer_id: int) -> None:
        if self.on_peer_gone is not None:
            self.on_peer_gone(peer_id)

    async def forward(
        self, leader_id: int, batch: list[ops.Operation], timeout: float,  # noqa: ASYNC109 - the request's own budget
    ) -> tuple[list[Outcome | Exception], int]:
        address = self._directory.address(leader_id)
        if address is None or leader_id == self._directory.self_id:
            raise LeaderUnavailable("no leader elected")
        connection = self._forward_connections.pop() if self._forward_connections else self.new_connection()
        try:
            resp = await connection.post(address, PROPOSE_PATH, encode_proposals(batch), timeout, self._identity())
        except PeerHttpError as exc:
            if exc.sent:  # the leader may have taken the batch before the answer was lost
                raise OutcomeUnknown(f"no answer from leader {leader_id} after forwarding: {exc}") from None
            raise LeaderUnavailable(f"leader {leader_id} unreachable: {exc}") from None
        finally:
            self._forward_connections.append(connection)
        return parse_proposal_answer(leader_id, resp.status, resp.body, len(batch))

    async def forward_conf_change(
        self, leader_id: int, change: ConfChange, timeout: float,  # noqa: ASYNC109 - the request's own budget
    ) -> int:
        address = self._directory.address(leader_id)
        if address is None or leader_id == self._directory.self_id:
            raise LeaderUnavailable("no leader elected")
        connection = self.new_connection()
        try:
            resp = await connection.post(
                address, MEMBERS_PATH, encode_conf_change(change), timeout, self._identity()
            )
        except PeerHttpError as exc:
            if exc.sent:
                raise OutcomeUnknown(f"no answer from leader {leader_id} about the change: {exc}") from None
            raise LeaderUnavailable(f"leader {leader_id} unreachable: {exc}") from None
        finally:
            connection.close()
        return parse_conf_change_answer(leader_id, resp.status, resp.body)

    async def resolve_peers(self, addresses: list[str]) -> None:
        """Ask each ``--peers`` address for its id until every one has answered, then keep checking slowly."""
        connection = self.new_connection()
        try:
            while True:
                unresolved = set(addresses) - {addr for _, addr in self._directory.items()}
                for address in sorted(unresolved):
                    try:
                        resp = await connection.get(address, WHOAMI_PATH, WHOAMI_TIMEOUT)
                        if resp.status == 200:
                            self._directory.learn(parse_whoami(resp.body), address)
                    except (PeerHttpError, ValueError):
                        pass
                await asyncio.sleep(RESOLVE_INTERVAL if unresolved else RESOLVED_CHECK_INTERVAL)
        finally:
            connection.close()

    async def close(self) -> None:
        await self.snapshots.close()
        await asyncio.gather(*(link.close() for link in self._links.values()))
        for connection in self._forward_connections:
            connection.close()


class PeerLink:
    """An ordered, batching, lossy message pipe to one peer.

    It also notices the peer's process going away, without a timeout: when the
    peer hangs up its connection (a killed process's kernel closes or resets
    it at once), one probe connection follows, and only a refusal (nothing
    listens on the port) reports the peer gone, through ``on_gone``, as does
    a refused reconnection. A paused or partitioned peer never refuses (its
    kernel still accepts, or packets are dropped), so it is never reported.
    One report per outage: the next answered batch re-arms it."""

    def __init__(
        self, directory: MasterDirectory, peer_id: int, connection: PeerConnection,
        identity: Callable[[], dict[str, str]] = dict, *, on_gone: Callable[[int], None] | None = None,
        probe_timeout: float = PEER_GONE_PROBE_TIMEOUT, local_address: str | None = None,
    ) -> None:
        self._directory, self.peer_id = directory, peer_id
        self._identity = identity
        self._connection = connection
        self._on_gone, self._probe_timeout, self._local_address = on_gone, probe_timeout, local_address
        self._gone_reported = False
        self._probe: asyncio.Task[None] | None = None
        if on_gone is not None:
            connection.on_lost = self._hung_up
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
        tasks = [t for t in (self._task, self._probe) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._connection.close()

    def _hung_up(self) -> None:
        address = self._directory.address(self.peer_id)
        if self._gone_reported or address is None or (self._probe is not None and not self._probe.done()):
            return
        self._probe = asyncio.create_task(self._probe_peer(address), name=f"peer-probe-{self.peer_id}")

    async def _probe_peer(self, address: str) -> None:
        if await refuses(address, self._probe_timeout, self._local_address):
            self._report_gone(address)

    def _report_gone(self, address: str) -> None:
        if self._gone_reported or self._on_gone is None:
            return
        self._gone_reported = True
        log_event(log, "peer.gone", logging.WARNING, master=self.peer_id, address=address,
                  reason="its port refuses connections")
        self._on_gone(self.peer_id)

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
                        address, RAFT_PATH, encode_raft_batch(batch), SEND_TIMEOUT, self._identity()
                    )
                    if resp.status >= 300:
                        raise PeerHttpError(f"answered {resp.status}: {resp.body[:200]!r}", sent=True)
                    if not self.reachable:
                        log_event(log, "peer.reachable", master=self.peer_id, address=address)
                    self.reachable = True
                    self._gone_reported = False
                except PeerHttpError as exc:
                    if exc.refused:
                        self._report_gone(address)
                    now = time.monotonic()
                    if self.reachable or now - self._last_error_log > UNREACHABLE_LOG_EVERY:
                        log_event(log, "peer.unreachable", logging.WARNING, master=self.peer_id, address=address,
                                  error=str(exc))
                        self._last_error_log = now
                    self.reachable = False
                    await asyncio.sleep(LINK_BACKOFF)
