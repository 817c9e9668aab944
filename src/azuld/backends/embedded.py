"""The embedded event log: Kafka's model (topics, partitions, offsets, group commits) on SQLite.

One file, WAL mode. A write transaction is durable against a killed process once it returns
(`synchronous=NORMAL` in WAL mode syncs at checkpoints, so an operating-system crash may lose the
last transactions; set `embedded.synchronous = "full"` to sync every commit).

Two connections. Reads run inline on the Trio thread (each is a few tens of microseconds, cheaper
than a hop to a worker thread). Writes run on their own connection in a worker thread, one
transaction at a time: SQLite releases the GIL while it inserts and commits, so the WAL writes
use the second core while the Trio thread serves requests. In WAL mode the reading connection
sees only committed transactions, and the in-memory view the reads rely on (partition ends, topics)
moves only once a transaction has committed: nothing uncommitted is ever read. Partitions are
chosen as Go does (FNV-1a of the key, modulo the count).

Group commit: a transaction's fixed cost (the WAL commit) is larger than its inserts, so writes
(`append`, `commit`, `register_consumer`, `forget_consumer`) from concurrent tasks share one. The
first writer opens a batch and yields to the scheduler, again while the batch grows, up to
`BATCH_PASSES` times, then waits for the transaction before it to finish; writers that come in the
meantime join it (the busier the log, the bigger the batches). The batch runs as one transaction,
in the order the writes came, and every writer returns once it is durable, as if it had its own:
an acknowledged write is as durable as before, and a status and the commit it moves still land in
that order (the commit is only submitted once the status's append returned). If the batch fails,
each write is tried again alone, so each writer gets its own outcome (one bad write does not fail
the others).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from azuld.core.delivery import (
    Commit,
    Snapshot,
    TopicPartition,
    decode_snapshot,
    encode_snapshot,
)
from azuld.core.publish import Outgoing
from azuld.errors import InsufficientStorage, UpstreamError

__all__ = ["EmbeddedLog", "fnv1a_32", "open_embedded_log"]

# The most scheduler passes a write batch waits for more writers to join (see the module notes).
BATCH_PASSES = 4

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
CREATE TABLE IF NOT EXISTS consumers (
    key TEXT PRIMARY KEY,
    info BLOB NOT NULL,
    snapshot TEXT NOT NULL
);
"""


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bit: the hash Sarama's partitioner uses."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


class _Staged:
    """What transactions change in the log's in-memory view: the partitions' new ends, the topics
    they created and those topics' partition ids. Built in the writer thread, applied on the Trio
    thread once the transaction has committed (so a read never trusts an uncommitted end)."""

    __slots__ = ("ends", "topics", "tp_ids")

    def __init__(self) -> None:
        self.ends: dict[TopicPartition, int] = {}
        self.topics: dict[str, int] = {}
        self.tp_ids: dict[TopicPartition, int] = {}

    def copy(self) -> _Staged:
        copied = _Staged()
        copied.ends = dict(self.ends)
        copied.topics = dict(self.topics)
        copied.tp_ids = dict(self.tp_ids)
        return copied


# A write: runs in the writer thread inside a transaction, may stage changes to the view.
_Write = Callable[[sqlite3.Connection, _Staged], Any]


def _store_commits(
    rows: list[tuple[str, str, int, int, str]], db: sqlite3.Connection, _: _Staged
) -> None:
    db.executemany("INSERT OR REPLACE INTO commits VALUES (?, ?, ?, ?, ?)", rows)


def _register(key: str, info: bytes, encoded: str, db: sqlite3.Connection, _: _Staged) -> str:
    """Store the key's registration; the first snapshot stored for it wins (returned)."""
    db.execute(
        "INSERT OR IGNORE INTO consumers (key, info, snapshot) VALUES (?, ?, ?)",
        (key, info, encoded),
    )
    db.execute("UPDATE consumers SET info = ? WHERE key = ?", (info, key))
    (stored,) = db.execute("SELECT snapshot FROM consumers WHERE key = ?", (key,)).fetchone()
    return str(stored)


