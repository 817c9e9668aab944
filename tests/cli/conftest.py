"""Fixtures of the command-line tests: a URL where nothing listens."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def unused_url() -> str:
    """An http URL on loopback where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
