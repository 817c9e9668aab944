"""The plugin-key registry: a key's state is built once, however many fetches race for it."""

from __future__ import annotations

import trio

from azuld.backends.embedded import EmbeddedLog
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
