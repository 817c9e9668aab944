"""Ephemeral keys (`azuld watch`): never registered, no commits, a start a while back, no
metrics, and forgotten once no poll has come for `dispatch.ephemeral_idle_seconds`."""

from __future__ import annotations

from typing import Any

import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.core.keys import consumer_group
from azuld.dispatch import Dispatcher
from azuld.models.events import StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import make_binary
from tests.dispatch.conftest import LEASE, decode, fetch_one, params, status, submit

IDLE = 5.0


def watcher(name: str = "azuld-watch-1", **start: Any) -> Any:
    return params(name, model="status", active=False, r_historic="false", ephemeral=True, **start)


async def three_statuses(dispatcher: Dispatcher) -> list[str]:
    """Three jobs of plugin P, each completed: three records in the status topic."""
    await submit(dispatcher, *(make_binary(f"w{i}") for i in range(3)))
    done = []
    for _ in range(3):
        job = await fetch_one(dispatcher)
        assert job is not None
        await dispatcher.publish("status", status(job, "completed"))
        done.append(job.entity.sha256)
    return done


async def test_a_watcher_starts_back_registers_nothing_and_is_forgotten_when_idle(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    settings = DispatchSettings(lease_seconds=LEASE, ephemeral_idle_seconds=IDLE)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    done = await three_statuses(dispatcher)

    # Two records back: the last two statuses, which were stored before the watcher came.
    seen = decode(await dispatcher.fetch(watcher(last="2", count="10")), StatusEvent)
    assert [s.entity.input.entity.sha256 for s in seen] == done[1:]
    # From the start of time: all three (the embedded log finds offsets by the minute).
    everything = decode(await dispatcher.fetch(watcher("azuld-watch-2", since="0")), StatusEvent)
    assert len(everything) == 1  # count=1 by default; the rest is queued for its next poll
    key = "azuld-watch-1-1-status-LW"
    assert set(dispatcher.registry.states) == {
        "P-1-binary-allsrc-alltype-LH",
        key,
        "azuld-watch-2-1-status-LW",
    }

    # Not registered, nothing committed, no metric names it; listed as a watcher meanwhile.
    assert key not in await event_log.consumers()
    assert await event_log.committed(consumer_group("test", key, "live")) == {}
    summaries = {s.key: s for s in await dispatcher.key_summaries()}
    assert summaries[key].ephemeral
    assert not summaries["P-1-binary-allsrc-alltype-LH"].ephemeral
    assert "azuld-watch" not in dispatcher.metrics.render().decode()

    # A poll waiting keeps it; once none has come for IDLE seconds, it is gone.
    async with trio.open_nursery() as polls:
        polls.start_soon(dispatcher.fetch, watcher(deadline="30"))
        await trio.sleep(IDLE + 20)
        assert key in dispatcher.registry.states
    await trio.sleep(IDLE - 1.5)
    assert key in dispatcher.registry.states
    await trio.sleep(3)  # the idle keys are looked for once a second
    remaining = {s.key for s in await dispatcher.key_summaries()}
    assert remaining == {"P-1-binary-allsrc-alltype-LH"}
    assert "azuld-watch" not in dispatcher.metrics.render().decode()

    # A new poll under the same name starts afresh (at the end: nothing new since).
    assert decode(await dispatcher.fetch(watcher(deadline="1")), StatusEvent) == []


async def test_a_watcher_sees_statuses_stored_after_it_started(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    assert decode(await dispatcher.fetch(watcher(deadline="1")), StatusEvent) == []
    done = await three_statuses(dispatcher)
    seen = decode(await dispatcher.fetch(watcher(count="10")), StatusEvent)
    assert [s.entity.input.entity.sha256 for s in seen] == done
