"""What a plugin author writes against: `Plugin`, `Job`, `Child`, `Feature`, `Filters`, `OptOut`.

A plugin is a small class::

    class Entropy(Plugin):
        name = "Entropy"
        version = "1.0"
        features = [Feature("entropy", "Shannon entropy of the content", "float")]

        async def execute(self, job: Job) -> None:
            data = await job.read()
            job.add_feature("entropy", shannon(data))

`execute` may raise `OptOut("reason", "message")` to decline a job, or any exception (reported as
`error-exception` with its traceback). The runner (`azuld.plugin.runner`) does the protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from azuld.models.events import BinaryEvent, Datastream

__all__ = [
    "Child",
    "Consumer",
    "Feature",
    "FeatureType",
    "FeatureValue",
    "Filters",
    "Job",
    "OptOut",
    "Plugin",
]

FeatureType = Literal["integer", "float", "string", "binary", "datetime", "filepath", "uri"]

# Reader for a job's stream: (label, offset, length or None for "to the end") → bytes.
StreamReader = Callable[[Datastream, int, int | None], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Feature:
    """A feature the plugin may emit, declared up front (as azul-runner's `Feature`)."""

    name: str
    desc: str
    type: FeatureType = "string"


@dataclass(frozen=True, slots=True)
class Filters:
    """Which events the plugin wants; sent as the fetch query on every poll (reference 6)."""

    actions: tuple[str, ...] = ("sourced", "extracted")
    # {label: (file_format prefixes,...)}: `r-streams`; an empty tuple means any format.
    data_types: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"content": ()})
    max_content_bytes: int = 200 * 1024 * 1024
    min_content_bytes: int = 0
    skip_self: bool = False
    expedite: bool = True
    live: bool = True
    historic: bool = True

    def query(self) -> list[tuple[str, str]]:
        """The fetch query pairs, in the runner's style (falsy values left out)."""
        pairs: list[tuple[str, str]] = []
        for name, on in (
            ("r-expedite", self.expedite),
            ("r-live", self.live),
            ("r-historic", self.historic),
            ("d-self", self.skip_self),
        ):
            if on:
                pairs.append((name, "true"))
        if self.max_content_bytes:
            pairs.append(("r-under-content-size", str(self.max_content_bytes)))
        if self.min_content_bytes:
            pairs.append(("r-over-content-size", str(self.min_content_bytes)))
        pairs.extend(("r-action", action) for action in self.actions)
        pairs.extend(
            ("r-streams", ",".join((label, *formats)) if formats else f"{label},")
            for label, formats in self.data_types.items()
        )
        return pairs


