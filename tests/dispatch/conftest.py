"""The dispatcher over a real embedded log, as its tests use it: fixtures and helpers. Lease
maths runs on Trio's autojump clock in the tests, so it is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from azuld.backends.embedded import EmbeddedLog, open_embedded_log
from azuld.core.params import ConsumeParams, parse_consume_params
from azuld.dispatch import Dispatcher, FetchResult
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from azuld.settings import DispatchSettings
from tests.conftest import NOW, query

LEASE = 30.0


@pytest.fixture
async def event_log(tmp_path: Path) -> AsyncIterator[EmbeddedLog]:
    async with open_embedded_log(tmp_path / "events.sqlite3") as opened:
        yield opened


@pytest.fixture
async def dispatcher(event_log: EmbeddedLog, nursery: trio.Nursery) -> Dispatcher:
    settings = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=8)
    dispatcher = Dispatcher(event_log, settings, "test")
    await nursery.start(dispatcher.run)
    return dispatcher


def params(
    name: str = "P", model: str = "binary", active: bool = True, **extra: Any
) -> ConsumeParams:
    extra.setdefault("r_live", True)
    extra.setdefault("r_historic", True)
    return parse_consume_params(
        model,
        active,
        query(name=name, version="1", **extra),
        default_deadline_seconds=1,
        max_deadline_seconds=60,
        max_count=1000,
    )


async def submit(dispatcher: Dispatcher, *events: BinaryEvent) -> None:
    await dispatcher.publish("binary", msgspec.json.encode(list(events)))


def decode(result: FetchResult, cls: type[Any] = BinaryEvent) -> list[Any]:
    return [msgspec.json.decode(e, type=cls) for e in result.events]


def status(
    job: BinaryEvent, value: str, *, author: str = "P", results: list[BinaryEvent] | None = None
) -> bytes:
    event = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=author, version="1", category="plugin"),
        entity=StatusEntity(input=job, status=value, results=results or []),  # type: ignore[arg-type]
    )
    return msgspec.json.encode([event])


async def fetch_one(dispatcher: Dispatcher, **extra: Any) -> BinaryEvent | None:
    got = decode(await dispatcher.fetch(params(**extra)))
    assert len(got) <= 1
    return got[0] if got else None


class SlowRegistration:
    """The embedded log with Kafka's round trip when a plugin key registers."""

    def __init__(self, inner: EmbeddedLog) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def register_consumer(self, key: str, info: bytes, snapshot: Any) -> Any:
        await trio.sleep(0.01)
        return await self._inner.register_consumer(key, info, snapshot)
