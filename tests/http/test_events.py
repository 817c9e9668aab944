"""`/api/v2/event` over HTTP: the reply shapes the runner's strict models accept, and every
rejection with its status code and a JSON error that names the problem."""

from __future__ import annotations

import msgspec
import pytest
from quart.typing import TestClientProtocol as Client

from tests.conftest import make_binary
from tests.http.conftest import error_of, parse_multipart

FETCH = "/api/v2/event/binary/active?name=P&version=1&r-live=true&r-historic=true&deadline=1"


async def post(client: Client, model: str, body: bytes) -> tuple[int, dict]:
    response = await client.post(f"/api/v2/event?avro-format=false&model={model}", data=body)
    return response.status_code, await response.get_json()


async def test_post_reply_has_exactly_the_runner_keys(client: Client) -> None:
    status, body = await post(client, "binary", msgspec.json.encode([make_binary("a")]))
    assert status == 200
    assert body == {"total_ok": 1, "total_failures": 0, "failures": []}


async def test_single_object_body_is_accepted(client: Client) -> None:
    status, body = await post(client, "binary", msgspec.json.encode(make_binary("a")))
    assert (status, body["total_ok"]) == (200, 1)


async def test_fetch_reply_is_two_part_multipart(client: Client) -> None:
    await post(client, "binary", msgspec.json.encode([make_binary("a")]))
    response = await client.get(FETCH)
    assert response.status_code == 200
    parts = parse_multipart(await response.get_data(), response.headers["Content-Type"])
    assert list(parts) == ["info", "events"]
    assert msgspec.json.decode(parts["info"]) == {
        "filtered": 0,
        "fetched": 1,
        "ready": True,
        "paused": False,
    }
    (event,) = msgspec.json.decode(parts["events"])["events"]
    assert event["dequeued"].startswith("azd2|P-1-binary-allsrc-alltype-LH|historic|")
    assert event["flags"] == {}


async def test_empty_fetch_is_still_200(client: Client) -> None:
    response = await client.get(FETCH)
    assert response.status_code == 200
    parts = parse_multipart(await response.get_data(), response.headers["Content-Type"])
    assert msgspec.json.decode(parts["events"]) == {"events": []}


@pytest.mark.parametrize(
    ("model", "body", "status", "title", "detail"),
    [
        ("binary", b"", 400, "Empty Request", "no events were provided"),
        ("nonsense", b"[{}]", 400, "bad request", "not a registered model type: 'nonsense'"),
        ("", b"[{}]", 400, "bad request", "not a registered model type: ''"),
        (
            "binary",
            b"[]",
            422,
            "PostEvent TransformEvents invalid events",
            "event message too small",
        ),
        (
            "binary",
            b'[{"model_version": 6,',
            422,
            "PostEvent TransformEvents invalid events",
            "invalid json",
        ),
        ("binary", b"[1, 2]", 422, "PostEvent TransformEvents invalid events", "not a JSON object"),
        (
            "binary",
            b'[{"model_version": 5}]',
            422,
            "PostEvent TransformEvents invalid events",
            "version was too old",
        ),
        (
            "binary",
            b'[{"model_version": 6, "author": 3}]',
            422,
            "PostEvent TransformEvents invalid events",
            "event 0: Expected `object`, got `int`",
        ),
    ],
)
async def test_post_rejections(
    client: Client, model: str, body: bytes, status: int, title: str, detail: str
) -> None:
    got_status, got = await post(client, model, body)
    assert got_status == status
    got_title, got_detail = error_of(got)
    assert got_title == title
    assert detail in got_detail
    assert got["status"] == str(status)


async def test_all_invalid_is_425_with_the_reasons(client: Client) -> None:
    bad = make_binary("a")
    bad.source.name = "../../etc"
    status, body = await post(client, "binary", msgspec.json.encode([bad]))
    assert status == 425
    assert body["error_enum"] == "ErrorStringEnumAllEventsFiltered"
    assert "invalid 'source.name'" in body["detail"]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("name=P", "requires at least one of r-expedite, r-live or r-historic"),
        ("name=P&r-live=yes", "r-live='yes' is not a boolean"),
        ("name=P&r-live=true&count=many", "count='many' is not an integer"),
        ("r-live=true", "name='' is required"),
    ],
)
async def test_fetch_rejections_are_422(client: Client, query: str, detail: str) -> None:
    response = await client.get(f"/api/v2/event/binary/active?{query}")
    assert response.status_code == 422
    _, got = error_of(await response.get_json())
    assert detail in got


async def test_unknown_model_in_fetch_is_422(client: Client) -> None:
    response = await client.get("/api/v2/event/widgets/active?name=P&r-live=true")
    assert response.status_code == 422
    assert "unknown model 'widgets'" in (await response.get_json())["detail"]


async def test_unknown_route_is_json_404(client: Client) -> None:
    response = await client.get("/api/v9/nothing")
    assert response.status_code == 404
    error_of(await response.get_json())


async def test_root_answers_like_go(client: Client) -> None:
    response = await client.get("/")
    assert (response.status_code, await response.get_data()) == (200, b"Azul Dispatcher")


async def test_avro_format_is_compared_literally_as_go_does(client: Client) -> None:
    body = msgspec.json.encode([make_binary("a")])
    for flag in ("false", "True", "yes", ""):
        response = await client.post(f"/api/v2/event?model=binary&avro-format={flag}", data=body)
        assert response.status_code == 200, flag
