"""The embedded log's group commit: concurrent writes share a transaction, each writer returns
only once its write is durable, and a failing write fails alone."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import trio
import trio.testing

from azuld.backends import embedded
from azuld.backends.embedded import EmbeddedLog, open_embedded_log
from azuld.core.cursor import Commit, TopicPartition
from azuld.core.keys import binary_topic
from azuld.core.publish import Outgoing
from azuld.dispatch import Dispatcher
from azuld.errors import UpstreamError
from tests.backends.test_dispatch_contract import SETTINGS, complete, fetch, fetch_n
from tests.conftest import make_binary, sha

checkpoint = embedded._checkpoint  # the real one, before a test slows it down

TOPIC = binary_topic("t", "samples", "sourced")
TP = TopicPartition(TOPIC, 0)


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    async with open_embedded_log(tmp_path / "events.sqlite3") as opened:
        yield opened


def record(value: str) -> Outgoing:
    return Outgoing(TOPIC, "k", value.encode())


async def test_concurrent_appends_share_one_transaction(event_log: EmbeddedLog) -> None:
    await event_log.append([record("first")])  # the topic exists from here
    generation = event_log.generation

    async def writer(index: int) -> None:
        await event_log.append([record(f"{index}-a"), record(f"{index}-b")])

    async with trio.open_nursery() as nursery:
        for index in range(16):
            nursery.start_soon(writer, index)
    assert event_log.generation - generation < 16  # fewer transactions than writers
    got = await event_log.read(TP, 1, 100)
    assert len(got) == 32
    assert [offset for offset, _ in got] == list(range(1, 33))
    for index in range(16):  # each append's records stay together, in order
        offsets = [o for o, v in got if v.startswith(f"{index}-".encode())]
        assert offsets[1] == offsets[0] + 1
        assert dict(got)[offsets[0]] == f"{index}-a".encode()


async def test_a_failing_write_fails_alone(event_log: EmbeddedLog) -> None:
    await event_log.append([record("first")])
    outcomes: dict[str, str] = {}

    async def writer(name: str, records: list[Outgoing]) -> None:
        try:
            await event_log.append(records)
        except UpstreamError:
            outcomes[name] = "failed"
        else:
            outcomes[name] = "ok"

    bad = Outgoing(TOPIC, "k", cast(bytes, None))  # NOT NULL: the transaction fails
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer, "good-1", [record("g1")])
        nursery.start_soon(writer, "bad", [record("lost"), bad])
        nursery.start_soon(writer, "good-2", [record("g2")])
        nursery.start_soon(event_log.commit, {"g": {TP: Commit(1)}})
    assert outcomes == {"good-1": "ok", "bad": "failed", "good-2": "ok"}
    # The in-memory ends rolled back with the failed write: no gap, nothing of it stored.
    got = await event_log.read(TP, 0, 100)
    assert sorted(v for _, v in got) == [b"first", b"g1", b"g2"]
    assert [o for o, _ in got] == [0, 1, 2]
    assert (await event_log.offsets([TP]))[TP] == (0, 3)
    assert event_log.known_end(TP) == 3
    assert await event_log.committed("g") == {TP: Commit(1)}


async def test_a_failed_append_rolls_back_new_topics(event_log: EmbeddedLog) -> None:
    bad = Outgoing(TOPIC, "k", cast(bytes, None))
    with pytest.raises(UpstreamError):
        await event_log.append([record("lost"), bad])
    assert await event_log.partitions(lambda topic: True) == []
    await event_log.append([record("kept")])
    assert await event_log.read(TP, 0, 10) == [(0, b"kept")]


async def test_cancelled_before_submitting_writes_nothing(event_log: EmbeddedLog) -> None:
    await event_log.append([record("first")])
    with trio.CancelScope() as scope:
        scope.cancel()
        await event_log.append([record("never")])
    assert scope.cancelled_caught
    assert event_log.known_end(TP) == 1
    assert await event_log.read(TP, 0, 10) == [(0, b"first")]


async def test_the_log_is_not_shared(event_log: EmbeddedLog) -> None:
    assert event_log.shared is False  # one azuld per data folder: nobody else appends
    # Its one member is this process, owning every partition, never rebalanced.
    await event_log.append([record("v")])
    membership = await event_log.membership()
    (member,) = membership.members
    assert member.instance == membership.instance
    assert membership.rebalances == 0
    assert member.partitions == tuple(await event_log.partitions(lambda topic: True))
    assert TP in member.partitions


async def append_and_watch_the_wal(event_log: EmbeddedLog, wal: Path) -> int:
    """Append 3.2 MB of values (8 MB of WAL) in 400 transactions; return the WAL's largest size."""
    value = "v" * 2000
    largest = 0
    for batch in range(400):
        await event_log.append([record(f"{value}{batch}-{i}") for i in range(4)])
        largest = max(largest, (await trio.Path(wal).stat()).st_size)
    got = await event_log.read(TP, 0, 2000)
    assert len(got) == 1600
    assert got[-1] == (1599, f"{value}399-3".encode())
    return largest


async def test_the_wal_is_checkpointed_and_stays_bounded(tmp_path: Path) -> None:
    # Checkpoints run in a worker thread while appends go on; the WAL must still start over.
    every = 256 * 1024
    async with open_embedded_log(tmp_path / "events.sqlite3", checkpoint_every_bytes=every) as log:
        largest = await append_and_watch_the_wal(log, tmp_path / "events.sqlite3-wal")
        # A checkpoint starts once `every` is appended and writers wait once twice that more was
        # appended while it runs: at least four start, at least three have ended by now.
        assert log.checkpoints >= 3
        assert largest < 12 * every  # without the checkpoints finishing: over 30 times


