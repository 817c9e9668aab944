"""Which topics exist and how they are configured (reference 4.2): the system topics, five topics
per configured source, and defaults for sources that appear later."""

from __future__ import annotations

from dataclasses import dataclass

from azuld.core.keys import binary_topic, system_topic
from azuld.models.events import BINARY_ACTIONS
from azuld.settings import EventsSettings

__all__ = ["CONSUMERS_TOPIC", "TopicSpec", "startup_topics", "topic_spec"]

_DAY_MS = 86_400_000

# (retention.ms, cleanup.policy) of the system topics, as the Go dispatcher creates them.
_SYSTEM: dict[str, tuple[int, str]] = {
    "insert": (-1, "compact"),
    "delete": (-1, "compact"),
    "expedite": (7 * _DAY_MS, "delete"),
    "error": (7 * _DAY_MS, "delete"),
    "plugin": (7 * _DAY_MS, "delete"),
    "status": (_DAY_MS, "delete"),
    "download": (_DAY_MS // 2, "delete"),
    "retrohunt": (-1, "compact"),
    "report": (28 * _DAY_MS, "delete"),
    "scrape": (28 * _DAY_MS, "delete"),
    # azuld's registry of plugin keys: every registration kept, the first per key wins.
    "consumers": (-1, "delete"),
}

CONSUMERS_TOPIC = "consumers"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int  # -1: forever
    cleanup_policy: str  # "delete" or "compact"

    @property
    def deletes_after_ms(self) -> int:
        """How old a record gets before retention deletes it; -1: never. Kafka compacts the
        compacted topics by key; the embedded log keeps them whole."""
        return self.retention_ms if self.cleanup_policy == "delete" else -1


def topic_spec(events: EventsSettings, topic: str) -> TopicSpec:
    """How `topic` is (or would be) created."""
    parts = topic.split(".")
    default = max(1, events.default_partitions)
    if len(parts) == 4 and parts[2] == "system":
        retention, cleanup = _SYSTEM.get(parts[3], (7 * _DAY_MS, "delete"))
        partitions = 1 if parts[3] == CONSUMERS_TOPIC else default
        return TopicSpec(topic, partitions, retention, cleanup)
    source = parts[2] if len(parts) == 5 else ""
    for configured in events.sources:
        if configured.name == source:
            partitions = configured.partitions or default
            if configured.retention_days > 0:
                retention_ms = int(configured.retention_days * _DAY_MS)
                return TopicSpec(topic, partitions, retention_ms, "delete")
            return TopicSpec(topic, partitions, -1, "compact")
    return TopicSpec(topic, default, -1, "compact")


def startup_topics(events: EventsSettings) -> list[TopicSpec]:
    """Topics created at start-up: the system topics and each configured source's five."""
    prefix = events.topic_prefix
    names = [system_topic(prefix, model) for model in _SYSTEM]
    names += [
        binary_topic(prefix, source.name, action)
        for source in events.sources
        for action in BINARY_ACTIONS
    ]
    return [topic_spec(events, name) for name in names]
