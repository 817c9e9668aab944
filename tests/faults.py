"""Fault scenarios against the real azuld daemon, shared by `tests/test_faults.py` (which asserts
their outcomes) and `scripts/reliability-report` (which runs them repeatedly and writes
docs/reliability.md).

Each scenario starts `azuld serve` as a subprocess (tests/daemon.py) with short leases
(`lease_seconds = 2`, `max_attempts = 2`, `max_job_seconds = 4`), injects one fault while a
well-behaved client (`GoodClient`: upload, publish, fetch, download, complete, in a loop) keeps
working, and returns an `Outcome`:

* `checks`: the documented behaviour, one named check each (the tests assert they all hold);
* `served`: what the good client got meanwhile (requests, errors, p50/p99 latency);
* `lost`: computed afterwards, never assumed: every 200-acknowledged blob, event and status (the
  good client's and the scenario's own) is looked for again, and every job must have ended with a
  stored final status or be offered again;
* `notes`: what azuld answered where the docs leave a choice (e.g. 507 or 503), verbatim.

Nothing here kills anything it did not start: daemons and plugin processes are killed by their
`trio.Process`, and a tmpfs this module mounted is unmounted by the same scenario.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import msgspec
import trio

from tests.daemon import Daemon, start_daemon
from tests.http.conftest import parse_multipart

__all__ = [
    "QUICK",
    "SCENARIOS",
    "SOAK",
    "Outcome",
    "Profile",
    "Scenario",
]

REPO = Path(__file__).resolve().parent.parent

LEASE_SECONDS = 2.0
MAX_ATTEMPTS = 2
MAX_JOB_SECONDS = 4.0
MAX_POLLS_PER_KEY = 20
# The good client's p99 must stay under this during every abuse (2 shared cores).
LATENCY_BOUND_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 15.0
# Slack for timings on a shared machine (lease expiry is checked to this precision).
SLACK_SECONDS = 1.5

BASE_CONFIG: dict[str, dict[str, Any]] = {
    "dispatch": {
        "lease_seconds": LEASE_SECONDS,
        "max_attempts": MAX_ATTEMPTS,
        "max_job_seconds": MAX_JOB_SECONDS,
        "max_polls_per_key": MAX_POLLS_PER_KEY,
        "default_deadline_seconds": 1.0,
    },
    "server": {"graceful_timeout_seconds": 1.0},
}


@dataclass(frozen=True)
class Profile:
    """How hard each scenario pushes. `QUICK` for the test suite, `SOAK` for long runs."""

    name: str
    abuse_seconds: float  # how long each abusive client keeps at it
    slow_uploaders: int  # connections sending their upload body one byte a second
    long_polls: int  # concurrent long-polls opened for one plugin key
    stuck_readers: int  # connections that request a big download and never read it
    stuck_blob_mib: int
    killed_upload_mib: int  # the upload that is half-way through when the daemon dies
    killed_upload_seconds: float
    burst_statuses: int  # status posts in flight when the daemon dies
    waiting_polls: int  # long-polls waiting when the daemon dies
    baseline_seconds: float  # good client alone, before an abuse starts
    abandoned_connections: int  # clients that get their answer and never close the socket


QUICK = Profile(
    name="quick",
    abuse_seconds=3.0,
    slow_uploaders=10,
    long_polls=1000,
    stuck_readers=10,
    stuck_blob_mib=16,
    killed_upload_mib=8,
    killed_upload_seconds=4.0,
    burst_statuses=120,
    waiting_polls=30,
    baseline_seconds=0.5,
    abandoned_connections=200,
)
SOAK = Profile(
    name="soak",
    abuse_seconds=30.0,
    slow_uploaders=100,
    long_polls=5000,
    stuck_readers=50,
    stuck_blob_mib=64,
    killed_upload_mib=64,
    killed_upload_seconds=20.0,
    burst_statuses=1000,
    waiting_polls=150,
    baseline_seconds=5.0,
    abandoned_connections=2000,
)


# -- outcomes -------------------------------------------------------------------------------


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    scenario: str
    checks: list[Check] = field(default_factory=list)
    lost: int = 0
    lost_detail: list[str] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""  # why the scenario could not run here (e.g. no way to make a small disk)

    def check(self, what: str, ok: bool, detail: object = "") -> bool:
        self.checks.append(Check(what, bool(ok), "" if ok else str(detail)[:2000]))
        return bool(ok)

    def lose(self, count: int, what: str) -> None:
        if count:
            self.lost += count
            self.lost_detail.append(f"{count} {what}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        return not self.skipped and self.lost == 0 and all(c.ok for c in self.checks)

    def explain(self) -> str:
        lines = [f"scenario {self.scenario}: {'ok' if self.ok else 'FAILED'}"]
        if self.skipped:
            lines.append(f"  skipped: {self.skipped}")
        lines += [f"  FAILED {c.what}: {c.detail}" for c in self.checks if not c.ok]
        lines += [f"  LOST {d}" for d in self.lost_detail]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  served meanwhile: {self.served}")
        return "\n".join(lines)


class Unexpected(Exception):
    """azuld answered something a scenario cannot continue from."""


# -- small helpers --------------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(latencies: list[float], errors: int = 0) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(path: Path, overrides: dict[str, dict[str, Any]] | None = None) -> Path:
    sections = {name: dict(values) for name, values in BASE_CONFIG.items()}
    for name, values in (overrides or {}).items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def integrity_check(data_dir: Path) -> str:
    """`PRAGMA integrity_check` on events.sqlite3, opened read-only (the daemon must be gone)."""
    db = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def read_commits(data_dir: Path) -> list[tuple[str, str, int, int, str]]:
    db = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT grp, topic, partition, offset, metadata FROM commits"))
    finally:
        db.close()


def spool_files(data_dir: Path) -> list[Path]:
    spool = data_dir / "blobs" / ".spool"
    return sorted(spool.iterdir()) if spool.is_dir() else []


def bad_blob_files(data_dir: Path) -> tuple[int, list[str]]:
    """Every file under blobs/ (but the spool) must be named by the sha256 of its bytes."""
    root = data_dir / "blobs"
    count, bad = 0, []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".spool" in path.relative_to(root).parts:
            continue
        count += 1
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != path.name:
            bad.append(f"{path.relative_to(root)} hashes to {digest.hexdigest()}")
    return count, bad


def blob_paths(data_dir: Path, digest: str) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob(digest) if p.is_file()]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# -- events ---------------------------------------------------------------------------------


def binary_event(
    source: str,
    data: bytes,
    *,
    file_format: str = "text/plain",
    action: str = "sourced",
    parent: dict[str, Any] | None = None,
    author: str = "faults",
) -> dict[str, Any]:
    """A valid binary event for `data` (whose blob may or may not have been uploaded)."""
    digest = sha256(data)
    who = {"name": author, "category": "user" if parent is None else "plugin"}
    node = {"author": who, "action": action, "sha256": digest, "timestamp": now()}
    path = [*parent["source"]["path"], node] if parent is not None else [node]
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": now(),
        "author": who,
        "action": action,
        "source": {"name": source, "timestamp": now(), "path": path},
        "entity": {
            "sha256": digest,
            "size": len(data),
            "file_format": file_format,
            "datastreams": [
                {
                    "label": "content",
                    "sha256": digest,
                    "size": len(data),
                    "file_format": file_format,
                }
            ],
        },
    }


def strip_input(job: dict[str, Any]) -> dict[str, Any]:
    stripped = {**job, "entity": dict(job["entity"])}
    for key in ("features", "datastreams", "info"):
        stripped["entity"].pop(key, None)
    return stripped


def status_event(
    job: dict[str, Any],
    name: str,
    status: str,
    *,
    version: str = "1.0",
    message: str = "",
    dequeued: str | None = None,
    results: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    job_input = strip_input(job)
    if dequeued is not None:
        job_input["dequeued"] = dequeued
    entity: dict[str, Any] = {"input": job_input, "status": status, "runtime": 1.0}
    if message:
        entity["message"] = message
    if results:
        entity["results"] = results
    return {
        "model_version": 6,
        "kafka_key": "runner-placeholder",
        "timestamp": now(),
        "author": {"category": "plugin", "name": name, "version": version},
        "entity": entity,
    }


def job_query(
    name: str,
    *,
    sources: Iterable[str] = (),
    actions: Iterable[str] = (),
    lanes: Iterable[str] = ("live", "historic"),
    count: int = 1,
    deadline: float = 1.0,
    version: str = "1.0",
    extra: Iterable[tuple[str, str]] = (),
) -> str:
    pairs = [("name", name), ("version", version), ("count", str(count))]
    pairs.append(("deadline", f"{deadline:g}"))
    pairs += [(f"r-{lane}", "true") for lane in lanes]
    pairs += [("r-source", s) for s in sources]
    pairs += [("r-action", a) for a in actions]
    pairs += list(extra)
    return urlencode(pairs)


def decode_fetch(response: httpx.Response) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if response.status_code != 200:
        raise Unexpected(f"fetch gave {response.status_code}: {response.text[:500]}")
    parts = parse_multipart(response.content, response.headers["content-type"])
    return msgspec.json.decode(parts["info"]), msgspec.json.decode(parts["events"])["events"]


async def fetch(
    client: httpx.AsyncClient, name: str, *, model: str = "binary", mode: str = "active", **kw: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = await client.get(f"/api/v2/event/{model}/{mode}?{job_query(name, **kw)}")
    return decode_fetch(response)


def pooled(url: str, connections: int) -> httpx.AsyncClient:
    """One client for many concurrent tasks: building an `httpx.AsyncClient` costs an SSL context
    (tens of ms of CPU), which would stall this process and skew the latencies it measures."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=url, timeout=60, limits=limits)


