"""What the masters' consensus cores say to each other, and its JSON form.

The decision here is the wire: which messages exist, what each field means,
and what a message from the network must satisfy before it reaches
:class:`claud.master.raft.RaftCore`. A peer is hostile until its message has
been validated, so :func:`message_from_dict` refuses anything malformed with a
ValueError (the transport answers 400) rather than feeding the core garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from claud.master.storage import Entry, Snapshot

__all__ = [
    "AppendEntries",
    "AppendEntriesReply",
    "InstallSnapshot",
    "InstallSnapshotReply",
    "Message",
    "PreVote",
    "PreVoteReply",
    "RequestVote",
    "RequestVoteReply",
    "TimeoutNow",
    "VoteReply",
    "VoteRequest",
    "message_from_dict",
    "message_to_dict",
]


@dataclass(frozen=True, slots=True)
class Message:
    src: int
    dst: int
    term: int


@dataclass(frozen=True, slots=True)
class VoteRequest(Message):
    """What both rounds of an election ask with: the candidate's last entry, so
    a voter grants only a log at least as up to date as its own (§5.4.1).
    ``transfer`` marks an election the leader asked for, which voters grant
    even while they still hear that leader. Never sent as itself."""

    last_index: int
    last_term: int
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteReply(Message):
    """A voter's answer to a :class:`VoteRequest`. Never sent as itself."""

    granted: bool


@dataclass(frozen=True, slots=True)
class PreVote(VoteRequest):
    """Asks whether the sender could win at ``term`` (its own term + 1) without
    anyone changing term; ``transfer`` is never set in practice (transfers skip pre-vote)."""


@dataclass(frozen=True, slots=True)
class PreVoteReply(VoteReply):
    """``term`` is the asked term when granted, the voter's own term when refused."""


@dataclass(frozen=True, slots=True)
class RequestVote(VoteRequest):
    """Asks for the sender's vote at ``term``."""


@dataclass(frozen=True, slots=True)
class RequestVoteReply(VoteReply):
    """A vote granted or refused at ``term``."""


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """Also the heartbeat (no entries). ``commit`` is the leader's commit index."""

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesReply(Message):
    """On success ``match_index`` is the last index known to equal the leader's
    log. On refusal ``reject_index`` echoes the refused ``prev_index`` (so the
    leader can tell stale refusals apart) and ``hint_index``/``hint_term`` name
    the follower's last entry that might still match, so the leader can skip
    a whole term of conflicting entries per round trip."""

    success: bool
    match_index: int
    hint_index: int = 0
    hint_term: int = 0
    reject_index: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class InstallSnapshotReply(Message):
    match_index: int


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """From the leader to a caught-up member: start an election now."""


_MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.__name__: cls
    for cls in (
        PreVote,
        PreVoteReply,
        RequestVote,
        RequestVoteReply,
        AppendEntries,
        AppendEntriesReply,
        InstallSnapshot,
        InstallSnapshotReply,
        TimeoutNow,
    )
}


def message_to_dict(msg: Message) -> dict[str, Any]:
    """JSON-safe form; entries become ``[index, term, data]`` triples to keep
    large batches compact."""
    out: dict[str, Any] = {"type": type(msg).__name__}
    for f in fields(msg):
        value = getattr(msg, f.name)
        if f.name == "entries":
            value = [[e.index, e.term, e.data] for e in value]
        elif f.name == "snapshot":
            value = {"index": value.index, "term": value.term, "state": value.state, "config": value.config}
        out[f.name] = value
    return out


def message_from_dict(d: dict[str, Any]) -> Message:
    """Inverse of :func:`message_to_dict`; raises ValueError on anything malformed,
    so the transport can answer 400 instead of feeding garbage to the core."""
    try:
        cls = _MESSAGE_TYPES[d["type"]]
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            value = d[f.name]
            if f.name == "entries":
                value = tuple(Entry(_int(i), _int(t), _str(x)) for i, t, x in value)
            elif f.name == "snapshot":
                if not isinstance(value["state"], str) or not isinstance(value.get("config", ""), str):
                    raise ValueError("snapshot state and config must be strings")
                value = Snapshot(_int(value["index"]), _int(value["term"]), value["state"], value.get("config", ""))
            elif f.type == "bool":  # annotations are strings here (``from __future__ import annotations``)
                if not isinstance(value, bool):
                    raise ValueError(f"{f.name} must be a boolean")
            else:
                value = _int(value)
            kwargs[f.name] = value
        msg = cls(**kwargs)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed raft message: {exc!r}") from exc
    if isinstance(msg, AppendEntries):
        # The core relies on a batch being the run of entries right after prev_index,
        # in terms that never go back and never pass the sender's own.
        expected, last_term = msg.prev_index + 1, msg.prev_term
        for entry in msg.entries:
            if entry.index != expected or not last_term <= entry.term <= msg.term:
                raise ValueError(f"malformed raft message: entry {entry.index} (term {entry.term}) out of sequence")
            expected, last_term = expected + 1, entry.term
    return msg


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v
