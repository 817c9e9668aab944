"""Simulated plugin workers for `benchmarks/run.py`: the real azuld protocol, nothing else.

Each worker owns one HTTP/1.1 keep-alive connection and loops: long-poll
`GET /api/v2/event/binary/active?count=N`, download each job's content
(`GET /api/v3/stream/<source>/content/<sha256>`), then post one `completed` status per job, each
with one enriched result carrying one feature, all in one `POST /api/v2/event?model=status`.
With the spec's `encoding` "avro" a worker speaks as a Go plugin does: `avro-format=true` on the
fetch and the post, the answer's events and the posted statuses in Avro (the same statuses).

The workers speak through the HTTP clients of `loadgen_clients.py` (`make_client`), which this
module also exports.

Run as a script, this is one load-generator process: it reads a JSON spec from argv, prints
`ready`, waits for a `go <unix time>` line on stdin, runs its workers until the spec's stop time,
and prints one JSON line of counts, CPU time and per-request latencies.
"""

from __future__ import annotations

import hashlib
import os
import resource
import sys
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import h11
import msgspec
import trio
from loadgen_clients import Client, H11Client, HTTPError, HttpxClient, RawClient, make_client

__all__ = [
    "FETCH_QUERY",
    "Client",
    "H11Client",
    "HTTPError",
    "HttpxClient",
    "RawClient",
    "WorkerStats",
    "avro_status_body",
    "binary_sha256",
    "blob_bytes",
    "download",
    "fetch_jobs",
    "make_client",
    "parse_multipart",
    "post_events",
    "sourced_event",
    "status_body",
    "worker",
]

# As the brief and azul-runner ask, plus `r-action=sourced`: without it a key also receives the
# `enriched` results that its own statuses publish, and every job would breed another.
FETCH_QUERY = (
    "name={name}&version=1.0&count={count}&deadline={deadline:g}"
    "&r-live=true&r-historic=true&r-action=sourced&r-source={source}"
)
TIMESTAMP = "2026-01-01T00:00:00+00:00"
USER = {"name": "bench", "category": "user"}
# Every sourced event is labelled, as in Azul; the `security` scenarios fetch with this clearance.
SECURITY = "OFFICIAL"

_decode = msgspec.json.decode
_STATUS_TIME = datetime.fromisoformat(TIMESTAMP)
_encode = msgspec.json.Encoder().encode


# -- events ------------------------------------------------------------------------------------


