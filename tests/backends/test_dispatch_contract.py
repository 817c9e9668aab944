"""The dispatcher's delivery rules on real time, run unchanged on the embedded log and on Kafka:
lanes without double delivery, results reaching other plugins, lease expiry, and a restart that
re-offers exactly the unfinished jobs."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from azuld.core.finished import MAIN
from azuld.core.keys import consumer_group
from azuld.core.params import parse_consume_params
from azuld.dispatch import Dispatcher
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from azuld.ports import EventLog
from azuld.settings import DispatchSettings
from tests.backends.conftest import open_log
from tests.conftest import NOW, make_binary, query, sha

SETTINGS = DispatchSettings(lease_seconds=2.0, max_attempts=3, read_ahead=16)


@pytest.fixture
async def dispatcher(event_log: EventLog, topic_prefix: str) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(event_log, SETTINGS, topic_prefix)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher
        nursery.cancel_scope.cancel()


async def fetch(dispatcher: Dispatcher, name: str = "P", **extra: Any) -> list[BinaryEvent]:
    extra.setdefault("r_live", True)
    extra.setdefault("r_historic", True)
    extra.setdefault("deadline", "1")
    params = parse_consume_params(
        "binary",
        True,
        query(name=name, version="1", **extra),
        default_deadline_seconds=1,
        max_deadline_seconds=60,
        max_count=1000,
    )
    result = await dispatcher.fetch(params)
    return [msgspec.json.decode(e, type=BinaryEvent) for e in result.events]


async def fetch_n(
    dispatcher: Dispatcher, n: int, name: str = "P", **extra: Any
) -> list[BinaryEvent]:
    """Fetch until `n` jobs came (on Kafka a new topic is owned after a metadata refresh)."""
    got: list[BinaryEvent] = []
    with trio.fail_after(30):
        while len(got) < n:
            got += await fetch(dispatcher, name, **extra)
    return got


async def complete(
    dispatcher: Dispatcher, job: BinaryEvent, results: list[BinaryEvent] | None = None
) -> None:
    # Signed by the plugin the job was handed to (its key starts with its name): another name
    # would be one of a runner plugin's multiplugins, whose statuses do not end the job.
    plugin = job.dequeued.split("|")[1].split("-")[0]
    status = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=plugin, version="1"),
        entity=StatusEntity(input=job, status="completed", results=results or []),
    )
    await dispatcher.publish("status", msgspec.json.encode([status]))


async def test_each_event_once_across_historic_and_live(dispatcher: Dispatcher) -> None:
    await dispatcher.publish("binary", msgspec.json.encode([make_binary("old")]))
    (old,) = await fetch_n(dispatcher, 1)
    await complete(dispatcher, old)
    await dispatcher.publish("binary", msgspec.json.encode([make_binary("new")]))
    (new,) = await fetch_n(dispatcher, 1)
    await complete(dispatcher, new)
    assert await fetch(dispatcher) == []
    assert [old.dequeued.split("|")[2], new.dequeued.split("|")[2]] == ["historic", "live"]


async def test_results_reach_another_plugin(dispatcher: Dispatcher) -> None:
    await dispatcher.publish("binary", msgspec.json.encode([make_binary("parent")]))
    (job,) = await fetch_n(dispatcher, 1)
    child = make_binary("child", action="extracted", depth=2)
    await complete(dispatcher, job, [child])
    got = await fetch_n(dispatcher, 2, name="Other", count="5")
    assert sorted(e.entity.sha256 for e in got) == sorted([sha("parent"), sha("child")])


async def test_expired_lease_is_offered_again(dispatcher: Dispatcher) -> None:
    await dispatcher.publish("binary", msgspec.json.encode([make_binary("slow")]))
    (first,) = await fetch_n(dispatcher, 1)
    assert await fetch(dispatcher, deadline="1") == []  # leased
    (again,) = await fetch(dispatcher, deadline="5")  # after 2 s the lease expired
    assert again.entity.sha256 == first.entity.sha256
    assert again.dequeued.split("|")[6] == "1"


async def test_restart_reoffers_exactly_the_unfinished_as_new_attempts(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, topic_prefix: str
) -> None:
    # A dispatcher that stops is gone: its leased jobs are offered again when it starts (as new
    # attempts: their first plugins may still report), finished jobs never.
    path = tmp_path / "events.sqlite3"
    settings = DispatchSettings(lease_seconds=60.0, read_ahead=16)
    async with open_log(backend, request, path, topic_prefix) as log:
        dispatcher = Dispatcher(log, settings, topic_prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            events = [make_binary(f"file-{i}") for i in range(6)]
            await dispatcher.publish("binary", msgspec.json.encode(events))
            jobs = await fetch_n(dispatcher, 6, count="6")
            for job in (jobs[0], jobs[2], jobs[3]):
                await complete(dispatcher, job)
            nursery.cancel_scope.cancel()
    unfinished = {j.entity.sha256 for j in (jobs[1], jobs[4], jobs[5])}
    async with open_log(backend, request, path, topic_prefix) as log:
        dispatcher = Dispatcher(log, settings, topic_prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            again = await fetch_n(dispatcher, 3, count="6")
            assert await fetch(dispatcher, count="6") == []
            # A first plugin reports after the restart: answered, not stored again.
            await complete(dispatcher, jobs[1])
            assert dispatcher.statuses.registry.finished.seen(
                dispatcher.ids.parse(jobs[1].dequeued)[0],
                MAIN,  # type: ignore[index]
            )
            nursery.cancel_scope.cancel()
    assert {j.entity.sha256 for j in again} == unfinished
    assert {j.dequeued.split("|")[6] for j in again} == {"1"}  # a new attempt


async def test_a_status_is_answered_before_its_commit_and_a_crash_offers_it_not_again(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On Kafka a status post returns once the status is stored; its commit follows within
    # `commit_interval_seconds`. An instance that dies before storing it (no commits on the
    # way out, as after a SIGKILL) offers the finished jobs not again when it starts: it reads
    # the statuses back. On the embedded log each post still stores its commit.
    path = tmp_path / "events.sqlite3"
    settings = DispatchSettings(lease_seconds=60.0, read_ahead=16, commit_interval_seconds=5.0)
    async with open_log(backend, request, path, topic_prefix) as log:
        dispatcher = Dispatcher(log, settings, topic_prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            events = [make_binary(f"file-{i}") for i in range(4)]
            await dispatcher.publish("binary", msgspec.json.encode(events))
            jobs = await fetch_n(dispatcher, 4, count="4")
            requests = getattr(log, "commit_requests", 0)
            for job in jobs[:2]:
                await complete(dispatcher, job)
            if backend == "kafka":
                assert log.commit_requests == requests  # type: ignore[attr-defined]
            # Dies: what the background had not stored yet is lost.
            monkeypatch.setattr(dispatcher.background, "_commit_everything", _nothing)
            nursery.cancel_scope.cancel()
    monkeypatch.undo()
    async with open_log(backend, request, path, topic_prefix) as log:
        dispatcher = Dispatcher(log, SETTINGS, topic_prefix)
        async with trio.open_nursery() as nursery:
            await nursery.start(dispatcher.run)
            again = await fetch_n(dispatcher, 2, count="4")
            assert await fetch(dispatcher, count="4") == []
            nursery.cancel_scope.cancel()
    assert {j.entity.sha256 for j in again} == {j.entity.sha256 for j in jobs[2:]}


async def _nothing() -> None:
    pass


async def test_two_clearances_on_one_source(dispatcher: Dispatcher) -> None:
    """Two plugins read one source with different `max-security`: each gets exactly the events
    its clearance may see; the rest are filtered for it, never handed out."""
    events = []
    for index, security in enumerate(["OFFICIAL", "SECRET", "", "OFFICIAL:SENSITIVE", "SECRET"]):
        event = make_binary(f"labelled-{index}")
        event.source.security = security
        events.append(event)
    await dispatcher.publish("binary", msgspec.json.encode(events))
    low = await fetch_n(dispatcher, 2, name="Low", count="10", max_security="OFFICIAL")
    for job in low:
        await complete(dispatcher, job)  # before the 2 s leases run out
    high = await fetch_n(dispatcher, 5, name="High", count="10", max_security="SECRET")
    assert sorted(e.entity.sha256 for e in low) == sorted([sha("labelled-0"), sha("labelled-2")])
    assert sorted(e.entity.sha256 for e in high) == sorted(e.entity.sha256 for e in events)
    assert await fetch(dispatcher, "Low", max_security="OFFICIAL") == []


async def test_a_watcher_starts_back_and_commits_nothing(
    dispatcher: Dispatcher, event_log: EventLog, topic_prefix: str
) -> None:
    await dispatcher.publish(
        "binary", msgspec.json.encode([make_binary(f"w{i}") for i in range(3)])
    )
    jobs = await fetch_n(dispatcher, 3, count="3")
    for job in jobs:
        await complete(dispatcher, job)

    def watcher(name: str, **start: str) -> Any:
        return parse_consume_params(
            "status",
            False,
            query(name=name, version="1", r_live=True, ephemeral=True, count="10", **start),
            default_deadline_seconds=1,
            max_deadline_seconds=60,
            max_count=1000,
        )

    # Each starts before the three statuses: a minute back, or three records back on each
    # partition of the status topic.
    for name, start in (("since", {"since": str(time.time() - 60)}), ("last", {"last": "3"})):
        seen: list[str] = []
        with trio.fail_after(30):
            while len(seen) < 3:
                result = await dispatcher.fetch(watcher(f"watch-{name}", **start))
                seen += [
                    msgspec.json.decode(e, type=StatusEvent).entity.input.entity.sha256
                    for e in result.events
                ]
        assert sorted(seen) == sorted(job.entity.sha256 for job in jobs)
        key = f"watch-{name}-1-status-LW"
        assert key not in await event_log.consumers()
        assert await event_log.committed(consumer_group(topic_prefix, key, "live")) == {}
