"""The plugin-key registry: a key's state is built once, however many fetches race for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from azuld.backends.embedded import EmbeddedLog, open_embedded_log
from azuld.core.cursor import Commit
from azuld.core.delivery import Lane
from azuld.core.keys import consumer_group
from azuld.dispatch import Dispatcher
from azuld.settings import DispatchSettings
from tests.conftest import make_binary
from tests.dispatch.conftest import LEASE, SlowRegistration, decode, params, submit


async def test_concurrent_first_fetches_of_a_new_key_share_its_jobs(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Found on Kafka: 16 workers of a new plugin key fetching at once each got the same batch.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=100)
    dispatcher = Dispatcher(SlowRegistration(event_log), settings, "test")  # type: ignore[arg-type]
    await nursery.start(dispatcher.run)
    await submit(dispatcher, *(make_binary(f"e{i}") for i in range(300)))
    handed_out: list[str] = []

    async def worker() -> None:
        result = await dispatcher.fetch(params(count="100", deadline="1"))  # < LEASE
        handed_out.extend(event.entity.sha256 for event in decode(result))

    async with trio.open_nursery() as workers:
        for _ in range(16):
            workers.start_soon(worker)
    assert len(handed_out) == len(set(handed_out)) == 300
    assert len(dispatcher.keys()) == 1


class LateMetadata:
    """The embedded log as an instance whose metadata learns of the source's topics while a key
    is being created: `partitions` leaves them out of its first `hidden_answers` answers."""

    def __init__(self, inner: EmbeddedLog, hidden_answers: int) -> None:
        self._inner = inner
        self.hidden_answers = hidden_answers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def partitions(self, topic_filter: Any, *, owned: bool = True) -> Any:
        found = await self._inner.partitions(topic_filter, owned=owned)
        if self.hidden_answers > 0:
            self.hidden_answers -= 1
            found = [tp for tp in found if ".system." in f".{tp.topic}"]
        return found


@pytest.mark.parametrize("hidden_answers", [1, 2, 3, 4])
async def test_a_topic_learned_of_while_a_key_is_created_is_delivered_once(
    tmp_path: Path, hidden_answers: int
) -> None:
    # Found on Kafka (two instances, a source's topics new to one): the live lane's snapshot
    # lacked the source's partitions while the historic lane's had them, so live read them from
    # their start as if born after the key, and historic up to its stop: every event twice.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=100)
    async with open_embedded_log(tmp_path / "events.sqlite3") as log, trio.open_nursery() as n:
        late = LateMetadata(log, hidden_answers=0)
        dispatcher = Dispatcher(late, settings, "test")  # type: ignore[arg-type]
        await n.start(dispatcher.run)
        events = [make_binary(f"e{i}") for i in range(20)]
        await submit(dispatcher, *events)
        late.hidden_answers = hidden_answers
        handed_out: list[str] = []
        while True:
            result = await dispatcher.fetch(params(count="100", deadline="0.2"))
            if not result.events:
                break
            handed_out.extend(event.entity.sha256 for event in decode(result))
        n.cancel_scope.cancel()
    assert sorted(handed_out) == sorted(event.entity.sha256 for event in events)


async def test_a_registered_snapshot_without_lives_partition_starts_live_where_historic_stops(
    event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # Snapshots registered before the lanes shared one read of the log may give historic a
    # partition live lacks: live must begin where historic stops, not read it whole again.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=100)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    events = [make_binary(f"e{i}") for i in range(20)]
    await submit(dispatcher, *events)
    key = params().key
    tps = await event_log.partitions(lambda topic: "system" not in topic, owned=False)
    offsets = await event_log.offsets(tps)
    historic = consumer_group("test", key, Lane.HISTORIC)
    snapshot = {historic: {tp: Commit(start, stop=end) for tp, (start, end) in offsets.items()}}
    await event_log.register_consumer(key, b"{}", snapshot)  # type: ignore[arg-type]
    handed_out: list[str] = []
    while True:
        result = await dispatcher.fetch(params(count="100", deadline="0.2"))
        if not result.events:
            break
        handed_out.extend(event.entity.sha256 for event in decode(result))
    assert sorted(handed_out) == sorted(event.entity.sha256 for event in events)
