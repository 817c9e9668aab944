"""The plugin SDK's runner on the autojump clock, against an in-memory dispatcher: heartbeat
cadence, run timeout, opt-out, exceptions, stopping, and the result shapes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from azuld.models.events import BinaryEvent, Datastream, PluginEvent, StatusEvent
from azuld.plugin import Feature, Job, LocalDispatcher, OptOut, Plugin, PluginRunner
from azuld.plugin.client import DispatcherRefused, DispatcherUnreachable
from azuld.plugin.local import local_event
from tests.conftest import sha


class FakeDispatcher(LocalDispatcher):
    """Hands out queued events one at a time; remembers when each status arrived.

    `down` makes every request fail as if nothing listened; `refusals` refuses one kind of
    request (`register`, `fetch`, `read`, `upload`, `heartbeat`, `status`); `attempts` holds
    when each kind was tried."""

    url = "http://fake.test"

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[BinaryEvent] = []
        self.registered: list[PluginEvent] = []
        self.times: list[float] = []
        self.fetches = 0
        self.down = False
        self.refusals: dict[str, DispatcherRefused] = {}
        self.attempts: dict[str, list[float]] = defaultdict(list)

    async def _try(self, kind: str) -> None:
        await trio.lowlevel.checkpoint()
        self.attempts[kind].append(trio.current_time())
        if kind in self.refusals:
            raise self.refusals[kind]
        if self.down:
            raise DispatcherUnreachable("connection refused")

    async def register(self, event: PluginEvent) -> None:
        await self._try("register")
        self.registered.append(event)

    async def fetch(self, query: Sequence[tuple[str, str]]) -> list[BinaryEvent]:
        await self._try("fetch")
        self.fetches += 1
        if self.queue:
            return [self.queue.pop(0)]
        await trio.sleep(10)
        await self._try("fetch")
        return []

    async def read(self, source: str, stream: Datastream, offset: int, length: int | None) -> bytes:
        await self._try("read")
        return await super().read(source, stream, offset, length)

    async def upload(self, source: str, label: str, data: bytes) -> Datastream:
        await self._try("upload")
        return await super().upload(source, label, data)

    async def post_status(self, event: StatusEvent) -> None:
        await self._try("heartbeat" if event.entity.status == "heartbeat" else "status")
        self.times.append(trio.current_time())
        await super().post_status(event)

    async def add(self, data: bytes, name: str = "sample.bin") -> BinaryEvent:
        stream = await LocalDispatcher.upload(self, "samples", "content", data)
        event = local_event(stream, name, source="samples")
        event.dequeued = f"job-{len(self.queue)}-{name}"
        self.queue.append(event)
        return event


class Sleeper(Plugin):
    name = "Sleeper"
    version = "1"
    heartbeat_interval_seconds = 30.0
    run_timeout_seconds = 600.0
    features = (Feature("size", "content size", "integer"),)

    async def execute(self, job: Job) -> None:
        await trio.sleep(float(self.config.get("sleep", "0")))
        job.add_feature("size", len(await job.read()))


class Refuser(Plugin):
    name = "Refuser"
    version = "1"

    async def execute(self, job: Job) -> None:
        raise OptOut("not-for-me", "only takes PE files")


class Crasher(Plugin):
    name = "Crasher"
    version = "1"

    async def execute(self, job: Job) -> None:
        raise ValueError("bad header at 0x40")


class Extractor(Plugin):
    name = "Extractor"
    version = "2"
    features = (Feature("note", "a note", "string"),)

    async def execute(self, job: Job) -> None:
        data = await job.read()
        job.add_feature("note", "reversed")
        job.add_text("report: " + str(len(data)))
        child = job.add_child(data[::-1], {"action": "reversed"}, filename="rev.bin")
        child.add_feature("note", "child")


async def run_one(plugin: Plugin, fake: FakeDispatcher, **kwargs: float) -> PluginRunner:
    runner = PluginRunner(plugin, fake, max_jobs=1, **kwargs)  # type: ignore[arg-type]
    with trio.fail_after(10_000):
        await runner.serve()
    return runner


def statuses(fake: FakeDispatcher) -> list[str]:
    return [s.entity.status for s in fake.statuses]


async def test_heartbeat_cadence(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    await fake.add(b"x" * 10)
    start = trio.current_time()
    await run_one(Sleeper({"sleep": "100"}), fake)
    assert statuses(fake) == ["heartbeat", "heartbeat", "heartbeat", "completed"]
    assert [t - start for t in fake.times] == [30, 60, 90, 100]
    assert [s.entity.runtime for s in fake.statuses[:3]] == [30.0, 60.0, 90.0]
    assert fake.registered[0].entity.name == "Sleeper"


async def test_run_timeout(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    Slow = type("Slow", (Sleeper,), {"run_timeout_seconds": 45.0})
    start = trio.current_time()
    await run_one(Slow({"sleep": "1000"}), fake)
    final = fake.statuses[-1]
    assert final.entity.status == "error-timeout"
    assert final.entity.error == "PluginTimeout Error"
    assert final.entity.message == f"Sleeper timed out on job '{event.entity.sha256}'"
    assert fake.times[-1] - start == 45
    assert final.entity.results == []


async def test_opt_out(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    await run_one(Refuser(), fake)
    (final,) = fake.statuses
    assert (final.entity.status, final.entity.error, final.entity.message) == (
        "opt-out",
        "not-for-me",
        "only takes PE files",
    )


async def test_exception_becomes_error_exception(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    await run_one(Crasher(), fake)
    (final,) = fake.statuses
    assert final.entity.status == "error-exception"
    assert final.entity.error == "ValueError"
    assert "Traceback" in final.entity.message
    assert "bad header at 0x40" in final.entity.message


async def test_depth_limit_opts_out_without_download(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"abc")
    event.source.path = event.source.path * 10
    fake.blobs.clear()  # a download would fail
    await run_one(Sleeper(), fake)
    assert statuses(fake) == ["opt-out"]
    assert fake.statuses[0].entity.error == "depth"


async def test_results_have_the_runner_shapes(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    event = await fake.add(b"hello", "h.txt")
    await run_one(Extractor(), fake)
    (final,) = fake.statuses
    assert final.entity.status == "completed"
    assert final.entity.input.dequeued == event.dequeued
    assert final.entity.input.entity.datastreams == []
    main, child = final.entity.results
    assert main.action == "augmented"
    assert [s.label for s in main.entity.datastreams] == ["content", "text"]
    assert [(f.name, f.value) for f in main.entity.features] == [("note", "reversed")]
    assert main.source.path[-1].action == "augmented"
    assert main.source.path[-1].sha256 == event.entity.sha256
    assert child.action == "extracted"
    assert child.entity.sha256 == sha(b"olleh")
    assert child.source.path[-1].relationship == {"action": "reversed"}
    assert child.source.path[-1].filename == "rev.bin"
    assert {f.name for f in child.entity.features} >= {"note", "filename", "file_format"}
    assert fake.blobs[sha(b"olleh")] == b"olleh"
    assert all(r.kafka_key == "runner-placeholder" for r in final.entity.results)


async def test_nothing_found_is_completed_empty(autojump_clock: trio.testing.MockClock) -> None:
    class Quiet(Plugin):
        name = "Quiet"
        version = "1"

        async def execute(self, job: Job) -> None:
            await job.read()

    fake = FakeDispatcher()
    await fake.add(b"abc")
    await run_one(Quiet(), fake)
    assert statuses(fake) == ["completed-empty"]


async def test_workers_run_jobs_concurrently(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDispatcher()
    for i in range(4):
        await fake.add(bytes([i]) * 5, f"f{i}")
    runner = PluginRunner(Sleeper({"sleep": "20"}), fake, workers=4, max_jobs=4)
    start = trio.current_time()
    await runner.serve()
    assert statuses(fake) == ["completed"] * 4
    assert max(fake.times) - start == 20  # all four at once, not 80 s


@pytest.mark.parametrize(("grace", "expected"), [(60.0, ["heartbeat", "completed"]), (5.0, [])])
async def test_stop_finishes_or_abandons(
    autojump_clock: trio.testing.MockClock, grace: float, expected: list[str]
) -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    runner = PluginRunner(Sleeper({"sleep": "50"}), fake, grace_seconds=grace)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.serve)
        await trio.sleep(10)
        runner.stop()
    # Within the grace the job finishes and posts; past it, it is abandoned without a status
    # (the dispatcher re-offers it when the lease expires). Either way polling has stopped.
    assert statuses(fake) == expected
    assert fake.fetches == 1
