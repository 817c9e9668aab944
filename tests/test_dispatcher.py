"""The dispatcher over a real embedded log, on Trio's autojump clock: leases, heartbeats, retries,
lanes and results, with virtual time so lease maths is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from azuld.backends.embedded import EmbeddedLog, open_embedded_log
from azuld.core.params import ConsumeParams, parse_consume_params
from azuld.core.posts import StatusSummary
from azuld.core.replay import ReplayCache
from azuld.dispatch import Dispatcher, FetchResult
from azuld.errors import AllFiltered, BadRequest, TooManyRequests, Unprocessable
from azuld.models.events import (
    Author,
    BinaryEvent,
    Datastream,
    PathNode,
    StatusEntity,
    StatusEvent,
)
from azuld.settings import DispatchSettings
from tests.conftest import NOW, make_binary, query, sha

LEASE = 30.0


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    async with open_embedded_log(tmp_path / "events.sqlite3") as opened:
        yield opened


@pytest.fixture
async def dispatcher(event_log: EmbeddedLog, nursery: trio.Nursery) -> Dispatcher:
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=8)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    return dispatcher


def params(
    name: str = "P", model: str = "binary", active: bool = True, **extra: Any
) -> ConsumeParams:
    extra.setdefault("r_live", True)
    extra.setdefault("r_historic", True)
    return parse_consume_params(
        model,
        active,
        query(name=name, version="1", **extra),
        default_deadline_seconds=1,
        max_deadline_seconds=60,
        max_count=1000,
    )


async def submit(dispatcher: Dispatcher, *events: BinaryEvent) -> None:
    await dispatcher.publish("binary", msgspec.json.encode(list(events)))


def decode(result: FetchResult, cls: type[Any] = BinaryEvent) -> list[Any]:
    return [msgspec.json.decode(e, type=cls) for e in result.events]


def status(
    job: BinaryEvent, value: str, *, author: str = "P", results: list[BinaryEvent] | None = None
) -> bytes:
    event = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=author, version="1", category="plugin"),
        entity=StatusEntity(input=job, status=value, results=results or []),  # type: ignore[arg-type]
    )
    return msgspec.json.encode([event])


async def fetch_one(dispatcher: Dispatcher, **extra: Any) -> BinaryEvent | None:
    got = decode(await dispatcher.fetch(params(**extra)))
    assert len(got) <= 1
    return got[0] if got else None


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


class _SlowRegistration:
    """The embedded log with Kafka's round trip when a plugin key registers."""

    def __init__(self, inner: EmbeddedLog) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def register_consumer(self, key: str, info: bytes, snapshot: Any) -> Any:
        await trio.sleep(0.01)
        return await self._inner.register_consumer(key, info, snapshot)


async def test_concurrent_first_fetches_of_a_new_key_share_its_jobs(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Found on Kafka: 16 workers of a new plugin key fetching at once each got the same batch.
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=100)
    dispatcher = Dispatcher(_SlowRegistration(event_log), settings, "test")  # type: ignore[arg-type]
    await nursery.start(dispatcher.run)
    await submit(dispatcher, *(make_binary(f"e{i}") for i in range(300)))
    handed_out: list[str] = []

    async def worker() -> None:
        result = await dispatcher.fetch(params(count="100", deadline="1"))  # < LEASE
        handed_out.extend(event.entity.sha256 for event in decode(result))

    async with trio.open_nursery() as workers:
        for _ in range(16):
            workers.start_soon(worker)
    assert len(handed_out) == len(set(handed_out)) == 300
    assert len(dispatcher.keys()) == 1


async def test_the_poll_limit_holds_for_polls_queued_behind_key_creation(
    event_log: EmbeddedLog, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # Found by the long-poll flood: polls that arrived while the key was being created were never
    # checked against the limit, so 57 waited where 20 were allowed.
    settings = DispatchSettings(lease_seconds=LEASE, max_polls_per_key=5)
    dispatcher = Dispatcher(_SlowRegistration(event_log), settings, "test")  # type: ignore[arg-type]
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


def test_status_summary_takes_what_applying_a_status_needs() -> None:
    job = make_binary("a")
    job.dequeued = "azd1|k|live|t|0|5|1"
    event = StatusEvent(
        timestamp=NOW,
        author=Author(name="P"),
        entity=StatusEntity(input=job, status="error-input", error="e", message="m"),
    )
    assert StatusSummary.of(event) == StatusSummary(
        job_id="azd1|k|live|t|0|5|1", status="error-input", sha256=sha("a"), error="e", message="m"
    )


def test_replay_keys_are_their_prefix_and_the_sha256() -> None:
    prefix = ReplayCache.key_prefix("P", "1.0", "abc")
    assert (
        ReplayCache.key("P", "1.0", "abc", sha("a")) == prefix + sha("a") == f"P|1.0|abc|{sha('a')}"
    )
