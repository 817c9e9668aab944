"""`azuld watch` on a real daemon: watching leaves nothing behind, and a watch started just
before a submit sees the submit's statuses."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from azuld.cli.errors import UsageError
from azuld.cli.watch import parse_since
from tests.conftest import make_binary
from tests.daemon import Daemon, running_daemon
from tests.test_end_to_end import fetch, post, status_event

pytestmark = pytest.mark.slow

# Watchers are forgotten a second after their last poll.
QUICK = {"AZULD_DISPATCH__EPHEMERAL_IDLE_SECONDS": "1"}


def test_since_takes_durations_times_and_now() -> None:
    assert parse_since("30s", 1000.0) == 970.0
    assert parse_since("2m", 1000.0) == 880.0
    assert parse_since("1d", 1000.0) == 0.0  # not before the epoch
    assert parse_since("2026-12-08T10:00:00Z", 0) == 1796724000.0
    assert parse_since("2026-12-08T10:00:00", 0) == 1796724000.0  # UTC unless it says
    assert parse_since("now", 1000.0) is None
    with pytest.raises(UsageError, match="expected a duration"):
        parse_since("yesterday", 0)


@asynccontextmanager
async def watching(daemon: Daemon, out: Path, *args: str) -> AsyncIterator[trio.Process]:
    """`azuld watch` running, its output in `out`; killed on the way out if still running."""
    with open(out, "wb") as sink:  # noqa: ASYNC230 - opening a local file is instant
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "azuld", "watch", "--server", daemon.url, *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()


async def stop(process: trio.Process) -> None:
    """Ctrl-C, as a user stops it: exit code 0."""
    process.send_signal(signal.SIGINT)
    with trio.fail_after(15):
        assert await process.wait() == 0


async def keys(client: httpx.AsyncClient) -> list[dict[str, object]]:
    reply = await client.get("/api/azuld/v1/plugins")
    assert reply.status_code == 200
    plugins: list[dict[str, object]] = reply.json()["plugins"]
    return plugins


async def test_repeated_watches_leave_no_key_behind(tmp_path: Path) -> None:
    async with (
        running_daemon(tmp_path / "data", env=QUICK) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        seen: set[object] = set()
        for run in range(3):
            out = tmp_path / f"watch-{run}.txt"
            async with watching(daemon, out, "--since", "now") as watcher:
                with trio.fail_after(20):  # it is listed while it polls: as a watcher
                    while not (new := [k for k in await keys(client) if k["key"] not in seen]):
                        await trio.sleep(0.1)
                (key,) = new
                seen.add(key["key"])
                assert key["ephemeral"] is True
                assert str(key["key"]).startswith("azuld-watch-")
                await stop(watcher)
        assert len(seen) == 3
        with trio.fail_after(20):
            while await keys(client):
                await trio.sleep(0.2)
        metrics = (await client.get("/metrics")).text
        done = await trio.run_process(
            [sys.executable, "-m", "azuld", "status", "--server", daemon.url], capture_stdout=True
        )
    assert "azuld-watch" not in metrics
    assert "watch" not in done.stdout.decode()


async def test_a_watch_started_just_before_a_submit_sees_its_statuses(tmp_path: Path) -> None:
    out = tmp_path / "watch.txt"
    # The watch is started, and at once (long before its first poll: the interpreter is still
    # starting) a binary is submitted and two plugins finish it.
    async with (
        running_daemon(tmp_path / "data") as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        watching(daemon, out) as watcher,
    ):
        await post(client, "binary", msgspec.json.encode([make_binary("watched")]))
        _, (alpha,) = await fetch(client, "Alpha")
        _, (beta,) = await fetch(client, "Beta")
        await post(client, "status", status_event(alpha, "Alpha", "completed-empty"))
        failure = status_event(beta, "Beta", "error-exception", error="it broke")
        await post(client, "status", failure)
        with trio.fail_after(20):
            while out.read_text().count(alpha["entity"]["sha256"][:16]) < 2:
                await trio.sleep(0.1)
        await stop(watcher)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("following statuses on")
    (alpha_line,) = [line for line in lines if " Alpha " in line]
    assert "completed-empty" in alpha_line
    (beta_line,) = [line for line in lines if " Beta " in line]
    assert "error-exception" in beta_line
    assert "it broke" in beta_line
