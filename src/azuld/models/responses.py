"""Response bodies of the HTTP API (reference sections 2.0, 2.2, 2.3 and 2.5)."""

from __future__ import annotations

from typing import Any

import msgspec

from azuld.models.events import Datastream

__all__ = ["DataResponse", "ErrorBody", "FetchInfo", "PostFailure", "PostResponse"]


class ErrorBody(msgspec.Struct, kw_only=True):
    """The only error format: `status` is the HTTP code as a string, `error_enum` always present."""

    status: str
    title: str
    detail: str
    error_enum: str = "ErrorStringEnumUnset"


class PostFailure(msgspec.Struct, kw_only=True):
    event: str
    error: str


class PostResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    total_ok: int
    total_failures: int
    # Always present (the Python client requires the key), so no default.
    failures: list[PostFailure]
    ok: list[Any] = []


class FetchInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The `info` part of a fetch reply. `paused` is always sent; the empty extras are left out."""

    filtered: int
    fetched: int
    ready: bool
    paused: bool
    consumers_not_ready: str = ""
    filters: dict[str, int] = {}


class DataResponse(msgspec.Struct, kw_only=True):
    data: Datastream