async def test_writers_wait_for_a_slow_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk slower than the writes (as on a loaded CI machine): the checkpoint in the worker
    # thread takes half a second. Writers must wait for it rather than let the WAL grow.
    def slow_checkpoint(db: sqlite3.Connection) -> None:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.5)
        checkpoint(db)

    monkeypatch.setattr(embedded, "_checkpoint", slow_checkpoint)
    every = 256 * 1024
    async with open_embedded_log(tmp_path / "events.sqlite3", checkpoint_every_bytes=every) as log:
        largest = await append_and_watch_the_wal(log, tmp_path / "events.sqlite3-wal")
        assert log.checkpoints >= 3  # without waiting: the writes finish during the second
        assert largest < 12 * every


# -- retention ---------------------------------------------------------------------------------

KEPT = binary_topic("t", "samples", "extracted")  # kept forever (a compacted source topic)


class Clock:
    """Wall-clock time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def ten_seconds_for_topic(topic: str) -> int:
    return 10_000 if topic == TOPIC else -1


async def append_values(event_log: EmbeddedLog, topic: str, *values: str) -> None:
    await event_log.append([Outgoing(topic, "k", value.encode()) for value in values])


async def test_records_past_their_retention_are_deleted_never_early(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "events.sqlite3"
    async with open_embedded_log(
        path, retention_ms_for=ten_seconds_for_topic, clock=clock
    ) as event_log:
        await append_values(event_log, TOPIC, "a", "b", "c")
        await append_values(event_log, KEPT, "x")
        assert await event_log.age_off() == 0  # marks the ends: a, b, c were appended by now
        clock.now += 5
        await append_values(event_log, TOPIC, "d", "e")
        assert await event_log.age_off() == 0  # nothing is 10 s old yet
        clock.now += 5
        assert await event_log.age_off() == 3  # a, b, c: appended 10 s ago at the latest
        assert await event_log.read(TP, 0, 10) == [(3, b"d"), (4, b"e")]
        assert await event_log.offsets([TP]) == {TP: (3, 5)}
        clock.now += 4.9
        assert await event_log.age_off() == 0  # d and e may be only 9.9 s old
        clock.now += 0.1
        assert await event_log.age_off() == 2
        assert await event_log.read(TP, 0, 10) == []
        kept = TopicPartition(KEPT, 0)
        assert await event_log.read(kept, 0, 10) == [(0, b"x")]
        assert event_log.aged_off == 5
    # All of the partition is gone, yet it still ends where it ended.
    async with open_embedded_log(path, retention_ms_for=ten_seconds_for_topic, clock=clock) as log:
        assert await log.offsets([TP]) == {TP: (5, 5)}
        await append_values(log, TOPIC, "f")
        assert await log.read(TP, 0, 10) == [(5, b"f")]


async def test_aging_off_deletes_in_small_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "AGE_OFF_CHUNK", 3)
    clock = Clock()
    async with open_embedded_log(
        tmp_path / "events.sqlite3", retention_ms_for=ten_seconds_for_topic, clock=clock
    ) as event_log:
        await append_values(event_log, TOPIC, *(str(i) for i in range(10)))
        await event_log.age_off()
        generation = event_log.generation
        writes = 0
        original = event_log._submit

        async def counted(write: Any) -> Any:
            nonlocal writes
            writes += 1
            return await original(write)

        monkeypatch.setattr(event_log, "_submit", counted)
        clock.now += 10
        assert await event_log.age_off() == 10
        assert writes == 4  # 3 + 3 + 3 + 1
        assert event_log.generation == generation  # deleting wakes no reader
        assert await event_log.offsets([TP]) == {TP: (10, 10)}


async def test_a_plugin_behind_the_retention_gets_what_is_left(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # P finished `a` and committed there; `b` and `c` age off before P fetches again (after a
    # restart, so nothing is held in memory): P gets `d`, after the gap, and nothing else. On
    # the autojump clock, so `d`'s lease (2 s, counted from the answer) cannot run out in the
    # last fetch (1 s) however busy the machine is.
    clock = Clock()
    async with open_embedded_log(
        tmp_path / "events.sqlite3",
        retention_ms_for=lambda topic: 10_000 if ".binary." in topic else -1,
        clock=clock,
    ) as event_log:
        async with running_dispatcher(event_log) as dispatcher:
            binaries = [make_binary(name) for name in ("a", "b", "c")]
            await dispatcher.publish("binary", msgspec.json.encode(binaries))
            (job,) = await fetch_n(dispatcher, 1, count="1")
            await complete(dispatcher, job)
        await event_log.age_off()
        clock.now += 10
        async with running_dispatcher(event_log) as dispatcher:
            await dispatcher.publish("binary", msgspec.json.encode([make_binary("d")]))
            assert await event_log.age_off() == 3  # a, b and c
            got = await fetch_n(dispatcher, 1, count="5")
            assert [e.entity.sha256 for e in got] == [sha("d")]
            assert await fetch(dispatcher, count="5") == []


@asynccontextmanager
async def running_dispatcher(event_log: EmbeddedLog) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(event_log, SETTINGS, "t")
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher
        nursery.cancel_scope.cancel()
