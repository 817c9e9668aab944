"""Which topics exist and how they are configured (reference 4.2): the system topics, five topics
per configured source, and defaults for sources that appear later."""

from __future__ import annotations

from dataclasses import dataclass

from azuld.core.keys import binary_topic, system_topic
from azuld.models.events import BINARY_ACTIONS
from azuld.settings import EventsSettings

__all__ = [
    "CONSUMERS_TOPIC",
    "HANDOVER_TOPIC",
    "INTERNAL_TOPICS",
    "TopicSpec",
    "siblings",
    "startup_topics",
    "topic_spec",
]

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
    # azuld's replay cache, re-offer trail and lease hand-overs. Created at start-up with the
    # rest: on Kafka a topic created later changes what the instances' group subscribes to and
    # makes every instance give up and re-take its partitions (a rebalance).
    "replay": (7 * _DAY_MS, "delete"),
    "reoffer": (7 * _DAY_MS, "delete"),
    "handover": (-1, "compact"),  # the newest hand-over per (group, partition) is what counts
}

CONSUMERS_TOPIC = "consumers"
HANDOVER_TOPIC = "handover"
# System topics that are azuld's own bookkeeping, never dispatched to a plugin key: they stay out
# of the partitions instances share (every instance reads them whole).
INTERNAL_TOPICS = frozenset({CONSUMERS_TOPIC, HANDOVER_TOPIC, "replay"})


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
        partitions = 1 if parts[3] in (CONSUMERS_TOPIC, HANDOVER_TOPIC) else default
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


def siblings(events: EventsSettings, topic: str) -> list[TopicSpec]:
    """The topics to create together with `topic`: a source's five binary topics at once (each
    topic created on Kafka rebalances the instances' group: one rebalance per new source, not
    one per action), otherwise `topic` alone."""
    parts = topic.split(".")
    if len(parts) == 5 and parts[3] == "binary":
        prefix, source = parts[1], parts[2]
        return [
            topic_spec(events, binary_topic(prefix, source, action)) for action in BINARY_ACTIONS
        ]
    return [topic_spec(events, topic)]
