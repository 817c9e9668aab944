"""The fetch reply's multipart framing (`azuld.http.events.encode_fetch_reply`)."""

from __future__ import annotations

import msgspec
import pytest

from azuld.dispatch import FetchResult
from azuld.http import events
from azuld.models.responses import FetchInfo
from tests.http.conftest import parse_multipart

INFO = FetchInfo(filtered=0, fetched=1, ready=True, paused=False)


def test_the_parts_round_trip() -> None:
    event = b'{"kafka_key":"k","entity":{"sha256":"s"}}'
    body, content_type = events.encode_fetch_reply(FetchResult(INFO, [event, event]))
    parts = parse_multipart(body, content_type)
    assert msgspec.json.decode(parts["info"]) == msgspec.to_builtins(INFO)
    assert msgspec.json.decode(parts["events"]) == {"events": [msgspec.json.decode(event)] * 2}


def test_a_boundary_found_in_the_events_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # Boundaries are unique ids, not secrets: a plugin that guessed the next one and put it in
    # its results must not split another plugin's reply.
    guessed, fresh = "a" * 32, "b" * 32
    candidates = iter([guessed, fresh])
    monkeypatch.setattr(events, "random_hex", lambda nbytes=16: next(candidates))
    event = msgspec.json.encode({"entity": {"features": [{"value": f"--{guessed}"}]}})
    body, content_type = events.encode_fetch_reply(FetchResult(INFO, [event]))
    assert content_type.endswith(f"boundary={fresh}")
    parts = parse_multipart(body, content_type)
    assert msgspec.json.decode(parts["events"])["events"] == [msgspec.json.decode(event)]
