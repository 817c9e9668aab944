"""The dispatcher link on the autojump clock: the backoff schedule, one log line per outage,
waking when the dispatcher is back, giving up at a deadline, and what is not retried."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing

from azuld.plugin.client import DispatcherBusy, DispatcherRefused, DispatcherUnreachable
from azuld.plugin.link import Backoff, DispatcherLink, GaveUp

URL = "http://dispatcher.test:8111"


class Flaky:
    """An operation that fails `failures` times (with `error`), then answers; it records when
    each try started."""

    def __init__(self, failures: float, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or DispatcherUnreachable("connection refused")
        self.tries: list[float] = []

    async def __call__(self) -> str:
        self.tries.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if len(self.tries) <= self.failures:
            raise self.error
        return "answer"


def steady(**kwargs: float) -> DispatcherLink:
    """A link without jitter: its waits are exactly the schedule."""
    return DispatcherLink(URL, backoff=Backoff(jitter=0.0, **kwargs))


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first_seconds=0.5, cap_seconds=30.0, jitter=0.0)
    assert [backoff.delay(n, 0.7) for n in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.delay(10_000, 0.0) == 30.0


def test_jitter_takes_up_to_its_share_off() -> None:
    backoff = Backoff(first_seconds=1.0, cap_seconds=8.0, jitter=0.5)
    assert backoff.delay(2, 0.0) == 4.0
    assert backoff.delay(2, 0.5) == 3.0
    assert 2.0 < backoff.delay(2, 0.999) < 2.01
    assert backoff.delay(7, 0.5) == 6.0  # capped first, then jittered


async def test_retries_follow_the_schedule(autojump_clock: trio.testing.MockClock) -> None:
    operation = Flaky(failures=8)
    start = trio.current_time()
    assert await steady().call(operation) == "answer"
    assert [t - start for t in operation.tries] == [
        0,
        0.5,
        1.5,
        3.5,
        7.5,
        15.5,
        31.5,
        61.5,
        91.5,
    ]


async def test_one_line_per_outage_whatever_the_callers(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="azuld.plugin.link")
    link = steady()
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(link.call, Flaky(failures=5))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"dispatcher unreachable at {URL} (connection refused), retrying in 0.5 s",
        f"dispatcher back at {URL} after 15.5 s",
    ]
    assert link.up
    assert link.outages == 1


async def test_a_waiting_retry_wakes_when_the_dispatcher_is_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = steady()
    slow = Flaky(failures=6)  # its next wait would be 32 s
    quick = Flaky(failures=math.inf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.call, slow)
        await trio.sleep(20)  # the slow caller now waits from 15.5 s to 31.5 s
        quick.failures = 0
        await link.call(quick)  # answered at 20 s: the dispatcher is back
    assert slow.tries[-1] == 20
    assert len(slow.tries) == 7


async def test_gives_up_before_a_try_would_start_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    operation = Flaky(failures=math.inf)
    with pytest.raises(GaveUp, match="status: still no answer: connection refused"):
        await steady().call(operation, give_up_at=40.0, what="status")
    # Tries at 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; the next would start at 63.5 > 40.
    assert operation.tries[-1] == 31.5
    assert trio.current_time() == 31.5  # no sleeping into the deadline either


async def test_a_refusal_is_not_retried_and_ends_an_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = steady()
    await link.call(Flaky(failures=0))
    refused = DispatcherRefused(422, "GET /api/v2/event/binary/active: bad r-streams")
    down = Flaky(failures=2)

    async def refuse_after_outage() -> None:
        await down()
        raise refused

    with pytest.raises(DispatcherRefused):
        await link.call(refuse_after_outage)
    assert len(down.tries) == 3
    assert link.up


async def test_busy_waits_what_the_dispatcher_asks(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    busy = DispatcherBusy("POST /api/v2/event gave 503: Service Unavailable", retry_after_seconds=7)
    operation = Flaky(failures=3, error=busy)
    link = steady()
    assert await link.call(operation, what="status of job j1") == "answer"
    assert operation.tries == [0, 7, 14, 21]
    assert link.up  # answered: not an outage
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "status of job j1: POST /api/v2/event gave 503: Service Unavailable; retrying"
    ]


async def test_cancelled_at_once_while_waiting(autojump_clock: trio.testing.MockClock) -> None:
    with trio.move_on_after(5):
        await steady().call(Flaky(failures=math.inf))
    assert trio.current_time() == 5
