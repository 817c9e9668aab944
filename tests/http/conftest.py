from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import Services, create_app


@pytest.fixture
async def client(services: Services, nursery: trio.Nursery) -> AsyncIterator[Client]:
    await nursery.start(services.dispatcher.run)
    app = create_app(services)
    async with app.test_app() as test_app:
        yield test_app.test_client()


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """Parts of a `multipart/form-data` body by name (enough for azuld's two-part reply)."""
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts: dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        parts[name] = payload[: -len(b"\r\n")]
    return parts


def error_of(body: Any) -> tuple[str, str]:
    assert set(body) == {"status", "title", "detail", "error_enum"}
    return body["title"], body["detail"]
