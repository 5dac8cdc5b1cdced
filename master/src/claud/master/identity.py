"""Who may speak to this master as a master: cluster id and member id.

The decision here is which master-to-master requests are refused before they
reach the consensus core. Every such request names its sender (master id),
the sender's cluster (the id made when the cluster bootstrapped, "" before it
has a configuration) and the sender's data directory (a member id made with
that directory, :meth:`claud.master.storage.LogStore.member_id`). Refused,
each with one clear log line and a 403:

- another cluster's master: it would otherwise mix two clusters' logs;
- a member of the committed configuration that speaks with another member id
  than it first did: its data directory was wiped or replaced, so it has lost
  the votes and entries the others counted on, and letting it vote could undo
  a commit. It stays refused until an operator removes it and adds it again
  (a committed configuration that drops or adds an id forgets its member id).

Member ids are pinned for members of the committed configuration only, at
first contact, and persisted, so a restart of this master forgets none.
Requests without these headers (an older master) pass, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from claud.api.protocol import CLUSTER_ID_HEADER, MASTER_ID_HEADER, MEMBER_ID_HEADER
from claud.daemon.logfmt import log_event
from claud.master.raft_config import Configuration
from claud.master.storage import LogStore

log = logging.getLogger("claud.master.identity")

__all__ = ["Identity", "Refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str  # other_cluster | member_id_changed
    message: str


class Identity:
    def __init__(self, master_id: int, store: LogStore) -> None:
        self.master_id = master_id
        self.member_id = store.member_id()
        self._store = store
        self._pins = store.peer_member_ids()
        self._cluster_id = ""
        self._members: frozenset[int] = frozenset()
        self._logged: set[tuple[int, str, str]] = set()

    def adopt(self, configuration: Configuration | None) -> None:
        """The committed configuration at start: what the pins were kept against."""
        if configuration is not None:
            self._cluster_id, self._members = configuration.cluster_id, configuration.ids

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def headers(self) -> dict[str, str]:
        """What this master's requests to other masters carry."""
        return {MASTER_ID_HEADER: str(self.master_id), CLUSTER_ID_HEADER: self._cluster_id,
                MEMBER_ID_HEADER: self.member_id}

    def member_ids(self) -> dict[int, str]:
        """The member id pinned for each member (this master's own included)."""
        return {**self._pins, self.master_id: self.member_id}

    def committed(self, configuration: Configuration | None) -> None:
        """A configuration committed (applied, or installed with a snapshot): the
        member ids of masters it adds or drops are forgotten, so an operator's
        remove-and-add lets a master with a new data directory in."""
        if configuration is None:
            return
        self._cluster_id = configuration.cluster_id
        changed = configuration.ids ^ self._members
        self._members = configuration.ids
        forgotten = {i for i in self._pins if i in changed or i not in configuration.ids}
        if forgotten:
            for i in forgotten:
                del self._pins[i]
            self._store.save_peer_member_ids(self._pins)

    def check(self, headers: dict[bytes, bytes]) -> Refusal | None:
        """None when the request may go on; else why not (logged once per sender and reason)."""
        raw_id = headers.get(MASTER_ID_HEADER.lower().encode())
        if raw_id is None:
            return None
        try:
            sender = int(raw_id)
        except ValueError:
            return None
        cluster = headers.get(CLUSTER_ID_HEADER.lower().encode(), b"").decode("latin-1")
        member = headers.get(MEMBER_ID_HEADER.lower().encode(), b"").decode("latin-1")
        if self._cluster_id and cluster and cluster != self._cluster_id:
            return self._refuse(sender, member, Refusal(
                "other_cluster",
                f"master {sender} belongs to cluster {cluster[:40]!r}, this master to {self._cluster_id!r}: "
                "check --peers, the discovery port and the cluster secret",
            ))
        if not member or sender not in self._members or sender == self.master_id:
            return None
        pinned = self._pins.get(sender)
        if pinned is None:
            self._pins[sender] = member
            self._store.save_peer_member_ids(self._pins)
            log_event(log, "peer.member_id", master=sender, member_id=member)
            return None
        if pinned != member:
            return self._refuse(sender, member, Refusal(
                "member_id_changed",
                f"master {sender} came back with data directory {member[:40]!r}, not {pinned!r}: it lost what it "
                f"had voted and stored, so it may not vote; to take it back, run `claud operator members remove "
                f"{sender}` then `claud operator members add {sender} ADDRESS`",
            ))
        return None

    def _refuse(self, sender: int, member: str, refusal: Refusal) -> Refusal:
        key = (sender, refusal.code, member)
        if key not in self._logged:
            self._logged.add(key)
            log_event(log, "peer.refused", logging.ERROR, master=sender, reason=refusal.code, msg=refusal.message)
        return refusal
