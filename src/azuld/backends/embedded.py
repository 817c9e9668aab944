"""The embedded event log: Kafka's model (topics, partitions, offsets, group commits) on SQLite.

One file, WAL mode. A write transaction is durable against a killed process once it returns
(`synchronous=NORMAL` in WAL mode syncs at checkpoints, so an operating-system crash may lose the
last transactions; set `embedded.synchronous = "full"` to sync every commit).

SQLite calls run inline on the Trio thread: each is a few tens of microseconds, cheaper than a hop
to a worker thread (measured: running the transactions in a worker thread lost throughput in every
scenario, see benchmarks/README.md). The exception is the WAL checkpoint, which copies the WAL back
into the database file: SQLite's automatic one ran inside a commit, on the Trio thread, and cost
a third or more of every write. Here a task checkpoints on its own connection in a worker thread
once `CHECKPOINT_BYTES` have been written since the last one (SQLite releases the GIL meanwhile;
a passive checkpoint never blocks the writer). If the disk is slower than the writes, writers wait
for the running checkpoint once `CHECKPOINT_BACKLOG` more thresholds were appended, so the WAL
stays bounded. Partitions are chosen as Go does (`backends.partitioner`). The file's tables and
the statements the writes run are in `backends.embedded_db`.

Group commit: a transaction's fixed cost (the WAL commit) is larger than its inserts, so writes
(`append`, `commit`, `forget_consumer`) from concurrent tasks share one. The first writer opens a
batch and yields to the scheduler (`cancel_shielded_checkpoint`: the batch always runs), again
while the batch grows, up to `BATCH_PASSES` times; writers that come in the meantime join it. The
batch runs as one transaction, in the order the writes came, and every writer returns once it is
durable, as if it had its own: an acknowledged write is as durable as before, and a status and
the commit it moves still land in that order (the commit is only written once the status's
append returned). If the batch fails, each write is tried again alone, so each writer gets its
own outcome (one bad write does not fail the others).

Retention: topics created with `cleanup.policy=delete` and a `retention.ms` (the system topics, as
Go's defaults: `system.status` one day, `system.plugin` a week, ...; sources with
`retention_days`) lose their records once they are older than that, as on Kafka. SQLite rows
carry no time, so, like Kafka's segments, a task marks each partition's end with the wall-clock
time every `AGE_OFF_SECONDS` (`marks` table: everything below `offset` was appended by `at`), and
deletes what lies below the newest mark older than the retention, in small transactions. A record
is never deleted early, and late by at most one pass. The newest mark stays, so a partition whose
records are all gone keeps its end offset across restarts. Compacted topics are kept whole.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from azuld.backends.embedded_db import delete_records, open_database, store_commits, store_marks
from azuld.backends.partitioner import partition_of
from azuld.core.cursor import Commit, Snapshot, TopicPartition, decode_snapshot, encode_snapshot
from azuld.core.publish import Outgoing
from azuld.errors import InsufficientStorage, UpstreamError
from azuld.ports import GroupMember, Membership, RevokeHook

__all__ = ["EmbeddedLog", "open_embedded_log"]

# The most scheduler passes a write batch waits for more writers to join (see the module notes).
BATCH_PASSES = 4
# Checkpoint the WAL once about this much has been appended since the last checkpoint.
CHECKPOINT_BYTES = 8 * 1024 * 1024
# Writers wait for a running checkpoint once this many times CHECKPOINT_BYTES were appended since
# it began (a slow disk must not let the WAL grow without bound).
CHECKPOINT_BACKLOG = 2
# How often partitions are marked with the time and records past their retention deleted.
AGE_OFF_SECONDS = 60.0
# Records deleted per transaction when aging off (the Trio thread waits for each).
AGE_OFF_CHUNK = 2000

log = logging.getLogger(__name__)


class _Batch:
    """Writes that share one transaction, what each of them came to (`(True, result)` or
    `(False, exception)`, in order) and the tasks waiting for it (all but the first writer)."""

    __slots__ = ("outcomes", "waiters", "writes")

    def __init__(self) -> None:
        self.writes: list[Callable[[sqlite3.Connection], Any]] = []
        self.outcomes: list[tuple[bool, Any]] = []
        self.waiters: list[trio.lowlevel.Task] = []


def _cannot_abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class EmbeddedLog:
    """`EventLog` on one SQLite file. Use `open_embedded_log` to get one."""

    def __init__(
        self,
        db: sqlite3.Connection,
        partitions_for: Callable[[str], int],
        *,
        checkpoint_every_bytes: int = CHECKPOINT_BYTES,
        retention_ms_for: Callable[[str], int] = lambda topic: -1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.instance = f"{socket.gethostname()}-{os.getpid()}"
        self._db = db
        self._partitions_for = partitions_for
        self._retention_ms_for = retention_ms_for  # -1: kept forever
        self._clock = clock  # wall-clock seconds: marks outlive the process
        self._generation = 0
        self._topology = 0
        self._changed = trio.Event()
        self._topic_partitions: dict[str, int] = {}
        self._tp_ids: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._starts: dict[TopicPartition, int] = {}  # the lowest offset not aged off
        self._marked: dict[TopicPartition, int] = {}  # the offset of each partition's newest mark
        self.aged_off = 0  # records deleted by retention since start (reported by tests)
        self._batch: _Batch | None = None  # writes waiting for the next transaction
        self._appended_bytes = 0  # since the last checkpoint
        self._checkpoint_every_bytes = checkpoint_every_bytes
        self._checkpoint_due = trio.Event()
        self._checkpoint_running: trio.Event | None = None  # set when the running one ends
        self.checkpoints = 0  # completed by the checkpointer (reported by tests)
        # Within a transaction: the ends it moved (their old values) and the topics it created,
        # to roll the in-memory view back with it.
        self._undo_ends: dict[TopicPartition, int] = {}
        self._new_topics: list[str] = []
        self._load()

    def _load(self) -> None:
        for name, count in self._db.execute("SELECT name, partitions FROM topics"):
            self._topic_partitions[name] = count
        for tp_id, topic, partition in self._db.execute(
            "SELECT id, topic, partition FROM partitions"
        ):
            tp = TopicPartition(topic, partition)
            self._tp_ids[tp] = tp_id
            first, last = self._db.execute(
                "SELECT MIN(offset), MAX(offset) FROM records WHERE tp = ?", (tp_id,)
            ).fetchone()
            (marked,) = self._db.execute(
                "SELECT MAX(offset) FROM marks WHERE tp = ?", (tp_id,)
            ).fetchone()
            # All records aged off: the newest mark still says where the partition ends.
            end = max(0 if last is None else last + 1, marked or 0)
            self._ends[tp] = end
            self._starts[tp] = end if first is None else first
            if marked is not None:
                self._marked[tp] = marked

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; backend failures become `UpstreamError` (503)."""
        try:
            with self._db:
                yield self._db
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

    def _ensure_topic(self, db: sqlite3.Connection, topic: str) -> int:
        count = self._topic_partitions.get(topic)
        if count is None:
            count = max(1, self._partitions_for(topic))
            db.execute("INSERT INTO topics (name, partitions) VALUES (?, ?)", (topic, count))
            self._new_topics.append(topic)
            for partition in range(count):
                cursor = db.execute(
                    "INSERT INTO partitions (topic, partition) VALUES (?, ?)", (topic, partition)
                )
                tp = TopicPartition(topic, partition)
                assert cursor.lastrowid is not None
                self._tp_ids[tp] = cursor.lastrowid
                self._ends[tp] = 0
            self._topic_partitions[topic] = count
            self._topology += 1
        return count

    # -- group commit ------------------------------------------------------------------------

    async def _submit(self, write: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `write` in the next transaction; return its result once that is durable.

        Cancellation: only before the write is submitted (nothing written); once submitted it
        runs and this waits for it (bounded: a few scheduler passes).

        Raises:
            UpstreamError: the transaction failed (`InsufficientStorage`: the disk is full).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        running = self._checkpoint_running
        if running is not None and (
            self._appended_bytes >= CHECKPOINT_BACKLOG * self._checkpoint_every_bytes
        ):
            await running.wait()
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
            self._batch = None
            try:
                batch.outcomes = self._run_batch(batch.writes)
            finally:
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

    def _run_batch(
        self, writes: Sequence[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        try:
            return [(True, value) for value in self._transaction(writes)]
        except Exception as exc:
            if len(writes) == 1:
                return [(False, exc)]
        # Something in the batch failed: each write alone, each with its own outcome.
        outcomes: list[tuple[bool, Any]] = []
        for write in writes:
            try:
                outcomes.append((True, self._transaction([write])[0]))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    def _transaction(self, writes: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """Run `writes` in one transaction; on failure the in-memory view rolls back with it."""
        self._undo_ends = {}
        self._new_topics = []
        try:
            with self._write() as db:
                results = [write(db) for write in writes]
        except BaseException:
            self._ends.update(self._undo_ends)
            for topic in self._new_topics:
                for partition in range(self._topic_partitions.pop(topic)):
                    tp = TopicPartition(topic, partition)
                    self._tp_ids.pop(tp, None)
                    self._ends.pop(tp, None)
            raise
        finally:
            appended = bool(self._undo_ends)
            self._undo_ends = {}
            self._new_topics = []
        if appended:
            self._bump()
            if self._appended_bytes >= self._checkpoint_every_bytes:
                self._checkpoint_due.set()
        return results

    async def checkpoint_when_due(self, path: Path) -> None:
        """Run forever: checkpoint the WAL in a worker thread, on a connection of its own,
        whenever `checkpoint_every_bytes` have been appended since the last checkpoint."""
        checkpointer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            checkpointer.execute("PRAGMA busy_timeout=5000")
            while True:
                await self._checkpoint_due.wait()
                self._checkpoint_due = trio.Event()
                if self._appended_bytes < self._checkpoint_every_bytes:
                    continue
                self._appended_bytes = 0
                running = self._checkpoint_running = trio.Event()
                try:
                    await trio.to_thread.run_sync(_checkpoint, checkpointer)
                    # What was appended meanwhile (a little), here, between transactions: only a
                    # checkpoint that leaves nothing behind lets the next write start the WAL
                    # over, so under steady writes it would otherwise grow for ever.
                    _checkpoint(self._db)
                except sqlite3.Error as exc:  # the next one copies what this one did not
                    log.warning("embedded event log: WAL checkpoint failed: %s", exc)
                finally:
                    self._checkpoint_running = None
                    running.set()
                self.checkpoints += 1
        finally:
            checkpointer.close()

    async def age_off_when_due(self) -> None:
        """Run forever: `age_off` every `AGE_OFF_SECONDS`."""
        while True:
            await trio.sleep(AGE_OFF_SECONDS)
            try:
                await self.age_off()
            except UpstreamError as exc:  # the next pass tries again
                log.warning("embedded event log: aging off failed: %s", exc)

    async def age_off(self) -> int:
        """One retention pass (see the module notes): mark each partition of a topic with a
        retention, then delete its records older than that. Returns how many were deleted.

        Raises:
            UpstreamError: a write failed.
        """
        now = self._clock()
        retained = {
            tp: retention_ms / 1000
            for tp in list(self._tp_ids)
            if (retention_ms := self._retention_ms_for(tp.topic)) > 0
        }
        ends = {tp: end for tp in retained if (end := self._ends[tp]) > self._marked.get(tp, 0)}
        if ends:
            rows = [(self._tp_ids[tp], end, now) for tp, end in ends.items()]
            await self._submit(partial(store_marks, rows))
            self._marked.update(ends)
        deleted = 0
        try:
            for tp, retention_seconds in retained.items():
                tp_id = self._tp_ids[tp]
                (boundary,) = self._db.execute(
                    "SELECT MAX(offset) FROM marks WHERE tp = ? AND at <= ?",
                    (tp_id, now - retention_seconds),
                ).fetchone()
                start = self._starts.get(tp, 0)
                while boundary is not None and start < boundary:
                    upto = min(start + AGE_OFF_CHUNK, boundary)
                    deleted += await self._submit(partial(delete_records, tp_id, start, upto))
                    start = self._starts[tp] = upto
        finally:
            if deleted:
                self.aged_off += deleted
                log.info("embedded event log: %d records past their retention deleted", deleted)
        return deleted

    def _insert_records(self, records: Sequence[Outgoing], db: sqlite3.Connection) -> None:
        rows = []
        ends, undo = self._ends, self._undo_ends
        for record in records:
            count = self._topic_partitions.get(record.topic) or self._ensure_topic(db, record.topic)
            partition = partition_of(record.key.encode(), count)
            tp = TopicPartition(record.topic, partition)
            offset = ends[tp]
            if tp not in undo:
                undo[tp] = offset
            ends[tp] = offset + 1
            rows.append((self._tp_ids[tp], offset, record.key, record.value))
        db.executemany("INSERT INTO records (tp, offset, key, value) VALUES (?, ?, ?, ?)", rows)
        self._appended_bytes += sum(len(record.value) for record in records)

    # -- EventLog ------------------------------------------------------------------------------

    async def append(self, records: Sequence[Outgoing]) -> None:
        if records:
            await self._submit(partial(self._insert_records, records))

    async def partitions(
        self, topic_filter: Callable[[str], bool], *, owned: bool = True
    ) -> list[TopicPartition]:
        return sorted(tp for tp in self._tp_ids if topic_filter(tp.topic))

    async def offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        return {tp: (self._starts.get(tp, 0), self._ends.get(tp, 0)) for tp in tps}

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
            await self._submit(partial(store_commits, rows))

    async def register_consumer(self, key: str, info: bytes, snapshot: Snapshot) -> Snapshot:
        with self._write() as db:
            encoded = json.dumps(encode_snapshot(snapshot))
            db.execute(
                "INSERT OR IGNORE INTO consumers (key, info, snapshot) VALUES (?, ?, ?)",
                (key, info, encoded),
            )
            db.execute("UPDATE consumers SET info = ? WHERE key = ?", (info, key))
            (stored,) = db.execute(
                "SELECT snapshot FROM consumers WHERE key = ?", (key,)
            ).fetchone()
        return decode_snapshot(json.loads(stored))

    async def forget_consumer(self, key: str, groups: Sequence[str]) -> None:
        def forget(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM consumers WHERE key = ?", (key,))
            db.executemany("DELETE FROM commits WHERE grp = ?", [(g,) for g in groups])

        # In the batch: a commit of the key's groups submitted before this lands before it.
        await self._submit(forget)

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

    def on_revoke(self, hook: RevokeHook | None) -> None:
        """Never called: this process owns every partition for ever."""

    async def latest_values(self, topic: str) -> dict[str, bytes]:
        table: dict[str, bytes] = {}
        for tp, tp_id in sorted(self._tp_ids.items()):
            if tp.topic != topic:
                continue
            rows = self._db.execute(
                "SELECT key, value FROM records WHERE tp = ? ORDER BY offset", (tp_id,)
            )
            for key, value in rows:
                table[key] = bytes(value)
        return table

    async def caught_up(self, topic: str) -> None:
        """At once: only this process appends to this log, and knows what it appended."""

    async def first_value(self, key: str, value: bytes) -> bytes:
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO kept (key, value) VALUES (?, ?)", (key, value))
            (kept,) = db.execute("SELECT value FROM kept WHERE key = ?", (key,)).fetchone()
        return bytes(kept)

    async def offsets_at(
        self, tps: Sequence[TopicPartition], wall_seconds: float
    ) -> dict[TopicPartition, int]:
        # The newest mark at or before the time: everything appended since lies above it.
        found: dict[TopicPartition, int] = {}
        for tp in tps:
            tp_id = self._tp_ids.get(tp)
            mark = None
            if tp_id is not None:
                (mark,) = self._db.execute(
                    "SELECT MAX(offset) FROM marks WHERE tp = ? AND at <= ?", (tp_id, wall_seconds)
                ).fetchone()
            found[tp] = max(self._starts.get(tp, 0), mark or 0)
        return found

    async def membership(self) -> Membership:
        member = GroupMember(self.instance, socket.gethostname(), tuple(sorted(self._tp_ids)))
        return Membership(self.instance, 0, (member,))

    async def health(self) -> str | None:
        try:
            self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            return f"embedded event log unusable: {exc}"
        return None

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _checkpoint(db: sqlite3.Connection) -> None:
    """A passive checkpoint: copies what it can without waiting for (or blocking) the writer."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


@asynccontextmanager
async def open_embedded_log(
    path: Path,
    *,
    partitions_for: Callable[[str], int] = lambda topic: 1,
    synchronous: str = "normal",
    checkpoint_every_bytes: int = CHECKPOINT_BYTES,
    retention_ms_for: Callable[[str], int] = lambda topic: -1,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[EmbeddedLog]:
    """Open (creating if needed) the log at `path`, with its checkpointer; closed on exit.

    Raises:
        UpstreamError: the file cannot be opened or is not a usable database.
    """
    db = open_database(path, synchronous)
    try:
        event_log = EmbeddedLog(
            db,
            partitions_for,
            checkpoint_every_bytes=checkpoint_every_bytes,
            retention_ms_for=retention_ms_for,
            clock=clock,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(event_log.checkpoint_when_due, path)
            nursery.start_soon(event_log.age_off_when_due)
            yield event_log
            nursery.cancel_scope.cancel()
    finally:
        db.close()  # the last connection to close checkpoints what is left
