"""Reading topics through to their end, on the embedded log with several partitions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from azuld.backends.embedded import EmbeddedLog, open_embedded_log
from azuld.core.keys import system_topic
from azuld.core.publish import Outgoing
from azuld.dispatch.scan import BATCH_RECORDS, scan

TOPIC = system_topic("test", "status")
OTHER = system_topic("test", "plugin")


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    async with open_embedded_log(tmp_path / "events.sqlite3", partitions_for=lambda _: 3) as log:
        yield log


async def fill(log: EmbeddedLog, topic: str, count: int) -> dict[int, list[bytes]]:
    """`count` records spread over the partitions; returns the values per partition, in order."""
    await log.append([Outgoing(topic, f"key-{i}", f"{topic}:{i}".encode()) for i in range(count)])
    per_partition = {}
    for tp in await log.partitions(topic.__eq__, owned=False):
        per_partition[tp.partition] = [value for _, value in await log.read(tp, 0, count)]
    return per_partition


async def test_every_partition_from_its_start_in_order_across_batches(
    event_log: EmbeddedLog,
) -> None:
    written = await fill(event_log, TOPIC, 4 * BATCH_RECORDS)
    await fill(event_log, OTHER, 10)
    assert max(len(values) for values in written.values()) > BATCH_RECORDS
    async with aclosing(scan(event_log, TOPIC.__eq__)) as values:
        got = [value async for value in values]
    assert got == [value for partition in sorted(written) for value in written[partition]]


async def test_newest_reads_only_the_last_records_of_each_partition(
    event_log: EmbeddedLog,
) -> None:
    written = await fill(event_log, TOPIC, 60)
    async with aclosing(scan(event_log, TOPIC.__eq__, newest=5)) as values:
        got = [value async for value in values]
    assert got == [value for partition in sorted(written) for value in written[partition][-5:]]
    async with aclosing(scan(event_log, TOPIC.__eq__, newest=0)) as values:
        assert [value async for value in values] == []


async def test_it_stops_at_the_end_the_partitions_had_when_it_began(
    event_log: EmbeddedLog,
) -> None:
    await event_log.append([Outgoing(TOPIC, "same", b"first"), Outgoing(TOPIC, "same", b"second")])
    got = []
    async with aclosing(scan(event_log, TOPIC.__eq__)) as values:
        async for value in values:
            got.append(value)
            await event_log.append([Outgoing(TOPIC, "same", b"later")])
    assert got == [b"first", b"second"]
    async with aclosing(scan(event_log, TOPIC.__eq__)) as values:
        assert [value async for value in values] == [b"first", b"second", b"later", b"later"]


async def test_an_empty_topic_and_an_early_close(event_log: EmbeddedLog) -> None:
    async with aclosing(scan(event_log, TOPIC.__eq__)) as values:
        assert [value async for value in values] == []
    await fill(event_log, TOPIC, 30)
    got = []
    async with aclosing(scan(event_log, TOPIC.__eq__)) as values:
        async for value in values:
            got.append(value)
            break
    assert len(got) == 1
