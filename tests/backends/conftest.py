"""The event-log backends as one parametrized fixture: every contract test runs on the
embedded log and on a real Kafka broker (started by the suite, see tests/services.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio_asyncio

from azuld.backends.embedded import open_embedded_log
from azuld.ports import EventLog
from azuld.settings import EventsSettings, SourceSettings

BACKENDS = ["embedded", "kafka"]


def kafka_settings(bootstrap: str, prefix: str) -> EventsSettings:
    return EventsSettings(
        backend="kafka",
        topic_prefix=prefix,
        kafka_bootstrap=bootstrap,
        kafka_connect_timeout_seconds=30,
        kafka_request_timeout_seconds=15,
        sources=(SourceSettings(name="multi", partitions=3),),
    )


def _embedded_partitions(topic: str) -> int:
    parts = topic.split(".")
    return 3 if len(parts) == 5 and parts[2] == "multi" else 1


@asynccontextmanager
async def open_log(
    backend: str, request: pytest.FixtureRequest, path: Path, prefix: str
) -> AsyncIterator[EventLog]:
    """An event log of `backend`: `path` for the embedded file, `prefix` for Kafka topics."""
    if backend == "embedded":
        async with open_embedded_log(path, partitions_for=_embedded_partitions) as embedded:
            yield embedded
        return
    broker = request.getfixturevalue("kafka_broker")
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(lambda loop, context: None)
        from azuld.backends.kafka import open_kafka_log

        async with open_kafka_log(kafka_settings(broker.bootstrap, prefix)) as kafka:
            # A new instance owns nothing until the group assigns it partitions.
            with trio.fail_after(30):
                while await kafka.health():
                    await trio.sleep(0.1)
            yield kafka


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
async def event_log(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, topic_prefix: str
) -> AsyncIterator[EventLog]:
    async with open_log(backend, request, tmp_path / "events.sqlite3", topic_prefix) as log:
        yield log