def blob_bytes(index: int, size: int) -> bytes:
    """A small deterministic blob: `size` bytes, different for each index."""
    seed = hashlib.sha256(f"azuld benchmark blob {index}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def binary_sha256(source: str, seq: int) -> str:
    """The made-up sha256 of event `seq`'s binary: unique per event."""
    return hashlib.sha256(f"azuld benchmark binary {source} {seq}".encode()).hexdigest()


def sourced_event(source: str, seq: int, content_sha256: str, size: int) -> dict[str, Any]:
    """A `sourced` binary event numbered `seq` (also in its references).

    Each event is a distinct binary (`entity.sha256` unique, so its own `kafka_key` and no hit in
    azuld's result replay cache, which would answer a repeated sha256 itself), but its `content`
    datastream is the uploaded blob `content_sha256`, shared by many events: preloading 10^5
    events does not need 10^5 uploads. Workers download the datastream, as plugins do."""
    sha256 = binary_sha256(source, seq)
    node = {"author": USER, "action": "sourced", "sha256": sha256, "timestamp": TIMESTAMP}
    return {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": TIMESTAMP,
        "author": USER,
        "action": "sourced",
        "source": {
            "name": source,
            "timestamp": TIMESTAMP,
            "path": [node],
            "references": {"seq": str(seq)},
            "security": SECURITY,
        },
        "entity": {
            "sha256": sha256,
            "size": size,
            "datastreams": [{"label": "content", "sha256": content_sha256, "size": size}],
        },
    }


def status_body(jobs: Sequence[dict[str, Any]], plugin: str) -> bytes:
    """One `completed` status per job (its `entity.input` is the fetched event), each with one
    enriched result holding one feature, as one JSON array."""
    author = {"category": "plugin", "name": plugin, "version": "1.0"}
    statuses = []
    for job in jobs:
        source = job["source"]
        sha256 = job["entity"]["sha256"]
        node = {"sha256": sha256, "action": "enriched", "timestamp": TIMESTAMP, "author": author}
        enriched = {
            "model_version": 6,
            "kafka_key": "runner-placeholder",
            "timestamp": TIMESTAMP,
            "author": author,
            "action": "enriched",
            "source": {**source, "path": [*source["path"], node]},
            "entity": {
                "sha256": sha256,
                "features": [{"name": "bench_seen", "type": "integer", "value": "1"}],
            },
        }
        statuses.append(
            {
                "model_version": 6,
                "kafka_key": "runner-placeholder",
                "timestamp": TIMESTAMP,
                "author": author,
                "entity": {
                    "input": job,
                    "status": "completed",
                    "runtime": 0.001,
                    "results": [enriched],
                },
            }
        )
    return _encode(statuses)


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """Parts of a `multipart/form-data` body by name (as tests/http/conftest.py does)."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts: dict[str, bytes] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        parts[name] = payload[: -len(b"\r\n")]
    return parts


# -- the protocol ------------------------------------------------------------------------------

_JSON = (("content-type", "application/json"),)
_AVRO = (("content-type", "application/avro"),)


async def fetch_jobs(
    client: Client,
    name: str,
    source: str,
    count: int,
    deadline: float,
    max_security: str = "",
    *,
    avro: bool = False,
) -> list[dict[str, Any]]:
    """One active long-poll (with `max-security`, if given); the jobs it handed out (read from
    Avro with `avro`)."""
    query = FETCH_QUERY.format(name=name, count=count, deadline=deadline, source=source)
    if max_security:
        query += "&max-security=" + urllib.parse.quote(max_security)
    if avro:
        query += "&avro-format=true"
    status, headers, body = await client.request("GET", f"/api/v2/event/binary/active?{query}")
    if status != 200:
        raise HTTPError(f"fetch: HTTP {status}: {body[:300]!r}")
    parts = parse_multipart(body, headers["content-type"])
    if avro:  # the events as azuld's structs (what a Go plugin has after decoding)
        from azuld.models import avro as avro_codec

        jobs: list[Any] = avro_codec.decode_posted("binary", parts["events"])
        return jobs
    events: list[dict[str, Any]] = _decode(parts["events"])["events"]
    return events


def avro_status_body(jobs: Sequence[Any], plugin: str) -> bytes:
    """`status_body`'s statuses, for jobs fetched in Avro (azuld's `BinaryEvent` structs), as
    the Avro bulk record a Go plugin posts. Built from the structs as a Go plugin builds its
    own: the load generator's CPU stays close to the JSON workers'."""
    from azuld.models import avro as avro_codec
    from azuld.models.events import (
        Author,
        BinaryEntity,
        BinaryEvent,
        Feature,
        PathNode,
        StatusEntity,
        StatusEvent,
    )

    author = Author(category="plugin", name=plugin, version="1.0")
    when = _STATUS_TIME
    statuses = []
    for job in jobs:
        sha256 = job.entity.sha256
        node = PathNode(sha256=sha256, action="enriched", timestamp=when, author=author)
        source = msgspec.structs.replace(job.source, path=[*job.source.path, node])
        enriched = BinaryEvent(
            model_version=6,
            kafka_key="runner-placeholder",
            timestamp=when,
            author=author,
            action="enriched",
            source=source,
            entity=BinaryEntity(
                sha256=sha256, features=[Feature(name="bench_seen", type="integer", value="1")]
            ),
        )
        entity = StatusEntity(input=job, status="completed", runtime=0.001, results=[enriched])
        statuses.append(
            StatusEvent(
                model_version=6,
                kafka_key="runner-placeholder",
                timestamp=when,
                author=author,
                entity=entity,
            )
        )
    return avro_codec.encode_events("status", statuses)


async def download(client: Client, job: Any) -> int:
    """GET the job's `content` stream (`job`: a JSON dict, or a struct fetched in Avro)."""
    if isinstance(job, dict):
        stream = next(s for s in job["entity"]["datastreams"] if s["label"] == "content")
        sha256, source = stream["sha256"], job["source"]["name"]
    else:
        sha256 = next(s.sha256 for s in job.entity.datastreams if s.label == "content")
        source = job.source.name
    target = f"/api/v3/stream/{source}/content/{sha256}"
    status, _, body = await client.request("GET", target)
    if status != 200:
        raise HTTPError(f"download: HTTP {status}: {body[:300]!r}")
    return len(body)


async def post_events(client: Client, model: str, body: bytes, *, avro: bool = False) -> int:
    """POST events (an Avro bulk record with `avro`); the number stored. Raises on any
    failure."""
    status, _, reply = await client.request(
        "POST",
        f"/api/v2/event?model={model}" + ("&avro-format=true" if avro else ""),
        body,
        headers=_AVRO if avro else _JSON,
    )
    if status != 200:
        raise HTTPError(f"post {model}: HTTP {status}: {reply[:300]!r}")
    decoded = _decode(reply)
    if decoded.get("total_failures"):
        raise HTTPError(f"post {model}: failures {decoded['failures'][:2]!r}")
    return int(decoded["total_ok"])


# -- workers -----------------------------------------------------------------------------------

# Per-request latencies kept per kind and process, enough for a p99 without unbounded memory.
SAMPLE_CAP = 50_000


