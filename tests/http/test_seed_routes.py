"""The seed document's v1 route names behave exactly like their v2/v3 twins: the same scenario
runs through both sets of routes and must give the same results."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import pytest
from quart.typing import TestClientProtocol as Client

from tests.conftest import NOW, make_binary
from tests.http.conftest import parse_multipart

ROUTES = {
    "v2": {
        "register": "/api/v2/event?model=plugin",
        "fetch": "/api/v2/event/binary/active",
        "status": "/api/v2/event?model=status",
        "upload": "/api/v3/stream/samples/content?expected-sha256={sha}",
    },
    "v1": {
        "register": "/api/v1/events/plugin",
        "fetch": "/api/v1/processing/binary",
        "status": "/api/v1/processing/binary",
        "upload": "/api/v1/data/{sha}?source=samples",
    },
}


async def scenario(client: Client, routes: dict[str, str], name: str) -> list[Any]:
    """Register, upload, fetch, finish, fetch again; returns what a plugin observed."""
    observed: list[Any] = []
    registration = [
        {
            "model_version": 6,
            "kafka_key": "runner-placeholder",
            "timestamp": NOW.isoformat(),
            "author": {"name": name, "version": "1", "category": "plugin"},
            "entity": {"name": name, "version": "1"},
        }
    ]
    response = await client.post(routes["register"], data=msgspec.json.encode(registration))
    observed.append((response.status_code, await response.get_json()))

    data = f"blob for {name}".encode()
    sha = hashlib.sha256(data).hexdigest()
    response = await client.post(routes["upload"].format(sha=sha), data=data)
    body = await response.get_json()
    observed.append((response.status_code, body["data"]["sha256"] == sha, body["data"]["label"]))
    response = await client.post(routes["upload"].format(sha="0" * 64), data=data)
    observed.append(
        (response.status_code, "sha256 mismatch" in (await response.get_json())["detail"])
    )

    query = f"?name={name}&version=1&r-historic=true&r-live=true&deadline=0.2"
    response = await client.get(routes["fetch"] + query)
    parts = parse_multipart(await response.get_data(), response.headers["Content-Type"])
    info = msgspec.json.decode(parts["info"])
    (job,) = msgspec.json.decode(parts["events"])["events"]
    observed.append(
        (response.status_code, info, job["entity"]["sha256"], job["dequeued"].split("|")[2])
    )

    status = [
        {
            "model_version": 6,
            "kafka_key": "x",
            "timestamp": NOW.isoformat(),
            "author": {"name": name, "version": "1", "category": "plugin"},
            "entity": {"input": job, "status": "completed-empty"},
        }
    ]
    response = await client.post(routes["status"], data=msgspec.json.encode(status))
    observed.append((response.status_code, await response.get_json()))

    response = await client.get(routes["fetch"] + query)
    parts = parse_multipart(await response.get_data(), response.headers["Content-Type"])
    observed.append(msgspec.json.decode(parts["events"]))
    response = await client.get(routes["fetch"].replace("binary", "nonsense") + query)
    observed.append(response.status_code)
    return observed


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_seed_routes_match_their_twins(client: Client, version: str) -> None:
    await client.post("/api/v2/event?model=binary", data=msgspec.json.encode([make_binary("s")]))
    twin = await scenario(client, ROUTES["v2"], f"Twin{version}")
    seen = await scenario(client, ROUTES[version], f"Seed{version}")
    assert seen == twin
    assert seen[3][0] == 200
    assert seen[-2] == {"events": []}
