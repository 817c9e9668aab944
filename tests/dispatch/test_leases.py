"""Leases on the autojump clock: expiry and re-offer, heartbeats, the retry limit and its
error-timeout, the run deadline."""

from __future__ import annotations

import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.dispatch import Dispatcher
from azuld.models.events import StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import make_binary
from tests.dispatch.conftest import LEASE, decode, fetch_one, params, status, submit


async def test_lease_without_heartbeat_expires_and_is_reoffered(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("a"))
    first = await fetch_one(dispatcher)
    assert first is not None
    start = trio.current_time()
    # Nothing else to hand out until the lease runs out: the long-poll waits the whole lease.
    again = await fetch_one(dispatcher, deadline=str(int(LEASE) + 5))
    assert again is not None
    assert trio.current_time() - start == pytest.approx(LEASE)
    assert again.entity.sha256 == first.entity.sha256
    assert again.dequeued != first.dequeued


async def test_heartbeats_keep_the_lease(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    for _ in range(6):  # 120 s of work, a heartbeat every 20 s
        await trio.sleep(20)
        await dispatcher.publish("status", status(job, "heartbeat"))
    assert await fetch_one(dispatcher, deadline="1") is None
    await dispatcher.publish("status", status(job, "completed"))
    await trio.sleep(LEASE * 3)
    assert await fetch_one(dispatcher, deadline="1") is None


async def test_retry_limit_stores_error_timeout(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("a"))
    offered = []
    for _ in range(3):
        job = await fetch_one(dispatcher, deadline="60")
        assert job is not None
        offered.append(job.dequeued)
    assert len(set(offered)) == 3
    # The third lease expires too: no fourth offer, a final error-timeout status instead.
    assert await fetch_one(dispatcher, deadline="60") is None
    statuses = decode(
        await dispatcher.fetch(params("watcher", model="status", active=False)), StatusEvent
    )
    assert [s.entity.status for s in statuses] == ["error-timeout"]
    final = statuses[0]
    assert final.author.name == "P"
    assert final.entity.input.dequeued == offered[-1]
    assert "3 attempts" in final.entity.message
    assert await fetch_one(dispatcher, deadline="60") is None


async def test_heartbeating_forever_hits_the_run_deadline(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=1, max_job_seconds=100)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    await submit(dispatcher, make_binary("a"))
    job = await fetch_one(dispatcher)
    assert job is not None
    start = trio.current_time()
    while trio.current_time() - start < 200:
        await trio.sleep(10)
        await dispatcher.publish("status", status(job, "heartbeat"))
    statuses = decode(
        await dispatcher.fetch(params("watcher", model="status", active=False, count="100")),
        StatusEvent,
    )
    (final,) = [s for s in statuses if s.entity.status == "error-timeout"]
    assert "max_job_seconds=100" in final.entity.message
    # It ran out within the run deadline plus one lease, not never.
    assert len([s for s in statuses if s.entity.status == "heartbeat"]) == 20