class OptOut(Exception):
    """Raise from `execute` to decline the job (status `opt-out`)."""

    def __init__(
        self, reason: str = "opt-out", message: str = "No opt-out reason was provided."
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class FeatureValue:
    name: str
    value: str
    type: FeatureType
    label: str = ""
    offset: int = 0
    size: int = 0


def _encode_value(value: Any, kind: FeatureType) -> str:
    if kind == "binary" and isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and kind == "float":
        return repr(value)
    return str(value)


class _Outputs:
    """Features, info and streams gathered for one event (the job's own, or a child's)."""

    def __init__(self, declared: Mapping[str, Feature]) -> None:
        self._declared = declared
        self.features: list[FeatureValue] = []
        self.info: dict[str, Any] = {}
        self.streams: list[tuple[str, bytes, str]] = []  # (label, data, language)

    def add_feature(
        self, name: str, value: Any, *, label: str = "", offset: int = 0, size: int = 0
    ) -> None:
        """Add one value of a declared feature. Raises `KeyError` for an undeclared feature."""
        declared = self._declared.get(name)
        if declared is None:
            raise KeyError(f"feature {name!r} is not declared in the plugin's `features`")
        self.features.append(
            FeatureValue(
                name, _encode_value(value, declared.type), declared.type, label, offset, size
            )
        )

    def add_features(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            for item in value if isinstance(value, (list, tuple, set)) else [value]:
                self.add_feature(name, item)

    def add_info(self, info: Mapping[str, Any]) -> None:
        self.info = dict(info)

    def add_stream(self, label: str, data: bytes, *, language: str = "") -> None:
        self.streams.append((label, data, language))

    def add_text(self, text: str, *, language: str = "") -> None:
        self.add_stream("text", text.encode(), language=language)

    @property
    def empty(self) -> bool:
        return not (self.features or self.info or self.streams)


class Child(_Outputs):
    """A binary found inside the job's binary, resubmitted for every plugin to see."""

    def __init__(
        self,
        declared: Mapping[str, Feature],
        data: bytes,
        relationship: Mapping[str, str],
        filename: str,
    ) -> None:
        super().__init__(declared)
        self.data = data
        self.relationship = dict(relationship)
        self.filename = filename
        self.children: list[Child] = []

    def add_child(
        self, data: bytes, relationship: Mapping[str, str], *, filename: str = ""
    ) -> Child:
        """A grandchild: a binary found inside this child."""
        child = Child(self._declared, data, relationship, filename)
        self.children.append(child)
        return child


class Job(_Outputs):
    """One handed-out event and what the plugin makes of it."""

    def __init__(
        self,
        event: BinaryEvent,
        declared: Mapping[str, Feature],
        reader: StreamReader,
    ) -> None:
        super().__init__(declared)
        self.event = event
        self.children: list[Child] = []
        self._reader = reader

    @property
    def id(self) -> str:
        return self.event.dequeued

    @property
    def sha256(self) -> str:
        return self.event.entity.sha256

    def stream(self, label: str = "content") -> Datastream | None:
        """The event's first datastream with `label`, if any."""
        for stream in self.event.entity.datastreams:
            if stream.label == label:
                return stream
        return None

    async def read(
        self, label: str = "content", *, offset: int = 0, length: int | None = None
    ) -> bytes:
        """Bytes of a stream, fetched on demand with a Range request.

        Raises:
            FileNotFoundError: the event has no such stream, or the dispatcher lost its blob.
        """
        stream = self.stream(label)
        if stream is None:
            raise FileNotFoundError(f"the event has no {label!r} stream")
        return await self._reader(stream, offset, length)

    def add_child(
        self, data: bytes, relationship: Mapping[str, str], *, filename: str = ""
    ) -> Child:
        """Resubmit `data` as an `extracted` child; `relationship` says how it was found."""
        child = Child(self._declared, data, relationship, filename)
        self.children.append(child)
        return child


class Plugin:
    """Base class of a plugin. Subclasses set the class attributes and implement `execute`.

    `config` holds the plugin's own settings (from `-c key=value` or `config` in TOML); each
    plugin documents its keys.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    contact: ClassVar[str] = ""
    features: ClassVar[Sequence[Feature]] = ()
    filters: ClassVar[Filters] = Filters()
    # Opt out at once, without a download, when the event has no content stream.
    requires_content: ClassVar[bool] = True
    run_timeout_seconds: ClassVar[float] = 600.0
    heartbeat_interval_seconds: ClassVar[float] = 30.0
    depth_limit: ClassVar[int] = 10

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        self.config = dict(config or {})

    @classmethod
    def declared_features(cls) -> dict[str, Feature]:
        base = [
            Feature("filename", "Name on disk of the 'content' stream.", "filepath"),
            Feature("file_format", "File type of the 'content' stream.", "string"),
            Feature("file_extension", "File extension of the 'content' stream.", "string"),
            Feature("magic", "File magic found for the 'content' stream.", "string"),
            Feature("mime", "Mimetype found for the 'content' stream.", "string"),
            Feature("malformed", "File is malformed in some way.", "string"),
        ]
        return {f.name: f for f in (*base, *cls.features)}

    async def execute(self, job: Job) -> None:
        """Analyse `job`. Raise `OptOut` to decline; any other exception is reported."""
        raise NotImplementedError


class Consumer:
    """Base class of a passive consumer: it reads every matching event as a feed, without
    taking jobs (no leases, no statuses), e.g. an indexer. Subclasses implement `consume`.

    Its position is kept by the dispatcher like a plugin's (name and version form the key), so
    a restart continues where it left off; an event is handed over once.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    description: ClassVar[str] = ""
    filters: ClassVar[Filters] = Filters(
        actions=(), data_types={}, max_content_bytes=0, expedite=False
    )
    batch_size: ClassVar[int] = 100

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        self.config = dict(config or {})

    async def consume(self, event: BinaryEvent) -> None:
        """Handle one event. An exception stops the consumer (the event is already handed out)."""
        raise NotImplementedError
