"""The dashboard at `/ui`: the page in process, then in headless Chromium on a real daemon."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import ui
from tests.conftest import make_binary
from tests.daemon import running_daemon
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
    assert "/api/azuld/v1/plugins" in page
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


async def headless(chromium: str, profile: Path, *args: str) -> str:
    """Run headless Chromium once (its own profile); its stdout, with `<script>` blocks removed
    (so assertions see what the page rendered, not the strings in its code)."""
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        *args,
    ]
    with trio.fail_after(90):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 0, f"{command}\n{done.stderr.decode(errors='replace')}"
    return re.sub(r"<script>.*?</script>", "", done.stdout.decode(), flags=re.DOTALL)


@pytest.mark.slow
async def test_dashboard_in_headless_chromium(tmp_path: Path, chromium: str) -> None:
    async with running_daemon(tmp_path / "data") as daemon:
        ui = f"{daemon.url}/ui"
        empty = await headless(chromium, tmp_path / "profile-empty", "--dump-dom", ui)
        assert '<td colspan="7" class="empty">no plugins yet' in empty
        assert '<p class="empty">no plugins yet</p>' in empty
        assert "no failures recorded" in empty
        assert 'class="plugin-row"' not in empty

        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            events = [make_binary(f"dashboard-{i}") for i in range(3)]
            await post(client, "binary", msgspec.json.encode(events))
            _, (alpha_job,) = await fetch(client, "Alpha")
            _, (beta_job,) = await fetch(client, "Beta")
            await post(client, "status", status_event(beta_job, "Beta", "completed-empty"))
            failure = status_event(
                alpha_job, "Alpha", "error-exception", error="plugin raised", message=TRACEBACK
            )
            await post(client, "status", failure)
            plugins = (await client.get("/api/azuld/v1/plugins")).json()["plugins"]
        keys = {p["name"]: p["key"] for p in plugins}
        assert set(keys) == {"Alpha", "Beta"}
        (alpha,) = (p for p in plugins if p["name"] == "Alpha")
        assert alpha["recent_failures"], alpha

        screenshot = tmp_path / "dashboard.png"
        async with trio.open_nursery() as nursery:
            dom: list[str] = []

            async def dump() -> None:
                dom.append(await headless(chromium, tmp_path / "profile-dom", "--dump-dom", ui))

            nursery.start_soon(dump)
            nursery.start_soon(
                headless,
                chromium,
                tmp_path / "profile-shot",
                f"--screenshot={screenshot}",
                "--window-size=1280,900",
                "--hide-scrollbars",
                ui,
            )

    (page,) = dom
    for key in keys.values():
        assert f'<tr class="plugin-row" data-key="{key}">' in page
    assert "no plugins yet" not in page
    assert "error-exception" in page
    assert alpha_job["entity"]["sha256"] in page
    assert LAST_LINE_TEXT in page  # the message's last line, escaped
    assert "<img" not in page
    assert '<span id="status" class="ok">' in page

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The screenshot stays with the test's files; AZULD_UPDATE_SCREENSHOTS=1 refreshes the
    # one in docs/.
    if os.environ.get("AZULD_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(screenshot, REPO / "docs" / "dashboard.png")
