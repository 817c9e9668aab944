"""The dashboard at `/ui`: the page and its API in process, then in headless Chromium on a real
daemon (embedded, and two instances on the suite's Kafka), driven as a user would: it must be
rendered (not "loading…"), and its re-offer button must put a failed job back."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import ui
from tests import test_replay_and_reoffer as replay
from tests.daemon import Daemon, running_daemon, start_daemon
from tests.http.browser import open_page
from tests.services import KafkaBroker
from tests.test_end_to_end import fetch, post, status_event

REPO = Path(__file__).resolve().parents[2]

# A multi-line message whose last line holds markup: it must show as text, never as an element.
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "alpha.py", line 12, in execute\n'
    "    header = parse(data)\n"
    'ValueError: bad header <img src=x onerror="document.title=1"> at offset 7\n'
)
LAST_LINE_TEXT = 'ValueError: bad header &lt;img src=x onerror="document.title=1"&gt; at offset 7'


async def test_ui_page_is_self_contained_html(client: Client) -> None:
    response = await client.get("/ui")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = await response.get_data(as_text=True)
    assert '<table id="plugins">' in page
    assert '<tbody id="plugin-rows">' in page
    for what in ("plugins", "cluster", "jobs"):
        assert f'load("{what}")' in page  # the API it reads, next to /ui
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external resources"
    assert "innerHTML" not in page

    # The policy allows exactly the inline script and style the page carries.
    policy = response.headers["Content-Security-Policy"]
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        (block,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy


async def test_the_api_the_dashboard_reads(client: Client) -> None:
    cluster = await client.get("/api/azuld/v1/cluster")
    assert cluster.status_code == 200
    view = await cluster.get_json()
    (member,) = view["members"]
    assert member["this"] is True
    assert (view["shared"], view["problem"]) == (False, "")
    jobs = await client.get("/api/azuld/v1/jobs")
    assert await jobs.get_json() == {"instance": view["instance"], "total": 0, "jobs": []}
    bad = await client.get("/api/azuld/v1/jobs?limit=many")
    assert bad.status_code == 400
    assert "limit='many' is not an integer" in (await bad.get_json())["detail"]

    # The re-offer button posts JSON; a form (which another site could make a browser send)
    # is refused.
    body = '{"job_ids": ["nonsense"]}'
    form = await client.post(
        "/api/azuld/v1/reoffer", data=body, headers={"Content-Type": "text/plain"}
    )
    assert form.status_code == 400
    assert "Content-Type: application/json" in (await form.get_json())["detail"]
    posted = await client.post(
        "/api/azuld/v1/reoffer", data=body, headers={"Content-Type": "application/json"}
    )
    assert (await posted.get_json())["reoffered"][0]["reason"] == "not an azuld job id"


def test_ui_page_inlines_the_static_files() -> None:
    """The page is `static/dashboard.html` with the css and js files inlined where it says."""
    static = REPO / "src" / "azuld" / "http" / "static"
    html = (static / "dashboard.html").read_text()
    assert html.count('<style data-inline="dashboard.css"></style>') == 1
    assert html.count('<script data-inline="dashboard.js"></script>') == 1
    for name in ("dashboard.css", "dashboard.js"):
        assert (static / name).read_text() in ui.PAGE
    assert "data-inline" not in ui.PAGE
    assert ui.PAGE.startswith(html.split("<style", 1)[0])
    assert ui.PAGE.endswith(html.rsplit("</script>", 1)[1])


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed by `scripts/chromium` when missing (fails, never skips)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "chromium")], capture_output=True, text=True, check=False
    )
    path = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not Path(path).is_file():
        pytest.fail(
            f"scripts/chromium could not provide Chromium (exit {done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return path


RENDERED = "document.getElementById('status').className === 'ok'"


def keep_screenshot(shot: Path, name: str) -> None:
    """Screenshots stay with the test's files; UPDATE_SCREENSHOTS=1 refreshes docs/ (not an
    AZULD_ variable: the daemons would refuse it as an unknown setting)."""
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, REPO / "docs" / name)


async def plugin_keys(client: httpx.AsyncClient) -> dict[str, str]:
    plugins = (await client.get("/api/azuld/v1/plugins")).json()["plugins"]
    return {p["name"]: p["key"] for p in plugins}


@pytest.mark.slow
async def test_dashboard_in_headless_chromium(tmp_path: Path, chromium: str) -> None:
    async with (
        running_daemon(tmp_path / "data", env=replay.CACHE_ENV) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        open_page(chromium, tmp_path / "profile") as page,
    ):
        await page.goto(f"{daemon.url}/ui")
        await page.wait_for(RENDERED)
        empty = await page.html()
        assert '<td colspan="7" class="empty">no plugins yet' in empty
        assert '<p class="empty">no plugins yet</p>' in empty
        assert "no failures recorded" in empty
        assert "no jobs in flight" in empty
        assert "Embedded log: this instance alone owns every partition" in empty
        assert 'class="plugin-row"' not in empty
        assert "loading" not in empty

        # Scanner finishes a binary, then answers the same binary from the replay cache
        # (finished 2, fetched 1); Alpha fails one; Beta is still at work on one.
        await replay.register(client, "Scanner", {"rules": "v1"})
        await replay.submit(client, replay.sourced("first"))
        _, (scanned,) = await replay.fetch(client, "Scanner")
        await replay.complete(client, scanned, "Scanner")
        await replay.submit(client, replay.sourced("second"))
        assert (await replay.fetch(client, "Scanner"))[1] == []
        _, (alpha_job,) = await fetch(client, "Alpha")
        _, (beta_job,) = await fetch(client, "Beta")
        failure = status_event(
            alpha_job, "Alpha", "error-exception", error="plugin raised", message=TRACEBACK
        )
        await post(client, "status", failure)
        keys = await plugin_keys(client)
        assert set(keys) == {"Scanner", "Alpha", "Beta"}

        await page.goto(f"{daemon.url}/ui")
        await page.wait_for(RENDERED)
        await page.wait_for("!!document.querySelector('button.reoffer')")
        rendered = await page.html()
        for key in keys.values():
            assert f'<tr class="plugin-row" data-key="{key}">' in rendered
        assert "1 cached" in rendered  # Scanner: finished > fetched, and why
        assert "error-exception" in rendered
        assert LAST_LINE_TEXT in rendered  # the message's last line, escaped
        assert "<img" not in rendered
        assert f'<tr class="job-row" data-job="{beta_job["dequeued"]}">' in rendered
        assert "first.bin" in rendered  # Beta's binary, by name
        await page.screenshot(tmp_path / "dashboard.png")
        keep_screenshot(tmp_path / "dashboard.png", "dashboard.png")

        # The button re-offers the failed job: Alpha gets it again, ahead of anything else.
        await page.click("button.reoffer")
        await page.wait_for("!!document.querySelector('.reoffer-ok')")
        assert "\u2713 re-offered" in await page.html()
        _, (again,) = await fetch(client, "Alpha")
        assert again["entity"]["sha256"] == alpha_job["entity"]["sha256"]
        assert again["dequeued"].split("|")[2] == "reoffer"
        trail = (await client.get("/api/azuld/v1/reoffers")).json()["reoffers"]
        assert [t["job_id"] for t in trail] == [alpha_job["dequeued"]]


def kafka_config(path: Path, broker: KafkaBroker, prefix: str) -> Path:
    path.write_text(
        f"""
