"""The cluster's configuration: which masters vote, which only learn, and where they are.

The decision here is membership. A configuration is part of the replicated
log: a configuration entry (its data starts with :data:`CONFIG_ENTRY_PREFIX`,
which no encoded operation can, since those are JSON objects) holds the whole
new configuration, and the state machine applies it as a no-op, alike on every
master. As in the Raft dissertation (§4.1) a master uses the latest
configuration in its log, committed or not, and changes go one server at a
time, so any two successive configurations share a majority: a new member is
added as a learner (it replicates but neither votes nor counts), promoted to
voter once caught up, and removed in one step.

:class:`ConfigHistory` remembers which configuration is in effect at which
index, so that truncating uncommitted entries also undoes their
configurations, and a snapshot carries the configuration of its last entry.
How quorums and elections use the configuration is the core's decision
(:mod:`claud.master.raft`); this module only says what a configuration is and
which changes to it are allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "CONFIG_ENTRY_PREFIX",
    "ChangeKind",
    "ConfChange",
    "ConfChangeRefused",
    "ConfigHistory",
    "Configuration",
    "Member",
    "apply_change",
    "config_from_entry",
    "is_config_entry",
]

#: What a configuration entry's data starts with; operations are JSON objects, so start with "{".
CONFIG_ENTRY_PREFIX = "@raft-configuration "


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    address: str
    voter: bool


@dataclass(frozen=True, slots=True)
class Configuration:
    """Every member, sorted by id, and the id of the cluster it was bootstrapped as."""

    members: tuple[Member, ...]
    cluster_id: str

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if ids != sorted(set(ids)):
            raise ValueError(f"configuration members must be unique and sorted by id, got {ids}")

    @classmethod
    def bootstrap(cls, addresses: dict[int, str], cluster_id: str) -> Configuration:
        """The first configuration: every master given a voter."""
        return cls(tuple(Member(i, addresses[i], True) for i in sorted(addresses)), cluster_id)

    @property
    def voters(self) -> frozenset[int]:
        return frozenset(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> frozenset[int]:
        return frozenset(m.id for m in self.members if not m.voter)

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(m.id for m in self.members)

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def member(self, member_id: int) -> Member | None:
        for m in self.members:
            if m.id == member_id:
                return m
        return None

    def encode(self) -> str:
        return json.dumps(
            {"cluster_id": self.cluster_id, "members": [[m.id, m.address, m.voter] for m in self.members]},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> Configuration:
        """Inverse of :meth:`encode`; ValueError on anything else."""
        try:
            raw: Any = json.loads(text)
            members = tuple(Member(_int(i), _str(a), _bool(v)) for i, a, v in raw["members"])
            return cls(members, _str(raw["cluster_id"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed configuration: {exc!r}") from exc

    def entry_data(self) -> str:
        return CONFIG_ENTRY_PREFIX + self.encode()


def is_config_entry(data: str) -> bool:
    return data.startswith(CONFIG_ENTRY_PREFIX)


def config_from_entry(data: str) -> Configuration | None:
    """The configuration an entry holds; None for any other entry. A leader
    only appends well-formed ones, so a malformed one is a bug (ValueError)."""
    if not is_config_entry(data):
        return None
    return Configuration.decode(data[len(CONFIG_ENTRY_PREFIX) :])


# ---------------------------------------------------------------- changes


class ChangeKind(StrEnum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    kind: ChangeKind
    id: int
    address: str = ""


class ConfChangeRefused(ValueError):
    """A change the leader will not make now. ``reason`` is one of
    ``not_leader``, ``in_flight`` (another change, or the leader's first entry,
    is not committed yet), ``unknown_member``, ``already_member``, ``invalid``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def apply_change(config: Configuration, change: ConfChange) -> Configuration:
    """The configuration after ``change``, or ConfChangeRefused."""
    current = config.member(change.id)
    if change.kind is ChangeKind.ADD_LEARNER:
        if current is not None:
            raise ConfChangeRefused("already_member", f"master {change.id} is already a member")
        if change.id < 1 or not change.address:
            raise ConfChangeRefused("invalid", "a new member needs an id of at least 1 and an address")
        members = (*config.members, Member(change.id, change.address, voter=False))
    elif change.kind is ChangeKind.PROMOTE:
        if current is None:
            raise ConfChangeRefused("unknown_member", f"master {change.id} is not a member")
        if current.voter:
            raise ConfChangeRefused("already_member", f"master {change.id} is already a voter")
        members = tuple(Member(m.id, m.address, True) if m.id == change.id else m for m in config.members)
    else:
        if current is None:
            raise ConfChangeRefused("unknown_member", f"master {change.id} is not a member")
        if current.voter and len(config.voters) == 1:
            raise ConfChangeRefused("invalid", f"master {change.id} is the last voter; it cannot be removed")
        members = tuple(m for m in config.members if m.id != change.id)
    return Configuration(tuple(sorted(members, key=lambda m: m.id)), config.cluster_id)


# ---------------------------------------------------------------- which configuration where


class ConfigHistory:
    """The configurations in one member's log: the one in effect at its snapshot
    (None before the cluster was bootstrapped), then one per configuration entry."""

    def __init__(self, base_index: int, base: Configuration | None) -> None:
        self._base_index = base_index
        self._base = base
        self._changes: list[tuple[int, Configuration]] = []

    @property
    def latest(self) -> Configuration | None:
        """The configuration in use: the last one in the log, committed or not."""
        return self._changes[-1][1] if self._changes else self._base

    @property
    def latest_index(self) -> int:
        """The index of the entry that made the latest configuration (the snapshot's when none after it)."""
        return self._changes[-1][0] if self._changes else self._base_index

    def at(self, index: int) -> Configuration | None:
        """The configuration in effect once the entry at ``index`` is in the log."""
        if index < self._base_index:
            raise ValueError(f"configuration at {index} asked for, but the history starts at {self._base_index}")
        found = self._base
        for at, config in self._changes:
            if at > index:
                break
            found = config
        return found

    def append(self, index: int, config: Configuration) -> None:
        if index <= self.latest_index:
            raise AssertionError(f"configuration at {index} appended after one at {self.latest_index}")
        self._changes.append((index, config))

    def truncate_from(self, index: int) -> None:
        """Entries from ``index`` on were replaced: their configurations no longer hold."""
        self._changes = [(at, c) for at, c in self._changes if at < index]

    def compact_to(self, index: int) -> None:
        """The log now starts after ``index``: fold what was in effect there into the base."""
        self._base = self.at(index)
        self._base_index = index
        self._changes = [(at, c) for at, c in self._changes if at > index]

    def reset(self, index: int, config: Configuration | None) -> None:
        """The log was replaced by a snapshot at ``index`` carrying ``config``."""
        self._base_index, self._base, self._changes = index, config, []


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"expected a positive integer, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected a boolean, got {v!r}")
    return v
