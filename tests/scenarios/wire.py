"""The protocol as a well-behaved client speaks it: events, statuses, fetches and reads (httpx)."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import trio

from tests.http.conftest import parse_multipart
from tests.scenarios.outcome import Unexpected


def now() -> str:
    return datetime.now(UTC).isoformat()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def answer(response: httpx.Response) -> str:
    return f"{response.status_code} {response.text[:300]}"


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


def attempt_of(job: dict[str, Any]) -> int:
    return int(job["dequeued"].split("|")[6])  # azd2|key|lane|topic|partition|offset|attempt|mac


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


# -- requests -------------------------------------------------------------------------------


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


async def take_all(client: httpx.AsyncClient, name: str, **kw: Any) -> list[dict[str, Any]]:
    """Every job plugin `name` is offered now (fetched until a fetch comes back empty), each
    batch completed (`completed-empty`) as it comes, so no lease runs out while the rest is
    fetched on a slow machine (an expired lease would offer a job twice)."""
    jobs: list[dict[str, Any]] = []
    while True:
        _, got = await fetch(client, name, **kw)
        if not got:
            return jobs
        jobs += got
        version = kw.get("version", "1.0")
        await must_post(
            client,
            "status",
            [status_event(j, name, "completed-empty", version=version) for j in got],
        )


async def plugin_keys(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get("/api/azuld/v1/plugins")
    return {p["key"]: p for p in response.json()["plugins"]}


# -- reading back ---------------------------------------------------------------------------


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


async def wait_for_final(
    client: httpx.AsyncClient, digest: str, author: str, within: float
) -> list[dict[str, Any]]:
    """`author`'s final statuses for `digest`, polling passive reads until one appears (or
    `within` seconds have passed: then none)."""
    deadline = time.monotonic() + within
    while True:
        found = final_statuses(await read_all(client, "status"), digest, author)
        if found or time.monotonic() > deadline:
            return found
        await trio.sleep(0.1)
