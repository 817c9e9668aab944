"""The Avro codec against bytes the real Go plugin and Go dispatcher exchanged.

`tests/fixtures/go-avro/` is a recorded conversation between azul-plugin-entropy (on bedrock's
Go client) and the Go dispatcher; its README describes the framing. Every Avro request body
there must decode into the events its JSON equivalent decodes to, and azuld's own encodings of
the recorded fetch answers must be Go's bytes up to the boundary and the array block headers
(hamba writes a negative count and a byte size, fastavro a positive count; both are Avro).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastavro import schemaless_reader, schemaless_writer

from azuld.core.validation import check_event
from azuld.dispatch import FetchResult
from azuld.http.events import encode_fetch_reply
from azuld.models import avro
from azuld.models.events import BinaryEvent, PluginEvent, StatusEvent
from azuld.models.responses import FetchInfo

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go-avro"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TYPES: dict[str, type[Any]] = {"binary": BinaryEvent, "plugin": PluginEvent, "status": StatusEvent}

# (fixture, model): every Avro request body of the recordings.
POSTED = [
    ("01-request", "plugin"),  # registration
    ("04-request", "status"),  # completed, one enriched result
    ("07-request", "status"),
    ("azuld/01-request", "plugin"),  # the same plugin against today's azuld
]
FETCHED = ["02", "05"]  # fetch answers with one binary event each
EMPTY = ["08", "09"]  # empty long-polls


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def head(name: str) -> dict[str, str]:
    lines = read(f"{name}.head.txt").decode().split("\r\n")[1:]
    return dict(line.split(": ", 1) for line in lines if line)


def go_json(value: Any) -> Any:
    """The recorder's dump of an Avro datum as the JSON the Go client would have posted with
    avro-format=false: timestamps RFC 3339, uint64 fixeds as numbers, `info` as raw JSON."""
    if isinstance(value, dict):
        if "$timestamp_micros" in value:
            moment = EPOCH + timedelta(microseconds=value["$timestamp_micros"])
            return moment.isoformat().replace("+00:00", "Z")
        if "$uint64_be" in value:
            return value["$uint64_be"]
        if "$bytes_utf8" in value:
            return json.loads(value["$bytes_utf8"]) if value["$bytes_utf8"] else {}
        return {key: go_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [go_json(item) for item in value]
    return value


def omit_empty(value: Any) -> Any:
    """Go's `omitempty`, roughly: every zero value left out (azuld's defaults are those)."""
    if isinstance(value, dict):
        kept = {key: omit_empty(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item not in ("", 0, False, [], {})}
    if isinstance(value, list):
        return [omit_empty(item) for item in value]
    return value


def json_decode(model: str, body: bytes) -> list[Any]:
    """azuld's JSON decoding of a posted array (the typed decode of its publish path)."""
    return msgspec.json.decode(body, type=list[TYPES[model]])  # type: ignore[valid-type]


def canonical(model: str, data: bytes) -> bytes:
    """Go's Avro bytes with positive block counts: the same datum, fastavro's block form."""
    schema = avro._BULK_SCHEMAS[model]
    datum = schemaless_reader(io.BytesIO(data), schema, None)
    out = io.BytesIO()
    schemaless_writer(out, schema, datum)
    return out.getvalue()


def multipart(body: bytes, content_type: str) -> tuple[str, dict[str, bytes]]:
    """Parts by form name, as the Go client reads them; also returns the boundary."""
    media, _, boundary = content_type.partition("; boundary=")
    assert media == "multipart/form-data"
    chunks = body.split(b"--" + boundary.encode())
    assert chunks[0] == b""
    assert chunks[-1] == b"--\r\n"
    parts = {}
    for chunk in chunks[1:-1]:
        headers, _, payload = chunk.partition(b"\r\n\r\n")
        name = headers.split(b'name="')[1].split(b'"')[0].decode()
        assert payload.endswith(b"\r\n")
        parts[name] = payload[:-2]
    return boundary, parts


@pytest.mark.parametrize(("name", "model"), POSTED)
def test_every_posted_avro_body_decodes_to_the_events_of_its_json_equivalent(
    name: str, model: str
) -> None:
    events = avro.decode_posted(model, read(f"{name}.bin"))
    datum = json.loads((FIXTURES / f"{name}.json").read_text())["datum"]
    full = msgspec.json.encode(go_json(datum["events"]))
    sparse = msgspec.json.encode(omit_empty(go_json(datum["events"])))
    assert events == json_decode(model, full) == json_decode(model, sparse)
    assert len(events) == 1
    assert all(check_event(event) is None for event in events)
    # Spot checks against the recording, in case both decodings were wrong alike.
    event = events[0]
    assert event.timestamp.tzinfo is not None
    assert event.author.name == "Entropy"
    if isinstance(event, StatusEvent):
        assert event.entity.status == "completed"
        assert event.entity.input.entity.size > 0
        (result,) = event.entity.results
        assert result.action == "enriched"
        assert "entropy" in result.entity.info
        assert (
            result.entity.features[0].value
            == datum["events"][0]["entity"]["results"][0]["entity"]["features"][0]["value"]
        )
    else:
        assert event.entity.config["require_live"] == "true"


