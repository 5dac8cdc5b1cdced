"""The operator's view of the cluster configuration, and its changes.

The decision here is how the operator API speaks of membership: the
configuration in this master's log as :class:`claud.api.MemberList` (match
indexes known on the leader only), a change made on the leader or forwarded
to it from a follower, and each refusal of the core as an HTTP error with a
stable code: 409 while another change is in flight or the id is taken, 404 for
an id that is no member, 422 for an address that names no reachable host, 503
without a leader. The rules of a change are :mod:`claud.master.raft_config`'s.
"""

from __future__ import annotations

from claud.api import MemberList, MemberRole, MemberView
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.api_errors import ApiError
from claud.master.raft_config import ConfChange, ConfChangeRefused
from claud.master.replication import ReplicatedLog
from claud.master.transport import CONF_CHANGE_STATUS, LeaderUnavailable, MasterTransport

__all__ = ["change_members", "check_member_address", "member_list", "refusal"]

#: The error codes of a refused change, as the API answers them.
_CODES = {"in_flight": "conflict", "already_member": "conflict", "unknown_member": "not_found",
          "invalid": "invalid_spec", "not_leader": "no_leader"}


def member_list(replicated: ReplicatedLog, member_ids: dict[int, str] | None = None) -> MemberList:
    """The configuration in use on this master; before bootstrap, no members."""
    configuration = replicated.configuration
    if configuration is None:
        return MemberList(cluster_id=None, configuration_index=0, members=[])
    matches = replicated.match_indexes()
    known = member_ids or {}
    return MemberList(
        cluster_id=configuration.cluster_id,
        configuration_index=replicated.core.configuration_index,
        members=[
            MemberView(
                id=m.id,
                address=m.address,
                role=MemberRole.VOTER if m.voter else MemberRole.LEARNER,
                match_index=matches.get(m.id),
                member_id=known.get(m.id),
            )
            for m in configuration.members
        ],
    )


def check_member_address(address: str) -> None:
    """A member's address is where every master will send it the log: host:port naming a host."""
    try:
        host, _ = parse_host_port(address)
    except ValueError as exc:
        raise ApiError(422, "invalid_spec", f"address: {exc}", "address") from None
    if names_no_host(host):
        raise ApiError(422, "invalid_spec", f"address: {address[:80]!r} names no host the masters can reach",
                       "address")


async def change_members(
    replicated: ReplicatedLog, transport: MasterTransport, change: ConfChange, timeout: float  # noqa: ASYNC109
) -> int:
    """Make ``change`` on the leader (from here, or forwarded); the index it committed at."""
    if replicated.is_leader:
        return await replicated.change_membership(change)
    leader_id = replicated.leader_id
    if leader_id is None:
        raise LeaderUnavailable("no leader elected")
    return await transport.forward_conf_change(leader_id, change, timeout)


def refusal(exc: ConfChangeRefused) -> ApiError:
    status = CONF_CHANGE_STATUS[exc.reason]
    field = None
    if exc.reason == "invalid":
        field = "address" if "address" in str(exc) else "id"
    headers = {"Retry-After": "1"} if status in (409, 503) else None
    return ApiError(status, _CODES[exc.reason], str(exc), field, headers)
