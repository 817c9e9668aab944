"""Bearer tokens and roles, open networks, and the request limits, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import create_app
from azuld.http.router import Router
from azuld.http.routes import NO_ROUTE, ROUTES
from azuld.service import open_services
from azuld.settings import AuthSettings, Settings, TokenSettings, load_settings
from tests.conftest import make_binary

TOKENS = AuthSettings(
    tokens=(
        TokenSettings(name="runner-1", token="p" * 32, roles=("plugin",)),
        TokenSettings(name="ingest-1", token="i" * 32, roles=("ingest",)),
        TokenSettings(name="root", token="a" * 32, roles=("admin",)),
    ),
)
FETCH = "/api/v2/event/binary/active?name=P&version=1&r-live=true&deadline=0.1"


def with_auth(tmp_path: Path, auth: AuthSettings, **dispatch: object) -> Settings:
    overrides: dict[str, object] = {"data_dir": tmp_path / "data", "auth": auth}
    overrides.update({f"dispatch.{k}": v for k, v in dispatch.items()})
    overrides.setdefault("dispatch.default_deadline_seconds", 0.1)
    return load_settings(environ={}, overrides=overrides)


@asynccontextmanager
async def open_client(settings: Settings, nursery: trio.Nursery) -> AsyncIterator[Client]:
    async with open_services(settings) as svc:
        await nursery.start(svc.dispatcher.run)
        async with create_app(svc).test_app() as app:
            yield app.test_client()


@pytest.fixture
async def client(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Client]:
    async with open_client(with_auth(tmp_path, TOKENS), nursery) as c:
        yield c


def bearer(char: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {char * 32}"}


async def test_no_token_is_401(client: Client) -> None:
    response = await client.get(FETCH)
    assert response.status_code == 401
    assert "needs a bearer token" in (await response.get_json())["detail"]


async def test_wrong_token_is_401(client: Client) -> None:
    response = await client.get(FETCH, headers=bearer("x"))
    assert response.status_code == 401
    assert "not valid" in (await response.get_json())["detail"]


async def test_roles(client: Client) -> None:
    assert (await client.get(FETCH, headers=bearer("p"))).status_code == 200
    assert (await client.get(FETCH, headers=bearer("a"))).status_code == 200
    forbidden = await client.get(FETCH, headers=bearer("i"))
    assert forbidden.status_code == 403
    assert "'ingest-1' has roles ['ingest']" in (await forbidden.get_json())["detail"]
    body = msgspec.json.encode([make_binary("a")])
    assert (
        await client.post("/api/v2/event?model=binary", data=body, headers=bearer("i"))
    ).status_code == 200
    reset = await client.get(FETCH + "&reset=true", headers=bearer("p"))
    assert reset.status_code == 403
    assert (await client.get("/api/azuld/v1/plugins", headers=bearer("p"))).status_code == 403
    assert (await client.get("/api/azuld/v1/plugins", headers=bearer("a"))).status_code == 200


async def test_public_routes_need_no_token(client: Client) -> None:
    for path in ("/", "/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200, path


async def test_open_network_gets_the_plugin_role(tmp_path: Path, nursery: trio.Nursery) -> None:
    auth = AuthSettings(tokens=TOKENS.tokens, open_networks=("10.0.0.0/8",))
    inside = {"client": ("10.1.2.3", 40000)}
    outside = {"client": ("192.0.2.7", 40000)}
    async with open_client(with_auth(tmp_path, auth), nursery) as client:
        assert (await client.get(FETCH, scope_base=inside)).status_code == 200
        assert (await client.get(FETCH, scope_base=outside)).status_code == 401
        admin_only = await client.get("/api/azuld/v1/plugins", scope_base=inside)
        assert admin_only.status_code == 401


async def test_without_tokens_everything_is_open(tmp_path: Path, nursery: trio.Nursery) -> None:
    async with open_client(with_auth(tmp_path, AuthSettings()), nursery) as client:
        assert (await client.get(FETCH)).status_code == 200
        assert (await client.get("/api/azuld/v1/plugins")).status_code == 200


async def test_too_many_events_in_one_post(tmp_path: Path, nursery: trio.Nursery) -> None:
    settings = with_auth(tmp_path, AuthSettings(), max_events_per_post=3)
    async with open_client(settings, nursery) as client:
        body = msgspec.json.encode([make_binary(str(i)) for i in range(4)])
        response = await client.post("/api/v2/event?model=binary", data=body)
        assert response.status_code == 413
        assert "4 events in one post; the limit is 3" in (await response.get_json())["detail"]


async def test_event_body_size_limit(tmp_path: Path, nursery: trio.Nursery) -> None:
    settings = load_settings(
        environ={}, overrides={"data_dir": tmp_path / "d", "server.max_event_body_bytes": 1000}
    )
    async with open_client(settings, nursery) as client:
        response = await client.post("/api/v2/event?model=binary", data=b"[" + b" " * 2000 + b"]")
        assert response.status_code == 413
        assert (await response.get_json())["status"] == "413"


async def test_concurrent_long_polls_per_key_are_capped(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    settings = with_auth(tmp_path, AuthSettings(), max_polls_per_key=2)
    async with open_client(settings, nursery) as client:
        slow = FETCH.replace("deadline=0.1", "deadline=2")
        await client.get(FETCH)  # the key exists
        statuses: list[int] = []

        async def poll() -> None:
            statuses.append((await client.get(slow)).status_code)

        async with trio.open_nursery() as polls:
            for _ in range(2):
                polls.start_soon(poll)
            await trio.sleep(0.3)
            third = await client.get(slow)
        assert third.status_code == 429
        assert "limit is 2" in (await third.get_json())["detail"]
        assert statuses == [200, 200]


def required_roles(method: str, path: str, model: str, reset: bool) -> set[str] | None:
    """The roles the route table asks of a request (any one of them)."""
    found = Router(ROUTES).match(method, path)
    access = found[0].access if found is not None else NO_ROUTE
    roles = access.roles_for(model, reset)
    return None if roles is None else set(roles)


@pytest.mark.parametrize(
    ("method", "path", "model", "reset", "expected"),
    [
        ("GET", "/metrics", "", False, None),
        ("HEAD", "/healthz", "", False, None),
        ("GET", "/openapi.json", "", False, None),
        ("GET", "/api/v2/event/status/passive", "", False, {"plugin", "admin"}),
        ("GET", "/api/v2/event/status/passive", "", True, {"admin"}),
        ("GET", "/api/v1/processing/binary", "", True, {"admin"}),
        ("POST", "/api/v2/event", "status", False, {"plugin", "admin"}),
        ("POST", "/api/v2/event", "plugin", False, {"plugin", "admin"}),
        ("POST", "/api/v2/event", "binary", False, {"ingest", "plugin", "admin"}),
        ("POST", "/api/v2/event", "download", False, {"ingest", "plugin", "admin"}),
        ("POST", "/api/v2/event", "delete", False, {"ingest", "admin"}),
        ("POST", "/api/v2/event", "", False, {"ingest", "admin"}),
        ("POST", "/api/v1/processing/binary", "", False, {"plugin", "admin"}),
        ("POST", "/api/v1/events/plugin", "", False, {"plugin", "admin"}),
        ("POST", "/api/v3/stream/s/content", "", False, {"plugin", "ingest", "admin"}),
        ("HEAD", f"/api/v3/stream/s/content/{'a' * 64}", "", False, {"plugin", "ingest", "admin"}),
        ("POST", f"/api/v1/data/{'a' * 64}", "", False, {"plugin", "ingest", "admin"}),
        ("GET", "/ui", "", False, {"admin"}),
        ("GET", "/api/azuld/v1/sources/s", "", False, {"admin"}),
        ("GET", "/no/such/route", "", False, {"admin"}),
        ("PUT", "/api/v2/event", "status", False, {"admin"}),
    ],
)
def test_route_roles(
    method: str, path: str, model: str, reset: bool, expected: set[str] | None
) -> None:
    assert required_roles(method, path, model, reset) == expected


async def test_openapi_json_is_public(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200


async def test_no_route_needs_admin(client: Client) -> None:
    assert (await client.get("/no/such/route")).status_code == 401
    assert (await client.get("/no/such/route", headers=bearer("p"))).status_code == 403
    assert (await client.get("/no/such/route", headers=bearer("a"))).status_code == 404
    assert (await client.put("/api/v2/event", headers=bearer("a"))).status_code == 405
