"""Avro on the hot paths: a reader and a writer for each of azuld's Avro models, generated from
the v6 schemas as Python source when `azuld.models.avro` loads them, and compiled once.

Why not fastavro here: fastavro's Cython walks the schema for every field of every datum and
builds dicts, which msgspec then converts: about 50 µs for the Go entropy plugin's completed
status, against msgspec's 4 µs for the same status in JSON. The generated code knows the schema,
reads straight into azuld's msgspec structs and writes straight from them, with no dicts, no
logical-type lookups and no per-field dispatch (see benchmarks/README.md for the figures).

The reader is fast, not careful: it accepts exactly the valid bodies, and on anything else
(bytes that run out or are left over, a negative length, a boolean other than 0 or 1, invalid
UTF-8, a value a struct field refuses: an unknown `action` or `status`, a count out of uint32,
`info` that is not a JSON object, a model_version below 6) it raises `NotFast`, and
`azuld.models.avro.decode_posted` decodes the body again with fastavro and msgspec, whose
errors it words. The fields the structs constrain (their `Literal`s and int bounds) are read
from the structs themselves (`msgspec.inspect`), so a model change cannot leave the reader
accepting less or more than msgspec does; `tests/models/test_avro.py` checks both agree.

The writer writes arrays and maps as one block with a positive count, as fastavro does (Go
writes negative counts with a byte size; each side reads the other). The binary event's writer
comes in two halves, around `dequeued`: a fetch answer caches the halves of each log record and
writes each job's own `dequeued` between them (`azuld.dispatch.avro_records`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from azuld.models.events import (
    Author,
    BinaryEntity,
    BinaryEvent,
    BinaryFlags,
    Datastream,
    Feature,
    PathNode,
    PluginEntity,
    PluginEvent,
    PluginFeature,
    Source,
    StatusEntity,
    StatusEvent,
)

__all__ = ["FastCodec", "NotFast", "encode_long"]

# The struct each Avro record is read into and written from; fields are matched by name.
STRUCTS: Final[dict[str, type[Any]]] = {
    "EventAuthor": Author,
    "EventSource": Source,
    "EventSourcePathNode": PathNode,
    "BinaryEvent": BinaryEvent,
    "BinaryEntity": BinaryEntity,
    "BinaryEntityFeature": Feature,
    "BinaryEntityDatastream": Datastream,
    "BinaryFlags": BinaryFlags,
    "StatusEvent": StatusEvent,
    "StatusEntity": StatusEntity,
    "PluginEvent": PluginEvent,
    "PluginEntity": PluginEntity,
    "PluginEntityFeature": PluginFeature,
}
SPLIT_FIELD: Final = "dequeued"  # the binary event's writer halves meet here

# Small records that recur (a plugin's author in its statuses, results and path nodes, an
# input's path nodes in each result's path, flags, features, datastreams), keyed by their first
# bytes. A candidate counts only if all its bytes are there again, and the same bytes read the
# same: its struct is handed out again, shared, so nothing may change a struct read from Avro.
MEMO_KEY_BYTES: Final[dict[str, int]] = {
    "EventAuthor": 8,  # the name's length and its first 7 bytes
    "EventSourcePathNode": 64,  # the author, the action and most of the sha256
    "BinaryEntityFeature": 24,  # the name and the start of the value
    "BinaryEntityDatastream": 48,  # the label and most of the sha256
    "BinaryFlags": 3,  # three booleans: all of it
}
MEMO_MAX_ENTRIES: Final = 512  # per record type; a full memo is emptied, as `_moments` is
MEMO_MAX_RECORD_BYTES: Final = 1024  # longer records are read every time
MEMOS: Final[
    dict[str, dict[bytes, tuple[bytes, Any]]]
] = {}  # record name -> key -> (bytes, struct)

_UINT64_LOGICAL = "azuld-uint64"
_JSON_LOGICAL = "azuld-json-object"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UINT64_MASK = (1 << 64) - 1


class NotFast(Exception):
    """The fast reader did not read this body; the careful path (fastavro) must say why."""


def _encode_long_slow(value: int) -> bytes:
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_SMALL_LONGS: Final = {value: _encode_long_slow(value) for value in range(-4096, 4096)}


def encode_long(value: int) -> bytes:
    """An Avro long: zigzag, then a little-endian base-128 varint."""
    encoded = _SMALL_LONGS.get(value)
    return encoded if encoded is not None else _encode_long_slow(value)


def _raw_long_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos`, still zigzagged, and the position after it."""
    raw = 0
    shift = 0
    while True:
        byte = data[pos]  # IndexError past the end: `FastCodec.read` makes it NotFast
        pos += 1
        raw |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return raw, pos
        shift += 7
        if shift >= 70:
            raise NotFast