[events]
backend = "kafka"
topic_prefix = "{prefix}"
kafka_bootstrap = "{broker.bootstrap}"
kafka_connect_timeout_seconds = 60
kafka_request_timeout_seconds = 10
[[events.sources]]
name = "samples"
partitions = 4
[dispatch]
lease_seconds = 120
default_deadline_seconds = 1
"""
    )
    return path


async def cluster_of(client: httpx.AsyncClient) -> dict[str, Any]:
    reply = await client.get("/api/azuld/v1/cluster")
    assert reply.status_code == 200
    view: dict[str, Any] = reply.json()
    return view


@pytest.mark.slow
async def test_the_cluster_on_kafka_in_headless_chromium(
    tmp_path: Path, chromium: str, kafka_broker: KafkaBroker
) -> None:
    config = kafka_config(tmp_path / "azuld.toml", kafka_broker, f"ui{os.getpid()}")
    daemons: list[Daemon] = []
    clients = AsyncExitStack()
    try:
        daemons.append(await start_daemon(tmp_path / "node0", extra_args=["--config", str(config)]))
        first = await clients.enter_async_context(
            httpx.AsyncClient(base_url=daemons[0].url, timeout=30)
        )
        # Eight binaries, all leased on the first instance (on its every partition).
        events = [replay.sourced("samples") for _ in range(8)]
        for i, event in enumerate(events):
            event["entity"]["sha256"] = event["source"]["path"][0]["sha256"] = f"{i:064x}"
            event["source"]["path"][0]["filename"] = f"sample-{i}.bin"
        await post(first, "binary", msgspec.json.encode(events))
        leased: list[dict[str, Any]] = []
        with trio.fail_after(60):
            while len(leased) < 8:
                leased += (await fetch(first, "Alpha"))[1]

        # A second instance joins: the first hands its partitions' leases over, and the second
        # takes them on when Alpha first fetches from it.
        daemons.append(await start_daemon(tmp_path / "node1", extra_args=["--config", str(config)]))
        second = await clients.enter_async_context(
            httpx.AsyncClient(base_url=daemons[1].url, timeout=30)
        )
        with trio.fail_after(90):
            while True:
                view = await cluster_of(second)
                if len(view["members"]) == 2 and all(m["partitions"] for m in view["members"]):
                    await fetch(second, "Alpha")
                    if any(move["kind"] == "took-over" for move in view["recent"]):
                        break
                await trio.sleep(0.5)
        assert {m["instance"] for m in view["members"]} == {
            (await cluster_of(first))["instance"],
            view["instance"],
        }
        (took,) = [move for move in view["recent"] if move["kind"] == "took-over"][:1]
        assert took["peer"] == (await cluster_of(first))["instance"]
        assert any(move["kind"] == "handed-over" for move in (await cluster_of(first))["recent"])
        metrics = (await second.get("/metrics")).text
        assert "\nazuld_cluster_members 2.0\n" in metrics

        async with open_page(chromium, tmp_path / "profile") as page:
            await page.goto(f"{daemons[1].url}/ui")
            await page.wait_for(RENDERED)
            await page.wait_for("document.querySelectorAll('.member-row').length === 2")
            # Open each member's partitions, as a user would (they stay open across refreshes).
            folded = await page.evaluate(
                "[...document.querySelectorAll('.member-row')]"
                ".filter((row) => row.querySelector('summary')).map((row) => row.dataset.instance)"
            )
            for instance in folded:
                await page.click(f'.member-row[data-instance="{instance}"] summary')
            opened = "document.querySelectorAll('.member-row details[open]').length"
            assert await page.wait_for(f"{opened} === {len(folded)}")
            await trio.sleep(6)  # one refresh later, still open
            assert await page.evaluate(opened) == len(folded)
            rendered = await page.html()
            assert "Kafka: 2 instances share the log" in rendered
            assert f'data-instance="{view["instance"]}"' in rendered
            assert "took over leases" in rendered
            assert 'class="job-row"' in rendered  # the leases taken over, in flight here
            assert "loading" not in rendered
            await page.screenshot(tmp_path / "dashboard-cluster.png")
            keep_screenshot(tmp_path / "dashboard-cluster.png", "dashboard-cluster.png")

        # A watcher on the second instance sees every status, also those in partitions of the
        # status topic the first owns (a watcher reads every partition; it hands nothing out).
        for job in leased:
            await post(first, "status", status_event(job, "Alpha", "completed-empty"))
        seen: set[str] = set()
        watch = "version=1&r-live=true&ephemeral=true&last=100&count=100"
        with trio.fail_after(30):
            while len(seen) < 8:
                _, statuses = await fetch(second, "azuld-watch-ui", "status", "passive", watch)
                seen |= {status["entity"]["input"]["entity"]["sha256"] for status in statuses}
        assert seen == {job["entity"]["sha256"] for job in leased}
    finally:
        with trio.CancelScope(shield=True):
            await clients.aclose()
            for daemon in daemons:
                if daemon.process.returncode is None:
                    await daemon.kill()
