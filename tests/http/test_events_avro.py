"""`/api/v2/event` in Avro (`avro-format=true`, the Go client's only mode), in process through the
hot routes: posts decode to the events their JSON twins decode to, fetch answers carry the events
a JSON fetch would, in the Go dispatcher's framing; refusals are 422s that say what was wrong.
(The real daemon, both HTTP servers and both backends: tests/test_go_plugins.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from quart.typing import TestClientProtocol as Client

from azuld.models import avro
from azuld.models.events import BinaryEvent, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary
from tests.http.conftest import error_of, parse_multipart

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go-avro"
FETCH = (
    "/api/v2/event/{model}/{mode}?name={name}&version=1&r-live=true&r-historic=true&deadline=1"
    "&count=10"
)


async def post(client: Client, model: str, body: bytes, flag: str = "true") -> tuple[int, Any]:
    response = await client.post(
        f"/api/v2/event?avro-format={flag}&model={model}",
        data=body,
        headers={"Content-Type": "application/avro"},
    )
    return response.status_code, await response.get_json()


async def fetch(
    client: Client, name: str, *, model: str = "binary", mode: str = "active", avro_flag: str = ""
) -> tuple[dict[str, Any], bytes]:
    target = FETCH.format(model=model, mode=mode, name=name)
    if avro_flag:
        target += f"&avro-format={avro_flag}"
    response = await client.get(target)
    assert response.status_code == 200, await response.get_data()
    parts = parse_multipart(await response.get_data(), response.headers["Content-Type"])
    assert list(parts) == ["info", "events"]
    return msgspec.json.decode(parts["info"]), parts["events"]


@pytest.mark.parametrize("flag", ["true", "1"])
async def test_an_avro_post_is_stored_as_its_json_twin(client: Client, flag: str) -> None:
    events = [make_binary("a"), make_binary("b")]
    status, reply = await post(client, "binary", avro.encode_events("binary", events), flag)
    assert (status, reply) == (200, {"total_ok": 2, "total_failures": 0, "failures": []})
    _, part = await fetch(client, "Reader", mode="passive")
    stored = msgspec.json.decode(part, type=dict[str, list[BinaryEvent]])["events"]
    for event, posted in zip(stored, events, strict=True):
        posted.kafka_key = event.kafka_key  # azuld's own
        posted.track_source_references = event.track_source_references
        posted.track_authors = event.track_authors
        assert event == posted


async def test_the_go_plugins_registration_is_accepted(client: Client) -> None:
    status, reply = await post(client, "plugin", (FIXTURES / "01-request.bin").read_bytes())
    assert (status, reply) == (200, {"total_ok": 1, "total_failures": 0, "failures": []})


async def test_invalid_avro_events_are_failures_and_none_valid_is_425(client: Client) -> None:
    good, bad = make_binary("good"), make_binary("bad")
    bad.source.path = []  # decodes, but check_event refuses it
    status, reply = await post(client, "binary", avro.encode_events("binary", [good, bad]))
    assert status == 200
    assert (reply["total_ok"], reply["total_failures"]) == (1, 1)
    assert msgspec.json.decode(reply["failures"][0]["event"])["entity"]["sha256"] == (
        bad.entity.sha256
    )
    status, reply = await post(client, "binary", avro.encode_events("binary", [bad]))
    assert status == 425
    assert error_of(reply)[0] == "All events to be published have been filtered out"


@pytest.mark.parametrize(
    "target", ["/api/v2/event?model=binary", "/api/v1/processing/binary", "/api/v1/events/plugin"]
)
async def test_json_posted_with_avro_format_is_a_422_that_says_so(
    client: Client, target: str
) -> None:
    body = msgspec.json.encode([make_binary("a")])
    for flag in ("true", "1"):
        separator = "&" if "?" in target else "?"
        response = await client.post(f"{target}{separator}avro-format={flag}", data=body)
        assert response.status_code == 422
        title, detail = error_of(await response.get_json())
        assert title == "PostEvent TransformEvents invalid events"
        assert "the body is JSON, but avro-format=true says Avro" in detail


async def test_a_truncated_avro_body_is_a_422_naming_where(client: Client) -> None:
    body = (FIXTURES / "04-request.bin").read_bytes()[:500]
    status, reply = await post(client, "status", body)
    assert status == 422
    title, detail = error_of(reply)
    assert title == "PostEvent TransformEvents invalid events"
    assert "at byte" in detail
    assert "field events" in detail


async def test_avro_posts_of_models_without_schemas_are_a_422(client: Client) -> None:
    status, reply = await post(client, "delete", b"\x0c\x00")
    assert status == 422
    assert "no Avro schema for model 'delete'" in error_of(reply)[1]


async def test_an_avro_fetch_hands_out_what_a_json_fetch_does(client: Client) -> None:
    await post(client, "binary", msgspec.json.encode([make_binary("a")]), flag="false")
    json_info, json_part = await fetch(client, "JsonPlugin")
    avro_info, avro_part = await fetch(client, "GoPlugin", avro_flag="t")
    assert avro_info == json_info == {"filtered": 0, "fetched": 1, "ready": True, "paused": False}
    (from_json,) = msgspec.json.decode(json_part, type=dict[str, list[BinaryEvent]])["events"]
    (from_avro,) = avro.decode_posted("binary", avro_part)
    assert from_avro.dequeued.split("|")[1].startswith("GoPlugin-1-binary-")
    from_avro.dequeued = from_json.dequeued  # each job's own id
    assert from_avro == from_json


async def test_an_empty_avro_fetch_is_the_empty_bulk_record(client: Client) -> None:
    info, part = await fetch(client, "GoPlugin", avro_flag="true")
    assert (info["fetched"], part) == (0, b"\x0c\x00")


async def test_a_status_posted_in_avro_finishes_its_job(client: Client) -> None:
    await post(client, "binary", msgspec.json.encode([make_binary("a")]), flag="false")
    _, part = await fetch(client, "GoPlugin", avro_flag="true")
    (job,) = avro.decode_posted("binary", part)
    status = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=job.author.__class__(name="GoPlugin", version="1", category="plugin"),
        entity=StatusEntity(input=job, status="completed-empty"),
    )
    code, reply = await post(client, "status", avro.encode_events("status", [status]))
    assert (code, reply["total_ok"]) == (200, 1)
    # Finished: nothing comes back, and the stored status reads back in Avro too.
    info, _ = await fetch(client, "GoPlugin", avro_flag="true")
    assert info["fetched"] == 0
    _, statuses = await fetch(client, "Watcher", model="status", mode="passive", avro_flag="1")
    (stored,) = avro.decode_posted("status", statuses)
    assert stored.entity.input.dequeued == job.dequeued
    assert stored.entity.status == "completed-empty"


@pytest.mark.parametrize("model", ["delete", "download", "insert", "retrohunt"])
async def test_an_avro_fetch_of_a_model_without_schemas_is_a_422(
    client: Client, model: str
) -> None:
    response = await client.get(
        FETCH.format(model=model, mode="passive", name="P") + "&avro-format=1"
    )
    assert response.status_code == 422
    title, detail = error_of(await response.get_json())
    assert title == "bad parameters"
    assert f"no Avro schema for model {model!r}" in detail


async def test_a_malformed_avro_format_on_a_fetch_is_a_422(client: Client) -> None:
    response = await client.get(
        FETCH.format(model="binary", mode="active", name="P") + "&avro-format=yes"
    )
    assert response.status_code == 422
    assert "avro-format='yes' is not a boolean" in error_of(await response.get_json())[1]
