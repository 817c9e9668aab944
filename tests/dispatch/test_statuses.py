"""Posting events and statuses: results become events, rejections, partial failures, what a
final status frees, duplicates, failures kept for the dashboard."""

from __future__ import annotations

import msgspec
import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.dispatch import Dispatcher
from azuld.errors import AllFiltered, BadRequest, Unprocessable
from azuld.models.events import Author, BinaryEvent, Datastream, PathNode, StatusEntity, StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import NOW, make_binary, sha
from tests.dispatch.conftest import LEASE, decode, fetch_one, params, status, submit


async def test_completed_results_are_offered_to_other_plugins(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    # The second plugin key exists before the results are published (live) ...
    assert await fetch_one(dispatcher, name="Q", r_historic="false", deadline="1") is None
    parent = make_binary("archive")
    await submit(dispatcher, parent)
    job = await fetch_one(dispatcher, name="Unbox", r_action=["sourced"])
    assert job is not None
    child = make_binary("member", action="extracted")
    child.source.path = [
        *job.source.path,
        PathNode(
            author=Author(name="Unbox", version="1", category="plugin"),
            action="extracted",
            sha256=sha("member"),
            timestamp=NOW,
            relationship={"action": "extracted"},
        ),
    ]
    enriched = make_binary("archive", action="enriched", streams=[])
    enriched.source.path = [*job.source.path]
    enriched.source.path.append(
        PathNode(
            author=Author(name="Unbox"), action="enriched", sha256=sha("archive"), timestamp=NOW
        )
    )
    await dispatcher.publish(
        "status", status(job, "completed", author="Unbox", results=[child, enriched])
    )
    got = decode(await dispatcher.fetch(params("Q", r_historic="false", count="5")))
    assert sorted((e.action, e.entity.sha256) for e in got) == sorted(
        [("sourced", sha("archive")), ("extracted", sha("member")), ("enriched", sha("archive"))]
    )
    assert all(e.kafka_key and e.track_authors for e in got)
    # ... and the stored status no longer carries them.
    statuses = decode(
        await dispatcher.fetch(params("watcher", model="status", active=False)), StatusEvent
    )
    assert [(s.entity.status, s.entity.results) for s in statuses] == [("completed", [])]


async def test_results_inherit_expedite(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    parent = make_binary("p")
    parent.flags.expedite = True
    await submit(dispatcher, parent)
    job = await fetch_one(dispatcher, r_expedite=True)
    assert job is not None
    assert job.flags.expedite
    child = make_binary("c", action="extracted", depth=2)
    await dispatcher.publish("status", status(job, "completed", results=[child]))
    got = await fetch_one(dispatcher, name="Other", r_expedite=True, r_action=["extracted"])
    assert got is not None
    assert got.entity.sha256 == sha("c")
    assert got.flags.expedite


async def test_publish_rejections(dispatcher: Dispatcher) -> None:
    with pytest.raises(BadRequest, match="no events were provided"):
        await dispatcher.publish("binary", b"")
    with pytest.raises(BadRequest, match="not a registered model type"):
        await dispatcher.publish("nonsense", b"[{}]")
    with pytest.raises(Unprocessable, match="too small"):
        await dispatcher.publish("binary", b"[]")
    with pytest.raises(Unprocessable, match="invalid json"):
        await dispatcher.publish("binary", b"[{,}]")
    old = msgspec.json.decode(msgspec.json.encode(make_binary("x")))
    old["model_version"] = 5
    with pytest.raises(Unprocessable, match="version was too old"):
        await dispatcher.publish("binary", msgspec.json.encode([old]))
    invalid = make_binary("y")
    invalid.source.path = []
    with pytest.raises(AllFiltered, match=r"source\.path"):
        await dispatcher.publish("binary", msgspec.json.encode([invalid]))


async def test_partial_failures_are_listed(dispatcher: Dispatcher) -> None:
    invalid = make_binary("y", streams=[Datastream(label="text", sha256=sha("t"))])
    response = await dispatcher.publish("binary", msgspec.json.encode([make_binary("ok"), invalid]))
    assert response.total_ok == 1
    assert response.total_failures == 1
    assert "must have a 'content' datastream" in response.failures[0].error


async def test_a_status_that_frees_the_window_wakes_a_waiting_poll(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    settings = DispatchSettings(lease_seconds=LEASE, window=2, read_ahead=8)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    await submit(dispatcher, *(make_binary(f"w-{i}") for i in range(3)))
    first = await fetch_one(dispatcher)
    second = await fetch_one(dispatcher)
    assert first is not None
    assert second is not None
    results: list[BinaryEvent | None] = []

    async def poll() -> None:  # the window (2 unfinished jobs) is full: it waits
        results.append(await fetch_one(dispatcher, deadline="20"))

    async with trio.open_nursery() as inner:
        inner.start_soon(poll)
        await trio.sleep(5)
        assert results == []
        await dispatcher.publish("status", status(first, "completed"))
        start = trio.current_time()
    assert results[0] is not None
    assert results[0].entity.sha256 == sha("w-2")
    assert trio.current_time() == start


async def test_a_duplicate_status_changes_nothing(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, make_binary("a"), make_binary("b"))
    job = await fetch_one(dispatcher)
    assert job is not None
    await dispatcher.publish("status", status(job, "completed"))
    (ks,) = dispatcher.keys()
    finished = dict(ks.finished)
    await dispatcher.publish("status", status(job, "completed"))  # a retry of the same POST
    assert dict(ks.finished) == finished
    other = await fetch_one(dispatcher)
    assert other is not None
    assert other.entity.sha256 == sha("b")


async def test_a_failed_status_is_kept_for_the_dashboard(dispatcher: Dispatcher) -> None:
    await submit(dispatcher, make_binary("a"), make_binary("b"))
    job = await fetch_one(dispatcher)
    assert job is not None
    failed = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name="P", version="1", category="plugin"),
        entity=StatusEntity(
            input=job, status="error-exception", error="boom", message="x" * 3000 + "end"
        ),
    )
    response = await dispatcher.publish("status", msgspec.json.encode([failed]))
    assert response.total_ok == 1
    (ks,) = dispatcher.keys()
    assert dict(ks.finished) == {"exception": 1}
    (failure,) = ks.failures
    assert (failure.sha256, failure.status, failure.error) == (
        job.entity.sha256,
        "error-exception",
        "boom",
    )
    assert failure.message == ("x" * 3000 + "end")[-2000:]
    other = await fetch_one(dispatcher)  # the job is finished: the next one comes
    assert other is not None
    assert other.entity.sha256 != job.entity.sha256
