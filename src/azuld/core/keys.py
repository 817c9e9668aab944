"""Names and keys: topics, plugin keys, consumer groups, `kafka_key` and tracking fields.

Everything here follows reference sections 3.2 (tracking fields), 4.1 (topics), 4.4
(`kafka_key`) and 5.1 (plugin keys and group names), so that several azuld instances, and the Go
tools that read the same topics, compute the same names.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from datetime import datetime, timedelta

from azuld.errors import BadRequest
from azuld.models.events import BinaryEvent, PluginEvent, StatusEvent

__all__ = [
    "NAME_PATTERN",
    "binary_kafka_key",
    "binary_topic",
    "consumer_group",
    "expedite_topic",
    "is_main_status",
    "is_valid_plugin_part",
    "plugin_kafka_key",
    "random_kafka_key",
    "set_keys",
    "set_tracking_fields",
    "status_kafka_key",
    "system_topic",
    "validate_name",
]

# Source names, labels and plugin names end up in topic names, group names and blob paths, so they
# are kept to characters that are safe in all three (Kafka allows [a-zA-Z0-9._-]; dots are topic
# separators, so sources may not use them).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_PLUGIN_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$")


def validate_name(kind: str, value: str) -> str:
    """Return `value` if it is a valid source or label name, else raise `BadRequest` naming it."""
    if not NAME_PATTERN.fullmatch(value):
        raise BadRequest(
            f"invalid {kind} {value!r}: use 1-100 letters, digits, '_' or '-'",
            title="invalid name",
        )
    return value


def is_main_status(plugin_key: str, author_name: str, plugin_name: str | None = None) -> bool:
    """Whether a status for a job of `plugin_key` is the key's own plugin's, not one of a runner
    plugin's multiplugins (`Unbox-sevenzip`), which post their results under their own names
    before the plugin's status ends the job. `plugin_name`: the key's plugin, when known; else
    the key's `<name>-` prefix tells (versions are not compared: a plugin may fetch as `1` and
    sign its statuses `1.0`)."""
    if plugin_name is not None:
        return author_name == plugin_name
    return plugin_key.startswith(f"{author_name}-")


def is_valid_plugin_part(value: str) -> bool:
    """Plugin names and versions: letters, digits and `._+-`, not starting with a dot or dash."""
    return _PLUGIN_PART.fullmatch(value) is not None


def binary_topic(prefix: str, source: str, action: str) -> str:
    return f"azul.{prefix}.{source}.binary.{action}"


def expedite_topic(prefix: str) -> str:
    return f"azul.{prefix}.system.expedite"


def system_topic(prefix: str, model: str) -> str:
    return f"azul.{prefix}.system.{model}"


def consumer_group(prefix: str, plugin_key: str, lane: str) -> str:
    """Kafka group name of one lane of a plugin key (reference 5.1)."""
    return f"{prefix}-azul-{plugin_key}-{lane}"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


_MD5_OF_NOTHING = _md5("")  # the references digest of the many events without references


def binary_kafka_key(event: BinaryEvent) -> str:
    """`kafka_key` of a binary event (reference 4.4).

    Unlike Go (quirk 4), the first path node is included as Go's comment intends, besides the parent
    and the current node. Author versions stay out on purpose so that reruns
    by a newer plugin version share a key.
    """
    return _binary_kafka_key(event, _dotted_pairs(event.source.references))


def _dotted_pairs(mapping: dict[str, str]) -> str:
    """`<k>.<v>.` per item, sorted by key: how references and settings enter keys."""
    if not mapping:
        return ""
    parts: list[str] = []
    for k, v in sorted(mapping.items()):
        parts += (k, ".", v, ".")
    return "".join(parts)


def _binary_kafka_key(event: BinaryEvent, references: str) -> str:
    """`binary_kafka_key`, given the source's `_dotted_pairs(references)`."""
    # The descriptor is `<name>.<security>.<wall time>.`, then `<k>.<v>.` per reference and per
    # setting (sorted), `<security>.` per distinct path author security (sorted), and
    # `<author>.<action>.<sha256>.` for the first, parent and current path nodes. Built as one
    # list of pieces: this runs for every published binary.
    source = event.source
    ts = source.timestamp
    parts = [
        source.name,
        ".",
        source.security,
        ".",
        _wall_time(ts, ts.utcoffset()),
        ".",
        references,
        _dotted_pairs(source.settings),
    ]
    path = source.path
    securities = {node.author.security for node in path}
    securities.discard("")
    if securities:
        for security in sorted(securities):
            parts += (security, ".")
    for node in path[-2:] if len(path) <= 2 else (path[0], path[-2], path[-1]):
        parts += (node.author.name, ".", node.action, ".", node.sha256, ".")
    return _md5("".join(parts))


@functools.lru_cache(maxsize=4096)
def _wall_time(ts: datetime, offset: timedelta | None) -> str:
    """`ts` as `YYYY-MM-DDTHH:MM:SS` in its own zone (cached: source timestamps repeat; keyed
    by the offset too, as equal instants in other zones print differently)."""
    return ts.isoformat()[:19]


def status_kafka_key(event: StatusEvent) -> str:
    """Every status of one job, heartbeats included, shares a key (and so a partition)."""
    return _md5(f"{event.entity.input.dequeued}.{event.author.name}")


def plugin_kafka_key(event: PluginEvent) -> str:
    return _md5(f"{event.entity.name}.{event.entity.version}")


# Ids and keys that must be unique, not secret: `secrets` makes a system call per id.
_random = random.Random()  # seeded from os.urandom


def random_hex(nbytes: int = 16) -> str:
    """`2 * nbytes` random hex digits."""
    return f"{_random.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def random_kafka_key() -> str:
    return random_hex(16)


def _go_link_time(ts: datetime) -> str:
    """Go layout `2006_01_02T15_04_05Z07_00`: UTC prints `Z`, other offsets `+10_00`."""
    # Path timestamps repeat (a job's results share its path): strftime is the slow part.
    # Keyed by the offset too: equal instants in other zones print differently.
    return _go_link_time_cached(ts, ts.utcoffset())


@functools.lru_cache(maxsize=4096)
def _go_link_time_cached(ts: datetime, offset: timedelta | None) -> str:
    text = ts.strftime("%Y_%m_%dT%H_%M_%S")
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}_{minutes % 60:02d}"


def set_tracking_fields(event: BinaryEvent) -> None:
    """Fill `track_source_references`, `track_authors` and `track_links` (reference 3.2)."""
    _set_tracking_fields(event, _dotted_pairs(event.source.references))


def set_keys(event: BinaryEvent) -> None:
    """Set `kafka_key` and the tracking fields: `binary_kafka_key` and `set_tracking_fields` at
    once (both hash the sorted references; this sorts them once)."""
    references = _dotted_pairs(event.source.references)
    event.kafka_key = _binary_kafka_key(event, references)
    _set_tracking_fields(event, references)


def _set_tracking_fields(event: BinaryEvent, references: str) -> None:
    source = event.source
    digest = _md5(references) if references else _MD5_OF_NOTHING
    event.track_source_references = f"{source.name}.{digest}"
    path = source.path
    authors = [f"{n.author.category}.{n.author.name}.{n.author.version}" for n in path]
    event.track_authors = authors
    # Each link ends with its child's author track, computed once above for `track_authors`.
    event.track_links = [
        f"{path[i - 1].sha256}.{path[i].sha256}.{_go_link_time(path[i].timestamp)}.{authors[i]}"
        for i in range(1, len(path))
    ]
