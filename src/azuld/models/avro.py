"""Avro, the wire format of azul-bedrock's Go client, decoded into and encoded from the same
msgspec structs as JSON (`azuld.models.events`): past this module nothing knows which it was.

The Go client always sends `avro-format=true`, on POST and on fetch. What it speaks, as recorded
between the Go entropy plugin and the Go dispatcher (tests/fixtures/go-avro/README.md):

* Every body is **one raw Avro datum** of a bulk record, `Bulk<Model>Event{model_version: long,
  events: array<<Model>Event>}`: no container header, no schema, no fingerprint. Its first long
  is the model_version, which Go reads to choose the schema version; azuld has only version 6.
* A fetch reply keeps its JSON framing (`multipart/form-data`, `info` then `events`, both parts
  named `*.json` and typed `application/octet-stream`); only the `events` part holds the Avro
  bulk record instead of `{"events": [...]}`.
* Sizes and offsets (Go `uint64`) are `fixed(8)`, big-endian; timestamps are `timestamp-micros`;
  `entity.info` is the JSON text as `bytes`; every field is always present (Go's `omitempty`
  has no Avro form), so an absent JSON field is a zero value here, and azuld's defaults are
  exactly those zero values.
* Go (hamba/avro) writes each non-empty array and map as one block with a negative count and a
  byte size; fastavro writes positive counts. Both are standard Avro and each side reads both,
  so azuld's bytes differ from Go's only in those block headers.

Schemas are package data (`schemas/v6/`, provenance in the README there), parsed once at import.
Models without a schema here (delete, download, insert, retrohunt) are refused with a 422.

Two codecs over the same schemas: `FAST` (`azuld.models.avro_fast`, Python generated from the
schemas at import) reads and writes every valid body; fastavro, with the logical types below,
decodes only the bodies `FAST` steps aside from, to say what is wrong with them, and is the
reference the tests hold `FAST` to. Where it plugs in: `azuld.core.posts.prepare_post` (a
posted body), `azuld.dispatch.avro_records` (each handed-out event) and
`azuld.http.events.encode_fetch_reply` (the bulk record of a fetch answer).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final

import msgspec
from fastavro import parse_schema, schemaless_reader
from fastavro.read import LOGICAL_READERS
from fastavro.write import LOGICAL_WRITERS

from azuld.errors import BadRequest, Unprocessable
from azuld.models.avro_fast import FastCodec, NotFast, encode_long
from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    MODELS,
    BinaryEvent,
    PluginEvent,
    StatusEvent,
)

__all__ = [
    "AVRO_MODELS",
    "FAST",
    "bulk_record",
    "check_avro_model",
    "decode_posted",
    "encode_event",
    "encode_events",
]

AvroEvent = BinaryEvent | StatusEvent | PluginEvent

_EVENT_TYPES: Final[dict[str, type[Any]]] = {
    "binary": BinaryEvent,
    "plugin": PluginEvent,
    "status": StatusEvent,
}
AVRO_MODELS: Final = tuple(_EVENT_TYPES)

POST_ERROR_TITLE = "PostEvent TransformEvents invalid events"  # Go's title for any bad POST body

# Custom logical types (fastavro's documented extension point), added to the schemas as they are
# loaded so the files stay as bedrock wrote them: they map Go's uint64 `fixed(8)` to int and
# `entity.info` bytes to the JSON object azuld models it as. Named for azuld: no clash.
_UINT64 = "azuld-uint64"
_JSON_OBJECT = "azuld-json-object"
_UINT64_MASK = (1 << 64) - 1


def _read_uint64(data: bytes, *_: Any) -> int:
    return int.from_bytes(data, "big")


def _write_uint64(value: int | str, *_: Any) -> bytes:
    if isinstance(value, str):  # the schema default ("\u0000" * 8): Avro JSON for 8 zero bytes
        return bytes(8)
    # Sizes are validated as uint64 on the way in; a value from an older log that is not is
    # written as Go's uint64() conversion would, rather than failing a whole fetch reply.
    return (value & _UINT64_MASK).to_bytes(8, "big")


class InfoNotJson(ValueError):
    """`entity.info` bytes that are not JSON text."""


def _read_json_object(data: bytes, *_: Any) -> Any:
    if not data:
        return {}  # Go's empty json.RawMessage: `info` left out of its JSON
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InfoNotJson(f"'entity.info' holds bytes that are not JSON ({exc})") from None


_encode_json = msgspec.json.Encoder().encode


def _write_json_object(value: Any, *_: Any) -> bytes:
    if not value:  # the schema default "" or an empty object: Go's nil RawMessage
        return b""
    return _encode_json(value)


LOGICAL_READERS[f"fixed-{_UINT64}"] = _read_uint64
LOGICAL_WRITERS[f"fixed-{_UINT64}"] = _write_uint64
LOGICAL_READERS[f"bytes-{_JSON_OBJECT}"] = _read_json_object
LOGICAL_WRITERS[f"bytes-{_JSON_OBJECT}"] = _write_json_object


# -- schemas ----------------------------------------------------------------------------------

# Zero values as Avro JSON defaults: fastavro writes a field missing from a record datum with its
# default, and the datums azuld writes leave out every field at its zero value (omit_defaults).
_ZERO_DEFAULTS: Final[dict[str, Any]] = {
    "string": "",
    "bytes": "",
    "long": 0,
    "int": 0,
    "double": 0.0,
    "float": 0.0,
    "boolean": False,
    "array": [],
    "map": {},
}


def _prepare(schema: Any) -> Any:
    """A schema as azuld parses it: logical types on uint64 fixeds and `info`, zero defaults on
    every field of a zero-able type. None of it changes a byte on the wire."""
    if isinstance(schema, list):
        return [_prepare(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    out = dict(schema)
    if kind == "fixed" and schema.get("size") == 8:
        out["logicalType"] = _UINT64
    elif kind == "array":
        out["items"] = _prepare(schema["items"])
    elif kind == "map":
        out["values"] = _prepare(schema["values"])
    elif kind == "record":
        out["fields"] = [_prepare_field(field) for field in schema["fields"]]
    return out


def _prepare_field(field: dict[str, Any]) -> dict[str, Any]:
    out = dict(field)
    kind = field["type"]
    if field["name"] == "info" and kind == "bytes":
        out["type"] = {"type": "bytes", "logicalType": _JSON_OBJECT}
    else:
        out["type"] = _prepare(kind)
    type_name = kind if isinstance(kind, str) else kind.get("type")
    if "default" not in out:
        if type_name in _ZERO_DEFAULTS:
            out["default"] = _ZERO_DEFAULTS[type_name]
        elif type_name == "fixed":
            out["default"] = "\u0000" * kind["size"]
        elif isinstance(kind, dict) and type_name == "record" and kind["name"] == "BinaryFlags":
            out["default"] = {}
    return out


def _load_schemas(version: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse `schemas/v<version>/*.json` in file-name order, as bedrock does.

    Returns the parsed bulk schemas by model and the raw (prepared) schemas by name; the latter
    are what `_locate` walks to name the field a malformed body breaks in.
    """
    folder = resources.files("azuld.models").joinpath("schemas", f"v{version}")
    named: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".json")),
        key=lambda entry: entry.name,
    )
    for entry in files:
        loaded = json.loads(entry.read_text(encoding="utf-8"))
        for schema in loaded if isinstance(loaded, list) else [loaded]:
            prepared = _prepare(schema)
            _collect_names(prepared, raw)
            parsed[schema["name"]] = parse_schema(prepared, named_schemas=named)
    bulks = {model: parsed[f"Bulk{cls.__name__}"] for model, cls in _EVENT_TYPES.items()}
    return bulks, raw


