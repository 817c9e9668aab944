"""The well-behaved client that works beside every fault, and what it was served meanwhile."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import trio

from tests.daemon import Daemon
from tests.scenarios.harness import rss_mib
from tests.scenarios.outcome import Outcome, Unexpected, latency_summary
from tests.scenarios.profile import PATIENCE_SECONDS, REQUEST_TIMEOUT_SECONDS, Profile
from tests.scenarios.wire import (
    binary_event,
    decode_fetch,
    fetch,
    job_query,
    read_all,
    sha256,
    status_event,
)

# The good client's long-poll for the event it just published: it returns as soon as the job is
# there; the deadline only bounds a delivery that never comes.
FETCH_DEADLINE_SECONDS = 10


class GoodClient:
    """A plugin and a submitter in one, doing the whole loop over and over: upload a blob,
    publish its sourced event, fetch the job (its own plugin key and source), download the blob,
    post `completed-empty`. Times every request and remembers every 200-acknowledged write."""

    def __init__(self, url: str, *, name: str = "Good", source: str = "good") -> None:
        self.url = url
        self.name = name
        self.source = source
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.cycles = 0
        self.blobs: set[str] = set()
        self.events: set[str] = set()
        self.statuses: set[str] = set()  # `message` markers of acknowledged statuses
        self._halting = False
        self._halted = trio.Event()
        self._mark = (0, 0, 0)  # latencies, errors, cycles at the last `mark()`

    async def _timed(
        self, what: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await send()
        except httpx.HTTPError as exc:
            self.latencies.append(time.perf_counter() - started)
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return None
        self.latencies.append(time.perf_counter() - started)
        if response.status_code not in (200, 206):
            self.errors.append(f"{what}: {response.status_code} {response.text[:300]}")
            return None
        return response

    async def _cycle(self, client: httpx.AsyncClient) -> None:
        data = secrets.token_bytes(512 + secrets.randbelow(3584))
        digest = sha256(data)
        upload = await self._timed(
            "upload", lambda: client.post(f"/api/v3/stream/{self.source}/content", content=data)
        )
        if upload is None:
            return
        self.blobs.add(digest)
        body = msgspec.json.encode([binary_event(self.source, data)])
        published = await self._timed(
            "publish",
            lambda: client.post(
                "/api/v2/event?model=binary",
                content=body,
                headers={"content-type": "application/json"},
            ),
        )
        if published is None:
            return
        self.events.add(digest)
        query = job_query(
            self.name, sources=(self.source,), count=1, deadline=FETCH_DEADLINE_SECONDS
        )
        fetched = await self._timed(
            "fetch", lambda: client.get(f"/api/v2/event/binary/active?{query}")
        )
        if fetched is None:
            return
        _, jobs = decode_fetch(fetched)
        if not jobs:
            self.errors.append(
                f"fetch: no job within {FETCH_DEADLINE_SECONDS} s for the event just published "
                f"({digest})"
            )
            return
        job = jobs[0]
        got = job["entity"]["sha256"]
        download = await self._timed(
            "download", lambda: client.get(f"/api/v3/stream/{self.source}/content/{got}")
        )
        if download is not None and got in self.blobs and sha256(download.content) != got:
            self.errors.append(f"download: {got} came back with the wrong bytes")
        marker = f"good-{secrets.token_hex(6)}"
        status = msgspec.json.encode(
            [status_event(job, self.name, "completed-empty", message=marker)]
        )
        posted = await self._timed(
            "status",
            lambda: client.post(
                "/api/v2/event?model=status",
                content=status,
                headers={"content-type": "application/json"},
            ),
        )
        if posted is not None:
            self.statuses.add(marker)
        self.cycles += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with httpx.AsyncClient(
                base_url=self.url, timeout=REQUEST_TIMEOUT_SECONDS
            ) as client:
                # Create the plugin key before anything is published for it.
                await fetch(client, self.name, sources=(self.source,), deadline=0.05)
                task_status.started()
                while not self._halting:
                    try:
                        await self._cycle(client)
                    except (Unexpected, httpx.HTTPError, KeyError, ValueError) as exc:
                        self.errors.append(f"cycle: {type(exc).__name__}: {exc}")
                        await trio.sleep(0.1)
                    await trio.sleep(0.01)
        finally:
            self._halted.set()

    async def halt(self) -> None:
        """Stop after the cycle in progress (requests are never cut off half-way: a cancelled
        httpx request leaves its body generator unfinished, which pytest reports)."""
        self._halting = True
        await self._halted.wait()

    def mark(self) -> None:
        """Start a new measurement window (`window()` reports what happened since the mark)."""
        self._mark = (len(self.latencies), len(self.errors), self.cycles)

    def window(self) -> dict[str, Any]:
        """Requests, errors, latencies and whole cycles since the last `mark()`."""
        latencies, errors, cycles = self._mark
        summary = latency_summary(self.latencies[latencies:], len(self.errors) - errors)
        return {**summary, "cycles": self.cycles - cycles}

    async def completes_a_cycle(self, within: float = PATIENCE_SECONDS) -> bool:
        """Wait until one more cycle has completed; False if none did within `within` s."""
        target = self.cycles + 1
        with trio.move_on_after(within):
            while self.cycles < target and not self._halted.is_set():
                await trio.sleep(0.01)
        return self.cycles >= target

    def summary(self) -> dict[str, Any]:
        return {**latency_summary(self.latencies, len(self.errors)), "cycles": self.cycles}

    async def audit(
        self,
        client: httpx.AsyncClient,
        outcome: Outcome,
        *,
        statuses: list[dict[str, Any]] | None = None,
        binaries: list[dict[str, Any]] | None = None,
    ) -> None:
        """Look for every acknowledged write again; count what is missing as lost."""
        if statuses is None:
            statuses = await read_all(client, "status")
        if binaries is None:
            binaries = await read_all(client, "binary", [("r-source", self.source)])
        markers = {s["entity"].get("message", "") for s in statuses}
        outcome.lose(len(self.statuses - markers), "acknowledged good-client statuses missing")
        seen = {b["entity"]["sha256"] for b in binaries}
        outcome.lose(len(self.events - seen), "acknowledged good-client events missing")
        missing = 0

        async def look(digest: str) -> None:
            nonlocal missing
            response = await client.get(f"/api/v3/stream/{self.source}/content/{digest}")
            if response.status_code != 200 or sha256(response.content) != digest:
                missing += 1

        async with trio.open_nursery() as nursery:
            for digest in sorted(self.blobs):
                nursery.start_soon(look, digest)
        outcome.lose(missing, "acknowledged good-client blobs missing or corrupt")


@asynccontextmanager
async def good_client(url: str, **kw: Any) -> AsyncIterator[GoodClient]:
    good = GoodClient(url, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(good.run)
        yield good
        await good.halt()


def served(outcome: Outcome, good: GoodClient, **extra: Any) -> None:
    """Record what the good client was served (and `extra` measurements) for the report."""
    outcome.served = {"good": good.summary(), **extra}
    if good.errors:
        outcome.note(f"good client errors ({len(good.errors)}): {good.errors[:3]}")


def check_served_meanwhile(outcome: Outcome, window: dict[str, Any], while_what: str) -> None:
    """Not starved: the good client finished a whole cycle in `window`, and no request failed.

    Behaviour, not speed: how fast it was served is in `outcome.served`, for the report."""
    outcome.check(
        f"the good client was served {while_what} (a whole cycle, no errors)",
        window["cycles"] >= 1 and window["errors"] == 0,
        window,
    )


async def abuse_window(
    outcome: Outcome,
    daemon: Daemon,
    profile: Profile,
    abuser: Callable[[], Awaitable[None]],
) -> GoodClient:
    """Run the good client alone for a baseline, then beside `abuser`, then after it: it must be
    served throughout. The latencies of the three windows and the daemon's RSS are measured."""
    async with good_client(daemon.url) as good:
        await trio.sleep(profile.baseline_seconds)
        baseline = good.window()
        good.mark()
        rss_before = rss_mib(daemon.process.pid)
        await abuser()
        during = good.window()
        good.mark()
        served_after = await good.completes_a_cycle()
        after = good.window()
        await good.halt()
    outcome.served.update(
        {"baseline": baseline, "during": during, "after": after, "good": good.summary()}
    )
    outcome.served["daemon_rss_mib"] = {
        "before": round(rss_before, 1),
        "after": round(rss_mib(daemon.process.pid), 1),
    }
    check_served_meanwhile(outcome, during, "during the abuse")
    outcome.check(
        "the daemon serves after the abuse (a whole cycle, no errors)",
        served_after and after["errors"] == 0,
        after,
    )
    if good.errors:
        outcome.note(f"good client errors: {good.errors[:3]}")
    return good
