"""Deeply nested JSON bodies: measured before they are decoded (`azuld.http.nesting`), refused
with a 422 on every route that decodes JSON, without a traceback in the log."""

from __future__ import annotations

import json
import logging
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from quart.typing import TestClientProtocol as Client

from azuld.errors import Unprocessable
from azuld.http.nesting import MAX_JSON_DEPTH, check_nesting, nesting_depth
from tests.conftest import make_binary
from tests.http.conftest import error_of


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


# Strings full of what could fool a scanner: brackets, quotes, backslashes, escapes.
_TRICKY_TEXT = st.text(alphabet='[]{}"\\/ab\n\u00e9\u2028', max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY_TEXT, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_depth_matches_the_decoded_value(value: Any, ascii_only: bool) -> None:
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_depth(body) == depth_of(value)


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"[]", 1),
        (b'{"a": [{"b": "]]]]"}]}', 3),
        (b'["\\\\", ["\\"[[[", []]]', 3),  # an escaped backslash, then an escaped quote
        (b'["\\\\\\"[["]', 1),
        (b"[" * 5000 + b"]" * 5000, 5000),  # long enough to take the shrinking passes
        (b"[" + b"[]," * 3000 + b"[[[]]]]", 4),
        (b"[" * 300, 300),  # unclosed: what a decoder would recurse through
        (b"", 0),
        (b"7", 0),
    ],
)
def test_depth_of_chosen_bodies(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth


def test_the_limit_itself_is_allowed() -> None:
    at_limit = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    check_nesting(at_limit, what="body", title="t")
    with pytest.raises(Unprocessable, match=f"body has nesting deeper than {MAX_JSON_DEPTH}"):
        check_nesting(b"[" + at_limit + b"]", what="body", title="t")


def too_deep(levels: int = 100_000) -> bytes:
    return b'[{"model_version": 6, "x": ' + b"[" * levels + b"]" * levels + b"}]"


@pytest.mark.parametrize(
    "target",
    [
        "/api/v2/event?model=binary",
        "/api/v2/event?model=status",
        "/api/v2/event?model=plugin",
        "/api/v2/event?model=insert",
        "/api/v2/event?model=download",
        "/api/v1/events/plugin",
        "/api/v1/processing/binary",
    ],
)
async def test_deep_posts_are_422_without_a_traceback(
    client: Client, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post(target, data=too_deep())
    assert response.status_code == 422
    title, detail = error_of(await response.get_json())
    assert title == "PostEvent TransformEvents invalid events"
    assert detail == (
        "ensure events were in json format: event message has nesting deeper than "
        f"{MAX_JSON_DEPTH} levels (arrays and objects)"
    )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_nesting_within_the_limit_is_only_the_events_business(client: Client) -> None:
    event = msgspec.to_builtins(make_binary("a"))
    nested: Any = "deep"
    for _ in range(MAX_JSON_DEPTH - 10):
        nested = [nested]
    event["entity"]["info"] = {"nested": nested}
    response = await client.post("/api/v2/event?model=binary", data=json.dumps([event]).encode())
    assert response.status_code == 200, await response.get_data()


async def test_deep_reoffer_body_is_422(client: Client) -> None:
    body = b'{"job_ids": [], "by": "me", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await client.post(
        "/api/azuld/v1/reoffer", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    _, detail = error_of(await response.get_json())
    assert f"nesting deeper than {MAX_JSON_DEPTH} levels" in detail
