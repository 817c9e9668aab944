"""The facade: one object made of the parts, for the service, the HTTP routes and the tests."""

from __future__ import annotations

import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.dispatch import Dispatcher
from azuld.settings import DispatchSettings
from tests.conftest import make_binary
from tests.dispatch.conftest import fetch_one, submit


async def test_a_reload_reaches_every_part_that_reads_the_settings(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher = Dispatcher(event_log, DispatchSettings(lease_seconds=30), "test")
    await nursery.start(dispatcher.run)
    new = DispatchSettings(lease_seconds=5)
    dispatcher.settings = new  # what SIGHUP does
    readers = [part for part in vars(dispatcher).values() if hasattr(part, "settings")]
    assert len(readers) >= 4
    assert all(part.settings is new for part in readers)
    await submit(dispatcher, make_binary("a"))
    first = await fetch_one(dispatcher)
    assert first is not None
    start = trio.current_time()
    again = await fetch_one(dispatcher, deadline="60")
    assert again is not None
    assert trio.current_time() - start == pytest.approx(5)  # the new lease, not the old 30 s


async def test_the_watchdog_reads_the_reapers_tick(dispatcher: Dispatcher) -> None:
    before = dispatcher.last_tick
    await trio.sleep(1.5)  # the reaper ticks at least once a second
    assert dispatcher.last_tick > before
    dispatcher.last_tick = 0.0  # tests wedge it this way
    assert dispatcher.leases.last_tick == 0.0
