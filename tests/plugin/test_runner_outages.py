"""The runner while the dispatcher comes and goes (autojump clock, in-memory dispatcher): fetches
and registration are retried, a final status until the job's lease ends, heartbeats only while
the job runs; refusals are not retried; a job handed out twice ends with one status."""

from __future__ import annotations

import logging

import msgspec
import pytest
import trio
import trio.testing

from azuld.plugin import Job, PluginRunner
from azuld.plugin.client import DispatcherRefused
from azuld.plugin.link import Backoff, DispatcherLink
from tests.plugin.test_runner import FakeDispatcher, Sleeper, statuses


class Reader(Sleeper):
    """Downloads first, then takes `sleep` seconds."""

    async def execute(self, job: Job) -> None:
        job.add_feature("size", len(await job.read()))
        await trio.sleep(float(self.config.get("sleep", "0")))


def runner_for(fake: FakeDispatcher, sleep: float, **kwargs: float) -> PluginRunner:
    """A runner whose backoff has no jitter: 0.5, 1, 2, 4, 8, 16, 30, 30... s."""
    link = DispatcherLink(fake.url, backoff=Backoff(jitter=0.0))
    return PluginRunner(Reader({"sleep": str(sleep)}), fake, link=link, **kwargs)  # type: ignore[arg-type]


async def at(when: float, action: object) -> None:
    await trio.sleep_until(when)
    action()  # type: ignore[operator]


async def test_a_final_status_is_retried_until_the_lease_ends(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    runner = runner_for(fake, sleep=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(0.5)
        fake.down = True  # the dispatcher dies while the job runs
        await trio.sleep(200)
        # The plugin is still there; the dispatcher comes back with another job.
        second = await fake.add(b"defg", "second.bin")
        fake.down = False
        await trio.sleep(150)
        runner.stop()
    # Handed out at 0 with a 120 s lease; finished at 1: tried until the next try would start
    # at or past 120, then dropped.
    assert fake.attempts["status"][:9] == [1, 1.5, 2.5, 4.5, 8.5, 16.5, 32.5, 62.5, 92.5]
    assert [s.entity.input.dequeued for s in fake.statuses] == [second.dequeued]
    assert statuses(fake) == ["completed"]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1
    assert dropped[0].startswith(f"job {event.dequeued}: completed status not delivered before")
    assert len(fake.registered) == 2  # registered again after the outage
    assert runner.jobs_done == 1


async def test_heartbeats_stop_with_the_job_and_extend_its_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    runner = runner_for(fake, sleep=100, max_jobs=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 50, lambda: setattr(fake, "down", True))
        nursery.start_soon(at, 120, lambda: setattr(fake, "down", False))
        await runner.serve()
    # A heartbeat at 30 (the lease now ends at 150); the one due at 60 is retried until the job
    # finishes at 100 (none is started at 90: one is still being retried), then only the final
    # status is: its last waits are 8 and 16 s, so it goes out at 131.5, past the first lease.
    assert fake.attempts["heartbeat"] == [30, 60, 60.5, 61.5, 63.5, 67.5, 75.5, 91.5]
    assert fake.attempts["status"] == [100, 100.5, 101.5, 103.5, 107.5, 115.5, 131.5]
    assert statuses(fake) == ["heartbeat", "completed"]


async def test_nothing_is_lost_to_failed_fetches_and_registrations(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeDispatcher()
    fake.down = True  # the plugin starts before the dispatcher
    await fake.add(b"abc")

    async def second_job_at(when: float) -> None:
        await trio.sleep_until(when)
        await fake.add(b"second", "second.bin")

    runner = runner_for(fake, sleep=0, max_jobs=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 5, lambda: setattr(fake, "down", False))
        nursery.start_soon(at, 20, lambda: setattr(fake, "down", True))
        nursery.start_soon(at, 60, lambda: setattr(fake, "down", False))
        nursery.start_soon(second_job_at, 70)
        await runner.serve()
    # The empty long-poll that ended at 27.5 met the outage; each retry of the fetch first
    # registers again, until that gets through (89: nothing asked between 60 and 89).
    assert fake.attempts["register"] == [0, 0.5, 1.5, 3.5, 7.5, 28, 29, 31, 35, 43, 59, 89]
    assert len(fake.registered) == 2
    assert [t for t in fake.attempts["fetch"] if 20 < t < 90] == [27.5, 89]
    assert statuses(fake) == ["completed", "completed"]
    link_lines = [r.getMessage() for r in caplog.records if r.name == "azuld.plugin.link"]
    assert link_lines == [
        f"dispatcher unreachable at {fake.url} (connection refused), retrying in 0.5 s",
        f"dispatcher back at {fake.url} after 7.5 s",
        f"dispatcher unreachable at {fake.url} (connection refused), retrying in 0.5 s",
        f"dispatcher back at {fake.url} after 61.5 s",
    ]


async def test_a_refused_status_is_not_retried(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    fake.refusals["status"] = DispatcherRefused(
        400, "POST /api/v2/event: Bad Request: entity.input.dequeued is missing"
    )
    runner = runner_for(fake, sleep=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(30)
        runner.stop()
    assert fake.attempts["status"] == [0]
    assert runner.jobs_done == 0
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert line == (
        f"job {event.dequeued}: the dispatcher refused its completed status: 400: POST "
        "/api/v2/event: Bad Request: entity.input.dequeued is missing"
    )


async def test_a_refused_fetch_ends_serve_after_running_jobs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    runner = runner_for(fake, sleep=20, workers=2)
    refusal = DispatcherRefused(422, "GET /api/v2/event/binary/active: no lane requested")

    async def refuse_soon() -> None:
        await trio.sleep(5)
        fake.refusals["fetch"] = refusal

    async with trio.open_nursery() as nursery:
        nursery.start_soon(refuse_soon)
        with pytest.raises(DispatcherRefused) as raised:
            await runner.serve()
    assert raised.value is refusal
    assert statuses(fake) == ["completed"]  # the running job finished first
    assert trio.current_time() == 20


async def test_a_job_handed_out_again_while_held_ends_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    again = msgspec.structs.replace(event, dequeued="job-0-sample.bin-attempt-2")
    fake.queue.append(again)  # as a dispatcher restarted under the plugin would
    runner = runner_for(fake, sleep=10, workers=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(30)
        runner.stop()
    assert [s.entity.input.dequeued for s in fake.statuses] == [event.dequeued]
    assert any(
        r.getMessage().startswith(f"job {event.dequeued} handed out again (as {again.dequeued})")
        for r in caplog.records
    )


async def test_stopping_gives_a_retried_status_the_grace(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    runner = runner_for(fake, sleep=1, grace_seconds=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 0.5, lambda: setattr(fake, "down", True))
        nursery.start_soon(at, 5, runner.stop)
        await runner.serve()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 15
    assert fake.attempts["status"] == [1, 1.5, 2.5, 4.5, 8.5]
    assert f"job {event.dequeued}: status not delivered before shutdown" in caplog.text
