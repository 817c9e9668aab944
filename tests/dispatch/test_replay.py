"""The replay cache in the dispatcher: a job's multiplugin statuses are kept until its own status
makes an entry of them all, a cached answer stores every one of them for the new job, the job's
`source.settings` are part of the key, and a job whose earlier statuses may be unknown here is
not cached."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.core.keys import system_topic
from azuld.dispatch import Dispatcher
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import NOW, make_binary, sha
from tests.dispatch.conftest import LEASE, decode, params, submit

CACHED = {"ReplayPluginCompletion-cached": 1}


@pytest.fixture
async def dispatcher(event_log: EmbeddedLog, nursery: trio.Nursery) -> Dispatcher:
    settings = DispatchSettings(lease_seconds=LEASE, read_ahead=8, replay_min_runtime_seconds=0)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    return dispatcher


def status(
    job: BinaryEvent,
    author: str,
    value: str,
    *,
    results: list[BinaryEvent] | None = None,
    runtime: float = 0.0,
) -> bytes:
    event = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=author, version="1", category="plugin"),
        entity=StatusEntity(
            input=job,
            status=value,  # type: ignore[arg-type]
            runtime=runtime,
            results=results or [],
        ),
    )
    return msgspec.json.encode([event])


def sample(source: str, **settings: str) -> BinaryEvent:
    event = make_binary("archive", source=source)
    event.source.settings = settings
    return event


def member(job: BinaryEvent, name: str) -> BinaryEvent:
    """A child of the job's binary, as a multiplugin reports it."""
    child = make_binary(name, source=job.source.name, action="extracted")
    child.author = Author(name="Unbox-sevenzip", version="1", category="plugin")
    child.source = msgspec.structs.replace(job.source)
    child.source.path = [*job.source.path, *make_binary(name, depth=2).source.path[1:]]
    return child


async def take(dispatcher: Dispatcher) -> tuple[BinaryEvent | None, dict[str, int]]:
    result = await dispatcher.fetch(params(name="Unbox", r_action="sourced"))
    jobs = decode(result)
    return (jobs[0] if jobs else None), result.info.filters


async def run_unbox(dispatcher: Dispatcher, job: BinaryEvent) -> None:
    """What a runner posts for one job of `Unbox`: its multiplugins', then its own status."""
    await dispatcher.publish(
        "status", status(job, "Unbox-sevenzip", "completed", results=[member(job, "m1")])
    )
    await dispatcher.publish("status", status(job, "Unbox-rar", "opt-out"))
    await dispatcher.publish("status", status(job, "Unbox", "completed-empty"))


async def statuses_of(log: EmbeddedLog, source: str) -> list[tuple[str, str, list[str]]]:
    """(author, status, its results' sha256) of the statuses stored for jobs of `source`, with
    the results a completed status published as binary events."""
    found: list[tuple[str, str, list[str]]] = []
    results: dict[tuple[str, str], list[str]] = {}
    for tp in await log.partitions(lambda topic: "binary" in topic, owned=False):
        for _, value in await log.read(tp, 0, 10_000):
            event = msgspec.json.decode(value, type=BinaryEvent)
            if event.source.name == source and event.author.category == "plugin":
                parent = event.source.path[-2].sha256 if len(event.source.path) > 1 else ""
                results.setdefault((event.author.name, parent), []).append(event.entity.sha256)
    for tp in await log.partitions(system_topic("test", "status").__eq__, owned=False):
        for _, value in await log.read(tp, 0, 10_000):
            stored = msgspec.json.decode(value, type=StatusEvent)
            job = stored.entity.input
            if job.source.name == source:
                name = stored.author.name
                shas = results.get((name, job.entity.sha256), [])
                found.append((name, stored.entity.status, shas))
    return found


async def test_a_cached_answer_stores_every_status_of_the_job(
    dispatcher: Dispatcher, event_log: EmbeddedLog
) -> None:
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    await run_unbox(dispatcher, job)
    assert len(dispatcher.replay.cache) == 1
    assert len(dispatcher.replay.pending) == 0  # kept only until the job's own status
    ran = [
        ("Unbox-sevenzip", "completed", [sha("m1")]),
        ("Unbox-rar", "opt-out", []),
        ("Unbox", "completed-empty", []),
    ]
    assert await statuses_of(event_log, "first") == ran

    await submit(dispatcher, sample("second"))
    job, filters = await take(dispatcher)
    assert (job, filters) == (None, CACHED)
    assert await statuses_of(event_log, "second") == ran
    (ks,) = dispatcher.keys()
    assert ks.finished["cached"] == 1
    # The multiplugins' outcomes count the runs (a cached answer counts as `cached`).
    assert ks.multiplugins == {"Unbox-sevenzip: completed": 1, "Unbox-rar: opt-out": 1}


async def test_other_source_settings_miss_the_cache(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, sample("first", passwords="infected"))
    job, _ = await take(dispatcher)
    assert job is not None
    await run_unbox(dispatcher, job)
    # The same settings in another order hit; other settings, or none, do not.
    await submit(dispatcher, sample("again", passwords="infected"))
    assert await take(dispatcher) == (None, CACHED)
    await submit(dispatcher, sample("other", passwords="secret"))
    job, _ = await take(dispatcher)
    assert job is not None
    assert job.source.name == "other"
    await run_unbox(dispatcher, job)
    await submit(dispatcher, sample("none"))
    job, _ = await take(dispatcher)
    assert job is not None
    assert job.source.name == "none"