# Timestamps repeat (an event's, its source's, its path's; a status's input's and results'),
# and making a datetime costs far more than finding one: both ways are remembered, bounded.
_CACHED_MOMENTS = 16384
_moments: dict[bytes, datetime] = {}
_micros: dict[datetime, bytes] = {}


def _moment_at(data: bytes, pos: int) -> tuple[datetime, int]:
    """The timestamp-micros at `pos` and the position after it."""
    start = pos
    raw, pos = _raw_long_at(data, pos)
    moment = _EPOCH + timedelta(microseconds=(raw >> 1) ^ -(raw & 1))
    if pos - start == 8:  # only whole 8-byte varints: a cached key is then exactly one
        if len(_moments) >= _CACHED_MOMENTS:
            _moments.clear()
        _moments[data[start:pos]] = moment
    return moment, pos


def _micros_of(moment: datetime) -> bytes:
    if len(_micros) >= _CACHED_MOMENTS:
        _micros.clear()
    # Exact (timedelta arithmetic), and the same instant whatever the offset.
    encoded = _micros[moment] = encode_long((moment - _EPOCH) // _MICROSECOND)
    return encoded


def _json_object(data: bytes) -> dict[str, Any]:
    if not data:
        return {}  # Go's empty json.RawMessage
    value = msgspec.json.decode(data)
    if type(value) is not dict:
        raise NotFast
    return value


_encode_json = msgspec.json.Encoder().encode
_unpack_double = struct.Struct("<d").unpack_from
_pack_double = struct.Struct("<d").pack

# What generated code sees besides the structs and the per-field constraints.
_GLOBALS: Final[dict[str, Any]] = {
    "NotFast": NotFast,
    "_raw_long_at": _raw_long_at,
    "_moments": _moments,
    "_moment_at": _moment_at,
    "_micros": _micros,
    "_micros_of": _micros_of,
    "_json_object": _json_object,
    "_encode_json": _encode_json,
    "_unpack_double": _unpack_double,
    "_pack_double": _pack_double,
    "_long": encode_long,
    "_small": _SMALL_LONGS,
    "_from_bytes": int.from_bytes,
    "_MASK": _UINT64_MASK,
}


class _Source:
    """Python source being generated: lines, indentation and fresh variable names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 1
        self.count = 0

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def block(self) -> _Indent:
        return _Indent(self)


class _Indent:
    def __init__(self, source: _Source) -> None:
        self.source = source

    def __enter__(self) -> None:
        self.source.depth += 1

    def __exit__(self, *_: object) -> None:
        self.source.depth -= 1


class _Generator:
    """Writes the reader and writer source from the prepared schemas (`azuld.models.avro`)."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.globals: dict[str, Any] = dict(_GLOBALS)
        for name, cls in STRUCTS.items():
            self.globals[f"S_{name}"] = cls
        self.constants = 0
        self.struct_fields: dict[type[Any], dict[str, mi.Field]] = {}

    def constant(self, value: Any) -> str:
        self.constants += 1
        name = f"_C{self.constants}"
        self.globals[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        return self.named[schema] if isinstance(schema, str) and schema in self.named else schema

    def fields(self, record: dict[str, Any]) -> Iterator[tuple[dict[str, Any], mi.Field]]:
        """The record's Avro fields with the struct fields they map to (checked to be the
        same set: a model and a schema that disagree fail at import, not on the wire)."""
        cls = STRUCTS[record["name"]]
        by_name = self.struct_fields.get(cls)
        if by_name is None:  # msgspec.inspect is slow (it evaluates annotations): once a class
            info = mi.type_info(cls)
            assert isinstance(info, mi.StructType)
            by_name = self.struct_fields[cls] = {field.name: field for field in info.fields}
        names = [field["name"] for field in record["fields"]]
        if set(names) != set(by_name):
            raise RuntimeError(
                f"Avro record {record['name']} and struct {cls.__name__} differ: "
                f"{sorted(set(names) ^ set(by_name))}"
            )
        for field in record["fields"]:
            yield field, by_name[field["name"]]

    # -- reading ----------------------------------------------------------------------------

    def read_long(self, src: _Source, target: str) -> None:
        """`target` = the zigzag-decoded long at `p` (up to two bytes inline)."""
        second = src.fresh("m")
        src.emit(f"{target} = b[p]")
        src.emit(f"if {target} < 0x80:")
        with src.block():
            src.emit("p += 1")
        src.emit("else:")
        with src.block():
            src.emit(f"{second} = b[p + 1]")
            src.emit(f"if {second} < 0x80:")
            with src.block():
                src.emit(f"{target} = ({target} & 0x7F) | ({second} << 7)")
                src.emit("p += 2")
            src.emit("else:")
            with src.block():
                src.emit(f"{target}, p = _raw_long_at(b, p)")
        src.emit(f"{target} = ({target} >> 1) ^ -({target} & 1)")

    def read_length(self, src: _Source, target: str) -> None:
        """`target` = a non-negative length (zigzag: an odd raw value is negative)."""
        self.read_long(src, target)
        src.emit(f"if {target} < 0:")
        with src.block():
            src.emit("raise NotFast")

    def read(self, src: _Source, schema: Any, target: str, field: mi.Field | None) -> None:
        schema = self.resolve(schema)
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if kind == "record":
            self.read_record(src, schema, target)
        elif kind == "string":
            # Lengths up to two bytes inline (zigzag: an odd raw length is negative). No bounds
            # checks: a slice past the end only comes up short, and `p` past the end fails the
            # next read or the reader's last check.
            raw = src.fresh("n")
            second = src.fresh("m")
            src.emit(f"{raw} = b[p]")
            src.emit(f"if not {raw}:")
            with src.block():
                src.emit(f"{target} = ''")
                src.emit("p += 1")
            src.emit(f"elif {raw} < 0x80:")
            with src.block():
                src.emit(f"if {raw} & 1:")
                with src.block():
                    src.emit("raise NotFast")
                src.emit(f"q = p + 1 + ({raw} >> 1)")
                src.emit(f"{target} = b[p + 1:q].decode()")
                src.emit("p = q")
            src.emit("else:")
            with src.block():
                src.emit(f"{second} = b[p + 1]")
                src.emit(f"if {second} < 0x80:")
                with src.block():
                    src.emit(f"{raw} = ({raw} & 0x7F) | ({second} << 7)")
                    src.emit("p += 2")
                src.emit("else:")
                with src.block():
                    src.emit(f"{raw}, p = _raw_long_at(b, p)")
                src.emit(f"if {raw} & 1:")
                with src.block():
                    src.emit("raise NotFast")
                src.emit(f"q = p + ({raw} >> 1)")
                src.emit(f"{target} = b[p:q].decode()")
                src.emit("p = q")
        elif kind == "bytes":
            assert logical == _JSON_LOGICAL, schema  # `info`: the only bytes in the schemas
            length = src.fresh("n")
            self.read_length(src, length)
            src.emit(f"q = p + {length}")
            src.emit(f"{target} = _json_object(b[p:q])")
            src.emit("p = q")
        elif kind == "long" and logical == "timestamp-micros":
            # Remembered by their bytes: a time of this century is an 8-byte varint.
            src.emit(f"{target} = _moments.get(b[p:p + 8])")
            src.emit(f"if {target} is None:")
            with src.block():
                src.emit(f"{target}, p = _moment_at(b, p)")
            src.emit("else:")
            with src.block():
                src.emit("p += 8")
        elif kind in ("long", "int"):
            self.read_long(src, target)
            self.check_int(src, target, field)
        elif kind == "fixed":
            assert logical == _UINT64_LOGICAL, schema
            assert schema["size"] == 8, schema
            src.emit("q = p + 8")
            src.emit(f"{target} = _from_bytes(b[p:q], 'big')")
            src.emit("p = q")
        elif kind == "boolean":
            src.emit(f"{target} = b[p]")
            src.emit("p += 1")
            src.emit(f"if {target} > 1:")
            with src.block():
                src.emit("raise NotFast")
            src.emit(f"{target} = {target} == 1")
        elif kind == "double":
            src.emit(f"{target}, = _unpack_double(b, p)")
            src.emit("p += 8")
        elif kind in ("array", "map"):
            self.read_blocks(src, schema, target, field)
        else:
            raise RuntimeError(f"no fast reader for Avro type {kind!r}")
        if field is not None and isinstance(field.type, mi.LiteralType):
            allowed = self.constant(frozenset(field.type.values))
            src.emit(f"if {target} not in {allowed}:")
            with src.block():
                src.emit("raise NotFast")

    def check_int(self, src: _Source, target: str, field: mi.Field | None) -> None:
        kind = field.type if field is not None else None
        if isinstance(kind, mi.IntType):
            if kind.ge is not None:
                src.emit(f"if {target} < {kind.ge}:")
                with src.block():
                    src.emit("raise NotFast")
            if kind.le is not None:
                src.emit(f"if {target} > {kind.le}:")
                with src.block():
                    src.emit("raise NotFast")

    def read_record(self, src: _Source, record: dict[str, Any], target: str) -> None:
        if (key_bytes := MEMO_KEY_BYTES.get(record["name"])) is None:
            return self.read_fields(src, record, target)
        # The record's bytes, seen before: its struct again (see `MEMO_KEY_BYTES`).
        memo = self.constant(MEMOS.setdefault(record["name"], {}))
        key, entry, start = src.fresh("k"), src.fresh("e"), src.fresh("s")
        src.emit(f"{key} = b[p:p + {key_bytes}]")
        src.emit(f"{entry} = {memo}.get({key})")
        src.emit(f"if {entry} is not None and b.startswith({entry}[0], p):")
        with src.block():
            src.emit(f"{target} = {entry}[1]")
            src.emit(f"p += len({entry}[0])")
        src.emit("else:")
        with src.block():
            src.emit(f"{start} = p")
            self.read_fields(src, record, target)
            # Only a record read whole (bounds are checked at the end: past it, slices are short).
            src.emit(f"if p <= end and p - {start} <= {MEMO_MAX_RECORD_BYTES}:")
            with src.block():
                src.emit(f"if len({memo}) >= {MEMO_MAX_ENTRIES}:")
                with src.block():
                    src.emit(f"{memo}.clear()")
                src.emit(f"{memo}[{key}] = (b[{start}:p], {target})")

    def read_fields(self, src: _Source, record: dict[str, Any], target: str) -> None:
        values = {}
        for field, info in self.fields(record):
            value = values[field["name"]] = src.fresh(f"v_{field['name']}_")
            self.read(src, field["type"], value, info)
        # Keywords in the struct's own field order: msgspec then matches each at once.
        order = STRUCTS[record["name"]].__struct_fields__
        args = ", ".join(f"{name}={values[name]}" for name in order)
        src.emit(f"{target} = S_{record['name']}({args})")

    def read_blocks(
        self, src: _Source, schema: dict[str, Any], target: str, field: mi.Field | None
    ) -> None:
        is_map = schema["type"] == "map"
        count = src.fresh("c")
        src.emit(f"{target} = {{}}" if is_map else f"{target} = []")
        src.emit("while True:")
        with src.block():
            self.read_long(src, count)
            src.emit(f"if not {count}:")
            with src.block():
                src.emit("break")
            src.emit(f"if {count} < 0:")  # hamba's form: a negative count, then the byte size
            with src.block():
                src.emit(f"{count} = -{count}")
                skipped = src.fresh("z")
                self.read_long(src, skipped)
            src.emit(f"for _ in range({count}):")
            with src.block():
                item = src.fresh("i")
                if is_map:
                    key = src.fresh("k")
                    self.read(src, "string", key, None)
                    self.read(src, schema["values"], item, None)
                    src.emit(f"{target}[{key}] = {item}")
                else:
                    self.read(src, schema["items"], item, None)
                    src.emit(f"{target}.append({item})")

    def reader(self, bulk: str, version: int) -> Callable[[bytes], list[Any]]:
        """`read(body) -> events` for the `Bulk<Model>Event` record `bulk`."""
        record = self.named[bulk]
        src = _Source()
        src.emit("end = len(b)")
        src.emit("p = 0")
        self.read_long(src, "version")
        src.emit(f"if version != {version}:")
        with src.block():
            src.emit("raise NotFast")
        (events_field,) = [f for f in record["fields"] if f["name"] == "events"]
        self.read_blocks(src, self.resolve(events_field["type"]), "events", None)
        src.emit("if p != end:")
        with src.block():
            src.emit("raise NotFast")
        src.emit("for event in events:")
        with src.block():
            src.emit(f"if event.model_version < {version}:")
            with src.block():
                src.emit("raise NotFast")
        src.emit("return events")
        return self.compile(f"read_{bulk}", "b", src)

    # -- writing ----------------------------------------------------------------------------

    def write(self, src: _Source, schema: Any, value: str) -> None:
        schema = self.resolve(schema)
        kind = schema if isinstance(schema, str) else schema["type"]
        logical = None if isinstance(schema, str) else schema.get("logicalType")
        if kind == "record":
            self.write_record(src, schema, value, None)
        elif kind == "string":
            encoded = src.fresh("x")
            src.emit(f"if {value}:")
            with src.block():
                src.emit(f"{encoded} = {value}.encode()")
                src.emit(f"w += _small.get(len({encoded})) or _long(len({encoded}))")
                src.emit(f"w += {encoded}")
            src.emit("else:")
            with src.block():
                src.emit("w.append(0)")
        elif kind == "bytes":
            assert logical == _JSON_LOGICAL, schema
            encoded = src.fresh("x")
            src.emit(f"if {value}:")
            with src.block():
                src.emit(f"{encoded} = _encode_json({value})")
                src.emit(f"w += _long(len({encoded}))")
                src.emit(f"w += {encoded}")
            src.emit("else:")
            with src.block():
                src.emit("w.append(0)")
        elif kind == "long" and logical == "timestamp-micros":
            src.emit(f"w += _micros.get({value}) or _micros_of({value})")
        elif kind in ("long", "int"):
            src.emit(f"w += _small.get({value}) or _long({value})")
        elif kind == "fixed":
            # Sizes are validated as uint64 on the way in; one from an older log that is not is
            # written as Go's uint64() conversion would, rather than failing a whole answer.
            src.emit(f"w += ({value} & _MASK).to_bytes(8, 'big')")
        elif kind == "boolean":
            src.emit(f"w.append(1 if {value} else 0)")
        elif kind == "double":
            src.emit(f"w += _pack_double({value})")
        elif kind in ("array", "map"):
            items = src.fresh("xs")
            src.emit(f"{items} = {value}")
            src.emit(f"if {items}:")
            with src.block():
                src.emit(f"w += _long(len({items}))")
                item = src.fresh("it")
                if kind == "map":
                    key = src.fresh("k")
                    src.emit(f"for {key}, {item} in {items}.items():")
                    with src.block():
                        self.write(src, "string", key)
                        self.write(src, schema["values"], item)
                else:
                    src.emit(f"for {item} in {items}:")
                    with src.block():
                        self.write(src, schema["items"], item)
            src.emit("w.append(0)")
        else:
            raise RuntimeError(f"no fast writer for Avro type {kind!r}")

    def write_record(
        self, src: _Source, record: dict[str, Any], value: str, split: str | None
    ) -> None:
        """Write `record`'s fields of `value`; with `split`, stop before that field (the
        caller writes it and starts a second buffer `w` for the rest)."""
        holder = src.fresh("r")
        src.emit(f"{holder} = {value}")
        for field, _ in self.fields(record):
            if field["name"] == split:
                src.emit("head = bytes(w)")
                src.emit("w = bytearray()")
                continue
            self.write(src, field["type"], f"{holder}.{field['name']}")

    def writer(self, name: str) -> Callable[[Any], bytes]:
        """`write(struct) -> bytes`: one datum of record `name`."""
        src = _Source()
        src.emit("w = bytearray()")
        self.write_record(src, self.named[name], "e", None)
        src.emit("return bytes(w)")
        return self.compile(f"write_{name}", "e", src)

    def split_writer(self, name: str, split: str) -> Callable[[Any], tuple[bytes, bytes]]:
        """`write(struct) -> (head, tail)`: a datum of record `name` without field `split`."""
        src = _Source()
        src.emit("w = bytearray()")
        self.write_record(src, self.named[name], "e", split)
        src.emit("return head, bytes(w)")
        return self.compile(f"write_{name}_halves", "e", src)

    def compile(self, name: str, argument: str, src: _Source) -> Callable[..., Any]:
        text = f"def {name}({argument}):\n" + "\n".join(src.lines) + "\n"
        namespace: dict[str, Any] = {}
        code = compile(text, f"<azuld.models.avro_fast {name}>", "exec")
        exec(code, self.globals, namespace)  # our own source, made from our own schema files
        function: Callable[..., Any] = namespace[name]
        function.__doc__ = text  # readable in a debugger: the source it runs
        return function


class FastCodec:
    """The generated readers and writers for `models` (model -> its record name)."""

    def __init__(self, named: dict[str, Any], models: dict[str, str], version: int) -> None:
        generator = _Generator(named)
        self.readers = {
            model: generator.reader(f"Bulk{record}", version) for model, record in models.items()
        }
        self.writers = {model: generator.writer(record) for model, record in models.items()}
        self.binary_halves = generator.split_writer("BinaryEvent", SPLIT_FIELD)

    def read(self, model: str, body: bytes) -> list[Any]:
        """The events of a `Bulk<Model>Event` body.

        Raises:
            NotFast: anything but a valid body of valid events (see the module doc).
        """
        try:
            return self.readers[model](body)
        except NotFast:
            raise
        except Exception as exc:  # IndexError, UnicodeDecodeError, msgspec's, struct's, ...
            raise NotFast from exc

    def write(self, model: str, event: Any) -> bytes:
        """One event's datum (the bulk record's array item)."""
        return self.writers[model](event)
