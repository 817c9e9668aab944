"""Event models (reference section 3): binary, status, plugin and the other system models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import msgspec

__all__ = [
    "BINARY_ACTIONS",
    "COMPLETED_STATUSES",
    "CURRENT_MODEL_VERSION",
    "DATA_LABELS",
    "MODELS",
    "PROGRESS_STATUSES",
    "Author",
    "BinaryAction",
    "BinaryEntity",
    "BinaryEvent",
    "BinaryFlags",
    "DataLabel",
    "Datastream",
    "Feature",
    "GenericEvent",
    "PathNode",
    "PluginEntity",
    "PluginEvent",
    "Source",
    "StatusEntity",
    "StatusEvent",
    "StatusValue",
]

CURRENT_MODEL_VERSION = 6

# Timestamps must carry an offset: Python clients reject naive datetimes.
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
# Go's unsigned fields, held to their ranges as Go's JSON decoding holds them (and as Avro, which
# carries them as fixed(8) and long, can hold them): sizes and offsets are uint64, counts uint32.
UInt64 = Annotated[int, msgspec.Meta(ge=0)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF_FFFF)]

ModelName = Literal["binary", "delete", "download", "insert", "plugin", "status", "retrohunt"]
MODELS: tuple[str, ...] = get_args(ModelName)

BinaryAction = Literal["sourced", "extracted", "augmented", "mapped", "enriched"]
BINARY_ACTIONS: tuple[str, ...] = get_args(BinaryAction)

FeatureType = Literal["integer", "float", "string", "binary", "datetime", "filepath", "uri"]

DataLabel = Literal[
    "assemblyline",
    "cape_report",
    "content",
    "cs_call_tree",
    "decompiled_cs",
    "decompiled_c",
    "decompiled_java",
    "deob_js",
    "password_dictionary",
    "pcap",
    "report",
    "safe_png",
    "screenshot",
    "test",
    "text",
    "yara_rule_hit",
]
DATA_LABELS: tuple[str, ...] = get_args(DataLabel)

StatusValue = Literal[
    "completed",
    "completed-empty",
    "completed-with-errors",
    "opt-out",
    "heartbeat",
    "dequeued",
    "download-requested",
    "error-exception",
    "error-network",
    "error-runner",
    "error-input",
    "error-output",
    "error-timeout",
    "error-out-of-memory",
]
COMPLETED_STATUSES = frozenset({"completed", "completed-empty", "completed-with-errors"})
PROGRESS_STATUSES = frozenset({"heartbeat", "dequeued", "download-requested"})


class _Wire(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """Base of every wire struct: empty optional fields are left out of the JSON.

    `gc=False`: instances are not tracked by the cycle collector. Wire structs are trees decoded
    from JSON (their lists and dicts hold strings, numbers and other wire structs), so they are
    never part of a reference cycle; untracked, the tens of structs in each decoded event no
    longer make every garbage collection longer (a large share of CPU at count=100). Never
    point a wire struct's field back at one of its ancestors.
    """


class Author(_Wire, kw_only=True):
    name: str
    version: str = ""
    category: str = ""
    security: str = ""


class PathNode(_Wire, kw_only=True):
    author: Author
    action: BinaryAction
    sha256: str
    timestamp: Timestamp
    relationship: dict[str, str] = {}
    file_format: str = ""
    size: UInt64 = 0
    filename: str = ""
    language: str = ""


class Source(_Wire, kw_only=True):
    name: str
    timestamp: Timestamp
    path: list[PathNode]
    references: dict[str, str] = {}
    security: str = ""
    settings: dict[str, str] = {}


class Feature(_Wire, kw_only=True):
    name: str
    value: str
    type: FeatureType
    label: str = ""
    size: UInt64 = 0
    offset: UInt64 = 0


class Datastream(_Wire, kw_only=True):
    label: DataLabel
    sha256: str
    size: UInt64 = 0
    sha512: str = ""
    sha1: str = ""
    md5: str = ""
    ssdeep: str = ""
    tlsh: str = ""
    mime: str = ""
    magic: str = ""
    file_format: str = ""
    file_extension: str = ""
    language: str = ""
    identify_version: UInt32 = 0


class BinaryEntity(_Wire, kw_only=True):
    sha256: str = ""
    sha512: str = ""
    sha1: str = ""
    md5: str = ""
    ssdeep: str = ""
    tlsh: str = ""
    size: UInt64 = 0
    mime: str = ""
    magic: str = ""
    file_format: str = ""
    file_extension: str = ""
    features: list[Feature] = []
    datastreams: list[Datastream] = []
    info: dict[str, Any] = {}


class BinaryFlags(_Wire, kw_only=True):
    bypass_cache: bool = False
    expedite: bool = False
    retry: bool = False


class BinaryEvent(_Wire, kw_only=True):
    model_version: UInt32 = 0
    kafka_key: str = ""
    timestamp: Timestamp
    author: Author
    source: Source
    entity: BinaryEntity
    action: BinaryAction
    dequeued: str = ""
    retries: UInt32 = 0
    flags: BinaryFlags = msgspec.field(default_factory=BinaryFlags)
    track_source_references: str = ""
    track_links: list[str] = []
    track_authors: list[str] = []

    def content_stream(self) -> Datastream | None:
        """The first `content` datastream, if any."""
        for stream in self.entity.datastreams:
            if stream.label == "content":
                return stream
        return None


class StatusEntity(_Wire, kw_only=True):
    input: BinaryEvent
    status: StatusValue
    runtime: float = 0.0
    error: str = ""
    message: str = ""
    results: list[BinaryEvent] = []


class StatusEvent(_Wire, kw_only=True):
    model_version: UInt32 = 0
    kafka_key: str = ""
    timestamp: Timestamp
    author: Author
    entity: StatusEntity


class PluginFeature(_Wire, kw_only=True):
    name: str
    type: FeatureType
    desc: str = ""
    tags: list[str] = []


class PluginEntity(_Wire, kw_only=True):
    name: str
    version: str = ""
    category: str = ""
    contact: str = ""
    description: str = ""
    features: list[PluginFeature] = []
    security: str = ""
    config: dict[str, str] = {}


class PluginEvent(_Wire, kw_only=True):
    model_version: UInt32 = 0
    kafka_key: str = ""
    timestamp: Timestamp
    author: Author
    entity: PluginEntity


class GenericEvent(_Wire, kw_only=True):
    """The envelope shared by the models azuld stores without interpreting (delete, download, ...).

    Only the envelope is validated; the full JSON object is stored as it came, with `kafka_key`
    replaced.
    """

    model_version: int = 0
    kafka_key: str = ""
    timestamp: Timestamp
    author: Author
