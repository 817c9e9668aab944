"""What a read behind the live edge fetched, kept for the reads after it.

A Kafka fetch returns whole record batches from where it starts: at least one, and up to 1 MB
of them here (`RoundProducer`'s batches; preloads of a thousand events fill one). A lane reads
`read_ahead` (64) records at a time, so a fetch brought many reads' worth, and dropping the rest
cost the next read a fetch of the same batch again (3.5-6 ms of CPU each, most of a count=1
job's reader cost). `ReadAhead` keeps, per partition, the records the last fetch of it brought,
for any key's lane reading there; the least recently fetched partitions go first past
`max_bytes`. Kafka records never change once written, so what is kept is never stale.
No I/O here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict

from azuld.core.delivery import TopicPartition

__all__ = ["ReadAhead"]


class _Fetched:
    __slots__ = ("bytes", "offsets", "records")

    def __init__(self, records: list[tuple[int, bytes]]) -> None:
        self.records = records
        self.offsets = [offset for offset, _ in records]
        self.bytes = sum(len(value) for _, value in records) + 64 * len(records)


class ReadAhead:
    """The records of each partition's last fetch (at most `max_bytes` in all)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._by_partition: OrderedDict[TopicPartition, _Fetched] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # reads answered from what was kept

    def get(self, tp: TopicPartition, offset: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` kept records of `tp` from `offset` on; empty if what is kept does not
        cover `offset` (a fetch must start there)."""
        fetched = self._by_partition.get(tp)
        if fetched is None or not fetched.offsets or offset < fetched.offsets[0]:
            return []
        start = bisect_left(fetched.offsets, offset)  # a compacted gap: the next one kept
        found = fetched.records[start : start + limit]
        if found:
            self.hits += 1
        return found

    def keep(self, tp: TopicPartition, records: list[tuple[int, bytes]]) -> None:
        """Keep what a fetch of `tp` brought (in offset order), instead of what was kept."""
        old = self._by_partition.pop(tp, None)
        if old is not None:
            self._bytes -= old.bytes
        if not records:
            return
        fetched = _Fetched(records)
        if fetched.bytes > self.max_bytes:
            return
        self._by_partition[tp] = fetched
        self._bytes += fetched.bytes
        while self._bytes > self.max_bytes:
            _, evicted = self._by_partition.popitem(last=False)
            self._bytes -= evicted.bytes

    def __len__(self) -> int:
        return len(self._by_partition)
