"""Shared fixtures: event factories, settings on a temporary folder, services in process."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from azuld.http import Services
from azuld.models.events import (
    Author,
    BinaryEntity,
    BinaryEvent,
    Datastream,
    PathNode,
    Source,
)
from azuld.service import open_services
from azuld.settings import Settings, load_settings

# Real Kafka and S3 (moto) servers, started on first use: see tests/services.py.
pytest_plugins = ["tests.conftest_services"]

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def make_binary(
    name: str = "sample",
    *,
    source: str = "samples",
    action: str = "sourced",
    size: int = 100,
    file_format: str = "text/plain",
    streams: list[Datastream] | None = None,
    depth: int = 1,
    author: str = "bob",
) -> BinaryEvent:
    """A valid binary event for `name`'s content; `depth` path nodes."""
    digest = sha(name)
    if streams is None:
        streams = [Datastream(label="content", sha256=digest, size=size, file_format=file_format)]
    path = [
        PathNode(
            author=Author(name=author if i == depth - 1 else "bob", category="user"),
            action="sourced" if i == 0 else "extracted",
            sha256=sha(f"{name}-{i}") if i < depth - 1 else digest,
            timestamp=NOW,
        )
        for i in range(depth)
    ]
    return BinaryEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=author, category="user"),
        source=Source(name=source, timestamp=NOW, path=path),
        entity=BinaryEntity(sha256=digest, size=size, file_format=file_format, datastreams=streams),
        action=action,  # type: ignore[arg-type]
    )


@pytest.fixture
def binary_factory() -> Callable[..., BinaryEvent]:
    return make_binary


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path / "data",
            "server.listen": "127.0.0.1:0",
            "dispatch.default_deadline_seconds": 0.2,
        },
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    async with open_services(settings) as svc:
        yield svc


def query(**params: Any) -> list[tuple[str, str]]:
    """Query pairs in the style of the Python client: lists repeat, `True` is `true`."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            pairs.append((name, "true" if item is True else str(item)))
    return pairs