async def post_events(
    client: httpx.AsyncClient, model: str, events: list[dict[str, Any]]
) -> httpx.Response:
    return await client.post(
        f"/api/v2/event?model={model}",
        content=msgspec.json.encode(events),
        headers={"content-type": "application/json"},
    )


async def must_post(client: httpx.AsyncClient, model: str, events: list[dict[str, Any]]) -> None:
    response = await post_events(client, model, events)
    if response.status_code != 200 or response.json().get("total_failures"):
        raise Unexpected(f"post {model} gave {response.status_code}: {response.text[:500]}")


async def read_all(
    client: httpx.AsyncClient, model: str, extra: Iterable[tuple[str, str]] = ()
) -> list[dict[str, Any]]:
    """Every event of `model` in the log, through passive fetches under a fresh name.

    A historic-only passive key has no stop (azuld sets historic's stop only when live is asked
    for too), so it follows the tail while others keep posting: stop at the first event stamped
    after the read began (the log is in append order, so everything older was read by then)."""
    name = f"audit-{secrets.token_hex(4)}"
    began = datetime.now(UTC)
    found: list[dict[str, Any]] = []
    while True:
        _, events = await fetch(
            client,
            name,
            model=model,
            mode="passive",
            lanes=("historic",),
            count=1000,
            deadline=0.1,
            version="1",
            extra=extra,
        )
        if not events:
            return found
        found.extend(events)
        if any(datetime.fromisoformat(e["timestamp"]) > began for e in events):
            return found


def final_statuses(
    statuses: list[dict[str, Any]], digest: str, author: str
) -> list[dict[str, Any]]:
    """`author`'s final statuses (not progress) for the event `digest`."""
    return [
        s
        for s in statuses
        if s["entity"]["input"]["entity"]["sha256"] == digest
        and s["author"]["name"] == author
        and s["entity"]["status"] not in ("heartbeat", "dequeued", "download-requested")
    ]


