"""Fixtures of the HTTP server tests: an `App`, azuld's server running it, and `either` server."""

from __future__ import annotations

import pytest
import trio

from tests.http.server.harness import SERVERS, App, Running, start


@pytest.fixture
async def app() -> App:
    return App()


@pytest.fixture
async def server(nursery: trio.Nursery, app: App) -> Running:
    return await start(nursery, app)


@pytest.fixture(params=sorted(SERVERS))
async def either(request: pytest.FixtureRequest, nursery: trio.Nursery, app: App) -> Running:
    """Each server in turn: for what both must do alike (framing, refusals, timeouts)."""
    return await start(nursery, app, kind=request.param)