async def test_a_job_whose_multiplugin_failed_is_not_cached(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    await dispatcher.publish("status", status(job, "Unbox-sevenzip", "error-exception"))
    await dispatcher.publish("status", status(job, "Unbox", "completed-empty"))
    assert len(dispatcher.replay.cache) == 0


async def test_statuses_posted_to_another_instance_make_the_job_unknown(
    dispatcher: Dispatcher, event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # A multiplugin's status posted to another instance: this one follows the status topic, so
    # it knows the status was stored, but not what it held.
    nursery.start_soon(dispatcher.statuses.follow)
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    other = Dispatcher(event_log, dispatcher.settings, "test")
    other.ids.secret = dispatcher.ids.secret  # instances of one log share it
    await other.publish(
        "status", status(job, "Unbox-sevenzip", "completed", results=[member(job, "m1")])
    )
    parsed = dispatcher.ids.parse(job.dequeued)
    assert parsed is not None
    with trio.fail_after(10):
        while not dispatcher.registry.finished.authors(parsed[0]):
            await trio.sleep(0.01)
    await dispatcher.publish("status", status(job, "Unbox", "completed-empty"))
    assert len(dispatcher.replay.cache) == 0


async def test_a_job_not_handed_out_by_this_process_is_not_cached(
    dispatcher: Dispatcher, event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # A restart between the multiplugins' statuses: the new process knows none of the earlier.
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    await dispatcher.publish("status", status(job, "Unbox-sevenzip", "completed"))
    restarted = Dispatcher(event_log, dispatcher.settings, "test")
    await nursery.start(restarted.run)
    await restarted.publish("status", status(job, "Unbox-rar", "opt-out"))
    await restarted.publish("status", status(job, "Unbox", "completed-empty"))
    assert len(restarted.replay.cache) == 0


async def test_a_run_that_began_before_its_hand_out_here_is_not_cached(
    dispatcher: Dispatcher,
    event_log: EmbeddedLog,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # After a restart the job is offered again under the same id; the first runner's late
    # statuses come while the new hand-out is leased. Its run began long before.
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    await dispatcher.publish("status", status(job, "Unbox-sevenzip", "completed", runtime=4))
    restarted = Dispatcher(event_log, dispatcher.settings, "test")
    await nursery.start(restarted.run)
    await trio.sleep(5)
    again, _ = await take(restarted)
    assert again is not None
    assert again.dequeued == job.dequeued
    await restarted.publish("status", status(job, "Unbox-rar", "opt-out", runtime=1))
    await restarted.publish("status", status(job, "Unbox", "completed-empty", runtime=5))
    assert len(restarted.replay.cache) == 0


async def test_a_status_about_another_binary_or_settings_is_not_cached(
    dispatcher: Dispatcher,
) -> None:
    await submit(dispatcher, sample("first"), sample("second"))
    job, _ = await take(dispatcher)
    assert job is not None
    forged = msgspec.structs.replace(job, source=msgspec.structs.replace(job.source))
    forged.source.settings = {"passwords": "not what the job had"}
    await dispatcher.publish("status", status(forged, "Unbox", "completed"))
    assert len(dispatcher.replay.cache) == 0
    job, _ = await take(dispatcher)
    assert job is not None
    forged = msgspec.structs.replace(job, entity=make_binary("other").entity)
    await dispatcher.publish("status", status(forged, "Unbox", "completed"))
    assert len(dispatcher.replay.cache) == 0


class HeldAppends:
    """The embedded log, with appends held while `hold` is set (until `release`)."""

    def __init__(self, inner: EmbeddedLog) -> None:
        self._inner = inner
        self.hold = False
        self.held = trio.Event()
        self.release = trio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def append(self, records: Any) -> Any:
        if self.hold:
            self.held.set()
            await self.release.wait()
        return await self._inner.append(records)


async def test_a_job_whose_multiplugin_status_is_being_stored_is_not_cached(
    event_log: EmbeddedLog, nursery: trio.Nursery
) -> None:
    # A client that posts the job's statuses at once: the plugin's own comes while a
    # multiplugin's is still on its way to the log.
    log = HeldAppends(event_log)
    settings = DispatchSettings(lease_seconds=LEASE, replay_min_runtime_seconds=0)
    dispatcher = Dispatcher(log, settings, "test")  # type: ignore[arg-type]
    await nursery.start(dispatcher.run)
    await submit(dispatcher, sample("first"))
    job, _ = await take(dispatcher)
    assert job is not None
    log.hold = True
    nursery.start_soon(
        dispatcher.publish,
        "status",
        status(job, "Unbox-sevenzip", "completed", results=[member(job, "m1")]),
    )
    await log.held.wait()
    log.hold = False
    await dispatcher.publish("status", status(job, "Unbox", "completed-empty"))
    log.release.set()
    assert len(dispatcher.replay.cache) == 0
