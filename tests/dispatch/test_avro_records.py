"""The Avro encodings of log records kept for fetch answers (`azuld.dispatch.avro_records`)."""

from __future__ import annotations

from typing import Any

import msgspec

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import Job, JobRef
from azuld.dispatch.avro_records import AvroRecords
from azuld.models import avro
from azuld.models.events import Author, PluginEntity, PluginEvent
from tests.conftest import NOW, make_binary


def job(offset: int, value: bytes, key: str = "P-1-binary-allsrc-alltype-L") -> Job:
    return Job(JobRef(key, "live", TopicPartition("azul.binary.s", 0), offset), value)


def decoded(model: str, datum: bytes) -> Any:
    (event,) = avro.decode_posted(model, avro.bulk_record([datum]))
    return event


def test_each_job_gets_its_own_dequeued_from_one_encoding() -> None:
    records = AvroRecords()
    event = make_binary("a")
    stored = msgspec.json.encode(event)
    rendered = []
    for key in ("A-1-binary-allsrc-alltype-L", "B-1-binary-allsrc-alltype-L"):
        handed = msgspec.json.decode(stored, type=type(event))
        handed.dequeued = f"azd1|{key}|live|azul.binary.s|0|7|0"
        rendered.append(decoded("binary", records.render("binary", job(7, stored, key), handed)))
    assert len(records) == 1  # written once, for both keys
    for datum, key in zip(rendered, ("A", "B"), strict=True):
        assert datum.dequeued.startswith(f"azd1|{key}-1-")
        assert msgspec.structs.replace(datum, dequeued="") == event


def test_a_passive_reader_gets_the_stored_dequeued() -> None:
    records = AvroRecords()
    event = make_binary("a")
    event.dequeued = "as-stored"
    stored = msgspec.json.encode(event)
    first = records.render("binary", job(1, stored), msgspec.json.decode(stored, type=type(event)))
    again = records.render("binary", job(1, stored), None)  # a hit, not decoded by a filter
    assert decoded("binary", first) == decoded("binary", again) == event


def test_a_record_nobody_decoded_is_decoded_for_it() -> None:
    plugin = PluginEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name="P", category="plugin"),
        entity=PluginEntity(name="P", version="1"),
    )
    records = AvroRecords()
    datum = records.render("plugin", job(3, msgspec.json.encode(plugin)), None)
    assert decoded("plugin", datum) == plugin
    assert datum == avro.encode_event("plugin", plugin)


def test_the_cache_is_bounded_by_bytes_and_drops_the_oldest() -> None:
    one = len(b"".join(avro.FAST.binary_halves(make_binary("x0")))) + 200
    records = AvroRecords(max_bytes=3 * one + 10)
    for offset in range(10):
        event = make_binary(f"x{offset}")
        records.render("binary", job(offset, msgspec.json.encode(event)), event)
        assert records.bytes <= records.max_bytes
    assert sorted(key[2] for key in records._entries) == [7, 8, 9]  # the newest
