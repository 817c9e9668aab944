"""`max-security` end to end: the real daemon (embedded, and on Kafka), two plugins at different
clearances reading one source over HTTP. Each is handed exactly the events its clearance may see,
the rest are counted as filtered (in the reply and in /metrics), an unreadable clearance is a 422
saying why, and the clearance does not change the plugin key."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import Daemon, start_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow

SOURCE = "labelled"
FILTER = "FilterSecurity-max_security"
NOW = "2026-11-29T10:00:00Z"
# (name, source.security, the path author's security): the event's label is all of them.
EVENTS = [
    ("official", "OFFICIAL", ""),
    ("secret", "SECRET", ""),
    ("unlabelled", "", ""),
    ("sensitive", "OFFICIAL:SENSITIVE", ""),
    ("secret-author", "OFFICIAL", "SECRET"),
    ("top", "TOP SECRET", ""),
]


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def sourced(name: str, security: str, author_security: str) -> dict[str, Any]:
    author = {"name": "analyst", "category": "user"}
    node_author = {**author, "security": author_security} if author_security else author
    sha256 = digest(name)
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": NOW,
        "author": author,
        "action": "sourced",
        "source": {
            "name": SOURCE,
            "timestamp": NOW,
            "security": security,
            "path": [
                {"author": node_author, "action": "sourced", "sha256": sha256, "timestamp": NOW}
            ],
        },
        "entity": {
            "sha256": sha256,
            "size": 9,
            "datastreams": [{"label": "content", "sha256": sha256, "size": 9}],
        },
    }


async def fetch(
    client: httpx.AsyncClient, name: str, clearance: str, count: int = 10
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = await client.get(
        "/api/v2/event/binary/active",
        params={
            "name": name,
            "version": "1",
            "r-live": "true",
            "r-historic": "true",
            "count": str(count),
            "deadline": "1",
            "max-security": clearance,
        },
    )
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    return msgspec.json.decode(parts["info"]), msgspec.json.decode(parts["events"])["events"]


async def fetch_all(
    client: httpx.AsyncClient, name: str, clearance: str, want: int
) -> tuple[list[str], dict[str, int]]:
    """Fetch until `want` jobs came (on Kafka the source's partitions are owned after a
    metadata refresh); the sha256s handed out and the filters counted on the way."""
    got: list[str] = []
    filters: dict[str, int] = {}
    with trio.fail_after(60):
        while len(got) < want:
            info, events = await fetch(client, name, clearance)
            got += [event["entity"]["sha256"] for event in events]
            for reason, count in info.get("filters", {}).items():
                filters[reason] = filters.get(reason, 0) + count
    info, events = await fetch(client, name, clearance)
    assert events == []  # nothing else for this plugin
    for reason, count in info.get("filters", {}).items():
        filters[reason] = filters.get(reason, 0) + count
    return sorted(got), filters


@asynccontextmanager
async def daemon_on(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(tmp_path / "data", extra_args=config(tmp_path, backend, request))
    try:
        yield daemon
    finally:
        with trio.CancelScope(shield=True):
            await daemon.kill()


def config(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> list[str]:
    if backend == "embedded":
        return []
    broker = request.getfixturevalue("kafka_broker")
    path = tmp_path / "azuld.toml"
    path.write_text(
        f"""
[events]
backend = "kafka"
topic_prefix = "s{secrets.token_hex(4)}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_connect_timeout_seconds = 60
[[events.sources]]
name = "{SOURCE}"
partitions = 2
"""
    )
    return ["--config", str(path)]


@pytest.mark.parametrize("backend", ["embedded", "kafka"])
async def test_two_plugins_at_different_clearances(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    async with (
        daemon_on(backend, tmp_path, request) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=60) as client,
    ):
        with trio.fail_after(60):
            while (await client.get("/readyz")).status_code != 200:
                await trio.sleep(0.2)
        response = await client.post(
            "/api/v2/event?model=binary",
            content=msgspec.json.encode([sourced(*event) for event in EVENTS]),
        )
        assert response.status_code == 200, response.text
        assert response.json()["total_ok"] == len(EVENTS), response.text

        low, low_filters = await fetch_all(client, "Low", "OFFICIAL", 2)
        assert low == sorted(digest(name) for name in ("official", "unlabelled"))
        assert low_filters == {FILTER: 4}
        high, high_filters = await fetch_all(client, "High", "SECRET", 5)
        assert high == sorted(digest(name) for name, *_ in EVENTS if name != "top")
        assert high_filters == {FILTER: 1}

        bad = await client.get(
            "/api/v2/event/binary/active?name=Low&version=1&r-live=true&max-security=SECRET+NOFORN"
        )
        assert bad.status_code == 422
        assert "max-security 'SECRET NOFORN': unknown marking 'NOFORN'" in bad.text

        metrics = (await client.get("/metrics")).text
        for name, count in (("Low", 4), ("High", 1)):
            line = (
                f'azuld_events_filtered_total{{filter="{FILTER}",model="binary",plugin="{name}",'
                f'plugin_key="{name}-1-binary-allsrc-alltype-LH"}}'
            )
            assert f"{line} {count}.0" in metrics
        plugins = (await client.get("/api/azuld/v1/plugins")).json()["plugins"]
        keys = sorted(plugin["key"] for plugin in plugins)
        assert keys == ["High-1-binary-allsrc-alltype-LH", "Low-1-binary-allsrc-alltype-LH"]