def _collect_names(schema: Any, into: dict[str, Any]) -> None:
    if isinstance(schema, dict):
        if schema.get("type") in ("record", "fixed") and "name" in schema:
            into[schema["name"]] = schema
        for value in (schema.get("fields"), schema.get("items"), schema.get("values")):
            if isinstance(value, list):
                for field in value:
                    _collect_names(field["type"], into)
            elif value is not None:
                _collect_names(value, into)


_BULK_SCHEMAS, _NAMED = _load_schemas(CURRENT_MODEL_VERSION)
SCHEMA_VERSIONS: Final = (CURRENT_MODEL_VERSION,)
# The hot paths' reader and writer, generated from the same schemas (`azuld.models.avro_fast`).
FAST: Final = FastCodec(
    _NAMED, {model: cls.__name__ for model, cls in _EVENT_TYPES.items()}, CURRENT_MODEL_VERSION
)


# -- decoding ---------------------------------------------------------------------------------


def check_avro_model(model: str) -> None:
    """Raise `Unprocessable` unless azuld has Avro schemas for `model` (fetch and POST alike)."""
    if model not in _EVENT_TYPES:
        raise Unprocessable(
            f"avro-format=true is supported for models {', '.join(AVRO_MODELS)}; azuld has no "
            f"Avro schema for model {model!r}: send its events as JSON (avro-format=false)"
        )


