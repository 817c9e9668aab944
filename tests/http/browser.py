"""Headless Chromium driven over the DevTools protocol, for the dashboard's browser tests.

Chromium speaks the protocol over two pipes (`--remote-debugging-pipe`: it reads commands from
fd 3 and writes replies and events to fd 4, each message JSON ended by a NUL byte), so no port
and no client library is needed. A test opens a `Page`, waits for what the page renders, clicks
as a user would, and takes screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

__all__ = ["Page", "open_page"]


class _Protocol:
    """Commands and their replies over the two pipes; events are not kept."""

    def __init__(self, send: trio.lowlevel.FdStream, receive: trio.lowlevel.FdStream) -> None:
        self._send = send
        self._receive = receive
        self._next_id = 0
        self._waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = {}

    async def run(self) -> None:
        """Route replies to their callers until the pipe closes (Chromium exited)."""
        buffer = b""
        while chunk := await self._receive.receive_some(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                waiting = self._waiting.pop(message.get("id", -1), None)
                if waiting is not None:
                    waiting[1].append(message)
                    waiting[0].set()

    async def send_only(self, method: str) -> None:
        """Send a command whose reply may never come (`Browser.close`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": {}}
        await self._send.send_all(json.dumps(message).encode() + b"\0")

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        """Send one command; its result (an `AssertionError` with the protocol's error)."""
        self._next_id += 1
        done = trio.Event()
        reply: list[dict[str, Any]] = []
        self._waiting[self._next_id] = (done, reply)
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._send.send_all(json.dumps(message).encode() + b"\0")
        with trio.fail_after(60):
            await done.wait()
        assert "error" not in reply[0], f"{method}: {reply[0]['error']}"
        return reply[0].get("result", {})


class Page:
    """One tab, driven the way a user would use it."""

    def __init__(self, protocol: _Protocol, session: str) -> None:
        self._protocol = protocol
        self._session = session

    async def call(self, method: str, **params: Any) -> Any:
        return await self._protocol.call(method, self._session, **params)

    async def goto(self, url: str) -> None:
        """Open `url` and wait until it has loaded."""
        await self.call("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, within_seconds: float = 30) -> Any:
        """Poll until the expression is truthy; its value. An expression that throws counts as
        not yet (the page may be between documents)."""
        with trio.fail_after(within_seconds):
            while True:
                try:
                    if value := await self.evaluate(expression):
                        return value
                except AssertionError:
                    pass
                await trio.sleep(0.1)

    async def html(self) -> str:
        """The rendered document (`<script>` blocks removed, so text in the page's code does not
        count as rendered)."""
        dom: str = await self.evaluate("document.documentElement.outerHTML")
        start, _, rest = dom.partition("<script>")
        return start + rest.partition("</script>")[2]

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (it must be visible)."""
        box = await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )

    async def screenshot(self, path: Path, width: int = 1280) -> None:
        """A PNG of the whole page at `width` CSS pixels."""
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.call("Page.captureScreenshot", format="png")
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_page(
    chromium: str, profile: Path, width: int = 1280, height: int = 900
) -> AsyncIterator[Page]:
    """A new tab of a headless Chromium of its own (`profile`), closed with it on exit."""
    chromium_reads, commands = os.pipe()
    replies, chromium_writes = os.pipe()
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    # The pipes must be fds 3 and 4 in Chromium: bash puts them there (dash takes fds < 10 only).
    redirect = f'exec "$0" "$@" 3<&{chromium_reads} 4>&{chromium_writes}'
    process = await trio.lowlevel.open_process(
        ["bash", "-c", redirect, chromium, *args],
        pass_fds=(chromium_reads, chromium_writes),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(chromium_reads)
    os.close(chromium_writes)
    send = trio.lowlevel.FdStream(commands)
    receive = trio.lowlevel.FdStream(replies)
    protocol = _Protocol(send, receive)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(protocol.run)
            target = await protocol.call("Target.createTarget", url="about:blank")
            attached = await protocol.call(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            page = Page(protocol, attached["sessionId"])
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            yield page
            await protocol.send_only("Browser.close")
            with trio.move_on_after(10):
                await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            await send.aclose()
            await receive.aclose()