@pytest.mark.parametrize(("name", "model"), POSTED)
def test_posted_bodies_are_sent_as_application_avro_and_read_to_the_last_byte(
    name: str, model: str
) -> None:
    headers = head(name)
    assert headers["Content-Type"] == "application/avro"
    assert "avro-format=true" in read(f"{name}.head.txt").decode().split("\r\n")[0]
    # Go's negative-count blocks are what fastavro reads; our own re-encoding reads the same.
    body = read(f"{name}.bin")
    assert body[:1] == b"\x0c"  # model_version 6, zigzag
    again = canonical(model, body)
    assert again != body
    assert len(again) < len(body)
    assert avro.decode_posted(model, again) == avro.decode_posted(model, body)


def served_event(n: str) -> BinaryEvent:
    """The binary event Go served in fetch answer `n`, as the Go client decodes it."""
    (event,) = avro.decode_posted("binary", read(f"{n}-response.part2-events.bin"))
    assert isinstance(event, BinaryEvent)
    return event


@pytest.mark.parametrize(("n", "index"), [("02", 0), ("05", 1)])
def test_go_served_in_avro_the_json_event_it_was_given(n: str, index: int) -> None:
    """The setup posted these events to Go as JSON; Go answered the fetch in Avro. Decoding
    the JSON and the Avro gives the same event, once the fields Go owns are copied over."""
    posted = json_decode("binary", read("setup/03-request.bin"))[index]
    served = served_event(n)
    for owned in ("kafka_key", "dequeued", "track_source_references", "track_links"):
        setattr(posted, owned, getattr(served, owned))
    posted.track_authors = served.track_authors
    assert served == posted
    assert served.dequeued.startswith(f"{served.kafka_key}.Entropy.2025.05.16.")


@pytest.mark.parametrize("n", FETCHED)
def test_azulds_fetch_answer_is_gos_up_to_boundary_and_block_headers(n: str) -> None:
    go_body = read(f"{n}-response.bin")
    go_type = head(f"{n}-response")["Content-Type"]
    go_boundary, go_parts = multipart(go_body, go_type)
    info = msgspec.json.decode(go_parts["info"], type=FetchInfo)
    body, content_type = encode_fetch_reply(
        FetchResult(info, [avro.encode_event("binary", served_event(n))]), avro=True
    )
    boundary, parts = multipart(body, content_type)
    assert parts.keys() == {"info", "events"}
    assert parts["info"] == go_parts["info"]  # {"filtered":0,"fetched":1,"ready":true,...}
    assert parts["events"] == canonical("binary", go_parts["events"])
    assert avro.decode_posted("binary", parts["events"]) == [served_event(n)]
    # Byte for byte, apart from the boundary and the events part's block headers.
    expected = go_body.replace(go_boundary.encode(), boundary.encode()).replace(
        go_parts["events"], parts["events"]
    )
    assert body == expected


@pytest.mark.parametrize("n", EMPTY)
def test_an_empty_fetch_answer_is_gos_byte_for_byte_but_the_boundary(n: str) -> None:
    go_body = read(f"{n}-response.bin")
    go_boundary, go_parts = multipart(go_body, head(f"{n}-response")["Content-Type"])
    assert go_parts["events"] == b"\x0c\x00"  # model_version 6, no events
    info = FetchInfo(filtered=0, fetched=0, ready=True, paused=False)
    body, content_type = encode_fetch_reply(FetchResult(info, []), avro=True)
    boundary, parts = multipart(body, content_type)
    assert parts["events"] == b"\x0c\x00"
    assert body == go_body.replace(go_boundary.encode(), boundary.encode())
    assert content_type == f"multipart/form-data; boundary={boundary}"


def test_fetch_answer_part_headers_match_the_go_dispatchers() -> None:
    body, content_type = encode_fetch_reply(
        FetchResult(FetchInfo(filtered=0, fetched=1, ready=True, paused=False), []), avro=True
    )
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(
        f'--{boundary}\r\nContent-Disposition: form-data; name="info"; filename="info.json"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    assert (
        f'--{boundary}\r\nContent-Disposition: form-data; name="events"; '
        'filename="events.json"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() in body
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())


def test_todays_refusals_are_recorded_as_the_issue_says() -> None:
    """What the codec replaces: azuld 45b0d11 read the registration's Avro as JSON."""
    assert read("azuld/01-request.bin")[:1] == b"\x0c"
    assert b"invalid json" in read("azuld/01-response.bin")
    assert avro.decode_posted("plugin", read("azuld/01-request.bin"))[0].entity.name == "Entropy"