def _forget(key: str, groups: Sequence[str], db: sqlite3.Connection, _: _Staged) -> None:
    db.execute("DELETE FROM consumers WHERE key = ?", (key,))
    db.executemany("DELETE FROM commits WHERE grp = ?", [(g,) for g in groups])


class _Batch:
    """Writes that share one transaction, what each of them came to (`(True, result)` or
    `(False, exception)`, in order) and the tasks waiting for it (all but the first writer)."""

    __slots__ = ("outcomes", "waiters", "writes")

    def __init__(self) -> None:
        self.writes: list[_Write] = []
        self.outcomes: list[tuple[bool, Any]] = []
        self.waiters: list[trio.lowlevel.Task] = []


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class EmbeddedLog:
    """`EventLog` on one SQLite file. Use `open_embedded_log` to get one."""

    def __init__(
        self,
        db: sqlite3.Connection,
        writer: sqlite3.Connection,
        partitions_for: Callable[[str], int],
        *,
        writer_thread: bool = True,
    ) -> None:
        self._db = db  # reads, on the Trio thread
        self._writer = writer  # writes, in a worker thread, one transaction at a time
        self._writer_thread = writer_thread
        self._writing = trio.Lock()  # held while a transaction runs in its thread
        self._partitions_for = partitions_for
        self._generation = 0
        self._topology = 0
        self._changed = trio.Event()
        self._topic_partitions: dict[str, int] = {}
        self._tp_ids: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._batch: _Batch | None = None  # writes waiting for the next transaction
        self._load()

    def _load(self) -> None:
        for name, count in self._db.execute("SELECT name, partitions FROM topics"):
            self._topic_partitions[name] = count
        for tp_id, topic, partition in self._db.execute(
            "SELECT id, topic, partition FROM partitions"
        ):
            tp = TopicPartition(topic, partition)
            self._tp_ids[tp] = tp_id
            row = self._db.execute(
                "SELECT MAX(offset) FROM records WHERE tp = ?", (tp_id,)
            ).fetchone()
            self._ends[tp] = 0 if row[0] is None else row[0] + 1

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; backend failures become `UpstreamError` (503)."""
        try:
            with self._writer:
                yield self._writer
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc):
                raise InsufficientStorage(
                    f"embedded event log write failed: no space left on the data folder ({exc})"
                ) from exc
            raise UpstreamError(f"embedded event log write failed: {exc}") from exc

    def _bump(self) -> None:
        self._generation += 1
        self._changed.set()
        self._changed = trio.Event()

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def topology(self) -> int:
        return self._topology

    @property
    def shared(self) -> bool:
        # One azuld per data folder (`service.py` locks it): nobody else appends.
        return False

    async def wait_for_change(self, generation: int) -> None:
        while self._generation == generation:
            await self._changed.wait()

    def _create_topic(self, db: sqlite3.Connection, topic: str, staged: _Staged) -> int:
        count = max(1, self._partitions_for(topic))
        db.execute("INSERT INTO topics (name, partitions) VALUES (?, ?)", (topic, count))
        for partition in range(count):
            cursor = db.execute(
                "INSERT INTO partitions (topic, partition) VALUES (?, ?)", (topic, partition)
            )
            tp = TopicPartition(topic, partition)
            assert cursor.lastrowid is not None
            staged.tp_ids[tp] = cursor.lastrowid
            staged.ends[tp] = 0
        staged.topics[topic] = count
        return count

    def _apply(self, staged: _Staged) -> None:
        """Make a committed transaction's changes visible (Trio thread)."""
        if staged.topics:
            self._topic_partitions.update(staged.topics)
            self._tp_ids.update(staged.tp_ids)
            self._topology += 1
        if staged.ends:
            self._ends.update(staged.ends)
            self._bump()

    # -- group commit ------------------------------------------------------------------------

    async def _submit(self, write: _Write) -> Any:
        """Run `write` in the next transaction; return its result once that is durable.

        Cancellation: only before the write is submitted (nothing written); once submitted it
        runs and this waits for it (bounded: the transaction before it and its own).

        Raises:
            UpstreamError: the transaction failed (`InsufficientStorage`: the disk is full).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        batch = self._batch
        if batch is None:
            batch = self._batch = _Batch()
            batch.writes.append(write)
            # Let the tasks that are runnable now take their next step, and join this batch if
            # that step is a write; again while the batch grows (a few scheduler passes).
            for _ in range(BATCH_PASSES):
                joined = len(batch.writes)
                await trio.lowlevel.cancel_shielded_checkpoint()
                if len(batch.writes) == joined:
                    break
            try:
                with trio.CancelScope(shield=True):
                    async with self._writing:  # meanwhile, more writers join this batch
                        self._batch = None
                        if self._writer_thread:
                            batch.outcomes, staged = await trio.to_thread.run_sync(
                                self._run_batch, batch.writes
                            )
                        else:
                            batch.outcomes, staged = self._run_batch(batch.writes)
                        self._apply(staged)
            finally:
                if self._batch is batch:  # the thread could not start: nothing ran
                    self._batch = None
                for task in batch.waiters:
                    trio.lowlevel.reschedule(task)
            index = 0
        else:
            index = len(batch.writes)
            batch.writes.append(write)
            batch.waiters.append(trio.lowlevel.current_task())
            # Uncancellable (the leader reschedules us once the batch ran): cheaper than an
            # Event under a shielded cancel scope.
            await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        if index >= len(batch.outcomes):
            raise UpstreamError("embedded event log write was interrupted")
        ok, value = batch.outcomes[index]
        if not ok:
            raise value
        return value

    def _run_batch(self, writes: Sequence[_Write]) -> tuple[list[tuple[bool, Any]], _Staged]:
        """The writes' outcomes and the view changes of those that committed (writer thread)."""
        staged = _Staged()
        try:
            results, staged = self._transaction(writes, staged)
            return [(True, value) for value in results], staged
        except Exception as exc:
            if len(writes) == 1:
                return [(False, exc)], staged
        # Something in the batch failed: each write alone, each with its own outcome.
        outcomes: list[tuple[bool, Any]] = []
        for write in writes:
            try:
                (result,), staged = self._transaction([write], staged)
                outcomes.append((True, result))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes, staged

    def _transaction(self, writes: Sequence[_Write], staged: _Staged) -> tuple[list[Any], _Staged]:
        """Run `writes` in one transaction on top of `staged`; its changes, if it committed, in a
        copy (a failed transaction leaves no trace in the view)."""
        trial = staged.copy()
        with self._write() as db:
            results = [write(db, trial) for write in writes]
        return results, trial

    def _insert_records(
        self, records: Sequence[Outgoing], db: sqlite3.Connection, staged: _Staged
    ) -> None:
        rows = []
        ends, staged_ends = self._ends, staged.ends
        for record in records:
            topic = record.topic
            count = (
                self._topic_partitions.get(topic)
                or staged.topics.get(topic)
                or self._create_topic(db, topic, staged)
            )
            partition = fnv1a_32(record.key.encode()) % count if count > 1 else 0
            tp = TopicPartition(topic, partition)
            offset = staged_ends.get(tp)
            if offset is None:
                offset = ends[tp]
            staged_ends[tp] = offset + 1
            tp_id = self._tp_ids.get(tp) or staged.tp_ids[tp]
            rows.append((tp_id, offset, record.key, record.value))
        db.executemany("INSERT INTO records (tp, offset, key, value) VALUES (?, ?, ?, ?)", rows)

    # -- EventLog ------------------------------------------------------------------------------

    async def append(self, records: Sequence[Outgoing]) -> None:
        if records:
            await self._submit(partial(self._insert_records, records))

    async def partitions(
        self, topic_filter: Callable[[str], bool], *, owned: bool = True
    ) -> list[TopicPartition]:
        return sorted(tp for tp in self._tp_ids if topic_filter(tp.topic))

    async def offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        # Nothing is deleted from the embedded log yet, so every partition starts at 0.
        return {tp: (0, self._ends.get(tp, 0)) for tp in tps}

    def known_end(self, tp: TopicPartition) -> int:
        return self._ends.get(tp, 0)

    async def read(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        tp_id = self._tp_ids.get(tp)
        if tp_id is None or offset >= self._ends.get(tp, 0):
            return []
        try:
            rows = self._db.execute(
                "SELECT offset, value FROM records WHERE tp = ? AND offset >= ? "
                "ORDER BY offset LIMIT ?",
                (tp_id, offset, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise UpstreamError(f"embedded event log read failed: {exc}") from exc
        return [(row[0], bytes(row[1])) for row in rows]

    async def committed(self, group: str) -> dict[TopicPartition, Commit]:
        rows = self._db.execute(
            "SELECT topic, partition, offset, metadata FROM commits WHERE grp = ?", (group,)
        )
        return {TopicPartition(t, p): Commit.parse(o, m) for t, p, o, m in rows}

    async def commit(self, commits: Mapping[str, Mapping[TopicPartition, Commit]]) -> None:
        rows = [
            (group, tp.topic, tp.partition, c.offset, c.metadata())
            for group, positions in commits.items()
            for tp, c in positions.items()
        ]
        if rows:
            await self._submit(partial(_store_commits, rows))

    async def register_consumer(self, key: str, info: bytes, snapshot: Snapshot) -> Snapshot:
        encoded = json.dumps(encode_snapshot(snapshot))
        stored = await self._submit(partial(_register, key, info, encoded))
        return decode_snapshot(json.loads(stored))

    async def forget_consumer(self, key: str, groups: Sequence[str]) -> None:
        # In the batch: a commit of the key's groups submitted before this lands before it.
        await self._submit(partial(_forget, key, groups))

    async def consumers(self) -> dict[str, bytes]:
        return {k: bytes(v) for k, v in self._db.execute("SELECT key, info FROM consumers")}

    async def follow(self, topic: str) -> AsyncGenerator[bytes, None]:
        positions = {tp: self._ends[tp] for tp in self._tp_ids if tp.topic == topic}
        while True:
            generation = self._generation
            for tp in self._tp_ids:
                if tp.topic == topic and tp not in positions:
                    positions[tp] = 0  # a partition created since: all of it is new
            found = False
            for tp, position in positions.items():
                for offset, value in await self.read(tp, position, 256):
                    positions[tp] = offset + 1
                    found = True
                    yield value
            if not found:
                await self.wait_for_change(generation)

    async def health(self) -> str | None:
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return f"embedded event log unusable: {exc}"
        return None

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


@asynccontextmanager
async def open_embedded_log(
    path: Path,
    *,
    partitions_for: Callable[[str], int] = lambda topic: 1,
    synchronous: str = "normal",
    writer_thread: bool = True,
) -> AsyncIterator[EmbeddedLog]:
    """Open (creating if needed) the log at `path`; closed on exit. `writer_thread=False` runs
    the transactions on the Trio thread (for tests on a virtual clock, which would jump ahead
    while a worker thread writes).

    Raises:
        UpstreamError: the file cannot be opened or is not a usable database.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    opened: list[sqlite3.Connection] = []
    try:
        for _ in ("reader", "writer"):
            # The writer is used from worker threads, one transaction at a time.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            opened.append(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
            db.execute("PRAGMA busy_timeout=5000")
        reader, writer = opened
        writer.executescript(_SCHEMA)
        # Explicit transactions from here on (`with db:` needs the default isolation level);
        # the reader stays in autocommit: each read sees the last committed transaction.
        writer.isolation_level = "DEFERRED"
        log = EmbeddedLog(reader, writer, partitions_for, writer_thread=writer_thread)
    except sqlite3.Error as exc:
        for db in opened:
            db.close()
        raise UpstreamError(f"cannot open the embedded event log at {path}: {exc}") from exc
    try:
        yield log
    finally:
        for db in opened:
            db.close()
