"""The master's durable log, hard state and snapshot, in one SQLite file.

SQLite in WAL mode with ``synchronous=FULL`` fsyncs at every commit, so an
entry is on disk before the master acknowledges it. One transaction per batch
of entries is what makes group commit cheap: 500 submits cost one fsync.
Calls are blocking; the caller runs them in a worker thread.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: str  # an encoded operation (claud.master.ops)


@dataclass(frozen=True, slots=True)
class Snapshot:
    index: int
    term: int
    state: str  # the state machine's own encoding; the consensus core never looks inside
    #: The cluster configuration in effect at ``index`` (claud.master.raft_config), "" before the first one.
    config: str = ""


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """A snapshot in its stored form: the state text compressed with :func:`compress_state`."""

    index: int
    term: int
    blob: bytes
    #: The configuration in effect at ``index``, as :class:`Snapshot` keeps it (not compressed).
    config: str = ""


def compress_state(state: str) -> bytes:
    """How a snapshot's state is stored and streamed (zlib's own check covers the whole text)."""
    return zlib.compress(state.encode(), 1)


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    voted_for: int | None = None


def private_files(db: Path) -> None:
    """The database and its -wal and -shm files, 0600 (older versions left them 0644)."""
    for candidate in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)
        except FileNotFoundError:
            pass


class LogStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The log holds every job's env. SQLite gives -wal and -shm the main
        # file's mode, so that file is made private before SQLite opens it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        private_files(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        private_files(path)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, data TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS snapshot (
                id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT NULL, term INTEGER NOT NULL, data BLOB NOT NULL
            );
            """
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(snapshot)")}
        if "config" not in columns:  # a data directory from before configurations were replicated
            self._db.execute("ALTER TABLE snapshot ADD COLUMN config TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -------------------------------------------------------------- reading

    def hard_state(self) -> HardState:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'hard_state'").fetchone()
        if row is None:
            return HardState()
        raw = json.loads(row[0])
        return HardState(term=raw["term"], voted_for=raw["voted_for"])

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            row = self._db.execute("SELECT idx, term, data, config FROM snapshot WHERE id = 1").fetchone()
        if row is None:
            return None
        return Snapshot(index=row[0], term=row[1], state=zlib.decompress(row[2]).decode(), config=row[3])

    def snapshot_blob(self) -> StoredSnapshot | None:
        """The snapshot as stored (compressed): what a leader streams to a follower, as it is."""
        with self._lock:
            row = self._db.execute("SELECT idx, term, data, config FROM snapshot WHERE id = 1").fetchone()
        return None if row is None else StoredSnapshot(index=row[0], term=row[1], blob=bytes(row[2]), config=row[3])

    def entries(self, first: int, last: int | None = None) -> list[Entry]:
        """Entries with ``first <= index <= last`` (to the end when last is None)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, term, data FROM log WHERE idx >= ? AND idx <= ? ORDER BY idx",
                (first, last if last is not None else 2**62),
            ).fetchall()
        return [Entry(*row) for row in rows]

    # -------------------------------------------------------------- writing

    def append(self, entries: list[Entry]) -> None:
        """Durably append, replacing any entries at or after the first new index."""
        if not entries:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM log WHERE idx >= ?", (entries[0].index,))
            self._db.executemany(
                "INSERT INTO log (idx, term, data) VALUES (?, ?, ?)", [(e.index, e.term, e.data) for e in entries]
            )

    def save_hard_state(self, state: HardState) -> None:
        value = json.dumps({"term": state.term, "voted_for": state.voted_for})
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('hard_state', ?)", (value,))

    def member_id(self) -> str:
        """This data directory's identity, made the first time it is asked for: a
        master whose directory is wiped comes back under another member id."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT value FROM meta WHERE key = 'member_id'").fetchone()
            if row is not None:
                return str(row[0])
            member_id = secrets.token_hex(8)
            self._db.execute("INSERT INTO meta (key, value) VALUES ('member_id', ?)", (member_id,))
            return member_id

    def peer_member_ids(self) -> dict[int, str]:
        """The member id each peer spoke with first (see claud.master.identity)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'peer_member_ids'").fetchone()
        return {int(k): str(v) for k, v in json.loads(row[0]).items()} if row else {}

    def save_peer_member_ids(self, pins: dict[int, str]) -> None:
        value = json.dumps({str(k): v for k, v in sorted(pins.items())})
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('peer_member_ids', ?)", (value,))

    def commit_index(self) -> int:
        """The last commit index this master recorded (a hint for recovery, not a promise)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'commit_index'").fetchone()
        return int(row[0]) if row else 0

    def save_commit_index(self, index: int) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('commit_index', ?)", (str(index),))

    def save_snapshot(self, snapshot: Snapshot, replace_log: bool = False) -> bool:
        """Store the snapshot and drop the log entries it covers (all of them with
        ``replace_log``, for a snapshot received from a leader), atomically.

        A snapshot no newer than the stored one is ignored (False): a master's own
        snapshot is saved in the background and may lose a race with one its
        leader sent, which must not be replaced by an older one."""
        blob = compress_state(snapshot.state)  # outside the lock: log appends go on meanwhile
        with self._lock, self._db:
            self._db.execute("BEGIN")
            row = self._db.execute("SELECT idx FROM snapshot WHERE id = 1").fetchone()
            if row is not None and row[0] >= snapshot.index:
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO snapshot (id, idx, term, data, config) VALUES (1, ?, ?, ?, ?)",
                (snapshot.index, snapshot.term, blob, snapshot.config),
            )
            if replace_log:
                self._db.execute("DELETE FROM log")
            else:
                self._db.execute("DELETE FROM log WHERE idx <= ?", (snapshot.index,))
        return True
