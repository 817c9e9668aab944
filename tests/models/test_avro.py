"""The Avro codec on its own: every model round-trips through both encodings, and a bad body
is a 4xx that says what was wrong, never a crash."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from fastavro import schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azuld.dispatch import FetchResult
from azuld.errors import BadRequest, ClientError, Unprocessable
from azuld.http.events import encode_fetch_reply
from azuld.models import avro, avro_fast
from azuld.models.events import (
    BINARY_ACTIONS,
    DATA_LABELS,
    MODELS,
    Author,
    BinaryEntity,
    BinaryEvent,
    BinaryFlags,
    Datastream,
    Feature,
    FeatureType,
    PathNode,
    PluginEntity,
    PluginEvent,
    PluginFeature,
    Source,
    StatusEntity,
    StatusEvent,
    StatusValue,
)
from azuld.models.responses import FetchInfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go-avro"
STATUS_BODY = (FIXTURES / "04-request.bin").read_bytes()
PLUGIN_BODY = (FIXTURES / "01-request.bin").read_bytes()
PLAIN = settings(max_examples=60, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies: any event azuld's models accept ----------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
words = st.text("abcdef0123456789-_.", max_size=10)
uint64 = st.integers(0, (1 << 64) - 1)
uint32 = st.integers(0, (1 << 32) - 1)
string_maps = st.dictionaries(words, text, max_size=3)
# Microsecond instants with an offset (Avro keeps the instant; JSON keeps the offset too).
moments = st.builds(
    lambda when, minutes: when.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
    st.sampled_from([0, 0, 330, -300, 600]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 63) - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=8,
)

authors = st.builds(Author, name=text, version=text, category=words, security=text)
path_nodes = st.builds(
    PathNode,
    author=authors,
    action=st.sampled_from(BINARY_ACTIONS),
    sha256=words,
    timestamp=moments,
    relationship=string_maps,
    file_format=words,
    size=uint64,
    filename=text,
    language=words,
)
sources = st.builds(
    Source,
    name=words,
    timestamp=moments,
    path=st.lists(path_nodes, max_size=3),
    references=string_maps,
    security=text,
    settings=string_maps,
)
features = st.builds(
    Feature,
    name=words,
    value=text,
    type=st.sampled_from(get_args(FeatureType)),
    label=text,
    size=uint64,
    offset=uint64,
)
datastreams = st.builds(
    Datastream,
    label=st.sampled_from(DATA_LABELS),
    sha256=words,
    size=uint64,
    sha512=words,
    sha1=words,
    md5=words,
    ssdeep=text,
    tlsh=words,
    mime=words,
    magic=text,
    file_format=words,
    file_extension=words,
    language=words,
    identify_version=uint32,
)
entities = st.builds(
    BinaryEntity,
    sha256=words,
    sha512=words,
    size=uint64,
    mime=words,
    magic=text,
    file_format=words,
    features=st.lists(features, max_size=3),
    datastreams=st.lists(datastreams, max_size=2),
    info=st.dictionaries(words, json_values, max_size=3),
)
binaries = st.builds(
    BinaryEvent,
    model_version=st.integers(6, (1 << 32) - 1),
    kafka_key=words,
    timestamp=moments,
    author=authors,
    source=sources,
    entity=entities,
    action=st.sampled_from(BINARY_ACTIONS),
    dequeued=words,
    retries=uint32,
    flags=st.builds(BinaryFlags, bypass_cache=st.booleans(), expedite=st.booleans()),
    track_source_references=words,
    track_links=st.lists(words, max_size=2),
    track_authors=st.lists(words, max_size=2),
)
statuses = st.builds(
    StatusEvent,
    model_version=st.just(6),
    kafka_key=words,
    timestamp=moments,
    author=authors,
    entity=st.builds(
        StatusEntity,
        input=binaries,
        status=st.sampled_from(get_args(StatusValue)),
        runtime=st.floats(0, 1e9, allow_nan=False),
        error=text,
        message=text,
        results=st.lists(binaries, max_size=2),
    ),
)
plugins = st.builds(
    PluginEvent,
    model_version=st.just(6),
    kafka_key=words,
    timestamp=moments,
    author=authors,
    entity=st.builds(
        PluginEntity,
        name=text,
        version=words,
        category=words,
        contact=text,
        description=text,
        features=st.lists(
            st.builds(
                PluginFeature,
                name=words,
                type=st.sampled_from(get_args(FeatureType)),
                desc=text,
                tags=st.lists(words, max_size=2),
            ),
            max_size=2,
        ),
        security=text,
        config=string_maps,
    ),
)
EVENTS: dict[str, st.SearchStrategy[Any]] = {
    "binary": binaries,
    "status": statuses,
    "plugin": plugins,
}
TYPES: dict[str, type[Any]] = {"binary": BinaryEvent, "status": StatusEvent, "plugin": PluginEvent}


def any_model_events() -> st.SearchStrategy[tuple[str, list[Any]]]:
    return st.sampled_from(avro.AVRO_MODELS).flatmap(
        lambda model: st.tuples(st.just(model), st.lists(EVENTS[model], max_size=3))
    )


# -- round trips --------------------------------------------------------------------------------


@PLAIN
@given(any_model_events())
def test_json_to_struct_to_avro_to_struct_is_equal(case: tuple[str, list[Any]]) -> None:
    model, events = case
    from_json = msgspec.json.decode(msgspec.json.encode(events), type=list[TYPES[model]])  # type: ignore[valid-type]
    body = avro.encode_events(model, from_json)
    assert avro.decode_posted(model, body) == from_json == events


@PLAIN
@given(any_model_events())
def test_avro_to_struct_to_json_to_struct_is_equal(case: tuple[str, list[Any]]) -> None:
    model, events = case
    from_avro = avro.decode_posted(model, avro.encode_events(model, events))
    again = msgspec.json.decode(msgspec.json.encode(from_avro), type=list[TYPES[model]])  # type: ignore[valid-type]
    assert again == from_avro == events


@PLAIN
@given(any_model_events())
def test_a_fetch_answer_carries_the_events_of_its_json_twin(case: tuple[str, list[Any]]) -> None:
    model, events = case
    info = FetchInfo(filtered=2, fetched=len(events), ready=True, paused=False)
    datums = [avro.encode_event(model, event) for event in events]
    body, content_type = encode_fetch_reply(FetchResult(info, datums), avro=True)
    boundary = content_type.removeprefix("multipart/form-data; boundary=").encode()
    chunks = body.split(b"--" + boundary)
    info_part, events_part = (chunk.partition(b"\r\n\r\n")[2][:-2] for chunk in chunks[1:3])
    assert msgspec.json.decode(info_part, type=FetchInfo) == info
    assert avro.decode_posted(model, events_part) == events


def test_zero_values_and_absent_json_fields_are_the_same_event() -> None:
    """Avro has every field; azuld's defaults are Go's zero values, so the sparse JSON an
    omitempty encoder writes and the full Avro record meet at one struct."""
    sparse = (
        b'[{"model_version":6,"timestamp":"2026-01-02T03:04:05.123456Z","author":{"name":"a"},'
        b'"action":"sourced","source":{"name":"s","timestamp":"2026-01-02T03:04:05Z","path":[]},'
        b'"entity":{}}]'
    )
    (event,) = msgspec.json.decode(sparse, type=list[BinaryEvent])
    body = avro.encode_events("binary", [event])
    assert avro.decode_posted("binary", body) == [event]
    assert event.entity.info == {}
    assert event.flags == BinaryFlags()


# -- refusals ---------------------------------------------------------------------------------


def refusal(model: str, body: bytes) -> ClientError:
    with pytest.raises(ClientError) as caught:
        avro.decode_posted(model, body)
    return caught.value


def test_an_empty_body_or_an_unknown_model_is_a_bad_request() -> None:
    assert isinstance(refusal("status", b""), BadRequest)
    assert refusal("status", b"").title == "Empty Request"
    assert isinstance(refusal("nonsense", STATUS_BODY), BadRequest)


@pytest.mark.parametrize("model", sorted(set(MODELS) - set(avro.AVRO_MODELS)))
def test_models_without_avro_schemas_are_refused_with_a_clear_422(model: str) -> None:
    error = refusal(model, b"\x0c\x00")
    assert isinstance(error, Unprocessable)
    assert error.http_status == 422
    assert f"no Avro schema for model {model!r}" in error.detail
    assert "JSON" in error.detail
    with pytest.raises(Unprocessable, match="avro-format=false"):
        avro.check_avro_model(model)
    with pytest.raises(Unprocessable):
        avro.encode_events(model, [])


@pytest.mark.parametrize("version", [0, 4, 5, 7, -1, 1 << 40])
def test_an_unknown_schema_version_is_a_clear_422(version: int) -> None:
    zigzag = (version << 1) ^ (version >> 63)
    first = bytearray()
    while True:
        byte, zigzag = zigzag & 0x7F, zigzag >> 7
        first.append(byte | (0x80 if zigzag else 0))
        if not zigzag:
            break
    error = refusal("status", bytes(first) + STATUS_BODY[1:])
    assert isinstance(error, Unprocessable)
    assert f"model_version) is {version}" in error.detail
    assert "model_version 6 only" in error.detail


def test_json_sent_with_avro_format_is_named_as_json() -> None:
    error = refusal("plugin", b'[{"model_version":6}]')
    assert "the body is JSON, but avro-format=true says Avro" in error.detail


def test_a_truncated_body_names_the_field_and_byte() -> None:
    error = refusal("status", STATUS_BODY[:100])
    assert error.detail.startswith("model=status: the body is not a v6.BulkStatusEvent record")
    assert "at byte 96, field events[0].entity.input.timestamp" in error.detail


def test_a_string_that_is_not_utf8_names_its_field() -> None:
    body = bytearray(STATUS_BODY)
    start = STATUS_BODY.index(b"2025.05.16")  # author.version
    body[start : start + 2] = b"\xff\xfe"
    error = refusal("status", bytes(body))
    assert "field events[0].author.version" in error.detail
    assert "utf-8" in error.detail


def test_info_that_is_not_json_names_its_field() -> None:
    (event,) = avro.decode_posted("status", STATUS_BODY)
    good = avro.encode_events("status", [event])
    info = msgspec.json.encode(event.entity.results[0].entity.info)
    body = good.replace(info, b"{" + info[1:-1] + b",}")  # same length, not JSON
    error = refusal("status", body)
    assert "field events[0].entity.results[0].entity.info" in error.detail
    assert "not JSON" in error.detail


def test_bytes_after_the_record_are_refused() -> None:
    error = refusal("plugin", PLUGIN_BODY + b"\x00")
    assert "1 bytes follow the v6.BulkPluginEvent record, which ends at byte 774" in error.detail


def test_an_event_of_an_old_model_version_fails_the_post_as_in_json() -> None:
    (event,) = avro.decode_posted("plugin", PLUGIN_BODY)
    event.model_version = 5
    error = refusal("plugin", avro.encode_events("plugin", [event]))
    assert "avro event 0 has model_version 5; azuld needs 6" in error.detail


def test_an_event_azulds_model_refuses_names_its_path() -> None:
    (event,) = avro.decode_posted("status", STATUS_BODY)
    datum: dict[str, Any] = {
        "model_version": 6,
        "events": [msgspec.to_builtins(event, builtin_types=(datetime,))],
    }
    datum["events"][0]["entity"]["status"] = "finished"
    out = io.BytesIO()
    schemaless_writer(out, avro._BULK_SCHEMAS["status"], datum)
    error = refusal("status", out.getvalue())
    assert "not a valid status event" in error.detail
    assert "$[0].entity.status" in error.detail


def test_every_prefix_of_a_real_body_is_a_4xx() -> None:
    for end in range(len(STATUS_BODY)):
        error = refusal("status", STATUS_BODY[:end])
        assert error.http_status in (400, 422), end


@settings(max_examples=300, database=None)
@given(st.data())
def test_any_corrupted_body_decodes_or_is_a_4xx(data: st.DataObject) -> None:
    body = bytearray(data.draw(st.sampled_from([STATUS_BODY, PLUGIN_BODY])))
    model = "status" if bytes(body) == STATUS_BODY else "plugin"
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        events = avro.decode_posted(model, bytes(body))
    except ClientError as caught:
        error: ClientError | None = caught
    else:
        error = None
        assert all(isinstance(event, TYPES[model]) for event in events)
    if error is not None:
        assert error.http_status in (400, 422)
        assert error.detail.startswith(("model=", "avro event"))


@settings(max_examples=200, database=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_are_a_4xx(body: bytes) -> None:
    try:
        avro.decode_posted("binary", body)
    except ClientError as caught:
        assert caught.http_status in (400, 422)  # noqa: PT017 (decoding is allowed too)


def test_huge_lengths_and_counts_end_at_the_bodys_end() -> None:
    huge = b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"  # the largest positive long
    for body in (b"\x0c" + huge, b"\x0c\x02" + b"\x0c\x00" + huge):
        assert refusal("binary", body).http_status == 422


def test_sizes_outside_go_uint64_are_refused_in_json_too() -> None:
    """Avro carries sizes as 8 unsigned bytes: a negative size could not be sent to a Go
    plugin, and Go's own JSON decoding refuses it, so azuld's models refuse it too."""
    (event,) = avro.decode_posted("status", STATUS_BODY)
    raw = msgspec.to_builtins(event)
    raw["entity"]["input"]["entity"]["size"] = -1
    with pytest.raises(msgspec.ValidationError, match=r"entity.input.entity.size"):
        msgspec.convert(raw, StatusEvent)
    raw["entity"]["input"]["entity"]["size"] = 5
    raw["entity"]["input"]["retries"] = 1 << 32
    with pytest.raises(msgspec.ValidationError, match=r"entity.input.retries"):
        msgspec.convert(raw, StatusEvent)


def test_timestamps_come_back_aware_and_exact() -> None:
    moment = datetime(2026, 12, 7, 20, 6, 19, 617462, tzinfo=UTC)
    (event,) = avro.decode_posted("plugin", PLUGIN_BODY)
    event.timestamp = moment.astimezone(timezone(timedelta(hours=10)))
    (back,) = avro.decode_posted("plugin", avro.encode_events("plugin", [event]))
    assert back.timestamp == moment
    assert back.timestamp.utcoffset() == timedelta(0)


# -- the generated fast codec against fastavro and msgspec (azuld.models.avro_fast) ----------


def fastavro_bytes(model: str, events: list[Any]) -> bytes:
    datum = {
        "model_version": 6,
        "events": [msgspec.to_builtins(event, builtin_types=(datetime,)) for event in events],
    }
    out = io.BytesIO()
    schemaless_writer(out, avro._BULK_SCHEMAS[model], datum)
    return out.getvalue()


@PLAIN
@given(any_model_events())
def test_the_fast_writer_writes_fastavros_bytes(case: tuple[str, list[Any]]) -> None:
    model, events = case
    assert avro.encode_events(model, events) == fastavro_bytes(model, events)


@PLAIN
@given(any_model_events())
def test_the_fast_reader_reads_what_fastavro_and_msgspec_read(case: tuple[str, list[Any]]) -> None:
    model, events = case
    body = fastavro_bytes(model, events)
    assert avro.FAST.read(model, body) == avro._decode_carefully(model, body) == events


@settings(max_examples=300, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    any_model_events(),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=3),
    st.booleans(),
)
def test_the_fast_reader_never_accepts_what_the_careful_path_refuses(
    case: tuple[str, list[Any]], flips: list[tuple[int, int]], truncate: bool
) -> None:
    """Damaged bodies: the fast reader either reads what the careful path reads, or steps
    aside (NotFast) so that the careful path decides and words the error."""
    model, events = case
    body = bytearray(avro.encode_events(model, events))
    for where, byte in flips:
        body[where % len(body)] = byte
    damaged = bytes(body[: flips[0][0] % len(body)] if truncate else body)
    try:
        fast = avro.FAST.read(model, damaged)
    except avro_fast.NotFast:
        return
    assert avro._decode_carefully(model, damaged) == fast


def test_hambas_negative_block_counts_take_the_fast_path() -> None:
    """Go's bodies (negative counts with byte sizes) are read by the generated reader itself."""
    for body, model in ((STATUS_BODY, "status"), (PLUGIN_BODY, "plugin")):
        assert avro.FAST.read(model, body) == avro._decode_carefully(model, body)


def test_the_binary_halves_around_dequeued_make_the_whole_event() -> None:
    (event,) = avro.decode_posted("status", STATUS_BODY)
    binary = event.entity.input
    head, tail = avro.FAST.binary_halves(binary)
    dequeued = binary.dequeued.encode()
    assert head + avro_fast.encode_long(len(dequeued)) + dequeued + tail == avro.encode_event(
        "binary", binary
    )