_EVENT_LIST_TYPES: Final[dict[str, Any]] = {
    "binary": list[BinaryEvent],
    "plugin": list[PluginEvent],
    "status": list[StatusEvent],
}


def decode_posted(model: str, body: bytes) -> list[Any]:
    """Decode a posted Avro body (`Bulk<Model>Event`, one raw datum) into the events that the
    equivalent JSON body decodes to: the same structs, unchecked (`check_event` runs after).

    Raises:
        BadRequest: an unknown model, or an empty body.
        Unprocessable: a model without Avro schemas, a model_version other than 6 (the bulk
            record's or an event's, as for JSON), a body that is not such a record (JSON sent
            by mistake, truncated, bytes left over, a string that is not UTF-8, `entity.info`
            that is not JSON), or an event azuld's models refuse (e.g. an unknown action).
            The detail names the model, the byte offset and, where it can, the field.
    """
    if model not in MODELS:
        raise BadRequest(
            f"not a registered model type: {model!r}; expected one of {', '.join(MODELS)}"
        )
    if not body:
        raise BadRequest("no events were provided to be published", title="Empty Request")
    if model not in _EVENT_TYPES:
        raise Unprocessable(
            f"avro-format=true is supported for models {', '.join(AVRO_MODELS)}; azuld has no "
            f"Avro schema for model {model!r}: post its events as JSON (avro-format=false)",
            title=POST_ERROR_TITLE,
        )
    try:
        return FAST.read(model, body)
    except NotFast:
        pass  # not a valid body of valid events: fastavro and msgspec say what is wrong
    return _decode_carefully(model, body)


def _decode_carefully(model: str, body: bytes) -> list[Any]:
    """`decode_posted` with fastavro and msgspec, whose errors name what was wrong."""
    schema_name = f"Bulk{_EVENT_TYPES[model].__name__}"
    try:
        version, _ = _read_long(body, 0)
    except (EOFError, ValueError) as exc:
        raise _refused(model, body, f"the body does not start with a long ({exc})") from None
    if version != CURRENT_MODEL_VERSION:
        raise _refused(
            model,
            body,
            f"the body's first long (the bulk record's model_version) is {version}; azuld reads "
            f"Avro of model_version {CURRENT_MODEL_VERSION} only (azul-bedrock's v6 schemas)",
        )
    stream = io.BytesIO(body)
    try:
        datum: Any = schemaless_reader(stream, _BULK_SCHEMAS[model], None)
    except Exception as exc:  # untrusted bytes: fastavro raises many kinds; none may escape
        raise _refused(model, body, _describe(schema_name, body, exc)) from None
    end = stream.tell()
    if end != len(body):
        raise _refused(
            model,
            body,
            f"{len(body) - end} bytes follow the v6.{schema_name} record, which ends at byte "
            f"{end}: not one raw {schema_name} datum",
        )
    items = datum["events"]
    for index, item in enumerate(items):
        if item["model_version"] < CURRENT_MODEL_VERSION:
            raise Unprocessable(
                f"avro event {index} has model_version {item['model_version']}; azuld needs "
                f"{CURRENT_MODEL_VERSION}",
                title=POST_ERROR_TITLE,
            )
    try:
        events: list[Any] = msgspec.convert(items, _EVENT_LIST_TYPES[model])
    except msgspec.ValidationError as exc:
        raise Unprocessable(
            f"avro event is not a valid {model} event: {exc} (`$[i]` is events[i] of the "
            f"v6.{schema_name} record)",
            title=POST_ERROR_TITLE,
        ) from None
    return events


def _refused(model: str, body: bytes, why: str) -> Unprocessable:
    """The 422 for a body that is not the bulk record; JSON sent by mistake is named as such."""
    try:
        msgspec.json.decode(body)
    except msgspec.DecodeError:
        pass
    else:
        why = (
            "the body is JSON, but avro-format=true says Avro: send a v6 Avro bulk record or "
            "drop avro-format"
        )
    return Unprocessable(f"model={model}: {why}", title=POST_ERROR_TITLE)


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """One zigzag varint long at `pos`: (value, next position). Raises EOFError if the bytes
    end inside it, ValueError past 10 bytes (more than 64 bits)."""
    shift = 0
    raw = 0
    while True:
        if pos >= len(data):
            raise EOFError("the bytes end inside a long")
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos
        shift += 7
        if shift >= 70:
            raise ValueError("a long runs past 10 bytes")


def _describe(schema_name: str, body: bytes, exc: Exception) -> str:
    """Where decoding broke: the field path and byte offset from `_locate`, and fastavro's
    own words."""
    path, offset, problem = _locate(schema_name, body)
    said = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, InfoNotJson):
        said = str(exc)
    return (
        f"the body is not a v6.{schema_name} record: at byte {offset}, field {path}: {problem} "
        f"(fastavro: {said})"
    )


