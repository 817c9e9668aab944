"""Plugins survive their dispatcher, with the real daemon: `azuld plugin run` started before
the daemon, the daemon SIGKILLed and restarted under it with jobs in flight; every job ends with
exactly one final status in the log, and the plugin never exits. A refusal is one line."""

from __future__ import annotations

import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import Daemon, start_daemon
from tests.http.conftest import parse_multipart
from tests.services import free_port

pytestmark = pytest.mark.slow

SOURCE = "survive"
JOBS = 50
BLOB_BYTES = 1024 * 1024  # entropy of 1 MiB takes the plugin long enough to be caught mid-job


def sourced(sha256: str, size: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    user = {"name": "tester", "category": "user"}
    node = {"author": user, "action": "sourced", "sha256": sha256, "timestamp": now}
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": now,
        "author": user,
        "action": "sourced",
        "source": {"name": SOURCE, "timestamp": now, "path": [node]},
        "entity": {
            "sha256": sha256,
            "size": size,
            "datastreams": [{"label": "content", "sha256": sha256, "size": size}],
        },
    }


async def submit(url: str, count: int) -> list[str]:
    """Upload `count` distinct random blobs and publish a sourced event for each."""
    shas = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(count):
            reply = await client.post(
                f"/api/v3/stream/{SOURCE}/content", content=os.urandom(BLOB_BYTES)
            )
            assert reply.status_code == 200, reply.text
            shas.append(reply.json()["data"]["sha256"])
        events = msgspec.json.encode([sourced(sha, BLOB_BYTES) for sha in shas])
        reply = await client.post(
            "/api/v2/event?model=binary",
            content=events,
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 200, reply.text
    return shas


async def final_statuses(url: str) -> list[dict[str, Any]]:
    """Every final status in the daemon's log (a passive read of `status` from the start)."""
    found: list[dict[str, Any]] = []
    query = "name=survival-check&version=1&count=1000&deadline=1&r-historic=true"
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while True:
            reply = await client.get(f"/api/v2/event/status/passive?{query}")
            assert reply.status_code == 200, reply.text
            parts = parse_multipart(reply.content, reply.headers["content-type"])
            events = msgspec.json.decode(parts["events"])["events"]
            if not events:
                return found
            found += [e for e in events if e["entity"]["status"] not in ("heartbeat", "dequeued")]


def explain(shas: list[str], statuses: list[dict[str, Any]], *logs: str) -> str:
    """What the log and the processes said about binaries with more than one final status."""
    lines = []
    for sha in shas:
        for status in statuses:
            if status["entity"]["input"]["entity"]["sha256"] == sha:
                entity = status["entity"]
                lines.append(f"{sha[:12]} {entity['input'].get('dequeued')} {status['timestamp']}")
        lines += [line for log in logs for line in log.splitlines() if sha[:12] in line]
    return "\n".join(lines)


class Plugin:
    """`azuld plugin run` as a subprocess, its output in a file."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log_path = log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def done(self) -> int:
        """Jobs whose final status the plugin delivered (it logs each with -v)."""
        return sum(
            1
            for line in self.log().splitlines()
            if "azuld.plugin.runner: job " in line and line.endswith(": completed")
        )

    async def wait_for(self, predicate: Any, what: str, within: float = 120) -> None:
        with trio.move_on_after(within):
            while not predicate():
                assert self.process.returncode is None, f"the plugin exited:\n{self.log()}"
                await trio.sleep(0.05)
            return
        raise AssertionError(f"no {what} within {within} s:\n{self.log()[-5000:]}")


async def test_a_plugin_outlives_its_dispatcher(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    log = tmp_path / "plugin.log"
    with open(log, "wb") as out:  # noqa: ASYNC230 - opening a local file is instant
        process = await trio.lowlevel.open_process(
            [
                *(sys.executable, "-m", "azuld", "plugin", "run", "entropy"),
                *("--server", url, "--workers", "4", "--grace", "5", "-v"),
            ],
            stdout=out,
            stderr=out,
        )
    plugin = Plugin(process, log)
    daemon: Daemon | None = None
    try:
        # Started before the daemon: it waits, saying so once.
        await plugin.wait_for(lambda: "dispatcher unreachable at" in plugin.log(), "outage line")
        await trio.sleep(3)
        assert plugin.log().count("dispatcher unreachable at") == 1

        listen = ["--listen", f"127.0.0.1:{port}"]
        daemon = await start_daemon(data, extra_args=listen)
        shas = await submit(url, JOBS)
        # Twice: SIGKILL the daemon with jobs in flight, leave it down a while, restart it.
        for done_before_kill in (8, 25):
            await plugin.wait_for(lambda n=done_before_kill: plugin.done() >= n, "progress")
            await daemon.kill()
            await trio.sleep(2)
            daemon = await start_daemon(data, extra_args=listen)
        await plugin.wait_for(lambda: plugin.done() >= JOBS, "every job done")

        statuses = await final_statuses(url)
        assert {s["author"]["name"] for s in statuses} == {"Entropy"}
        # One final status per binary: the plugin ran each job once and posted its status once.
        # The same post may be stored twice: one the SIGKILL cut off after the daemon had stored
        # it (before its commit), sent again; the restarted embedded daemon cannot tell.
        posted: dict[str, set[tuple[str, str]]] = {}
        for status in statuses:
            job = status["entity"]["input"]
            posted.setdefault(job["entity"]["sha256"], set()).add(
                (job["dequeued"], status["timestamp"])
            )
        assert set(posted) == set(shas)  # none missing
        twice = [sha for sha, posts in posted.items() if len(posts) != 1]
        assert twice == [], explain(twice, statuses, plugin.log(), daemon.log())  # none twice
        assert {s["entity"]["status"] for s in statuses} == {"completed"}

        text = plugin.log()
        assert process.returncode is None
        outages = text.count("dispatcher unreachable at")
        assert outages >= 3  # before the daemon started, and at each kill
        assert text.count("dispatcher back at") == outages
        assert "Traceback" not in text

        process.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if daemon is not None and daemon.process.returncode is None:
            await daemon.kill()


async def test_sigterm_while_waiting_for_the_daemon_ends_at_once(tmp_path: Path) -> None:
    log = tmp_path / "plugin.log"
    url = f"http://127.0.0.1:{free_port()}"
    with open(log, "wb") as out:  # noqa: ASYNC230 - opening a local file is instant
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "azuld", "plugin", "run", "entropy", "--server", url],
            stdout=out,
            stderr=out,
        )
    plugin = Plugin(process, log)
    try:
        await plugin.wait_for(lambda: "dispatcher unreachable at" in plugin.log(), "outage line")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    line = next(x for x in plugin.log().splitlines() if "dispatcher unreachable" in x)
    message = line.partition("azuld.plugin.link: ")[2]
    expected = f"dispatcher unreachable at {url} (cannot connect: Connection refused), retrying in"
    assert message.rpartition(" ")[0].rpartition(" ")[0] == expected
    assert message.endswith(("0.2 s", "0.3 s", "0.4 s", "0.5 s"))  # 0.5 s, jittered


BAD_FILTER_PLUGIN = """
from azuld.plugin import Filters, Plugin

class BadFilter(Plugin):
    name = "BadFilter"
    version = "1"
    filters = Filters(max_content_bytes=-1)

    async def execute(self, job):
        pass
"""


async def test_a_refused_fetch_is_one_line(tmp_path: Path) -> None:
    source = tmp_path / "badfilter.py"
    source.write_text(BAD_FILTER_PLUGIN)
    daemon = await start_daemon(tmp_path / "data")
    try:
        with trio.fail_after(60):
            done = await trio.run_process(
                [
                    *(sys.executable, "-m", "azuld", "plugin", "run"),
                    *(f"{source}:BadFilter", "--server", daemon.url),
                ],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    finally:
        await daemon.kill()
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("azuld plugin run: 422 GET /api/v2/event/binary/active: ")
    assert last.endswith("r-under-content-size and r-over-content-size must not be negative")
