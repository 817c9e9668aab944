"""A posted body, decoded and checked without I/O: the records a post appends and what the
dispatcher applies after."""

from __future__ import annotations

import msgspec
import pytest

from azuld.core.keys import system_topic
from azuld.core.posts import StatusSummary, prepare_post
from azuld.core.replay import CacheEntry, CacheRules, ReplayCache, config_digest
from azuld.errors import PayloadTooLarge, Unprocessable
from azuld.models.events import Author, PluginEntity, PluginEvent, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary, sha


class OnlyMain:
    """`JobStatuses` for jobs of one status: each is its job's own, and nothing came before."""

    def is_main(self, status: StatusEvent) -> bool:
        return True

    def earlier(self, status: StatusEvent) -> list[bytes] | None:
        return []


def cache(min_runtime_seconds: float) -> CacheRules:
    return CacheRules(
        jobs=OnlyMain(), configs={("P", "1"): "digest"}, min_runtime_seconds=min_runtime_seconds
    )


def completed(runtime: float) -> bytes:
    job = make_binary("a")
    job.dequeued = "azd1|k|live|t|0|5|1"
    child = make_binary("c", action="extracted", depth=2)
    event = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name="P", version="1", category="plugin"),
        entity=StatusEntity(input=job, status="completed", runtime=runtime, results=[child]),
    )
    return msgspec.json.encode([event])


def test_status_summary_takes_what_applying_a_status_needs() -> None:
    job = make_binary("a")
    job.dequeued = "azd1|k|live|t|0|5|1"
    event = StatusEvent(
        timestamp=NOW,
        author=Author(name="P"),
        entity=StatusEntity(input=job, status="error-input", error="e", message="m"),
    )
    assert StatusSummary.of(event) == StatusSummary(
        job_id="azd1|k|live|t|0|5|1",
        status="error-input",
        sha256=sha("a"),
        error="e",
        message="m",
        author="P",
    )


def test_a_completed_status_brings_its_results_and_then_its_replay_entry() -> None:
    post = prepare_post(
        "status",
        completed(runtime=12.0),
        prefix="test",
        max_events=10,
        cache=cache(10.0),
    )
    topics = [record.topic for record in post.records]
    assert topics == [
        system_topic("test", "status"),
        "azul.test.samples.binary.extracted",
        system_topic("test", "replay"),
    ]
    assert post.replay.entries == [(post.records[-1].key, post.records[-1].value)]
    assert post.replay.ended == ["azd1|k|live|t|0|5|1"]
    entry = msgspec.json.decode(post.records[-1].value, type=CacheEntry)
    assert entry.key == ReplayCache.key("P", "1", "digest", "", sha("a"))
    # Taken before the results split off the status.
    assert [r.entity.sha256 for r in entry.statuses[-1].results] == [sha("c")]
    assert post.statuses == [
        StatusSummary(
            job_id="azd1|k|live|t|0|5|1",
            status="completed",
            sha256=sha("a"),
            error="",
            message="",
            author="P",
            version="1",
        )
    ]
    assert (post.total_ok, post.failures, dict(post.authors)) == (1, [], {"P": 1})


@pytest.mark.parametrize("min_runtime", [None, 20.0])
def test_no_replay_entry_when_the_cache_is_off_or_the_run_was_short(
    min_runtime: float | None,
) -> None:
    post = prepare_post(
        "status",
        completed(runtime=12.0),
        prefix="test",
        max_events=10,
        cache=None if min_runtime is None else cache(min_runtime),
    )
    assert post.replay.entries == []
    assert system_topic("test", "replay") not in {record.topic for record in post.records}


def test_a_registration_returns_its_config_digest() -> None:
    plugin = PluginEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name="P", version="1", category="plugin"),
        entity=PluginEntity(name="P", version="1", config={"depth": "3"}),
    )
    post = prepare_post(
        "plugin",
        msgspec.json.encode([plugin]),
        prefix="test",
        max_events=10,
        cache=cache(0.0),
    )
    assert post.configs == {("P", "1"): config_digest({"depth": "3"})}
    assert [record.topic for record in post.records] == [system_topic("test", "plugin")]


def test_the_limits_and_the_shape_are_checked_before_anything_is_encoded() -> None:
    body = msgspec.json.encode([make_binary("a"), make_binary("b")])
    with pytest.raises(PayloadTooLarge, match=r"dispatch\.max_events_per_post"):
        prepare_post("binary", body, prefix="t", max_events=1)
    with pytest.raises(Unprocessable, match="event 1 is not a JSON object"):
        prepare_post(
            "binary",
            b"[" + msgspec.json.encode(make_binary("a")) + b", 3]",
            prefix="t",
            max_events=9,
        )
