"""Names and keys: topics, groups, kafka_key and tracking fields (reference 3.2, 4.1, 4.4, 5.1)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from azuld.core.keys import (
    binary_kafka_key,
    binary_topic,
    consumer_group,
    expedite_topic,
    set_keys,
    set_tracking_fields,
    system_topic,
    validate_name,
)
from azuld.errors import BadRequest
from azuld.models.events import Author, BinaryEvent, PathNode
from tests.conftest import NOW, make_binary, sha


def test_topic_names() -> None:
    assert binary_topic("qa01", "testing", "sourced") == "azul.qa01.testing.binary.sourced"
    assert expedite_topic("qa01") == "azul.qa01.system.expedite"
    assert system_topic("qa01", "status") == "azul.qa01.system.status"


def test_group_name() -> None:
    key = "Entropy-2024.01.01-binary-allsrc-sourced.extracted-ELH"
    assert consumer_group("qa01", key, "historic") == f"qa01-azul-{key}-historic"


@pytest.mark.parametrize("bad", ["", "..", "../etc", "a/b", "a.b", "x" * 101, "sp ace", "é"])
def test_invalid_names(bad: str) -> None:
    with pytest.raises(BadRequest):
        validate_name("source", bad)


def test_kafka_key_descriptor() -> None:
    event = make_binary("k", source="samples")
    event.source.references = {"b": "2", "a": "1"}
    event.source.security = "OFFICIAL"
    node = event.source.path[0]
    expected = hashlib.md5(
        f"samples.OFFICIAL.2026-11-29T10:00:00.a.1.b.2.{node.author.name}.sourced.{node.sha256}.".encode()
    ).hexdigest()
    assert binary_kafka_key(event) == expected


def test_kafka_key_ignores_author_versions_and_uses_wall_clock() -> None:
    event = make_binary("k")
    other = make_binary("k")
    other.source.path[0].author.version = "2"
    assert binary_kafka_key(event) == binary_kafka_key(other)
    shifted = make_binary("k")
    shifted.source.timestamp = NOW.astimezone(timezone(timedelta(hours=10)))
    assert binary_kafka_key(shifted) != binary_kafka_key(event)


def test_kafka_key_includes_the_first_node() -> None:
    deep = make_binary("k", depth=3)
    changed = make_binary("k", depth=3)
    changed.source.path[0].sha256 = sha("another root")
    assert binary_kafka_key(deep) != binary_kafka_key(changed)


def _descriptor_key(event: BinaryEvent) -> str:
    """`binary_kafka_key` as reference 4.4 words it, written plainly."""
    source = event.source
    parts = [f"{source.name}.{source.security}.{source.timestamp.isoformat()[:19]}."]
    parts += [f"{k}.{v}." for k, v in sorted(source.references.items())]
    parts += [f"{k}.{v}." for k, v in sorted(source.settings.items())]
    parts += [f"{s}." for s in sorted({n.author.security for n in source.path} - {""})]
    nodes = source.path[-2:] if len(source.path) <= 2 else [source.path[0], *source.path[-2:]]
    parts += [f"{n.author.name}.{n.action}.{n.sha256}." for n in nodes]
    return hashlib.md5("".join(parts).encode()).hexdigest()


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_kafka_key_matches_the_descriptor(depth: int) -> None:
    event = make_binary("k", depth=depth)
    assert binary_kafka_key(event) == _descriptor_key(event)
    event.source.references = {"z": "26", "a": "1"}
    event.source.settings = {"remove_at_depth": "4", "b": "x"}
    event.source.path[0].author.security = "SECRET"
    event.source.path[-1].author.security = "OFFICIAL"
    assert binary_kafka_key(event) == _descriptor_key(event)
    # The same instant in another zone is another wall time, so another key.
    event.source.timestamp = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert binary_kafka_key(event) == _descriptor_key(event)


def test_tracking_fields() -> None:
    event = make_binary("t", depth=2)
    event.source.references = {"user": "bob"}
    child = event.source.path[1]
    child.author = Author(name="Unbox", version="1.0", category="plugin")
    child.timestamp = datetime(2025, 1, 18, 10, 9, 23, 750742, tzinfo=UTC)
    set_tracking_fields(event)
    ref_md5 = hashlib.md5(b"user.bob.").hexdigest()
    assert event.track_source_references == f"samples.{ref_md5}"
    assert event.track_authors == ["user.bob.", "plugin.Unbox.1.0"]
    parent = event.source.path[0].sha256
    assert event.track_links == [f"{parent}.{child.sha256}.2025_01_18T10_09_23Z.plugin.Unbox.1.0"]


def test_tracking_link_time_keeps_its_offset() -> None:
    event = make_binary("t", depth=2)
    event.source.path[1] = PathNode(
        author=Author(name="x"),
        action="extracted",
        sha256=event.source.path[1].sha256,
        timestamp=datetime(2025, 1, 18, 10, 9, 23, tzinfo=timezone(timedelta(hours=10))),
    )
    set_tracking_fields(event)
    assert "2025_01_18T10_09_23+10_00" in event.track_links[0]
    # The same instant in UTC (equal datetimes) prints its own wall time, not a cached one.
    event.source.path[1].timestamp = event.source.path[1].timestamp.astimezone(UTC)
    set_tracking_fields(event)
    assert "2025_01_18T00_09_23Z" in event.track_links[0]


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("references", [{}, {"user": "bob"}, {"z": "26", "a": "1"}])
def test_set_keys_is_the_kafka_key_and_the_tracking_fields(
    depth: int, references: dict[str, str]
) -> None:
    event = make_binary("s", depth=depth)
    event.source.references = references
    event.source.settings = {"b": "x"}
    event.source.path[-1].author.security = "OFFICIAL"
    set_keys(event)
    expected = make_binary("s", depth=depth)
    expected.source.references = dict(references)
    expected.source.settings = {"b": "x"}
    expected.source.path[-1].author.security = "OFFICIAL"
    set_tracking_fields(expected)
    assert event.kafka_key == _descriptor_key(expected)
    assert event.track_source_references == expected.track_source_references
    assert event.track_authors == expected.track_authors
    assert event.track_links == expected.track_links
    empty = hashlib.md5(b"").hexdigest()
    assert (event.track_source_references == f"samples.{empty}") == (not references)
