"""The daemon's admin replies as the command line decodes them (`/api/azuld/v1/*` and the status
feed `azuld watch` reads). Unknown fields are ignored, so the daemon may add to them.

The daemon builds these replies as dicts today; once its reply structs live in `azuld.models`
(issue 12.1), this module should import those instead of declaring its own.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "FailedJob",
    "FailedReply",
    "KeySummary",
    "PluginsReply",
    "RecentFailure",
    "ReofferOutcome",
    "ReofferReply",
    "SourceNode",
    "SourceReply",
    "StatusFeed",
    "StatusSeen",
]


class RecentFailure(msgspec.Struct, kw_only=True):
    """A job of a plugin key that ended badly, as `azuld status` shows the last ones."""

    at: float  # wall-clock seconds
    sha256: str
    status: str
    error: str
    message: str | None = ""


class KeySummary(msgspec.Struct, kw_only=True):
    """One plugin key on the instance asked: `GET /api/azuld/v1/plugins`."""

    key: str
    name: str
    version: str
    model: str
    active: bool
    lanes: list[str]
    ephemeral: bool = False  # a watcher's feed (`azuld watch`), forgotten soon after its last poll
    lag: dict[str, int]
    queued: int
    in_flight: int
    fetched: int
    finished: dict[str, int]
    errors_last_hour: int
    replayed: int
    replay_saved_seconds: float
    last_seen: float  # wall-clock seconds; 0: never
    recent_failures: list[RecentFailure]


class PluginsReply(msgspec.Struct):
    plugins: list[KeySummary]


class SourceNode(msgspec.Struct, kw_only=True):
    """A binary of a source, with the features each plugin found ({plugin: {feature: values}})
    and the binaries extracted from it: `GET /api/azuld/v1/sources/<source>`."""

    sha256: str
    filename: str
    file_format: str
    size: int
    features: dict[str, dict[str, list[str]]]
    children: list[SourceNode]


class SourceReply(msgspec.Struct):
    source: str
    binaries: list[SourceNode]


class FailedJob(msgspec.Struct, kw_only=True):
    """A dead letter: `GET /api/azuld/v1/failed`."""

    job_id: str
    plugin: str
    version: str
    status: str
    error: str
    message: str
    sha256: str
    source: str
    at: str  # RFC 3339


class FailedReply(msgspec.Struct):
    failed: list[FailedJob]


class ReofferOutcome(msgspec.Struct, kw_only=True):
    """`POST /api/azuld/v1/reoffer`, per job: re-offered to `plugin_key`, or not for `reason`."""

    job_id: str
    ok: bool
    plugin_key: str = ""
    reason: str = ""


class ReofferReply(msgspec.Struct):
    reoffered: list[ReofferOutcome]


class _Author(msgspec.Struct):
    name: str


class _Binary(msgspec.Struct):
    sha256: str = ""


class _Input(msgspec.Struct):
    entity: _Binary


class _Outcome(msgspec.Struct):
    status: str
    input: _Input
    error: str | None = ""


class StatusSeen(msgspec.Struct):
    """The part of a status event `azuld watch` prints."""

    timestamp: str
    author: _Author
    entity: _Outcome


class StatusFeed(msgspec.Struct):
    """The `events` part of a passive status fetch."""

    events: list[StatusSeen]
