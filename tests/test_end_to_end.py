"""The real daemon as a subprocess, driven over HTTP the way plugins drive it.

Covers the foundation's acceptance: submit a file, a plugin registers, fetches, downloads with
Range, heartbeats, uploads a child and posts completed with an enriched and an extracted result;
the child reaches a second plugin key; statuses are readable through a passive fetch; nothing is
offered twice. Then a SIGKILL with jobs in flight, and a restart.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from tests.daemon import running_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow

RUNNER_QUERY = (
    "version=1.0&count=1&deadline=2&r-expedite=true&r-live=true&r-historic=true"
    "&r-under-content-size=209715200&r-action=sourced&r-action=extracted&r-streams=content,"
)


def now() -> str:
    return datetime.now(UTC).isoformat()


async def fetch(
    client: httpx.AsyncClient,
    name: str,
    model: str = "binary",
    mode: str = "active",
    query: str = RUNNER_QUERY,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = await client.get(f"/api/v2/event/{model}/{mode}?name={name}&{query}")
    assert response.status_code == 200, response.text
    parts = parse_multipart(response.content, response.headers["content-type"])
    return msgspec.json.decode(parts["info"]), msgspec.json.decode(parts["events"])["events"]


def strip_input(event: dict[str, Any]) -> dict[str, Any]:
    stripped = {**event, "entity": dict(event["entity"])}
    for key in ("features", "datastreams", "info"):
        stripped["entity"].pop(key, None)
    return stripped


def status_event(job: dict[str, Any], name: str, status: str, **entity: Any) -> bytes:
    return msgspec.json.encode(
        [
            {
                "model_version": 6,
                "kafka_key": "runner-placeholder",
                "timestamp": now(),
                "author": {"category": "plugin", "name": name, "version": "1.0"},
                "entity": {"input": strip_input(job), "status": status, **entity},
            }
        ]
    )


async def post(client: httpx.AsyncClient, model: str, body: bytes) -> dict[str, Any]:
    response = await client.post(
        f"/api/v2/event?avro-format=false&model={model}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply == {"total_ok": reply["total_ok"], "total_failures": 0, "failures": []}
    return reply


async def drain(client: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    """Take every job a plugin key has, completing each; return them in order."""
    seen = []
    while True:
        _, events = await fetch(client, name)
        assert len(events) <= 1
        if not events:
            return seen
        seen.append(events[0])
        await post(client, "status", status_event(events[0], name, "completed-empty"))


async def test_plugin_protocol_end_to_end(tmp_path: Path) -> None:
    sample = tmp_path / "sample.zip"
    with zipfile.ZipFile(sample, "w") as archive:
        archive.writestr("readme.txt", "hello from inside the zip\n")
    member = b"hello from inside the zip\n"
    member_sha = hashlib.sha256(member).hexdigest()

    async with running_daemon(tmp_path / "data") as daemon:
        submitted = await trio.run_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "submit",
                str(sample),
                "--source",
                "demo",
                "--server",
                daemon.url,
                "--reference",
                "case=42",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert b"submitted 1 file(s)" in submitted.stdout

        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            # Registration, as azul-runner sends it.
            registration = [
                {
                    "model_version": 6,
                    "kafka_key": "runner-placeholder",
                    "timestamp": now(),
                    "author": {"category": "plugin", "name": "Unbox", "version": "1.0"},
                    "entity": {
                        "category": "plugin",
                        "name": "Unbox",
                        "version": "1.0",
                        "features": [{"name": "filename", "desc": "x", "type": "filepath"}],
                        "config": {"run_timeout": "600"},
                    },
                }
            ]
            assert (await post(client, "plugin", msgspec.json.encode(registration)))[
                "total_ok"
            ] == 1

            info, events = await fetch(client, "Unbox")
            assert info["fetched"] == 1
            (job,) = events
            assert job["source"]["name"] == "demo"
            assert job["source"]["references"] == {"case": "42"}
            content = job["entity"]["datastreams"][0]
            assert content["file_format"] == "archive/zip"

            # Download as the runner does: a suffix probe, then the rest.
            url = f"/api/v3/stream/demo/content/{content['sha256']}"
            probe = await client.get(url, headers={"range": "bytes=-1048576"})
            assert probe.status_code == 206
            assert probe.headers["content-type"] == "application/octet-stream"
            assert (
                probe.headers["content-range"] == f"bytes 0-{content['size'] - 1}/{content['size']}"
            )
            assert probe.content == sample.read_bytes()
            past = await client.get(url, headers={"range": f"bytes={content['size']}-"})
            assert past.status_code == 416
            assert past.headers["content-range"] == f"bytes */{content['size']}"

            await post(client, "status", status_event(job, "Unbox", "heartbeat", runtime=1.0))

            upload = await client.post("/api/v3/stream/demo/content", content=member)
            assert upload.status_code == 200
            child_stream = upload.json()["data"]
            assert child_stream["sha256"] == member_sha

            plugin = {"category": "plugin", "name": "Unbox", "version": "1.0"}
            enriched = {
                "model_version": 6,
                "kafka_key": "runner-placeholder",
                "timestamp": now(),
                "author": plugin,
                "action": "enriched",
                "source": {
                    **job["source"],
                    "path": [
                        *job["source"]["path"],
                        {
                            "sha256": content["sha256"],
                            "action": "enriched",
                            "timestamp": now(),
                            "author": plugin,
                        },
                    ],
                },
                "entity": {
                    "sha256": content["sha256"],
                    "features": [{"name": "member_count", "type": "integer", "value": "1"}],
                },
            }
            extracted = {
                "model_version": 6,
                "kafka_key": "runner-placeholder",
                "timestamp": now(),
                "author": plugin,
                "action": "extracted",
                "source": {
                    **job["source"],
                    "path": [
                        *job["source"]["path"],
                        {
                            "sha256": member_sha,
                            "action": "extracted",
                            "timestamp": now(),
                            "author": plugin,
                            "relationship": {"action": "extracted"},
                            "file_format": child_stream["file_format"],
                            "size": len(member),
                            "filename": "readme.txt",
                        },
                    ],
                },
                "entity": {
                    "sha256": member_sha,
                    "size": len(member),
                    "file_format": child_stream["file_format"],
                    "features": [{"name": "filename", "type": "filepath", "value": "readme.txt"}],
                    "datastreams": [child_stream],
                },
            }
            await post(
                client,
                "status",
                status_event(job, "Unbox", "completed", runtime=2.0, results=[enriched, extracted]),
            )

            # Unbox takes extracted events too, so it is offered its own child next, once.
            unbox_rest = await drain(client, "Unbox")
            assert [e["entity"]["sha256"] for e in unbox_rest] == [member_sha]

            # A second plugin key sees the archive and its member, each exactly once.
            entropy = await drain(client, "Entropy")
            assert sorted(e["entity"]["sha256"] for e in entropy) == sorted(
                [content["sha256"], member_sha]
            )
            child = next(e for e in entropy if e["entity"]["sha256"] == member_sha)
            assert child["action"] == "extracted"
            assert child["source"]["path"][-1]["filename"] == "readme.txt"
            download = await client.get(f"/api/v3/stream/demo/content/{member_sha}")
            assert download.content == member
            assert await drain(client, "Entropy") == []

            # Every status is readable through a passive fetch of `status`.
            _, statuses = await fetch(
                client,
                "watcher",
                model="status",
                mode="passive",
                query="version=1&count=100&deadline=1&r-historic=true",
            )
            summary = [(s["author"]["name"], s["entity"]["status"]) for s in statuses]
            assert ("Unbox", "heartbeat") in summary
            assert ("Unbox", "completed") in summary
            assert summary.count(("Entropy", "completed-empty")) == 2
            completed = next(s for s in statuses if s["entity"]["status"] == "completed")
            assert "results" not in completed["entity"]
            # A passive consumer is not offered the same statuses again.
            _, again = await fetch(
                client,
                "watcher",
                model="status",
                mode="passive",
                query="version=1&count=100&deadline=1&r-historic=true",
            )
            assert again == []


async def test_sigkill_with_jobs_in_flight_loses_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    events = []
    for i in range(6):
        digest = hashlib.sha256(f"file {i}".encode()).hexdigest()
        node = {
            "author": {"name": "bob", "category": "user"},
            "action": "sourced",
            "sha256": digest,
            "timestamp": now(),
        }
        events.append(
            {
                "model_version": 6,
                "kafka_key": "",
                "timestamp": now(),
                "author": {"name": "bob", "category": "user"},
                "action": "sourced",
                "source": {"name": "crash", "timestamp": now(), "path": [node]},
                "entity": {
                    "sha256": digest,
                    "size": 6,
                    "datastreams": [{"label": "content", "sha256": digest, "size": 6}],
                },
            }
        )
    query = "version=1&count=6&deadline=2&r-live=true&r-historic=true"
    async with running_daemon(data) as daemon:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            await post(client, "binary", msgspec.json.encode(events))
            _, jobs = await fetch(client, "Worker", query=query)
            assert len(jobs) == 6
            finished = [jobs[0], jobs[2], jobs[3]]
            for job in finished:
                await post(client, "status", status_event(job, "Worker", "completed-empty"))
        await daemon.kill()
    unfinished = {j["entity"]["sha256"] for j in jobs} - {j["entity"]["sha256"] for j in finished}

    async with running_daemon(data) as daemon:
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            _, again = await fetch(client, "Worker", query=query)
            assert {j["entity"]["sha256"] for j in again} == unfinished
            assert len(again) == len(unfinished)
        assert await daemon.terminate() == 0


async def test_readme_loop_with_bundled_plugins(tmp_path: Path) -> None:
    """The README's loop: serve, submit a zip, run unbox and entropy, show the tree."""
    sample = tmp_path / "sample.zip"
    with zipfile.ZipFile(sample, "w") as archive:
        archive.writestr("readme.txt", "hello from the zip\n" * 20)
        archive.writestr("bin/tool.sh", "#!/bin/sh\necho hi\n")

    async def azuld(*args: str) -> str:
        done = await trio.run_process(
            [sys.executable, "-m", "azuld", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    async with running_daemon(tmp_path / "data") as daemon:
        await azuld("submit", str(sample), "--source", "demo", "--server", daemon.url)
        await azuld("plugin", "run", "unbox", "--server", daemon.url, "--max-jobs", "1")
        await azuld("plugin", "run", "entropy", "--server", daemon.url, "--max-jobs", "3")
        tree = await azuld("show", "--source", "demo", "--server", daemon.url)
    lines = tree.splitlines()
    assert lines[0].startswith("sample.zip  archive/zip")
    assert "Unbox: archive_member_count=2" in tree
    assert any(line.startswith("└── readme.txt  text/plain") for line in lines)
    assert any(line.startswith("└── bin/tool.sh  code/shell") for line in lines)
    assert tree.count("Entropy: entropy=") == 3
