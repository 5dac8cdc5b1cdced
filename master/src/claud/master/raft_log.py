"""One member's Raft log in memory: a snapshot, then the entries after it.

The decision here is where the log stands and what of it is on disk. Entries
up to the snapshot's index are gone (compacted, or replaced by a snapshot the
leader sent); the rest are held in order. Two marks track the caller's disk:
``stable``, the last index known persisted (the leader's own vote in the commit
count), and the first index not yet handed out to persist (with a received
snapshot still to persist ahead of them). Which entries are committed, and
whether a truncation is safe, is the core's decision, not the log's.

Every index-to-position conversion is in :meth:`RaftLog._pos`, the one place
that knows the entries list starts right after the snapshot.
"""

from __future__ import annotations

from claud.master.storage import Entry, Snapshot

__all__ = ["RaftLog"]


class RaftLog:
    def __init__(self, snapshot: Snapshot | None, entries: list[Entry]) -> None:
        """Rebuilt from what the caller persisted, all of it stable. Entries the
        snapshot covers are dropped; the rest must run on from it without a gap."""
        self._snapshot = snapshot
        self._snap_index = snapshot.index if snapshot else 0
        self._snap_term = snapshot.term if snapshot else 0
        kept = sorted((e for e in entries if e.index > self._snap_index), key=lambda e: e.index)
        for k, e in enumerate(kept):
            if e.index != self._snap_index + 1 + k:
                raise ValueError(f"log is not contiguous after the snapshot: entry {e.index} at position {k}")
        self._entries: list[Entry] = kept
        self._stable = self.last_index
        self._unstable_from = self.last_index + 1
        self._unstable_snapshot: Snapshot | None = None

    # ------------------------------------------------------------ queries

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot, kept to send to followers that fall behind it."""
        return self._snapshot

    @property
    def snap_index(self) -> int:
        return self._snap_index

    @property
    def last_index(self) -> int:
        return self._snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._snap_term

    @property
    def stable(self) -> int:
        """The last index the caller has persisted (as far as this log knows)."""
        return self._stable

    def term_at(self, index: int) -> int | None:
        """None when the index is beyond the log or compacted away."""
        if index == self._snap_index:
            return self._snap_term
        if self._snap_index < index <= self.last_index:
            return self._entries[self._pos(index)].term
        return None

    def entries(self, lo: int, hi: int | None = None) -> list[Entry]:
        """The entries with ``lo <= index < hi`` (to the end when hi is None or
        beyond it). ``lo`` must not be compacted away."""
        if lo <= self._snap_index:
            raise AssertionError(f"raft log: entry {lo} asked for, but compacted up to {self._snap_index}")
        return self._entries[self._pos(lo) : None if hi is None else max(self._pos(hi), 0)]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log ending at (last_index, last_term) is at least as up to date as this one."""
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """The last index <= ``index`` whose term is <= ``term``: no entry
        after it can match a log whose entry at ``index`` has ``term``."""
        index = min(index, self.last_index)
        while index > self._snap_index:
            t = self.term_at(index)
            if t is not None and t <= term:
                break
            index -= 1
        return index

    def first_new(self, entries: tuple[Entry, ...]) -> int:
        """The position in ``entries`` (a contiguous run) of the first one this
        log does not hold with the same term; ``len(entries)`` when it holds them all."""
        for k, e in enumerate(entries):
            if self.term_at(e.index) != e.term:
                return k
        return len(entries)

    # ------------------------------------------------------------ changes

    def append(self, entry: Entry) -> None:
        """The leader's own entry, right after the last one."""
        if entry.index != self.last_index + 1:
            raise AssertionError(f"raft log: appending {entry.index} after {self.last_index}")
        self._entries.append(entry)

    def truncate_and_append(self, entries: tuple[Entry, ...]) -> None:
        """Replace everything from ``entries[0].index`` on (a leader's entries
        overriding ours); what is dropped is no longer stable, and what comes in
        is to persist."""
        if not entries:
            return
        first = entries[0].index
        if not self._snap_index < first <= self.last_index + 1:
            raise AssertionError(
                f"raft log: entries from {first} do not join a log of {self._snap_index}..{self.last_index}"
            )
        del self._entries[self._pos(first) :]
        self._entries.extend(entries)
        self._unstable_from = min(self._unstable_from, first)
        self._stable = min(self._stable, first - 1)

    def compact(self, snapshot: Snapshot) -> None:
        """The caller persisted ``snapshot`` of entries this log holds: drop them."""
        if self.term_at(snapshot.index) != snapshot.term:
            raise ValueError(f"snapshot term {snapshot.term} does not match the log at {snapshot.index}")
        del self._entries[: self._pos(snapshot.index) + 1]
        self._snap_index, self._snap_term = snapshot.index, snapshot.term
        self._snapshot = snapshot
        self._unstable_from = max(self._unstable_from, snapshot.index + 1)
        self._stable = max(self._stable, snapshot.index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot the leader sent; it is to persist
        (before any entry after it) and counts as stable from now on."""
        self._entries = []
        self._snap_index, self._snap_term = snapshot.index, snapshot.term
        self._snapshot = snapshot
        self._unstable_snapshot = snapshot
        self._stable = snapshot.index
        self._unstable_from = snapshot.index + 1

    # ------------------------------------------------------------ the caller's disk

    def has_unstable(self) -> bool:
        return self._unstable_snapshot is not None or self._unstable_from <= self.last_index

    def hand_out_unstable(self) -> tuple[Snapshot | None, list[Entry]]:
        """What the caller is to persist now: a received snapshot (replacing its
        whole log), then entries (overwriting from the first one's index).
        Each is handed out once."""
        snapshot, entries = self._unstable_snapshot, self.entries(self._unstable_from)
        self._unstable_snapshot = None
        self._unstable_from = self.last_index + 1
        return snapshot, entries

    def stable_to(self, entry: Entry) -> None:
        """The caller persisted up to ``entry``; ignored when it was replaced meanwhile."""
        if self.term_at(entry.index) == entry.term:
            self._stable = max(self._stable, entry.index)

    def _pos(self, index: int) -> int:
        return index - self._snap_index - 1
