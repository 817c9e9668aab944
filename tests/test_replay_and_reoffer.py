"""Against the real daemon: the result replay cache (hit, blobs copied, status, metrics,
bypass_cache, a config change, a restart) and dead letters (`azuld failed`, `azuld reoffer`,
the audit trail)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import running_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow

NOW = "2026-11-29T10:00:00Z"
SAMPLE = b"the same sample, submitted twice"
SHA = hashlib.sha256(SAMPLE).hexdigest()
CHILD = b"what the plugin found inside"
CHILD_SHA = hashlib.sha256(CHILD).hexdigest()
# The plugin's runtime: within the time since its job was handed out (a longer one would be a run
# that began before, which the cache does not keep), and above the cache's minimum.
RUNTIME = 0.75
CACHE_ENV = {"AZULD_DISPATCH__REPLAY_MIN_RUNTIME_SECONDS": "0.5"}


def sourced(source: str, *, bypass: bool = False) -> dict[str, Any]:
    author = {"name": "analyst", "category": "user"}
    event: dict[str, Any] = {
        "model_version": 6,
        "kafka_key": "",
        "timestamp": NOW,
        "author": author,
        "action": "sourced",
        "source": {
            "name": source,
            "timestamp": NOW,
            "path": [
                {
                    "author": author,
                    "action": "sourced",
                    "sha256": SHA,
                    "timestamp": NOW,
                    "filename": f"{source}.bin",
                }
            ],
        },
        "entity": {
            "sha256": SHA,
            "size": len(SAMPLE),
            "datastreams": [{"label": "content", "sha256": SHA, "size": len(SAMPLE)}],
        },
    }
    if bypass:
        event["flags"] = {"bypass_cache": True}
    return event


async def register(client: httpx.AsyncClient, name: str, config: dict[str, str]) -> None:
    body = [
        {
            "model_version": 6,
            "kafka_key": "x",
            "timestamp": NOW,
            "author": {"name": name, "version": "1", "category": "plugin"},
            "entity": {"name": name, "version": "1", "config": config},
        }
    ]
    assert (
        await client.post("/api/v2/event?model=plugin", content=msgspec.json.encode(body))
    ).status_code == 200


async def fetch(
    client: httpx.AsyncClient, name: str, deadline: float = 1
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    reply = await client.get(
        f"/api/v2/event/binary/active?name={name}&version=1&r-live=true&r-historic=true&r-action=sourced&deadline={deadline}"
    )
    assert reply.status_code == 200, reply.text
    parts = parse_multipart(reply.content, reply.headers["content-type"])
    return msgspec.json.decode(parts["info"]), msgspec.json.decode(parts["events"])["events"]


async def submit(client: httpx.AsyncClient, event: dict[str, Any]) -> None:
    reply = await client.post(f"/api/v3/stream/{event['source']['name']}/content", content=SAMPLE)
    assert reply.status_code == 200
    assert (
        await client.post("/api/v2/event?model=binary", content=msgspec.json.encode([event]))
    ).status_code == 200


async def complete(client: httpx.AsyncClient, job: dict[str, Any], name: str) -> None:
    source = job["source"]["name"]
    assert (await client.post(f"/api/v3/stream/{source}/content", content=CHILD)).status_code == 200
    plugin = {"name": name, "version": "1", "category": "plugin"}
    enriched = {
        "model_version": 6,
        "kafka_key": "x",
        "timestamp": NOW,
        "author": plugin,
        "action": "enriched",
        "source": {
            **job["source"],
            "path": [
                *job["source"]["path"],
                {"author": plugin, "action": "enriched", "sha256": SHA, "timestamp": NOW},
            ],
        },
        "entity": {
            "sha256": SHA,
            "features": [{"name": "verdict", "type": "string", "value": "bad"}],
        },
    }
    child = {
        "model_version": 6,
        "kafka_key": "x",
        "timestamp": NOW,
        "author": plugin,
        "action": "extracted",
        "source": {
            **job["source"],
            "path": [
                *job["source"]["path"],
                {
                    "author": plugin,
                    "action": "extracted",
                    "sha256": CHILD_SHA,
                    "timestamp": NOW,
                    "filename": "inner.bin",
                },
            ],
        },
        "entity": {
            "sha256": CHILD_SHA,
            "size": len(CHILD),
            "datastreams": [{"label": "content", "sha256": CHILD_SHA, "size": len(CHILD)}],
        },
    }
    status = [
        {
            "model_version": 6,
            "kafka_key": "x",
            "timestamp": NOW,
            "author": plugin,
            "entity": {
                "input": job,
                "status": "completed",
                "runtime": RUNTIME,
                "results": [enriched, child],
            },
        }
    ]
    assert (
        await client.post("/api/v2/event?model=status", content=msgspec.json.encode(status))
    ).status_code == 200


async def binaries_of(client: httpx.AsyncClient, watcher: str) -> list[dict[str, Any]]:
    reply = await client.get(
        f"/api/v2/event/binary/passive?name={watcher}&version=1&r-historic=true&r-live=true&count=100&deadline=0.5"
    )
    return msgspec.json.decode(
        parse_multipart(reply.content, reply.headers["content-type"])["events"]
    )["events"]


async def test_replay_cache(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with (
        running_daemon(data, env=CACHE_ENV) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        await register(client, "Scanner", {"rules": "v1"})
        await submit(client, sourced("first"))
        _, (job,) = await fetch(client, "Scanner")
        await complete(client, job, "Scanner")
        # The same binary again, from another source: answered from the cache.
        await submit(client, sourced("second"))
        info, jobs = await fetch(client, "Scanner")
        assert jobs == []
        assert info["filters"] == {"ReplayPluginCompletion-cached": 1}
        second = [e for e in await binaries_of(client, "w1") if e["source"]["name"] == "second"]
        actions = sorted(e["action"] for e in second)
        assert actions == ["enriched", "extracted", "sourced"]
        enriched = next(e for e in second if e["action"] == "enriched")
        assert enriched["entity"]["features"] == [
            {"name": "verdict", "value": "bad", "type": "string"}
        ]
        assert enriched["source"]["path"][0]["filename"] == "second.bin"
        child = next(e for e in second if e["action"] == "extracted")
        blob = await client.get(f"/api/v3/stream/second/content/{CHILD_SHA}")
        assert blob.content == CHILD  # copied under the new source
        assert child["source"]["path"][-1]["filename"] == "inner.bin"
        metrics = (await client.get("/metrics")).text
        assert 'azuld_replay_cache_hits_total{plugin="Scanner"} 1.0' in metrics
        assert 'azuld_replay_cache_saved_seconds_total{plugin="Scanner"} 0.75' in metrics
        plugins = (await client.get("/api/azuld/v1/plugins")).json()["plugins"]
        (row,) = [p for p in plugins if p["name"] == "Scanner"]
        assert (row["replayed"], row["replay_saved_seconds"]) == (1, RUNTIME)
        done = await trio.run_process(
            [sys.executable, "-m", "azuld", "status", "--server", daemon.url],
            capture_stdout=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert "replayed=1 saved_seconds=0.75" in done.stdout.decode()
        # bypass_cache: the plugin runs again.
        await submit(client, sourced("third", bypass=True))
        _, jobs = await fetch(client, "Scanner")
        assert [j["source"]["name"] for j in jobs] == ["third"]
        await complete(client, jobs[0], "Scanner")
    # Persistent: after a restart the cache still answers.
    async with (
        running_daemon(data, env=CACHE_ENV) as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        await register(client, "Scanner", {"rules": "v1"})
        await submit(client, sourced("fourth"))
        info, jobs = await fetch(client, "Scanner")
        assert (jobs, info["filters"]) == ([], {"ReplayPluginCompletion-cached": 1})
        # Another config is another plugin: it runs.
        await register(client, "Scanner", {"rules": "v2"})
        await submit(client, sourced("fifth"))
        _, jobs = await fetch(client, "Scanner")
        assert [j["source"]["name"] for j in jobs] == ["fifth"]


async def test_dead_letters_and_reoffer(tmp_path: Path) -> None:
    async with (
        running_daemon(tmp_path / "data") as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        await submit(client, sourced("dl"))
        _, (job,) = await fetch(client, "Flaky")
        status = [
            {
                "model_version": 6,
                "kafka_key": "x",
                "timestamp": NOW,
                "author": {"name": "Flaky", "version": "1", "category": "plugin"},
                "entity": {
                    "input": job,
                    "status": "error-exception",
                    "error": "ValueError",
                    "message": "Traceback...\nValueError: bad header",
                },
            }
        ]
        await client.post("/api/v2/event?model=status", content=msgspec.json.encode(status))
        assert (await fetch(client, "Flaky"))[1] == []

        async def azuld(*args: str) -> str:
            done = await trio.run_process(
                [sys.executable, "-m", "azuld", *args, "--server", daemon.url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert done.returncode == 0, done.stderr.decode()
            return done.stdout.decode()

        listing = await azuld("failed", "--plugin", "Flaky")
        assert "error-exception" in listing
        assert "ValueError: bad header" in listing
        assert job["dequeued"] in listing
        out = await azuld("reoffer", job["dequeued"], "--by", "alice")
        assert "re-offered to Flaky-1-binary-allsrc-sourced-LH" in out
        _, jobs = await fetch(client, "Flaky")
        assert [j["entity"]["sha256"] for j in jobs] == [SHA]
        assert jobs[0]["dequeued"].split("|")[2] == "reoffer"
        assert (await fetch(client, "Other"))[1][0]["entity"]["sha256"] == SHA  # others unaffected
        trail = (await client.get("/api/azuld/v1/reoffers")).json()["reoffers"]
        assert [(t["by"], t["job_id"]) for t in trail] == [("alice", job["dequeued"])]
        bad = (await client.post("/api/azuld/v1/reoffer", json={"job_ids": ["nonsense"]})).json()
        assert bad["reoffered"] == [
            {"job_id": "nonsense", "ok": False, "reason": "not an azuld job id"}
        ]
