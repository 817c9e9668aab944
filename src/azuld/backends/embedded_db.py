"""The embedded event log's SQLite file: its tables, how it is opened (WAL, no automatic
checkpoint: `EmbeddedLog.checkpoint_when_due` runs them off the Trio thread), and the statements
the log's batched writes run in a transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from azuld.errors import UpstreamError

__all__ = ["delete_records", "open_database", "store_commits", "store_marks"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partitions (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    UNIQUE (topic, partition)
);
CREATE TABLE IF NOT EXISTS records (
    tp INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (tp, offset)
);
CREATE TABLE IF NOT EXISTS commits (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
CREATE TABLE IF NOT EXISTS marks (
    tp INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (tp, offset)
);
CREATE TABLE IF NOT EXISTS kept (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    key TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    snapshot TEXT NOT NULL
);
"""


def open_database(path: Path, synchronous: str) -> sqlite3.Connection:
    """Open (creating if needed) the log's file at `path`, its tables created.

    Raises:
        UpstreamError: the file cannot be opened or is not a usable database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA wal_autocheckpoint=0")  # `EmbeddedLog.checkpoint_when_due` does it
        db.executescript(_SCHEMA)
        # Explicit transactions from here on (`with db:` needs the default isolation level).
        db.isolation_level = "DEFERRED"
    except sqlite3.Error as exc:
        raise UpstreamError(f"cannot open the embedded event log at {path}: {exc}") from exc
    return db


def store_commits(rows: list[tuple[str, str, int, int, str]], db: sqlite3.Connection) -> None:
    db.executemany("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?)", rows)


def store_marks(rows: list[tuple[int, int, float]], db: sqlite3.Connection) -> None:
    db.executemany("INSERT OR REPLACE INTO marks (tp, offset, at) VALUES (?, ?, ?)", rows)


def delete_records(tp_id: int, start: int, upto: int, db: sqlite3.Connection) -> int:
    """Delete the records of `tp_id` in [start, upto) and the marks below `upto` (the newest
    mark of a partition is never below what retention deletes). Returns the records deleted."""
    cursor = db.execute(
        "DELETE FROM records WHERE tp = ? AND offset >= ? AND offset < ?", (tp_id, start, upto)
    )
    db.execute("DELETE FROM marks WHERE tp = ? AND offset < ?", (tp_id, upto))
    return cursor.rowcount