async def plugin_keys(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/azuld/v1/plugins")
    return {p["key"]: p for p in response.json()["plugins"]}


def attempt_of(job: dict[str, Any]) -> int:
    return int(job["dequeued"].rsplit("|", 1)[1])


# -- raw sockets, for clients that do not play by the rules -----------------------------------


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def request_head(
    method: str, target: str, url: str, headers: dict[str, str] | None = None
) -> bytes:
    host, port = host_port(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(stream: trio.abc.Stream) -> tuple[int, bytes]:
    """Status and body of one response: by `content-length`, chunks, or to EOF.

    Not to EOF when a length is known: azuld (hypercorn 0.18 under quart-trio) answers
    `Connection: close` requests but leaves the connection open (see docs/reliability.md)."""
    buffer = bytearray()
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise Unexpected(f"connection closed before a response: {bytes(buffer[:200])!r}")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise Unexpected(f"not an HTTP response: {bytes(buffer[:200])!r}")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = bytearray(rest)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(body) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            body += chunk
        return status, bytes(body[:length])
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            body += chunk
        decoded = bytearray()
        view = bytes(body)
        while view:
            size_line, _, view = view.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += view[:size]
            view = view[size + 2 :]
        return status, bytes(decoded)
    while chunk := await stream.receive_some(65536):
        body += chunk
    return status, bytes(body)


# -- processes ------------------------------------------------------------------------------


class Harness:
    """Starts the daemons of one scenario, all with the same config; kills leftovers at the end."""

    def __init__(self, workdir: Path, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.workdir = workdir
        self.config = write_config(workdir / "azuld.toml", overrides)
        self.daemons: list[Daemon] = []
        self.processes: list[trio.Process] = []

    async def start(self, data_dir: Path | None = None) -> Daemon:
        daemon = await start_daemon(
            data_dir or self.workdir / "data", extra_args=["--config", str(self.config)]
        )
        self.daemons.append(daemon)
        return daemon

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for process in [d.process for d in self.daemons] + self.processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def harness(
    workdir: Path, overrides: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[Harness]:
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    h = Harness(workdir, overrides)
    try:
        yield h
    finally:
        await h.aclose()
        # Requests cut off by a SIGKILL leave httpx body generators suspended; collect them
        # while the test (and its warning filter) is still running.
        gc.collect()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.05)


# -- the well-behaved client ----------------------------------------------------------------


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
        self._mark = 0
        self._errors_mark = 0

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
        event = binary_event(self.source, data)
        body = msgspec.json.encode([event])
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
        query = job_query(self.name, sources=(self.source,), count=1, deadline=2)
        fetched = await self._timed(
            "fetch", lambda: client.get(f"/api/v2/event/binary/active?{query}")
        )
        if fetched is None:
            return
        _, jobs = decode_fetch(fetched)
        if not jobs:
            self.errors.append(f"fetch: no job within 2 s for the event just published ({digest})")
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
        """Start a new measurement window (`window()` reports requests since the mark)."""
        self._mark = len(self.latencies)
        self._errors_mark = len(self.errors)

    def window(self) -> dict[str, Any]:
        return latency_summary(self.latencies[self._mark :], len(self.errors) - self._errors_mark)

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
    outcome.served = {"good": good.summary(), **extra}
    if good.errors:
        outcome.note(f"good client errors ({len(good.errors)}): {good.errors[:3]}")


# -- 1. a plugin that crashes mid-job -------------------------------------------------------

CRASHY_PLUGIN = '''
from pathlib import Path

import trio

from azuld.plugin import Filters, Job, Plugin


class Crashy(Plugin):
    """Takes one job, says it has it, then never answers (the test SIGKILLs it)."""

    name = "Crashy"
    version = "1.0"
    filters = Filters(actions=("sourced",), data_types={"content": ("fault/",)})

    async def execute(self, job: Job) -> None:
        Path(self.config["marker"]).write_text(job.event.dequeued)
        await trio.sleep_forever()
'''


async def plugin_crash(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """A real plugin process (the SDK runner) takes a job and is SIGKILLed mid-job. The job is
    offered again after the lease; after the last attempt azuld stores `error-timeout`."""
    outcome = Outcome("plugin-crash")
    started = time.monotonic()
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(base_url=(d := await h.start()).url, timeout=30) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin dies"
        await must_post(client, "binary", [binary_event("s1", data, file_format="fault/crash")])
        plugin_file = workdir / "crashy.py"
        plugin_file.write_text(CRASHY_PLUGIN)
        marker = workdir / "crashy.marker"
        log = (workdir / "crashy.log").open("wb")
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "plugin",
                "run",
                f"{plugin_file}:Crashy",
                "--server",
                d.url,
                "--max-jobs",
                "1",
                "-c",
                f"marker={marker}",
            ],
            stdout=log,
            stderr=log,
            cwd=workdir,
        )
        h.processes.append(process)
        log.close()
        with trio.move_on_after(30):
            while not marker.exists() and process.returncode is None:
                await trio.sleep(0.02)
        if not outcome.check(
            "the plugin process took the job", marker.exists(), (workdir / "crashy.log").read_text()
        ):
            return outcome
        leased_at = time.monotonic()
        first_id = marker.read_text()
        process.kill()
        await process.wait()
        outcome.check("first offer is attempt 0", first_id.endswith("|0"), first_id)

        # The plugin "restarts" and long-polls the same key.
        query: dict[str, Any] = {
            "actions": ("sourced",),
            "lanes": ("expedite", "live", "historic"),
            "extra": [("r-streams", "content,fault/")],
        }
        _, jobs = await fetch(client, "Crashy", deadline=LEASE_SECONDS * 3, **query)
        reoffered_after = time.monotonic() - leased_at
        outcome.check("the job is offered again after the crash", len(jobs) == 1, jobs)
        if jobs:
            outcome.check(
                "the second offer is the same event, attempt 1",
                jobs[0]["entity"]["sha256"] == sha256(data) and attempt_of(jobs[0]) == 1,
                jobs[0]["dequeued"],
            )
            outcome.check(
                f"offered again about lease_seconds={LEASE_SECONDS:g} after it was taken",
                LEASE_SECONDS - 0.5 <= reoffered_after <= LEASE_SECONDS + SLACK_SECONDS,
                f"{reoffered_after:.2f} s",
            )
        # Crash again (take it and say nothing): that was the last attempt.
        timeout_status = await _wait_for_final(client, sha256(data), "Crashy", LEASE_SECONDS + 5)
        _check_error_timeout(outcome, timeout_status, "Crashy", jobs[0] if jobs else None)
        _, again = await fetch(client, "Crashy", deadline=0.5, **query)
        outcome.check("no third offer after max_attempts", again == [], again)
        keys = await plugin_keys(client)
        crashy = [k for k in keys.values() if k["name"] == "Crashy"]
        outcome.check("one plugin key for the plugin", len(crashy) == 1, list(keys))
        if crashy:
            outcome.check(
                "the key counts one critical failure and has nothing in flight",
                crashy[0]["finished"] == {"critical-failure": 1} and crashy[0]["in_flight"] == 0,
                crashy[0],
            )
        await good.halt()
        statuses = await read_all(client, "status")
        outcome.lose(
            0 if final_statuses(statuses, sha256(data), "Crashy") else 1, "jobs without an ending"
        )
        await good.audit(client, outcome, statuses=statuses)
        served(outcome, good, reoffered_after_s=round(reoffered_after, 2))
    outcome.seconds = time.monotonic() - started
    return outcome


async def _wait_for_final(
    client: httpx.AsyncClient, digest: str, author: str, within: float
) -> list[dict[str, Any]]:
    """`author`'s final statuses for `digest`, polling passive reads until one appears."""
    deadline = time.monotonic() + within
    while True:
        found = final_statuses(await read_all(client, "status"), digest, author)
        if found or time.monotonic() > deadline:
            return found
        await trio.sleep(0.1)


def _check_error_timeout(
    outcome: Outcome, found: list[dict[str, Any]], name: str, last_job: dict[str, Any] | None
) -> None:
    timeouts = [s for s in found if s["entity"]["status"] == "error-timeout"]
    outcome.check(
        "after the last attempt one error-timeout status is stored",
        len(timeouts) == 1,
        [(s["author"], s["entity"]["status"]) for s in found],
    )
    if not timeouts:
        return
    status = timeouts[0]
    outcome.check(
        "the error-timeout is authored by the plugin",
        status["author"].get("name") == name and status["author"].get("category") == "plugin",
        status["author"],
    )
    if last_job is not None:
        outcome.check(
            "the error-timeout names the last attempt's job id",
            status["entity"]["input"].get("dequeued") == last_job["dequeued"],
            status["entity"]["input"].get("dequeued"),
        )
    outcome.note(f"error-timeout message: {status['entity'].get('message', '')!r}")


# -- 2. a plugin that hangs without heartbeats ----------------------------------------------


async def plugin_hang(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """A plugin takes a job over a keep-alive connection and then hangs (the connection stays
    open, nothing more is sent). Same recovery as a crash; other plugin keys are served meanwhile,
    and the hung plugin's late `completed` (after the error-timeout) does not finish it twice."""
    outcome = Outcome("plugin-hang")
    started = time.monotonic()
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(base_url=(d := await h.start()).url, timeout=30) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin hangs"
        digest = sha256(data)
        await must_post(client, "binary", [binary_event("s2", data)])
        sources = ("s2",)
        # The hung plugin: its own connection, which it keeps open and silent.
        hung = httpx.AsyncClient(base_url=d.url, timeout=30)
        async with hung:
            _, jobs = await fetch(hung, "Hang", sources=sources)
            leased_at = time.monotonic()
            outcome.check("the hanging plugin took the job", len(jobs) == 1, jobs)
            if not jobs:
                return outcome
            first = jobs[0]
            good.mark()
            # Another key gets the same event meanwhile and finishes it.
            _, peer = await fetch(client, "Peer", sources=sources)
            outcome.check("another plugin key is served the same event", len(peer) == 1, peer)
            if peer:
                await must_post(client, "status", [status_event(peer[0], "Peer", "completed")])
            # A second worker of the hung plugin long-polls: it gets the job after the lease.
            _, second = await fetch(client, "Hang", sources=sources, deadline=LEASE_SECONDS * 3)
            reoffered_after = time.monotonic() - leased_at
            outcome.check("the job is offered again", len(second) == 1, second)
            if second:
                outcome.check(
                    "offered again as attempt 1 about lease_seconds after it was taken",
                    attempt_of(second[0]) == 1
                    and LEASE_SECONDS - 0.5 <= reoffered_after <= LEASE_SECONDS + SLACK_SECONDS,
                    f"{second[0]['dequeued']} after {reoffered_after:.2f} s",
                )
            # That worker hangs too: the last attempt expires.
            found = await _wait_for_final(client, digest, "Hang", LEASE_SECONDS + 5)
            _check_error_timeout(outcome, found, "Hang", second[0] if second else None)
            during = good.window()
            # The first worker wakes up and posts its result, late.
            late = await post_events(client, "status", [status_event(first, "Hang", "completed")])
            outcome.check(
                "a late completed status is accepted (200)", late.status_code == 200, late.text
            )
        keys = {k["name"]: k for k in (await plugin_keys(client)).values()}
        outcome.check(
            "the hung key ends once: one critical failure, nothing completed twice",
            keys.get("Hang", {}).get("finished") == {"critical-failure": 1},
            keys.get("Hang"),
        )
        outcome.check(
            "the other key's job ended normally",
            keys.get("Peer", {}).get("finished") == {"completed": 1},
            keys.get("Peer"),
        )
        outcome.check(
            "the good client kept being served while the plugin hung",
            during["requests"] >= 10 and during["p99_ms"] < LATENCY_BOUND_SECONDS * 1000,
            during,
        )
        _, again = await fetch(client, "Hang", sources=sources, deadline=0.5)
        outcome.check("the job is not offered a third time", again == [], again)
        await good.halt()
        statuses = await read_all(client, "status")
        outcome.check(
            "the late status is stored",
            any(
                s["entity"]["status"] == "completed"
                and s["author"]["name"] == "Hang"
                and s["entity"]["input"]["dequeued"] == first["dequeued"]
                for s in statuses
            ),
            "not found",
        )
        outcome.lose(0 if final_statuses(statuses, digest, "Hang") else 1, "jobs without an ending")
        await good.audit(client, outcome, statuses=statuses)
        served(outcome, good, while_hung=during, reoffered_after_s=round(reoffered_after, 2))
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 3. a plugin that heartbeats forever ----------------------------------------------------


async def heartbeat_forever(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """A plugin heartbeats every 0.5 s and never finishes: heartbeats keep it past
    `lease_seconds`, but it loses the job at `max_job_seconds`; the next attempt, abandoned, ends in
    `error-timeout`."""
    outcome = Outcome("heartbeat-forever")
    started = time.monotonic()
    async with (
        harness(workdir) as h,
        httpx.AsyncClient(base_url=(d := await h.start()).url, timeout=30) as client,
        good_client(d.url) as good,
    ):
        data = b"a job whose plugin never ends"
        digest = sha256(data)
        await must_post(client, "binary", [binary_event("s3", data)])
        sources = ("s3",)
        _, jobs = await fetch(client, "Beater", sources=sources)
        leased_at = time.monotonic()
        if not outcome.check("the plugin took the job", len(jobs) == 1, jobs):
            return outcome
        first = jobs[0]
        heartbeat_codes: list[int] = []
        second: list[dict[str, Any]] = []
        reoffered_after = 0.0

        beating = True

        async def beat() -> None:
            body = [status_event(first, "Beater", "heartbeat")]
            while beating:
                await trio.sleep(0.5)
                heartbeat_codes.append((await post_events(client, "status", body)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat)
            _, second = await fetch(client, "Beater", sources=sources, deadline=MAX_JOB_SECONDS + 4)
            reoffered_after = time.monotonic() - leased_at
            await trio.sleep(1.0)  # heartbeats for the lost attempt go on a little
            beating = False
        outcome.check("the job is taken away and offered again", len(second) == 1, second)
        outcome.check(
            f"heartbeats kept it past lease_seconds={LEASE_SECONDS:g}, but not past "
            f"max_job_seconds={MAX_JOB_SECONDS:g}",
            MAX_JOB_SECONDS - 0.5 <= reoffered_after <= MAX_JOB_SECONDS + SLACK_SECONDS,
            f"offered again after {reoffered_after:.2f} s",
        )
        outcome.check(
            "every heartbeat was answered 200",
            heartbeat_codes and set(heartbeat_codes) == {200},
            heartbeat_codes,
        )
        if second:
            outcome.check("the new offer is attempt 1", attempt_of(second[0]) == 1, second[0])
        # The second attempt is abandoned: it was the last one.
        found = await _wait_for_final(client, digest, "Beater", LEASE_SECONDS + 5)
        _check_error_timeout(outcome, found, "Beater", second[0] if second else None)
        timeouts = [s for s in found if s["entity"]["status"] == "error-timeout"]
        keys = {k["name"]: k for k in (await plugin_keys(client)).values()}
        outcome.check(
            "the key counts exactly one ending",
            keys.get("Beater", {}).get("finished") == {"critical-failure": 1},
            keys.get("Beater"),
        )
        await good.halt()
        outcome.lose(0 if timeouts else 1, "jobs without an ending")
        await good.audit(client, outcome)
        served(
            outcome, good, heartbeats=len(heartbeat_codes), lost_after_s=round(reoffered_after, 2)
        )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 4. duplicate and foreign statuses ------------------------------------------------------

MADE_UP_ID = "azd1|Other-1-binary-allsrc-alltype-L|live|azul.local.x.binary.sourced|0|5|0"


async def bogus_statuses(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """A status posted twice; statuses for jobs the poster does not hold (a made-up azuld id for an
    unknown key, a Go-style id). All 200 and stored; no job finishes twice; the real key's next
    fetches and its commits are as if nothing happened."""
    outcome = Outcome("bogus-statuses")
    started = time.monotonic()
    data_dir = workdir / "data"
    async with harness(workdir) as h:
        d = await h.start()
        async with (
            httpx.AsyncClient(base_url=d.url, timeout=30) as client,
            good_client(d.url) as good,
        ):
            blobs = [f"bogus {i}".encode() for i in range(3)]
            await must_post(client, "binary", [binary_event("s4", b) for b in blobs])
            sources = ("s4",)
            _, jobs = await fetch(client, "Dup", sources=sources)
            if not outcome.check("the plugin took a job", len(jobs) == 1, jobs):
                return outcome
            job = jobs[0]
            posts = {
                "completed (first)": status_event(job, "Dup", "completed", message="dup-1"),
                "completed (again)": status_event(job, "Dup", "completed", message="dup-2"),
                "made-up azuld id": status_event(
                    job, "Dup", "completed", message="made-up", dequeued=MADE_UP_ID
                ),
                "Go-style id": status_event(
                    job, "Dup", "completed", message="go-style", dequeued=str(uuid.uuid4())
                ),
            }
            for what, event in posts.items():
                response = await post_events(client, "status", [event])
                outcome.check(
                    f"status {what}: 200", response.status_code == 200, response.text[:300]
                )
            _, rest = await fetch(client, "Dup", sources=sources, count=5, deadline=1)
            outcome.check(
                "the next fetch gets exactly the two other jobs",
                sorted(j["entity"]["sha256"] for j in rest) == sorted(sha256(b) for b in blobs[1:]),
                [j["dequeued"] for j in rest],
            )
            for other in rest:
                await must_post(client, "status", [status_event(other, "Dup", "completed-empty")])
            keys = await plugin_keys(client)
            dup = next((k for k in keys.values() if k["name"] == "Dup"), {})
            outcome.check(
                "three jobs ended, none twice (completed-empty counts as completed)",
                dup.get("finished") == {"completed": 3},
                dup,
            )
            outcome.check(
                "the real key has nothing left and nothing in flight",
                dup.get("in_flight") == 0 and sum(dup.get("lag", {}).values()) == 0,
                dup,
            )
            outcome.check(
                "no plugin key was made up from the foreign id",
                not any(k.startswith("Other-") for k in keys),
                list(keys),
            )
            await good.halt()  # before reading: every acknowledged status is then in the read
            statuses = await read_all(client, "status")
            markers = [s["entity"].get("message", "") for s in statuses]
            for marker in ("dup-1", "dup-2", "made-up", "go-style"):
                outcome.check(f"status {marker!r} is stored", marker in markers, markers)
            outcome.lose(
                sum(1 for m in ("dup-1", "dup-2", "made-up", "go-style") if m not in markers),
                "acknowledged statuses missing",
            )
            await good.audit(client, outcome, statuses=statuses)
            served(outcome, good)
        outcome.check("the daemon stops cleanly", await d.terminate() == 0, d.log()[-2000:])
    commits = read_commits(data_dir)
    dup_commits = [c for c in commits if "-Dup-" in c[0]]
    outcome.check(
        "the real key's commits sit at the end of s4 with nothing finished above them",
        dup_commits
        and all(offset == 3 and "done=" not in meta for _, _, _, offset, meta in dup_commits),
        dup_commits,
    )
    outcome.check(
        "no commits for the made-up key",
        not any("Other-" in c[0] for c in commits),
        [c for c in commits if "Other-" in c[0]],
    )
    outcome.check("integrity_check", integrity_check(data_dir) == "ok", integrity_check(data_dir))
    outcome.seconds = time.monotonic() - started
    return outcome


async def forged_future_status(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """A status with a well-formed azuld id for a real plugin key, at an offset that has not been
    written yet (no plugin can hold it). The next event published at that offset must still reach
    the key."""
    outcome = Outcome("forged-future-status")
    started = time.monotonic()
    async with harness(workdir) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            first = b"forged 0"
            await must_post(client, "binary", [binary_event("s4f", first)])
            sources = ("s4f",)
            _, jobs = await fetch(client, "Victim", sources=sources, lanes=("live",))
            # The key was created by this fetch: live starts at the end, so offset 0 is not its.
            outcome.check("nothing for a new live-only key yet", jobs == [], jobs)
            key = next(k for k in await plugin_keys(client) if k.startswith("Victim-"))
            template = binary_event("s4f", first)
            forged = f"azd1|{key}|live|azul.local.s4f.binary.sourced|0|1|0"
            response = await post_events(
                client, "status", [status_event(template, "Victim", "completed", dequeued=forged)]
            )
            outcome.check("the forged status is accepted (200)", response.status_code == 200)
            outcome.note(f"forged id {forged!r} answered {response.status_code}")
            later = b"forged 1 (published after the forged status)"
            await must_post(client, "binary", [binary_event("s4f", later)])
            _, jobs = await fetch(client, "Victim", sources=sources, lanes=("live",), deadline=2)
            delivered = [j["entity"]["sha256"] for j in jobs]
            outcome.check(
                "the event published after the forged status is still delivered",
                delivered == [sha256(later)],
                f"fetch gave {delivered}; the event at offset 1 was skipped as already finished",
            )
            outcome.lose(
                0 if delivered == [sha256(later)] else 1, "events never offered to the key"
            )
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 5. SIGKILL of the daemon ---------------------------------------------------------------


async def _after_kill(outcome: Outcome, data_dir: Path, *, expect_spool: bool = False) -> None:
    """Checks on the folder of a daemon that was just SIGKILLed, before anything restarts."""
    check = integrity_check(data_dir)
    outcome.check("integrity_check right after the SIGKILL", check == "ok", check)
    strays = spool_files(data_dir)
    if expect_spool:
        outcome.check(
            "the kill left the half upload's spool file behind (the fault was real)",
            strays,
            "no spool file: the upload was not in progress at the kill",
        )
        outcome.note(f"stray spool files left by the kill (removed at the restart): {len(strays)}")


async def _after_restart(outcome: Outcome, data_dir: Path) -> None:
    strays = spool_files(data_dir)
    outcome.check("no stray spool files after the restart", not strays, strays)
    count, bad = bad_blob_files(data_dir)
    outcome.check(f"all {count} blob files hash to their names", not bad, bad)


async def _final_checks(outcome: Outcome, daemon: Daemon, data_dir: Path) -> None:
    code = await daemon.terminate()
    outcome.check("the restarted daemon stops cleanly", code == 0, daemon.log()[-2000:])
    check = integrity_check(data_dir)
    outcome.check("integrity_check after the restarted daemon exited", check == "ok", check)


async def kill_during_uploads(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """SIGKILL while a large upload is half-way (streamed slowly on a raw socket) and small uploads
    keep arriving. Every acknowledged blob survives; the half upload is nowhere (404), every blob
    file hashes to its name, the stray spool file is cleaned at start-up."""
    outcome = Outcome("kill-during-uploads")
    started = time.monotonic()
    data_dir = workdir / "data"
    total = profile.killed_upload_mib * 1024 * 1024
    big = secrets.token_bytes(total)
    big_sha = sha256(big)
    acked: dict[str, str] = {}  # sha256 → "source/label"
    half_sent = trio.Event()
    sent = 0
    async with harness(workdir) as h:
        d = await h.start()

        async def slow_big_upload() -> None:
            nonlocal sent
            host, port = host_port(d.url)
            head = request_head(
                "POST",
                "/api/v3/stream/s5/content",
                d.url,
                {"Content-Length": str(total), "Connection": "close"},
            )
            chunk = 256 * 1024
            pause = profile.killed_upload_seconds / (total / chunk)
            async with await trio.open_tcp_stream(host, port) as stream:
                try:
                    await stream.send_all(head)
                    for offset in range(0, total, chunk):
                        await stream.send_all(big[offset : offset + chunk])
                        sent = offset + chunk
                        if sent >= total // 2:
                            half_sent.set()
                        await trio.sleep(pause)
                    status, body = await read_response(stream)
                    outcome.note(
                        f"the big upload finished before the kill: {status} {body[:200]!r}"
                    )
                except (trio.BrokenResourceError, trio.ClosedResourceError, Unexpected):
                    pass  # the daemon died under it, as intended

        async def small_uploads(c: httpx.AsyncClient, index: int) -> None:
            while True:
                data = secrets.token_bytes(32 * 1024)
                try:
                    response = await c.post(f"/api/v3/stream/s5/content{index}", content=data)
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acked[sha256(data)] = f"s5/content{index}"

        async with (
            pooled(d.url, 8) as client,
            trio.open_nursery() as nursery,
        ):
            # Accepted before anything goes wrong.
            for i in range(5):
                data = f"accepted before the kill {i}".encode() * 100
                response = await client.post("/api/v3/stream/s5/content", content=data)
                if response.status_code == 200:
                    acked[sha256(data)] = "s5/content"
            async with good_client(d.url) as good:
                nursery.start_soon(slow_big_upload)
                for i in range(3):
                    nursery.start_soon(small_uploads, client, i)
                await half_sent.wait()
                await trio.sleep(0.3)  # the spool file has a few MiB in it now
                await good.halt()
                await d.kill()
            # The uploaders end on their own: their next request fails.
        outcome.note(
            f"killed with {sent / total:.0%} of the {profile.killed_upload_mib} MiB upload sent"
        )
        await _after_kill(outcome, data_dir, expect_spool=True)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            await _after_restart(outcome, data_dir)
            for method in ("GET", "HEAD"):
                response = await client.request(method, f"/api/v3/stream/s5/content/{big_sha}")
                outcome.check(
                    f"{method} of the killed upload's sha256 is 404",
                    response.status_code == 404,
                    response.status_code,
                )
            outcome.check(
                "the killed upload is nowhere under blobs/",
                not blob_paths(data_dir, big_sha),
                blob_paths(data_dir, big_sha),
            )
            missing = 0
            for digest, where in acked.items():
                response = await client.get(f"/api/v3/stream/{where}/{digest}")
                if response.status_code != 200 or sha256(response.content) != digest:
                    missing += 1
            outcome.lose(missing, "acknowledged uploads missing or corrupt")
            await good.audit(client, outcome)
            again = await client.post("/api/v3/stream/s5/content", content=big)
            outcome.check(
                "the same upload succeeds after the restart",
                again.status_code == 200 and again.json()["data"]["sha256"] == big_sha,
                again.text[:300],
            )
        await _final_checks(outcome, d, data_dir)
        served(outcome, good, acknowledged_uploads=len(acked))
    outcome.seconds = time.monotonic() - started
    return outcome


async def kill_during_fetches(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """SIGKILL while long-polls wait and jobs are leased. After the restart exactly the unfinished
    jobs are offered again (none that were finished) and every acknowledged event is there."""
    outcome = Outcome("kill-during-fetches")
    started = time.monotonic()
    data_dir = workdir / "data"
    count = 20
    datas = [f"fetched before the kill {i}".encode() for i in range(count)]
    shas = [sha256(x) for x in datas]
    aborted = 0
    answered = 0
    async with harness(workdir, {"dispatch": {"max_polls_per_key": 1000}}) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            await must_post(client, "binary", [binary_event("s5b", x) for x in datas])
            _, jobs = await fetch(client, "Worker", sources=("s5b",), count=10)
            outcome.check("ten jobs leased before the kill", len(jobs) == 10, len(jobs))
            finished = {j["entity"]["sha256"] for j in jobs[:5]}
            for job in jobs[:5]:
                await must_post(client, "status", [status_event(job, "Worker", "completed-empty")])

            async def waiter(c: httpx.AsyncClient, index: int) -> None:
                nonlocal aborted, answered
                try:
                    if index % 3 == 2:
                        await fetch(
                            c,
                            "Watcher",
                            model="status",
                            mode="passive",
                            version="1",
                            sources=("empty",),
                            lanes=("live",),
                            deadline=30,
                        )
                    else:
                        await fetch(c, f"Waiter{index % 5}", sources=("empty",), deadline=30)
                    answered += 1
                except (httpx.HTTPError, Unexpected):
                    aborted += 1

            async with (
                pooled(d.url, profile.waiting_polls) as waiters,
                trio.open_nursery() as nursery,
                good_client(d.url) as good,
            ):
                for i in range(profile.waiting_polls):
                    nursery.start_soon(waiter, waiters, i)
                await trio.sleep(1.0)
                await good.halt()
                await d.kill()
        outcome.check(
            "the waiting long-polls were cut off by the kill, not answered",
            aborted == profile.waiting_polls and answered == 0,
            f"{aborted} aborted, {answered} answered",
        )
        await _after_kill(outcome, data_dir)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            await _after_restart(outcome, data_dir)
            again: list[dict[str, Any]] = []
            while True:
                _, got = await fetch(client, "Worker", sources=("s5b",), count=64, deadline=0.5)
                if not got:
                    break
                again += got
            offered = [j["entity"]["sha256"] for j in again]
            outcome.check(
                "no finished job is offered again",
                not finished & set(offered),
                sorted(finished & set(offered)),
            )
            outcome.check(
                "every unfinished job is offered again, once",
                sorted(offered) == sorted(set(shas) - finished),
                f"{len(offered)} offered, {len(set(shas) - finished)} expected",
            )
            outcome.lose(
                len(set(shas) - finished - set(offered)), "unfinished jobs never offered again"
            )
            binaries = await read_all(client, "binary", [("r-source", "s5b")])
            outcome.lose(
                len(set(shas) - {b["entity"]["sha256"] for b in binaries}), "events missing"
            )
            await good.audit(client, outcome)
        await _final_checks(outcome, d, data_dir)
        served(outcome, good, waiting_polls_cut=aborted)
    outcome.seconds = time.monotonic() - started
    return outcome


async def kill_during_status_posts(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """SIGKILL in the middle of a burst of `completed` statuses (each with an extracted child).
    Every acknowledged status and its child are stored, no acknowledged job is offered again, and
    every job either has a stored status or is offered again."""
    outcome = Outcome("kill-during-status-posts")
    started = time.monotonic()
    data_dir = workdir / "data"
    n = profile.burst_statuses
    datas = [f"status burst {i}".encode() for i in range(n)]
    shas = {sha256(x) for x in datas}
    acked: set[str] = set()  # job sha256s whose status got a 200
    half = trio.Event()
    async with harness(workdir) as h:
        d = await h.start()
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            await must_post(client, "binary", [binary_event("s5c", x) for x in datas])
            jobs: list[dict[str, Any]] = []
            while len(jobs) < n:
                _, got = await fetch(
                    client, "Worker", sources=("s5c",), actions=("sourced",), count=64, deadline=1
                )
                if not got:
                    break
                jobs += got
            outcome.check(f"all {n} jobs leased", len(jobs) == n, len(jobs))
            queue = list(jobs)

            async def poster(c: httpx.AsyncClient) -> None:
                while queue:
                    job = queue.pop()
                    child_data = b"child of " + job["entity"]["sha256"].encode()
                    child = binary_event(
                        "s5c", child_data, action="extracted", parent=job, author="Worker"
                    )
                    event = status_event(job, "Worker", "completed", results=[child])
                    try:
                        response = await post_events(c, "status", [event])
                    except httpx.HTTPError:
                        return
                    if response.status_code == 200:
                        acked.add(job["entity"]["sha256"])
                        if len(acked) >= n // 2:
                            half.set()

            async with (
                pooled(d.url, 16) as posters,
                trio.open_nursery() as nursery,
                good_client(d.url) as good,
            ):
                await trio.sleep(profile.baseline_seconds)  # the good client, alone, first
                for _ in range(16):
                    nursery.start_soon(poster, posters)
                await half.wait()
                await d.kill()
                # The posters end on their own: their next request fails.
        outcome.note(f"killed with {len(acked)} of {n} statuses acknowledged")
        await _after_kill(outcome, data_dir)

        d = await h.start(data_dir)
        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            await _after_restart(outcome, data_dir)
            statuses = await read_all(client, "status")
            stored = {
                s["entity"]["input"]["entity"]["sha256"]
                for s in statuses
                if s["author"]["name"] == "Worker" and s["entity"]["status"] == "completed"
            }
            outcome.lose(len(acked - stored), "acknowledged statuses missing")
            binaries = await read_all(client, "binary", [("r-source", "s5c")])
            children = {b["entity"]["sha256"] for b in binaries if b["action"] == "extracted"}
            wanted = {sha256(b"child of " + s.encode()) for s in acked}
            outcome.lose(len(wanted - children), "results of acknowledged statuses missing")
            again: list[dict[str, Any]] = []
            while True:
                _, got = await fetch(
                    client, "Worker", sources=("s5c",), actions=("sourced",), count=64, deadline=0.5
                )
                if not got:
                    break
                again += got
            offered = {j["entity"]["sha256"] for j in again}
            outcome.check(
                "no acknowledged job is offered again",
                not acked & offered,
                f"{len(acked & offered)} acknowledged jobs offered again",
            )
            outcome.lose(len(shas - stored - offered), "jobs neither stored nor offered again")
            both = len((stored - acked) & offered)
            outcome.note(
                f"{len(acked)} acknowledged, {len(stored - acked)} stored without an answer, "
                f"{len(offered)} offered again ({both} of them stored without an answer: "
                "at-least-once)"
            )
            await good.audit(client, outcome, statuses=statuses)
        await _final_checks(outcome, d, data_dir)
        served(outcome, good, statuses_acknowledged=len(acked))
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 6. a full data folder ------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@asynccontextmanager
async def small_filesystem(where: Path, outcome: Outcome) -> AsyncIterator[Path | None]:
    """A 4 MiB filesystem mounted at `where`: tmpfs if allowed, else a loop-mounted ext4 image.
    Yields None (with `outcome.skipped` saying why) when neither works."""
    await trio.Path(where).mkdir(parents=True, exist_ok=True)
    tmpfs = _run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    if tmpfs.returncode == 0:
        outcome.served["filesystem"] = "tmpfs size=4m"
        try:
            yield where
        finally:
            _run("umount", str(where))
        return
    image = where.parent / "small.ext4"
    steps = [
        ("truncate", "-s", "8M", str(image)),
        ("mkfs.ext4", "-q", "-F", str(image)),
        ("mount", "-o", "loop", str(image), str(where)),
    ]
    failures = [f"tmpfs: {tmpfs.stderr.strip()}"]
    for step in steps:
        done = _run(*step)
        if done.returncode != 0:
            failures.append(f"{' '.join(step)}: {done.stderr.strip()}")
            outcome.skipped = "no small filesystem could be made: " + "; ".join(failures)
            image.unlink(missing_ok=True)
            yield None
            return
    outcome.served["filesystem"] = "FALLBACK: loop-mounted 8 MiB ext4 image (tmpfs not allowed)"
    outcome.note(outcome.served["filesystem"] + "; " + failures[0])
    try:
        yield where
    finally:
        _run("umount", str(where))
        image.unlink(missing_ok=True)


def _fill(path: Path) -> int:
    """Write `path` until the filesystem has no byte left; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written


def _answer(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:300]}"


async def disk_full(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """The data folder fills up. Uploads get 507 with a clear message; statuses and events get an
    error (507 or 503) and nothing half-stored; reads go on; after space is freed, everything works
    again and nothing is corrupted."""
    outcome = Outcome("disk-full")
    started = time.monotonic()
    data_dir = workdir / "full"
    async with small_filesystem(data_dir, outcome) as mounted:
        if mounted is None:
            return outcome
        async with harness(workdir) as h:
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
                kept = secrets.token_bytes(64 * 1024)
                response = await client.post("/api/v3/stream/s6/content", content=kept)
                outcome.check("an upload before the fill works", response.status_code == 200)
                datas = [f"full {i}".encode() for i in range(3)]
                await must_post(client, "binary", [binary_event("s6", x) for x in datas])
                _, jobs = await fetch(client, "Full", sources=("s6",), count=3)
                outcome.check("three jobs leased before the fill", len(jobs) == 3, len(jobs))
                ballast = data_dir / "ballast"
                filled = await trio.to_thread.run_sync(_fill, ballast)
                outcome.note(f"filled with {filled} bytes of ballast")

                late = secrets.token_bytes(256 * 1024)
                up = await client.post("/api/v3/stream/s6/content", content=late)
                outcome.check(
                    "an upload on a full disk gets 507", up.status_code == 507, _answer(up)
                )
                if up.status_code == 507:
                    body = up.json()
                    outcome.check(
                        "the 507 says the data folder is full",
                        "no space left" in body.get("detail", ""),
                        body,
                    )
                outcome.note(f"upload on a full disk: {_answer(up)}")
                status = await post_events(
                    client, "status", [status_event(jobs[0], "Full", "completed", message="full-0")]
                )
                outcome.check(
                    "a status post on a full disk gets 507 or 503",
                    status.status_code in (507, 503),
                    _answer(status),
                )
                outcome.note(f"status post on a full disk: {_answer(status)}")
                event = await post_events(
                    client, "binary", [binary_event("s6", b"during the fill")]
                )
                outcome.note(f"event post on a full disk: {_answer(event)}")
                outcome.check(
                    "an event post on a full disk gets 507 or 503",
                    event.status_code in (507, 503),
                    _answer(event),
                )
                download = await client.get(f"/api/v3/stream/s6/content/{sha256(kept)}")
                outcome.check(
                    "downloads still work on a full disk",
                    download.status_code == 200 and download.content == kept,
                    download.status_code,
                )
                ready = await client.get("/readyz")
                outcome.note(f"/readyz on a full disk: {_answer(ready)}")
                outcome.served["while_full"] = (
                    f"while full: download {download.status_code}, upload {up.status_code}, "
                    f"status post {status.status_code}, event post {event.status_code}, "
                    f"/readyz {ready.status_code}"
                )
                outcome.check(
                    "no spool file is left by the failed upload", not spool_files(data_dir)
                )

                await trio.Path(ballast).unlink()
                up = await client.post("/api/v3/stream/s6/content", content=late)
                outcome.check(
                    "after freeing space the upload works", up.status_code == 200, _answer(up)
                )
                again = await client.get(f"/api/v3/stream/s6/content/{sha256(late)}")
                outcome.check(
                    "and the blob reads back whole", sha256(again.content) == sha256(late)
                )
                for index, job in enumerate(jobs):
                    response = await post_events(
                        client,
                        "status",
                        [status_event(job, "Full", "completed", message=f"full-{index}")],
                    )
                    outcome.check(
                        f"status {index} after freeing space: 200",
                        response.status_code == 200,
                        _answer(response),
                    )
                _, offered = await fetch(client, "Full", sources=("s6",), count=3, deadline=0.5)
                outcome.check("no finished job is offered again", offered == [], offered)
                statuses = await read_all(client, "status")
                markers = [s["entity"].get("message") for s in statuses]
                outcome.check(
                    "each job's status is stored once (nothing half-stored from the failed post)",
                    sorted(m for m in markers if m and m.startswith("full-"))
                    == ["full-0", "full-1", "full-2"],
                    markers,
                )
                outcome.lose(
                    len({"full-0", "full-1", "full-2"} - set(markers)),
                    "acknowledged statuses missing",
                )
                binaries = await read_all(client, "binary", [("r-source", "s6")])
                outcome.lose(
                    len({sha256(x) for x in datas} - {b["entity"]["sha256"] for b in binaries}),
                    "acknowledged events missing",
                )
            code = await d.terminate()
            outcome.check("the daemon stops cleanly", code == 0, d.log()[-2000:])
            check = integrity_check(data_dir)
            outcome.check("integrity_check after the disk was full", check == "ok", check)
            count, bad = bad_blob_files(data_dir)
            outcome.check(f"all {count} blob files hash to their names", not bad, bad)
            outcome.check("no stray spool files", not spool_files(data_dir), spool_files(data_dir))
    outcome.seconds = time.monotonic() - started
    return outcome


async def disk_full_background(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """While the data folder is full, the daemon's own writes fail too: the `error-timeout` of a
    lease that runs out of attempts, and the commit after a passive read. The daemon must keep
    serving, and once space is back the job must still end (its `error-timeout` stored)."""
    outcome = Outcome("disk-full-background")
    started = time.monotonic()
    data_dir = workdir / "full"
    data = b"expires while full"
    async with small_filesystem(data_dir, outcome) as mounted:
        if mounted is None:
            return outcome
        async with harness(workdir) as h:
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
                await must_post(client, "binary", [binary_event("s6b", data)])
                _, jobs = await fetch(client, "Late", sources=("s6b",))
                # The first lease runs out before the fill; the second (last) one while full.
                _, jobs = await fetch(client, "Late", sources=("s6b",), deadline=LEASE_SECONDS * 3)
                outcome.check("the job is on its last attempt", len(jobs) == 1, jobs)
                await trio.to_thread.run_sync(_fill, data_dir / "ballast")
                passive = await client.get(
                    "/api/v2/event/status/passive?name=Reader&version=1&r-historic=true&deadline=0.2"
                )
                info = decode_fetch(passive)[0] if passive.status_code == 200 else passive.text
                outcome.note(f"passive fetch on a full disk: {passive.status_code}, info {info}")
                await trio.sleep(LEASE_SECONDS + 1.5)
                alive = d.process.returncode is None
                outcome.check(
                    "the daemon is still running after its own writes failed on a full disk",
                    alive,
                    f"exited with {d.process.returncode}: {d.log()[-1500:]}",
                )
                if not alive:
                    outcome.lose(1, "jobs without an ending (the daemon died)")
                else:
                    health = await client.get("/healthz")
                    outcome.check("and answers", health.status_code == 200, _answer(health))
                    await trio.Path(data_dir / "ballast").unlink()
                    found = await _wait_for_final(client, sha256(data), "Late", 2 * LEASE_SECONDS)
                    keys = [v for k, v in (await plugin_keys(client)).items() if "Late" in k]
                    outcome.check(
                        "once space is back, the job still ends: its error-timeout is stored",
                        [s["entity"]["status"] for s in found] == ["error-timeout"],
                        found
                        or f"nothing stored {2 * LEASE_SECONDS:g} s after space came back; "
                        f"the key: {keys}",
                    )
                    _, again = await fetch(client, "Late", sources=("s6b",), deadline=0.5)
                    if not found:
                        outcome.note(
                            "with space back and the daemon running, the job was neither ended "
                            f"nor offered again (fetch gave {len(again)} jobs)"
                        )
            if d.process.returncode is None:
                outcome.check("the daemon stops cleanly", await d.terminate() == 0)
            check = integrity_check(data_dir)
            outcome.check("integrity_check", check == "ok", check)
            # What a restart makes of it: the job is ended, or offered again (not lost).
            d = await h.start(data_dir)
            async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
                statuses = await read_all(client, "status")
                ended = final_statuses(statuses, sha256(data), "Late")
                _, again = await fetch(client, "Late", sources=("s6b",), deadline=0.5)
                if not any(s["entity"]["status"] == "error-timeout" for s in ended):
                    outcome.note(
                        f"after a restart: {len(again)} offer(s) of the job "
                        f"({[j['dequeued'] for j in again]})"
                    )
                outcome.lose(0 if ended or again else 1, "jobs neither ended nor offered again")
            await d.kill()
    outcome.seconds = time.monotonic() - started
    return outcome


# -- 7. slow and abusive clients ------------------------------------------------------------


async def _abuse(
    outcome: Outcome,
    daemon: Daemon,
    profile: Profile,
    abuser: Callable[[], Awaitable[None]],
) -> GoodClient:
    """Run the good client alone for a baseline, then beside `abuser`; check its latency."""
    async with good_client(daemon.url) as good:
        await trio.sleep(profile.baseline_seconds)
        baseline = good.window()
        good.mark()
        rss_before = rss_mib(daemon.process.pid)
        await abuser()
        during = good.window()
        good.mark()
        await trio.sleep(0.5)
        after = good.window()
        await good.halt()
    outcome.served.update(
        {"baseline": baseline, "during": during, "after": after, "good": good.summary()}
    )
    outcome.served["daemon_rss_mib"] = {
        "before": round(rss_before, 1),
        "after": round(rss_mib(daemon.process.pid), 1),
    }
    outcome.check(
        "the good client was served during the abuse",
        during["requests"] >= 10 and during["errors"] == 0,
        during,
    )
    outcome.check(
        f"the good client's p99 stayed under {LATENCY_BOUND_SECONDS:g} s",
        during["p99_ms"] < LATENCY_BOUND_SECONDS * 1000,
        during,
    )
    outcome.check(
        "the daemon serves after the abuse", after["requests"] >= 1 and after["errors"] == 0
    )
    if good.errors:
        outcome.note(f"good client errors: {good.errors[:3]}")
    return good


async def slow_uploads(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """Connections that send their upload body one byte a second."""
    outcome = Outcome("slow-upload")
    started = time.monotonic()
    async with harness(workdir) as h:
        d = await h.start()
        length = max(1, int(profile.abuse_seconds))
        results: list[tuple[int, bytes, bytes]] = []

        async def one(index: int) -> None:
            payload = f"{index:0{length}d}".encode()[-length:]
            host, port = host_port(d.url)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    request_head(
                        "POST",
                        "/api/v3/stream/s7/content",
                        d.url,
                        {"Content-Length": str(length), "Connection": "close"},
                    )
                )
                for byte in payload:
                    await trio.sleep(1.0)
                    await stream.send_all(bytes([byte]))
                status, body = await read_response(stream)
            results.append((status, payload, body))

        async def abuser() -> None:
            async with trio.open_nursery() as nursery:
                for i in range(profile.slow_uploaders):
                    nursery.start_soon(one, i)

        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            good = await _abuse(outcome, d, profile, abuser)
            ok = [r for r in results if r[0] == 200 and sha256(r[1]).encode() in r[2]]
            outcome.check(
                "every slow upload is accepted in the end",
                len(ok) == profile.slow_uploaders,
                f"{len(ok)} of {profile.slow_uploaders}: "
                f"{[(r[0], r[2][:200]) for r in results][:3]}",
            )
            missing = 0
            for _, payload, _ in ok:
                response = await client.get(f"/api/v3/stream/s7/content/{sha256(payload)}")
                missing += response.status_code != 200
            outcome.lose(missing, "acknowledged slow uploads missing")
            await good.audit(client, outcome)
        outcome.served["abuse"] = f"{profile.slow_uploaders} uploads at 1 byte/s for {length} s"
    outcome.seconds = time.monotonic() - started
    return outcome


async def long_poll_flood(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """Many concurrent long-polls for one plugin key (raw sockets, deadline 30 s, nothing to
    deliver). Once every refused one has its answer, exactly `max_polls_per_key` are still
    waiting and all the others got 429; when the waiting clients hang up, their slots are free."""
    outcome = Outcome("long-poll-flood")
    started = time.monotonic()
    async with harness(workdir) as h:
        d = await h.start()
        codes: list[int] = []
        bodies: dict[int, bytes] = {}
        failures: list[str] = []
        connect: list[float] = []
        answered: list[float] = []
        counts: dict[str, int] = {}
        target = "/api/v2/event/binary/active?" + job_query(
            "Flood", sources=("s7",), lanes=("live",), deadline=30
        )

        async def one(begun: float) -> None:
            host, port = host_port(d.url)
            try:
                stream = await trio.open_tcp_stream(host, port)
                connect.append(time.perf_counter() - begun)
                async with stream:
                    await stream.send_all(request_head("GET", target, d.url))
                    status, body = await read_response(stream)
                    codes.append(status)
                    bodies.setdefault(status, body)
                    answered.append(time.perf_counter() - begun)
                    await trio.sleep_forever()  # hold the connection until the abuse ends
            except (OSError, trio.BrokenResourceError, Unexpected) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

        async def abuser() -> None:
            async with trio.open_nursery() as nursery:
                begun = time.perf_counter()
                # Opened 100 every 0.1 s: all are waiting at once all the same, and no SYN is
                # dropped by hypercorn's listen backlog (100), whose retries take 1-15 s.
                for index in range(profile.long_polls):
                    if index and index % 100 == 0:
                        await trio.sleep(0.1)
                    nursery.start_soon(one, begun)
                refused = profile.long_polls - MAX_POLLS_PER_KEY
                with trio.move_on_after(max(20.0, profile.long_polls / 50)):
                    while len(codes) + len(failures) < refused:
                        await trio.sleep(0.05)
                await trio.sleep(0.5)  # any more answers would be a broken limit
                counts["connected"] = len(connect)
                counts["waiting"] = len(connect) - len(codes) - len(failures)
                counts["answered"] = len(codes)
                # The waiting clients hang up: the daemon must notice and free their slots.
                nursery.cancel_scope.cancel()

        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            good = await _abuse(outcome, d, profile, abuser)
            waited = counts["waiting"]
            refused = codes.count(429)
            outcome.check(
                f"exactly max_polls_per_key={MAX_POLLS_PER_KEY} long-polls were left waiting",
                waited == MAX_POLLS_PER_KEY,
                f"{waited} connected and waiting; {counts['connected']} of {profile.long_polls} "
                "connected",
            )
            outcome.check(
                "every other long-poll got 429 (none answered 200 early, none failed)",
                refused == profile.long_polls - MAX_POLLS_PER_KEY and not failures,
                f"codes {sorted(set(codes))}: {refused} x 429, {codes.count(200)} x 200, "
                f"{len(failures)} failed: {failures[:3]}",
            )
            if 429 in bodies:
                outcome.check(
                    "the 429 names the limit", b"max_polls_per_key" in bodies[429], bodies[429]
                )
                outcome.note(f"429 body: {bodies[429][:300].decode(errors='replace')}")
            await trio.sleep(0.5)
            response = await client.get(
                "/api/v2/event/binary/active?"
                + job_query("Flood", sources=("s7",), lanes=("live",), deadline=0.2)
            )
            outcome.check(
                "once the waiting clients hung up, a new long-poll for the key is admitted",
                response.status_code == 200,
                _answer(response),
            )
            outcome.served["abuse"] = (
                f"{profile.long_polls} long-polls: {waited} waited, {refused} got 429 by "
                f"{max(answered, default=0):.1f} s; connect p50 "
                f"{percentile(connect, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(connect, 0.99) * 1000:.0f} ms"
            )
            await good.audit(client, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


async def unread_downloads(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """Connections that ask for a big download and never read the response."""
    outcome = Outcome("unread-download")
    started = time.monotonic()
    async with harness(workdir) as h:
        d = await h.start()
        big = secrets.token_bytes(profile.stuck_blob_mib * 1024 * 1024)
        big_sha = sha256(big)
        async with httpx.AsyncClient(base_url=d.url, timeout=60) as client:
            response = await client.post("/api/v3/stream/s7/content", content=big)
            outcome.check("the big blob is uploaded", response.status_code == 200, response.text)
            peak = [0.0]

            async def abuser() -> None:
                host, port = host_port(d.url)
                streams = []
                try:
                    for _ in range(profile.stuck_readers):
                        stream = await trio.open_tcp_stream(host, port)
                        streams.append(stream)
                        await stream.send_all(
                            request_head("GET", f"/api/v3/stream/s7/content/{big_sha}", d.url)
                        )
                    end = trio.current_time() + profile.abuse_seconds
                    while trio.current_time() < end:
                        peak[0] = max(peak[0], rss_mib(d.process.pid))
                        await trio.sleep(0.25)
                finally:
                    for stream in streams:
                        await stream.aclose()

            good = await _abuse(outcome, d, profile, abuser)
            rss = outcome.served["daemon_rss_mib"]
            rss["peak"] = round(peak[0], 1)
            outcome.check(
                "the daemon does not buffer the unread responses in memory",
                peak[0] - rss["before"] < profile.stuck_blob_mib * profile.stuck_readers / 2,
                rss,
            )
            outcome.served["abuse"] = (
                f"{profile.stuck_readers} unread GETs of a {profile.stuck_blob_mib} MiB blob "
                f"for {profile.abuse_seconds:g} s"
            )
            whole = await client.get(f"/api/v3/stream/s7/content/{big_sha}")
            outcome.check("the blob still downloads whole", sha256(whole.content) == big_sha)
            await good.audit(client, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


async def abandoned_connections(workdir: Path, profile: Profile = QUICK) -> Outcome:
    """Clients that send `Connection: close`, read their answer and never close the socket. The
    daemon must close its end (HTTP/1.1 8.6), so such sockets cannot pile up to the fd limit."""
    outcome = Outcome("abandoned-connections")
    started = time.monotonic()
    async with harness(workdir) as h:
        d = await h.start()
        n = profile.abandoned_connections
        closed: list[float] = []
        answered = 0
        fds: dict[str, int] = {}

        async def one() -> None:
            nonlocal answered
            host, port = host_port(d.url)
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    request_head("GET", "/healthz", d.url, {"Connection": "close"})
                )
                status, _ = await read_response(stream)
                answered += status == 200
                begun = time.perf_counter()
                with trio.move_on_after(profile.abuse_seconds):
                    while await stream.receive_some(65536):
                        pass
                    closed.append(time.perf_counter() - begun)
                    await trio.sleep_forever()

        async def abuser() -> None:
            fds["before"] = open_fds(d.process.pid)
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(one)
                await trio.sleep(profile.abuse_seconds / 2)
                fds["held"] = open_fds(d.process.pid)

        async with httpx.AsyncClient(base_url=d.url, timeout=30) as client:
            good = await _abuse(outcome, d, profile, abuser)
            await trio.sleep(0.5)
            fds["after"] = open_fds(d.process.pid)
            outcome.check(f"all {n} requests answered", answered == n, answered)
            outcome.check(
                "the daemon closed every `Connection: close` connection after answering",
                len(closed) == n,
                f"{len(closed)} of {n} saw EOF within {profile.abuse_seconds:g} s; daemon fds "
                f"{fds}",
            )
            outcome.check(
                "abandoned sockets do not pile up in the daemon",
                fds.get("held", 0) - fds.get("before", 0) < n / 2,
                fds,
            )
            outcome.served["abuse"] = (
                f"{n} clients kept their socket open after a `Connection: close` answer; "
                f"{len(closed)} closed by azuld; daemon fds {fds}"
            )
            await good.audit(client, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


# -- the catalogue --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    tried: str  # a format string over the `Profile` fields
    run: Callable[[Path, Profile], Awaitable[Outcome]]
    test: str  # the test in tests/test_faults.py that asserts it

    def describe(self, profile: Profile) -> str:
        return self.tried.format(
            **asdict(profile),
            max_polls_per_key=MAX_POLLS_PER_KEY,
            lease_seconds=LEASE_SECONDS,
            max_job_seconds=MAX_JOB_SECONDS,
            max_attempts=MAX_ATTEMPTS,
        )


SCENARIOS = [
    Scenario(
        "plugin-crash",
        "Plugin crashes mid-job",
        "an SDK plugin process takes a job and is SIGKILLed; it fetches again and abandons the "
        "second attempt too (lease {lease_seconds:g} s, {max_attempts} attempts)",
        plugin_crash,
        "test_plugin_crash_mid_job",
    ),
    Scenario(
        "plugin-hang",
        "Plugin hangs without heartbeats",
        "a plugin takes a job and goes silent on an open connection; a second worker takes the "
        "re-offer and hangs too; then the first posts `completed` late",
        plugin_hang,
        "test_plugin_hang_without_heartbeats",
    ),
    Scenario(
        "heartbeat-forever",
        "Plugin heartbeats forever",
        "heartbeat every 0.5 s, never finish (lease_seconds {lease_seconds:g} s, max_job_seconds "
        "{max_job_seconds:g} s); the re-offer is abandoned",
        heartbeat_forever,
        "test_plugin_heartbeating_forever",
    ),
    Scenario(
        "bogus-statuses",
        "Duplicate and foreign statuses",
        "`completed` posted twice; statuses with a made-up azuld id for an unknown key and a "
        "Go-style (UUID) id",
        bogus_statuses,
        "test_duplicate_and_foreign_statuses",
    ),
    Scenario(
        "forged-future-status",
        "Forged status for a future offset",
        "a well-formed azuld id for a real key at an offset not yet written; then an event is "
        "published at that offset",
        forged_future_status,
        "test_forged_status_for_a_future_offset",
    ),
    Scenario(
        "kill-during-uploads",
        "SIGKILL during uploads",
        "SIGKILL half-way through an upload of {killed_upload_mib} MiB (raw socket, streamed over "
        "{killed_upload_seconds:g} s) while 3 clients upload 32 KiB blobs",
        kill_during_uploads,
        "test_sigkill_during_uploads",
    ),
    Scenario(
        "kill-during-fetches",
        "SIGKILL during fetches",
        "SIGKILL with {waiting_polls} long-polls waiting, 5 jobs leased and 5 finished of 20",
        kill_during_fetches,
        "test_sigkill_during_fetches",
    ),
    Scenario(
        "kill-during-status-posts",
        "SIGKILL during status posts",
        "SIGKILL half-way through {burst_statuses} `completed` posts (each with a child) from "
        "16 clients",
        kill_during_status_posts,
        "test_sigkill_during_status_posts",
    ),
    Scenario(
        "disk-full",
        "Data folder full",
        "data dir on a 4 MiB tmpfs filled to the last byte: upload, status, event, download; "
        "then space freed",
        disk_full,
        "test_disk_full",
    ),
    Scenario(
        "disk-full-background",
        "Data folder full under the daemon's own writes",
        "a lease runs out of attempts and a passive read commits while the disk is full",
        disk_full_background,
        "test_disk_full_background_writes",
    ),
    Scenario(
        "slow-upload",
        "Upload body at 1 byte/s",
        "{slow_uploaders} raw connections each sending a {abuse_seconds:.0f}-byte upload body one "
        "byte a second",
        slow_uploads,
        "test_slow_upload_body",
    ),
    Scenario(
        "long-poll-flood",
        "Long-poll flood on one key",
        "{long_polls} concurrent raw-socket long-polls (deadline {abuse_seconds:g} s) for one "
        "plugin key, max_polls_per_key = {max_polls_per_key}",
        long_poll_flood,
        "test_long_poll_flood",
    ),
    Scenario(
        "abandoned-connections",
        "Clients that never hang up",
        "{abandoned_connections} raw connections send `Connection: close`, read the answer and "
        "keep the socket open for {abuse_seconds:g} s",
        abandoned_connections,
        "test_abandoned_connections_are_closed",
    ),
    Scenario(
        "unread-download",
        "Requests whose response is never read",
        "{stuck_readers} raw connections GET a {stuck_blob_mib} MiB blob and never read, for "
        "{abuse_seconds:g} s",
        unread_downloads,
        "test_unread_downloads",
    ),
]


def scenario(key: str) -> Scenario:
    return next(s for s in SCENARIOS if s.key == key)


def cleanup(workdir: Path) -> None:
    """Remove a scenario's folder (the report script runs many)."""
    shutil.rmtree(workdir, ignore_errors=True)
