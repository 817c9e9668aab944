"""The command line's typed client against a real daemon: each reply decodes into its struct, and
each way of failing is its own error (unreachable, connection lost, refused, not azuld)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from azuld.cli.client import AzuldClient
from azuld.cli.errors import ConnectionLost, DaemonError, Refused, Unreachable
from azuld.cli.replies import KeySummary
from azuld.core.publish import sourced_event
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from tests.daemon import running_daemon
from tests.http.conftest import parse_multipart
from tests.services import free_port

pytestmark = pytest.mark.slow

PLUGIN_QUERY = "name=P&version=1&r-historic=true&r-live=true&count=1&deadline=2"


def _exercise(url: str) -> None:
    """Runs in a thread: the client is synchronous."""
    with AzuldClient(url) as client:
        data = client.upload("demo", "content", io.BytesIO(b"hello azul\n"))
        assert (data.size, data.file_format) == (11, "text/plain")
        event = sourced_event(
            data,
            "hello.txt",
            source="demo",
            author=Author(name="alice", category="user"),
            now=datetime.now(UTC),
        )
        assert client.publish([event]).total_ok == 1

        # A plugin takes the job and fails it: now there is something in every admin view.
        with httpx.Client(base_url=url, timeout=30) as plugin:
            fetched = plugin.get(f"/api/v2/event/binary/active?{PLUGIN_QUERY}")
            parts = parse_multipart(fetched.content, fetched.headers["content-type"])
            (job,) = msgspec.json.decode(parts["events"], type=dict[str, list[BinaryEvent]])[
                "events"
            ]
            status = StatusEvent(
                model_version=6,
                timestamp=datetime.now(UTC),
                author=Author(name="P", version="1", category="plugin"),
                entity=StatusEntity(
                    input=job, status="error-exception", error="boom", message="trace\nlast"
                ),
            )
            posted = plugin.post(
                "/api/v2/event?model=status", content=msgspec.json.encode([status])
            )
            assert posted.status_code == 200

        (key,) = client.plugins()
        assert (key.name, key.version, key.fetched, key.in_flight) == ("P", "1", 1, 0)
        assert key.finished == {"exception": 1}
        (failure,) = key.recent_failures
        assert (failure.status, failure.error, failure.sha256) == (
            "error-exception",
            "boom",
            data.sha256,
        )

        (root,) = client.source("demo")
        assert (root.filename, root.sha256, root.children) == ("hello.txt", data.sha256, [])

        (dead,) = client.failed("P")
        assert (dead.job_id, dead.message, dead.source) == (job.dequeued, "last", "demo")
        assert client.failed("Q") == []

        ok, bogus = client.reoffer([job.dequeued, "bogus"], "alice")
        assert (ok.ok, ok.plugin_key) == (True, key.key)
        assert (bogus.ok, bogus.reason) == (False, "not an azuld job id")

        query = [("name", "W"), ("version", "1"), ("r-historic", "true"), ("deadline", "1")]
        (seen,) = client.statuses(query)
        assert (seen.author.name, seen.entity.status, seen.entity.error) == (
            "P",
            "error-exception",
            "boom",
        )
        assert seen.entity.input.entity.sha256 == data.sha256

        with pytest.raises(Refused) as refused:
            client.source("no such")
        assert (refused.value.status, refused.value.title) == (400, "invalid name")
        assert str(refused.value) == (
            "400 invalid name: invalid source 'no such': use 1-100 letters, digits, '_' or '-'"
        )


async def test_every_reply_decodes_against_a_real_daemon(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "data") as daemon:
        await trio.to_thread.run_sync(_exercise, daemon.url)


def test_nothing_listening_is_unreachable(unused_url: str) -> None:
    with AzuldClient(unused_url) as client, pytest.raises(Unreachable) as info:
        client.plugins()
    assert str(info.value) == (
        f"cannot reach azuld at {unused_url} (is `azuld serve` running? use --server or "
        "AZULD_SERVER)"
    )


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """A server that accepts each connection and closes it without answering."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # closed: the test is over
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    thread.join(5)


def test_a_daemon_that_hangs_up_is_a_lost_connection(hangs_up: str) -> None:
    with AzuldClient(hangs_up) as client, pytest.raises(ConnectionLost) as info:
        client.plugins()
    assert str(info.value).startswith(f"lost the connection to azuld at {hangs_up}: ")


def test_a_reply_azuld_would_not_send(unused_url: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"plugins": 3}))
    with (
        AzuldClient(unused_url, transport=transport) as client,
        pytest.raises(DaemonError, match="did not answer GET /api/azuld/v1/plugins as azuld"),
    ):
        client.plugins()
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    with (
        AzuldClient(unused_url, transport=transport) as client,
        pytest.raises(Refused, match=r"^502 bad gateway$"),
    ):
        client.failed()


async def test_a_client_waits_for_a_daemon_that_is_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    def ask() -> list[KeySummary]:
        with AzuldClient(url, wait_seconds=60) as client:
            return client.plugins()

    async with trio.open_nursery() as nursery:
        asked: list[list[KeySummary]] = []

        async def ask_in_a_thread() -> None:
            asked.append(await trio.to_thread.run_sync(ask))

        nursery.start_soon(ask_in_a_thread)
        # The client is refused first, then the daemon comes up at its URL.
        while "waiting for azuld" not in capsys.readouterr().err:
            await trio.sleep(0.05)
        extra = ["--listen", url.removeprefix("http://")]
        async with running_daemon(tmp_path / "data", extra_args=extra):
            with trio.fail_after(60):
                while not asked:
                    await trio.sleep(0.05)
    assert asked == [[]]
    assert capsys.readouterr().err == ""  # said once, before