# -- error location: a plain walk of the schema over the bytes, run only on bad bodies ---------


class _Broken(Exception):
    def __init__(self, path: str, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.path, self.offset, self.problem = path, offset, problem


def _locate(schema_name: str, body: bytes) -> tuple[str, int, str]:
    """Walk `body` as a `schema_name` datum: (field path, byte offset, problem) of the first
    thing that does not fit, or ("", end, "…") if the walk finds nothing (fastavro's word
    stands then)."""
    try:
        end = _walk(_NAMED[schema_name], body, 0, "")
    except _Broken as broken:
        return broken.path or "(the record)", broken.offset, broken.problem
    return "(the record)", end, "no problem found by azuld's own walk"


def _walk(schema: Any, data: bytes, pos: int, path: str) -> int:
    if isinstance(schema, str):
        schema = _NAMED.get(schema, schema)
    kind = schema if isinstance(schema, str) else schema["type"]
    try:
        if kind == "record":
            for field in schema["fields"]:
                name = f"{path}.{field['name']}" if path else field["name"]
                pos = _walk(field["type"], data, pos, name)
            return pos
        if kind in ("long", "int"):
            return _read_long(data, pos)[1]
        if kind == "boolean":
            if pos >= len(data) or data[pos] > 1:
                raise ValueError("not a boolean (0 or 1)")
            return pos + 1
        if kind in ("double", "float", "fixed"):
            size = {"double": 8, "float": 4}.get(kind) or schema["size"]
            if pos + size > len(data):
                raise EOFError(f"needs {size} bytes, {len(data) - pos} left")
            return pos + size
        if kind in ("string", "bytes"):
            length, start = _read_long(data, pos)
            if length < 0 or start + length > len(data):
                raise EOFError(f"a length of {length} bytes, {len(data) - start} left")
            text = data[start : start + length]
            if kind == "string":
                text.decode("utf-8")
            elif isinstance(schema, dict) and schema.get("logicalType") == _JSON_OBJECT:
                _read_json_object(text)
            return start + length
        if kind in ("array", "map"):
            return _walk_blocks(schema, data, pos, path)
    except _Broken:
        raise
    except (EOFError, ValueError) as exc:
        raise _Broken(path, pos, str(exc)) from None
    raise _Broken(path, pos, f"schema type {kind!r} is not one azuld's schemas use")


def _walk_blocks(schema: dict[str, Any], data: bytes, pos: int, path: str) -> int:
    index = 0
    while True:
        try:
            count, after = _read_long(data, pos)
            if count < 0:  # hamba's form: a negative count, then the block's size in bytes
                count = -count
                _, after = _read_long(data, after)
        except (EOFError, ValueError) as exc:
            raise _Broken(f"{path} (block header after item {index})", pos, str(exc)) from None
        pos = after
        if count == 0:
            return pos
        for _ in range(count):
            if pos >= len(data):
                raise _Broken(f"{path}[{index}]", pos, f"the block promised {count} items")
            if schema["type"] == "map":
                pos = _walk("string", data, pos, f"{path} key {index}")
                pos = _walk(schema["values"], data, pos, f"{path}[{index}]")
            else:
                pos = _walk(schema["items"], data, pos, f"{path}[{index}]")
            index += 1


# -- encoding ---------------------------------------------------------------------------------

_BULK_HEAD: Final = encode_long(CURRENT_MODEL_VERSION)


def encode_event(model: str, event: AvroEvent) -> bytes:
    """One event's Avro datum: an item of the `Bulk<Model>Event` record's `events`.

    Raises:
        Unprocessable: no Avro schema for `model` (see `check_avro_model`).
    """
    check_avro_model(model)
    return FAST.write(model, event)


def bulk_record(datums: Sequence[bytes]) -> bytes:
    """The `Bulk<Model>Event` datum of these events' datums (`encode_event`): model_version,
    then the events as one block, as the Go client's `FromAvro` reads it."""
    if not datums:
        return _BULK_HEAD + b"\x00"
    return b"".join((_BULK_HEAD, encode_long(len(datums)), *datums, b"\x00"))


def encode_events(model: str, events: Sequence[AvroEvent]) -> bytes:
    """The `Bulk<Model>Event` datum of `events` (what a Go plugin posts).

    Raises:
        Unprocessable: no Avro schema for `model` (see `check_avro_model`).
    """
    check_avro_model(model)
    write = FAST.writers[model]
    return bulk_record([write(event) for event in events])
