"""What a read behind the live edge fetched, kept for the reads after it.

A Kafka fetch returns whole record batches from where it starts: at least one, and up to 1 MB
of them here (`RoundProducer`'s batches; preloads of a thousand events fill one). A lane reads
`read_ahead` (64) records at a time, so a fetch brought many reads' worth, and dropping the rest
cost the next read a fetch of the same batch again (3.5-6 ms of CPU each, most of a count=1
job's reader cost). `ReadAhead` keeps what fetches brought, for any key's lane reading there;
the least recently read go first past `max_bytes`. Kafka records never change once written, so
what is kept is never stale. `Reader` fetches with the reader consumer, one fetch at a time, when
nothing kept covers a read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP

from azuld.backends.kafka_members import to_kafka, to_ours
from azuld.core.cursor import TopicPartition

__all__ = ["READ_FETCH_BYTES", "ReadAhead", "Reader"]

# What a read behind the live edge fetches (Kafka returns at least one whole record batch, up to
# 1 MB from `RoundProducer`), what is kept of such fetches for the reads after them, and how long
# a fetch may wait.
READ_FETCH_BYTES = 512 * 1024
READ_AHEAD_BYTES = 16 * 1024 * 1024
READ_WAIT_MS = 1000

# A bridge call: `KafkaLog._call` (bounded by the request timeout; Kafka errors as UpstreamError).
Call = Callable[..., Awaitable[Any]]


class _Fetched:
    __slots__ = ("bytes", "offsets", "records")

    def __init__(self, records: list[tuple[int, bytes]]) -> None:
        self.records = records
        self.offsets = [offset for offset, _ in records]
        self.bytes = sum(len(value) for _, value in records) + 64 * len(records)


class ReadAhead:
    """What fetches behind the live edge brought, by partition and first offset (at most
    `max_bytes` in all; the least recently read go first). Several per partition: the lanes of
    several plugin keys replaying one partition read near each other, each from the fetch any
    of them made."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._by_partition: dict[TopicPartition, dict[int, _Fetched]] = {}
        self._order: OrderedDict[tuple[TopicPartition, int], _Fetched] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # reads answered from what was kept

    def get(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` kept records of `tp` from `offset` on; empty if no fetch kept covers
        `offset` (one must start there)."""
        for first, fetched in self._by_partition.get(tp, {}).items():
            if first <= offset <= fetched.offsets[-1]:
                start = bisect_left(fetched.offsets, offset)  # a compacted gap: the next one
                self._order.move_to_end((tp, first))
                self.hits += 1
                return fetched.records[start : start + limit]
        return []

    def keep(self, tp: TopicPartition, records: list[tuple[int, bytes]]) -> None:
        """Keep what a fetch of `tp` brought (in offset order)."""
        if not records:
            return
        fetched = _Fetched(records)
        if fetched.bytes > self.max_bytes:
            return
        key = (tp, records[0][0])
        self._forget(key)
        self._by_partition.setdefault(tp, {})[key[1]] = fetched
        self._order[key] = fetched
        self._bytes += fetched.bytes
        while self._bytes > self.max_bytes:
            self._forget(next(iter(self._order)))

    def _forget(self, key: tuple[TopicPartition, int]) -> None:
        fetched = self._order.pop(key, None)
        if fetched is None:
            return
        self._bytes -= fetched.bytes
        kept = self._by_partition[key[0]]
        del kept[key[1]]
        if not kept:
            del self._by_partition[key[0]]

    def __len__(self) -> int:
        return len(self._order)


class Reader:
    """Reads behind the live edge: from what an earlier fetch brought, or by a fetch of the
    reader consumer (assigned every partition it was asked for, all but one paused)."""

    def __init__(self, consumer: AIOKafkaConsumer, call: Call) -> None:
        self.consumer = consumer
        self._call = call
        self.kept = ReadAhead(READ_AHEAD_BYTES)
        self._lock = trio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._resumed: KafkaTP | None = None  # the one partition the consumer fetches

    async def read(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` records of `tp` from `offset`. Raises `UpstreamError`."""
        kept = self.kept.get(tp, offset, limit)
        if kept:
            return kept
        async with self._lock:
            kept = self.kept.get(tp, offset, limit)  # fetched while this read waited
            if kept:
                return kept
            fetched: list[tuple[int, bytes]] = await self._call("fetch", self._fetch, tp, offset)
        self.kept.keep(tp, fetched)
        return fetched[:limit]

    async def bounds(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        """Where each of `tps` starts and ends in the log now (ListOffsets). Raises
        `UpstreamError`."""
        ktps = [to_kafka(tp) for tp in tps]

        async def both() -> tuple[dict[Any, int], dict[Any, int]]:
            return (
                await self.consumer.beginning_offsets(ktps),
                await self.consumer.end_offsets(ktps),
            )

        starts, ends = await self._call("list offsets", both)
        return {to_ours(k): (int(starts.get(k, 0)), int(ends.get(k, 0))) for k in ktps}

    async def _fetch(self, tp: TopicPartition, offset: int) -> list[tuple[int, bytes]]:
        """(asyncio) What one fetch from `tp` at `offset` brings."""
        ktp = to_kafka(tp)
        if tp not in self._assigned:
            self._assigned.add(tp)
            self.consumer.assign([to_kafka(t) for t in self._assigned])
            self._resumed = None  # a new assignment fetches every partition
        if self._resumed is not None:
            self.consumer.pause(self._resumed)
        else:
            self.consumer.pause(*self.consumer.assignment())
        self.consumer.resume(ktp)
        self._resumed = ktp
        self.consumer.seek(ktp, offset)
        batch = await self.consumer.getmany(ktp, timeout_ms=READ_WAIT_MS)
        return [(m.offset, m.value or b"") for m in batch.get(ktp, [])]
