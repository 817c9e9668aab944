"""The produce side: what gets written to which topic when events are posted (reference 4.3-4.6).

A completed status is split: its results become binary events of their own (inheriting
`flags.expedite` and `flags.bypass_cache` from the job's input), and the status is stored without
them. Other statuses are stored as they came, results and all, as Go does; their results are never
published.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from azuld.core.keys import (
    binary_topic,
    expedite_topic,
    plugin_kafka_key,
    random_kafka_key,
    set_keys,
    status_kafka_key,
    system_topic,
)
from azuld.models.events import (
    COMPLETED_STATUSES,
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEntity,
    BinaryEvent,
    BinaryFlags,
    Datastream,
    PathNode,
    PluginEvent,
    Source,
    StatusEvent,
)

__all__ = [
    "Outgoing",
    "prepare_binary",
    "prepare_events",
    "prepare_generic",
    "prepare_plugin",
    "prepare_status",
    "sourced_event",
]

_encode = msgspec.json.Encoder().encode


class Outgoing(msgspec.Struct, frozen=True, gc=False):
    """One record to append: its topic, its key and the encoded event. (Untracked by the cycle
    collector: strings and bytes only, and hundreds of them wait in each batched append.)"""

    topic: str
    key: str
    value: bytes


def _remove_settings_if_deep(event: BinaryEvent) -> None:
    depth = event.source.settings.get("remove_at_depth")
    if depth is None:
        return
    try:
        limit = int(depth)
    except ValueError:
        return
    if len(event.source.path) >= limit:
        event.source.settings = {}


def _finalise_binary(event: BinaryEvent) -> BinaryEvent:
    """Set what the dispatcher owns: the model version, `kafka_key`, tracking fields."""
    event.model_version = max(event.model_version, CURRENT_MODEL_VERSION)
    _remove_settings_if_deep(event)
    set_keys(event)  # kafka_key and the tracking fields
    event.dequeued = ""
    return event


def binary_destination(prefix: str, event: BinaryEvent) -> str:
    """Expedited events go to the expedite topic only; others to `<source>.binary.<action>`."""
    if event.flags.expedite:
        return expedite_topic(prefix)
    return binary_topic(prefix, event.source.name, event.action)


def prepare_binary(prefix: str, event: BinaryEvent) -> Outgoing:
    _finalise_binary(event)
    return Outgoing(binary_destination(prefix, event), event.kafka_key, _encode(event))


def prepare_status(prefix: str, event: StatusEvent) -> list[Outgoing]:
    """The status record, and for completed statuses one binary record per result."""
    event.model_version = max(event.model_version, CURRENT_MODEL_VERSION)
    event.kafka_key = status_kafka_key(event)
    out: list[Outgoing] = []
    entity = event.entity
    if entity.status in COMPLETED_STATUSES and entity.results:
        inherited = entity.input.flags
        for result in entity.results:
            result.flags = BinaryFlags(
                expedite=inherited.expedite, bypass_cache=inherited.bypass_cache
            )
            out.append(prepare_binary(prefix, result))
        entity.results = []
    out.insert(0, Outgoing(system_topic(prefix, "status"), event.kafka_key, _encode(event)))
    return out


def prepare_plugin(prefix: str, event: PluginEvent) -> Outgoing:
    event.model_version = max(event.model_version, CURRENT_MODEL_VERSION)
    event.kafka_key = plugin_kafka_key(event)
    return Outgoing(system_topic(prefix, "plugin"), event.kafka_key, _encode(event))


def prepare_generic(prefix: str, model: str, raw: dict[str, Any]) -> Outgoing:
    """Models azuld stores without interpreting: the object as posted, with a fresh `kafka_key`."""
    key = random_kafka_key()
    raw["kafka_key"] = key
    return Outgoing(system_topic(prefix, model), key, _encode(raw))


def prepare_events(prefix: str, model: str, events: Iterable[Any]) -> list[Outgoing]:
    """The records of checked events of one model, in order (a status may bring its results)."""
    out: list[Outgoing] = []
    for event in events:
        if model == "binary":
            out.append(prepare_binary(prefix, event))
        elif model == "status":
            out.extend(prepare_status(prefix, event))
        elif model == "plugin":
            out.append(prepare_plugin(prefix, event))
        else:
            out.append(prepare_generic(prefix, model, event))
    return out


def sourced_event(
    stream: Datastream,
    filename: str,
    *,
    source: str,
    author: Author,
    now: datetime,
    references: dict[str, str] | None = None,
    settings: dict[str, str] | None = None,
    expedite: bool = False,
) -> BinaryEvent:
    """A `sourced` event for an uploaded file, described by its `content` datastream.
    `settings` are the source's settings for plugins (e.g. archive passwords)."""
    return BinaryEvent(
        model_version=CURRENT_MODEL_VERSION,
        timestamp=now,
        author=author,
        action="sourced",
        source=Source(
            name=source,
            timestamp=now,
            references=references or {},
            settings=settings or {},
            path=[
                PathNode(
                    author=author,
                    action="sourced",
                    sha256=stream.sha256,
                    timestamp=now,
                    file_format=stream.file_format,
                    size=stream.size,
                    filename=filename,
                )
            ],
        ),
        entity=BinaryEntity(
            sha256=stream.sha256,
            sha512=stream.sha512,
            sha1=stream.sha1,
            md5=stream.md5,
            size=stream.size,
            mime=stream.mime,
            magic=stream.magic,
            file_format=stream.file_format,
            file_extension=stream.file_extension,
            datastreams=[stream],
        ),
        flags=BinaryFlags(expedite=expedite),
    )
