"""Appends to Kafka in rounds: every append waiting while a produce is in flight goes out in the
next one, as one record batch per partition.

Why: aiokafka keeps one ProduceRequest in flight per broker, and its `send()` costs 20-50 µs of
Python per record (twice that under trio-asyncio) and fills batches of `max_batch_size` bytes,
16 KB by default: a post of 100 statuses went out as 7-8 requests one after another, and 16
workers' count=1 posts each paid a bridge call and a `send()` per record. Here one task sends
round after round; a round is one bridge call, one `BatchBuilder` per partition (filled in C,
up to `BATCH_BYTES`) and so one ProduceRequest per broker, whatever the number of posts in it.
An append returns once Kafka acknowledged its round (acks=all), with the offsets of its records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from aiokafka import AIOKafkaProducer

from azuld.backends.partitioner import partition_of
from azuld.core.cursor import TopicPartition
from azuld.core.publish import Outgoing
from azuld.errors import UpstreamError

__all__ = ["BATCH_BYTES", "RoundProducer"]

log = logging.getLogger(__name__)

# The largest record batch built here: below the broker's default `message.max.bytes` (1 MiB
# plus a little), so a batch of small records is never refused. A larger record goes in a batch
# of its own (Kafka takes it if the topic's `max.message.bytes` allows).
BATCH_BYTES = 1_000_000

# A bridge call: `KafkaLog._call` (bounded by the request timeout; Kafka errors as UpstreamError).
Call = Callable[..., Awaitable[Any]]


class _Append:
    """One caller's records, waiting for a round; once it is sent, their offsets or the error."""

    __slots__ = ("done", "error", "offsets", "records")

    def __init__(self, records: Sequence[Outgoing]) -> None:
        self.records = records
        self.done = trio.Event()
        self.offsets: list[tuple[TopicPartition, int]] = []
        self.error: UpstreamError | None = None


class RoundProducer:
    """Sends the appends of many callers in rounds, one round in flight (see the module notes).
    `run` is the sending task; `append` queues records for the next round and waits for it."""

    def __init__(self, producer: AIOKafkaProducer, call: Call) -> None:
        self.producer = producer
        self._call = call
        self._queue: list[_Append] = []
        self._queued = trio.Event()
        self.rounds = 0  # produce rounds sent (their sharing is tested by it)

    async def append(self, records: Sequence[Outgoing]) -> list[tuple[TopicPartition, int]]:
        """Append `records` in the next round; returns each one's partition and offset once
        Kafka acknowledged them. If the caller is cancelled, its records are still sent.

        Raises:
            UpstreamError: the round failed (some of its records may be stored).
        """
        mine = _Append(records)
        self._queue.append(mine)
        self._queued.set()
        await mine.done.wait()
        if mine.error is not None:
            raise mine.error
        return mine.offsets

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send rounds until cancelled; appends waiting then fail with `UpstreamError`."""
        task_status.started()
        try:
            while True:
                await self._queued.wait()
                batch, self._queue = self._queue, []
                self._queued = trio.Event()
                try:
                    placed = await self._call("produce", self._produce, batch)
                except UpstreamError as exc:
                    for append in batch:
                        append.error = exc
                except BaseException:
                    for append in batch:
                        append.error = UpstreamError("the Kafka producer stopped")
                    raise
                else:
                    self.rounds += 1
                    for append, offsets in zip(batch, placed, strict=True):
                        append.offsets = offsets
                finally:
                    for append in batch:
                        append.done.set()
        finally:
            for append in self._queue:
                append.error = UpstreamError("the Kafka producer stopped")
                append.done.set()

    async def _produce(self, appends: list[_Append]) -> list[list[tuple[TopicPartition, int]]]:
        """(asyncio) One batch per partition for every record of `appends`, sent at once;
        returns each append's (partition, offset) per record once all are acknowledged."""
        counts: dict[str, int] = {}
        # Per partition: (append index, record index) of each record, in order.
        by_partition: dict[tuple[str, int], list[tuple[int, int, bytes, bytes]]] = {}
        for a, append in enumerate(appends):
            for r, record in enumerate(append.records):
                count = counts.get(record.topic)
                if count is None:
                    count = counts[record.topic] = len(
                        await self.producer.partitions_for(record.topic)
                    )
                key = record.key.encode()
                partition = partition_of(key, count)  # as Sarama's (the Go dispatcher's)
                by_partition.setdefault((record.topic, partition), []).append(
                    (a, r, key, record.value)
                )
        sent: list[tuple[Any, list[tuple[int, int]]]] = []
        for (topic, partition), entries in by_partition.items():
            batch = self.producer.create_batch()
            members: list[tuple[int, int]] = []
            for a, r, key, value in entries:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    # Full: send it and start another (which takes any first record, however
                    # large: Kafka refuses it if the topic does).
                    sent.append((await self._send(batch, topic, partition), members))
                    batch, members = self.producer.create_batch(), []
                    batch.append(key=key, value=value, timestamp=None)
                members.append((a, r))
            sent.append((await self._send(batch, topic, partition), members))
        results = await asyncio.gather(*(future for future, _ in sent))
        placed: list[list[tuple[TopicPartition, int]]] = [
            [(TopicPartition("", 0), 0)] * len(append.records) for append in appends
        ]
        for metadata, (_, members) in zip(results, sent, strict=True):
            tp = TopicPartition(metadata.topic, metadata.partition)
            for index, (a, r) in enumerate(members):
                placed[a][r] = (tp, metadata.offset + index)
        return placed

    async def _send(self, batch: Any, topic: str, partition: int) -> Any:
        # Closed: no `send()` joins it, and it goes with the next request, lingering not.
        batch.close()
        return await self.producer.send_batch(batch, topic, partition=partition)