@dataclass
class WorkerStats:
    window_start: float
    window_end: float
    completed: int = 0  # in the measuring window
    completed_total: int = 0
    fetches: int = 0
    empty_fetches: int = 0
    empty_fetch_ends: list[float] = field(default_factory=list)  # when each empty one returned
    last_jobs_fetched: float = 0.0  # when the last fetch that brought jobs returned
    errors: int = 0
    first_error: str = ""
    first_completion: float = 0.0  # in the window
    last_completion: float = 0.0  # in the window
    last_completion_any: float = 0.0  # warm-up and overrun included
    request_seconds: dict[str, list[float]] = field(
        default_factory=lambda: {"fetch": [], "download": [], "status": [], "cycle": []}
    )

    def sample(self, kind: str, seconds: float, now: float) -> None:
        if self.window_start <= now <= self.window_end:
            samples = self.request_seconds[kind]
            if len(samples) < SAMPLE_CAP:
                samples.append(seconds)

    def done(self, count: int, now: float) -> None:
        self.completed_total += count
        self.last_completion_any = now
        if self.window_start <= now <= self.window_end:
            self.completed += count
            if not self.first_completion:
                self.first_completion = now
            self.last_completion = now


async def worker(
    client: Client,
    *,
    name: str,
    source: str,
    count: int,
    do_download: bool,
    stop_at: float,
    stats: WorkerStats,
    deadline: float = 1.0,
    max_security: str = "",
    avro: bool = False,
) -> None:
    """Fetch, download, complete, until `stop_at` (wall clock). A job fetched before the stop is
    still completed, so no lease is left behind. `avro`: speak as a Go plugin does."""
    clock = time.time
    make_body = avro_status_body if avro else status_body
    while clock() < stop_at:
        started = clock()
        try:
            jobs = await fetch_jobs(client, name, source, count, deadline, max_security, avro=avro)
        except (HTTPError, OSError, h11.ProtocolError) as exc:
            stats.errors += 1
            stats.first_error = stats.first_error or repr(exc)
            await trio.sleep(0.1)
            continue
        fetched = clock()
        stats.fetches += 1
        if not jobs:
            stats.empty_fetches += 1
            if len(stats.empty_fetch_ends) < SAMPLE_CAP:
                stats.empty_fetch_ends.append(fetched)
            continue
        stats.last_jobs_fetched = fetched
        stats.sample("fetch", fetched - started, fetched)
        try:
            if do_download:
                for job in jobs:
                    before = clock()
                    await download(client, job)
                    now = clock()
                    stats.sample("download", now - before, now)
            before = clock()
            stored = await post_events(client, "status", make_body(jobs, name), avro=avro)
            now = clock()
            stats.sample("status", now - before, now)
            stats.sample("cycle", now - started, now)
            stats.done(stored, now)
        except (HTTPError, OSError, h11.ProtocolError) as exc:
            stats.errors += 1
            stats.first_error = stats.first_error or repr(exc)


async def run_workers(spec: dict[str, Any], start_at: float) -> dict[str, Any]:
    """Run this process's workers; the summary printed back to the orchestrator."""
    window_start = start_at + spec["warmup"]
    window_end = window_start + spec["duration"]
    stats = WorkerStats(window_start, window_end)
    clients = [make_client(spec["client"], spec["url"]) for _ in spec["workers"]]
    usage: dict[str, resource.struct_rusage] = {}

    async def sample_cpu() -> None:
        await trio.sleep(max(0.0, window_start - time.time()))
        usage["start"] = resource.getrusage(resource.RUSAGE_SELF)
        await trio.sleep(max(0.0, window_end - time.time()))
        usage["end"] = resource.getrusage(resource.RUSAGE_SELF)

    await trio.sleep(max(0.0, start_at - time.time()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_cpu)
        for client, key in zip(clients, spec["workers"], strict=True):
            nursery.start_soon(
                lambda c=client, k=key: worker(
                    c,
                    name=k,
                    source=spec["source"],
                    count=spec["count"],
                    do_download=spec["download"],
                    stop_at=window_end,
                    stats=stats,
                    deadline=spec["deadline"],
                    max_security=spec.get("max_security", ""),
                    avro=spec.get("encoding") == "avro",
                )
            )
    for client in clients:
        await client.aclose()
    start, end = usage.get("start"), usage.get("end")
    cpu = (end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime) if start and end else 0.0
    return {
        "pid": os.getpid(),
        "window_start": window_start,
        "window_end": window_end,
        "completed": stats.completed,
        "completed_total": stats.completed_total,
        "fetches": stats.fetches,
        "empty_fetches": stats.empty_fetches,
        "empty_fetch_ends": stats.empty_fetch_ends,
        "last_jobs_fetched": stats.last_jobs_fetched,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "first_completion": stats.first_completion,
        "last_completion": stats.last_completion,
        "last_completion_any": stats.last_completion_any,
        "cpu_seconds": cpu,
        "request_seconds": stats.request_seconds,
    }


async def _main(spec: dict[str, Any]) -> None:
    if spec.get("encoding") == "avro":
        import azuld.models.avro  # noqa: F401 - loaded (schemas parsed, codec generated) before the clock starts
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = b""
    while not line.endswith(b"\n"):
        chunk = await stdin.receive_some(100)
        if not chunk:
            raise SystemExit("orchestrator went away")
        line += chunk
    _, start_at = line.decode().split()
    result = await run_workers(spec, float(start_at))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    trio.run(_main, msgspec.json.decode(sys.argv[1]))
