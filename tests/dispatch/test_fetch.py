"""Fetching: lanes and their priorities, no double delivery, wake-ups, filters, fairness,
cancellation and the poll limit."""

from __future__ import annotations

import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.dispatch import Dispatcher
from azuld.errors import TooManyRequests
from azuld.models.events import BinaryEvent
from azuld.settings import DispatchSettings
from tests.conftest import make_binary, sha
from tests.dispatch.conftest import (
    LEASE,
    SlowRegistration,
    decode,
    fetch_one,
    params,
    status,
    submit,
)


async def test_live_and_historic_never_both_deliver(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("old"))
    seen = []
    job = await fetch_one(dispatcher)
    assert job is not None
    seen.append(job.dequeued.split("|")[2])
    await dispatcher.publish("status", status(job, "completed"))
    await submit(dispatcher, make_binary("new"))
    job = await fetch_one(dispatcher)
    assert job is not None
    seen.append(job.dequeued.split("|")[2])
    await dispatcher.publish("status", status(job, "completed"))
    assert await fetch_one(dispatcher, deadline="5") is None
    assert seen == ["historic", "live"]


async def test_live_only_key_starts_at_the_end(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("before"))
    assert await fetch_one(dispatcher, r_historic="false") is None
    await submit(dispatcher, make_binary("after"))
    job = await fetch_one(dispatcher, r_historic="false")
    assert job is not None
    assert job.entity.sha256 == sha("after")


async def test_expedite_beats_live(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    assert await fetch_one(dispatcher, r_expedite=True) is None
    slow = make_binary("live")
    fast = make_binary("fast")
    fast.flags.expedite = True
    await submit(dispatcher, slow, fast)
    got = decode(await dispatcher.fetch(params(r_expedite=True, count="2")))
    assert [e.entity.sha256 for e in got] == [sha("fast"), sha("live")]


async def test_waiting_long_poll_is_woken_by_a_new_event(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    assert await fetch_one(dispatcher, deadline="1") is None  # the key exists from here
    results: list[BinaryEvent | None] = []

    async def poll() -> None:
        results.append(await fetch_one(dispatcher, deadline="30"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(3)
        await submit(dispatcher, make_binary("wake"))
        start = trio.current_time()
    assert results[0] is not None
    assert trio.current_time() == start  # handed over at once, not at the deadline


async def test_new_key_replays_expedited_history_once(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    old = make_binary("old-expedited")
    old.flags.expedite = True
    await submit(dispatcher, old)
    first = await fetch_one(dispatcher, r_expedite=True)
    assert first is not None
    assert first.dequeued.split("|")[2] == "historic"
    await dispatcher.publish("status", status(first, "completed"))
    new = make_binary("new-expedited")
    new.flags.expedite = True
    await submit(dispatcher, new)
    second = await fetch_one(dispatcher, r_expedite=True)
    assert second is not None
    assert second.dequeued.split("|")[2] == "expedite"
    await dispatcher.publish("status", status(second, "completed"))
    assert await fetch_one(dispatcher, r_expedite=True, deadline="5") is None


async def test_filtered_events_are_counted_and_skipped(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, make_binary("big", size=1000), make_binary("small", size=10))
    result = await dispatcher.fetch(params(r_under_content_size="100", count="5"))
    assert [e.entity.sha256 for e in decode(result)] == [sha("small")]
    assert result.info.filtered == 1
    assert result.info.filters == {"FilterConsumerRules-reject_content_too_large": 1}


@pytest.mark.parametrize(("share", "least"), [(None, 0.0), ("0.2", 0.2)])
async def test_fair_lanes_under_a_live_flood(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock, share: str | None, least: float
) -> None:
    extra = {"historic_share": share} if share else {}
    await submit(dispatcher, *(make_binary(f"old-{i}") for i in range(300)))
    assert await fetch_one(dispatcher, deadline="0", **extra) is not None  # creates the key

    async def flood() -> None:
        for burst in range(30):  # 20 new live events a second: more than the worker takes
            await submit(dispatcher, *(make_binary(f"new-{burst}-{i}") for i in range(20)))
            await trio.sleep(1)

    lanes: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.sleep(0.5)
        while len(lanes) < 200:
            job = await fetch_one(dispatcher, **extra)
            assert job is not None
            lanes.append(job.dequeued.split("|")[2])
            await dispatcher.publish("status", status(job, "completed-empty"))
            await trio.sleep(0.1)  # the worker's own pace: 10 jobs a second
        nursery.cancel_scope.cancel()
    historic = lanes.count("historic") / len(lanes)
    if share is None:
        assert historic == 0.0  # strict priority: live always had work
    else:
        assert historic >= least


async def test_idle_polls_sleep_through_appends_that_are_not_theirs(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    # The key exists from here.
    assert await fetch_one(dispatcher, name="Idle", deadline="0", r_source="mine") is None
    states = dispatcher.keys()
    (idle,) = [ks for ks in states if ks.params.name == "Idle"]
    results: list[BinaryEvent | None] = []

    async def busy_round(name: str) -> None:
        """Another source's event, and a status for it: nothing for the idle key to read."""
        await submit(dispatcher, make_binary(name, source="others"))
        job = await fetch_one(dispatcher, name="Busy")
        assert job is not None
        await dispatcher.publish("status", status(job, "completed", author="Busy"))

    await busy_round("other-0")  # new topics (which do wake every poll) appear here

    async def poll() -> None:
        results.append(await fetch_one(dispatcher, name="Idle", deadline="30", r_source="mine"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(1)
        assert idle.polls == 1
        waiting = idle.wakeup
        await busy_round("other-1")
        await trio.sleep(1)
        assert waiting is idle.wakeup  # not woken for them
        assert not waiting.is_set()
        await submit(dispatcher, make_binary("mine", source="mine"))
        start = trio.current_time()
    assert results[0] is not None
    assert results[0].entity.sha256 == sha("mine")
    assert trio.current_time() == start  # woken at once for its own


async def test_a_cancelled_fetch_takes_nothing(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, make_binary("a"))
    assert await fetch_one(dispatcher, deadline="0", name="Other") is not None  # log read
    with trio.CancelScope() as scope:
        scope.cancel()
        await dispatcher.fetch(params())
    assert scope.cancelled_caught
    states = dispatcher.keys()
    assert all(ks.lanes.leased == 0 for ks in states if ks.params.name == "P")
    assert await fetch_one(dispatcher) is not None


async def test_the_poll_limit_holds_for_polls_queued_behind_key_creation(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Found by the long-poll flood: polls that arrived while the key was being created were never
    # checked against the limit, so 57 waited where 20 were allowed.
    settings = DispatchSettings(lease_seconds=LEASE, max_polls_per_key=5)
    dispatcher = Dispatcher(SlowRegistration(event_log), settings, "test")  # type: ignore[arg-type]
    await nursery.start(dispatcher.run)
    outcomes: list[str] = []

    async def poll() -> None:
        try:
            await dispatcher.fetch(params(deadline="10"))
            outcomes.append("waited")
        except TooManyRequests as exc:
            outcomes.append("refused" if "dispatch.max_polls_per_key" in str(exc) else str(exc))

    async with trio.open_nursery() as polls:
        for _ in range(12):
            polls.start_soon(poll)
    assert sorted(outcomes) == ["refused"] * 7 + ["waited"] * 5
    await poll()  # the slots are free again once those polls ended
    assert outcomes[-1] == "waited"
