"""How topics are created (reference 4.2) and how long their records are kept, on both backends."""

from __future__ import annotations

from pathlib import Path

from azuld.backends.embedded import EmbeddedLog
from azuld.core.keys import binary_topic, system_topic
from azuld.service import _open_event_log
from azuld.settings import EventsSettings, Settings, SourceSettings
from azuld.topics import startup_topics, topic_spec

DAY_MS = 86_400_000
EVENTS = EventsSettings(
    topic_prefix="p",
    default_partitions=2,
    sources=(SourceSettings("feeds", partitions=4, retention_days=30), SourceSettings("samples")),
)


def test_system_topics_keep_go_s_retention() -> None:
    status = topic_spec(EVENTS, system_topic("p", "status"))
    assert (status.retention_ms, status.cleanup_policy, status.deletes_after_ms) == (
        DAY_MS,
        "delete",
        DAY_MS,
    )
    assert topic_spec(EVENTS, system_topic("p", "download")).deletes_after_ms == DAY_MS // 2
    assert topic_spec(EVENTS, system_topic("p", "insert")).deletes_after_ms == -1  # compacted
    consumers = topic_spec(EVENTS, system_topic("p", "consumers"))
    assert (consumers.partitions, consumers.deletes_after_ms) == (1, -1)


def test_sources_expire_only_when_configured_to() -> None:
    feeds = topic_spec(EVENTS, binary_topic("p", "feeds", "sourced"))
    assert (feeds.partitions, feeds.deletes_after_ms) == (4, 30 * DAY_MS)
    samples = topic_spec(EVENTS, binary_topic("p", "samples", "extracted"))
    assert (samples.partitions, samples.cleanup_policy, samples.deletes_after_ms) == (
        2,
        "compact",
        -1,
    )
    later = topic_spec(EVENTS, binary_topic("p", "unknown", "sourced"))
    assert later.deletes_after_ms == -1
    names = {spec.name for spec in startup_topics(EVENTS)}
    assert binary_topic("p", "feeds", "augmented") in names
    assert system_topic("p", "status") in names


async def test_the_embedded_log_ages_off_as_the_topics_say(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, events=EVENTS)
    async with _open_event_log(settings) as event_log:
        assert isinstance(event_log, EmbeddedLog)
        retention = event_log._retention_ms_for
        assert retention(system_topic("p", "status")) == DAY_MS
        assert retention(binary_topic("p", "feeds", "sourced")) == 30 * DAY_MS
        assert retention(binary_topic("p", "samples", "sourced")) == -1
