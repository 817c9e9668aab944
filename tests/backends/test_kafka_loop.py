"""`azuld.backends.kafka_loop`: trio-asyncio's loop running asyncio callbacks in bursts. It
replaces a private method of the pinned trio-asyncio: the first test fails on an upgrade that
changes it (check `_step` against the new `_main_loop_one`, then update the hash)."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio_asyncio

from azuld.backends import kafka_loop


def test_trio_asyncios_loop_step_is_the_one_azuld_replaces() -> None:
    assert kafka_loop.stock_step_is_known(), (
        "trio-asyncio's BaseTrioEventLoop._main_loop_one changed: azuld.backends.kafka_loop "
        "no longer replaces it (Kafka runs slower); port its _step to the new code"
    )


async def test_callbacks_timers_and_futures_run_and_trio_runs_meanwhile() -> None:
    async with trio_asyncio.open_loop() as loop:
        assert kafka_loop.run_in_bursts(loop)
        order: list[str] = []
        trio_ticks = 0
        ticks_during: list[int] = []
        busy = True

        async def trio_side() -> None:
            nonlocal trio_ticks
            while busy:
                trio_ticks += 1
                await trio.lowlevel.checkpoint()

        async def asyncio_side() -> int:
            running = asyncio.get_running_loop()
            running.call_later(0.02, order.append, "timer late")
            running.call_later(0.01, order.append, "timer early")
            for i in range(3):
                running.call_soon(order.append, f"soon {i}")
            future = running.create_future()
            running.call_soon(future.set_result, 7)
            value: int = await future
            await asyncio.sleep(0.05)
            ticks_before = trio_ticks
            for _ in range(5 * kafka_loop.BURST):  # a long burst of ready callbacks
                await asyncio.sleep(0)
            ticks_during.append(trio_ticks - ticks_before)
            return value

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio_side)
            with trio.fail_after(10):
                result = await trio_asyncio.aio_as_trio(asyncio_side)()
            busy = False
        assert result == 7
        # (A stall of the machine can make a timer due before the loop has read the callbacks
        # queued after it, in trio-asyncio's own step too: only each kind's order is checked.)
        assert [o for o in order if o.startswith("soon")] == ["soon 0", "soon 1", "soon 2"]
        assert sorted(o for o in order if o.startswith("timer")) == ["timer early", "timer late"]
        # Trio's tasks ran during the long burst, about once per BURST callbacks (the stock
        # loop: once per callback).
        assert 4 <= ticks_during[0] <= 2 * 5 + 2


async def test_a_cancelled_call_and_closing_the_loop_still_work() -> None:
    async with trio_asyncio.open_loop() as loop:
        kafka_loop.run_in_bursts(loop)
        cleaned = []

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.append(True)

        with trio.move_on_after(0.05) as scope:
            await trio_asyncio.aio_as_trio(forever)()
        assert scope.cancelled_caught
        assert cleaned == [True]
        with pytest.raises(TypeError, match="a callable object was expected by call_soon"):
            loop.call_soon("not callable")
        # Work queued just before the loop closes runs as it closes.
        loop.call_soon(cleaned.append, False)
    assert cleaned == [True, False]
