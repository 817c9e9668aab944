"""Plugins without content and passive consumers, against the real daemon: the bundled
`metadata` plugin (features from the event alone, also on `mapped` events, which have no
content) and the `indexer` consumer (reads every binary event without taking jobs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from azuld.models.events import Author, PathNode
from tests.conftest import NOW, make_binary, sha
from tests.daemon import running_daemon
from tests.http.conftest import parse_multipart

pytestmark = pytest.mark.slow


async def azuld(*args: str) -> None:
    done = await trio.run_process(
        [sys.executable, "-m", "azuld", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


async def test_metadata_plugin_and_indexer(tmp_path: Path) -> None:
    sourced = make_binary("doc", size=10)
    sourced.source.references = {"case": "42"}
    sourced.source.path[0].filename = "Report.DOCX"
    mapped = make_binary("mapped", action="mapped", streams=[])
    mapped.source.path.append(
        PathNode(author=Author(name="Mapper"), action="mapped", sha256=sha("mapped"), timestamp=NOW)
    )
    index = tmp_path / "index.jsonl"
    async with (
        running_daemon(tmp_path / "data") as daemon,
        httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
    ):
        reply = await client.post(
            "/api/v2/event?model=binary", content=msgspec.json.encode([sourced, mapped])
        )
        assert reply.json()["total_ok"] == 2
        await azuld("plugin", "run", "metadata", "--server", daemon.url, "--max-jobs", "2")
        await azuld(
            "plugin",
            "run",
            "indexer",
            "--server",
            daemon.url,
            "--max-jobs",
            "4",
            "-c",
            f"path={index}",
        )
        statuses = await client.get(
            "/api/v2/event/status/passive?name=w&version=1&r-historic=true&count=10&deadline=1"
        )
        parts = parse_multipart(statuses.content, statuses.headers["content-type"])
        stored = msgspec.json.decode(parts["events"])["events"]
    assert sorted(s["entity"]["status"] for s in stored) == ["completed", "completed"]
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    assert sorted(line["action"] for line in lines) == ["enriched", "enriched", "mapped", "sourced"]
    enriched = [line for line in lines if line["action"] == "enriched"]
    assert {line["sha256"] for line in enriched} == {sha("doc"), sha("mapped")}


async def test_metadata_features(tmp_path: Path) -> None:
    from azuld.plugin import run_local

    sample = tmp_path / "Invoice.PDF"
    sample.write_bytes(b"%PDF-1.4 nothing")
    from azuld.plugins.metadata import Metadata

    (status,) = await run_local(Metadata(), [sample])
    (result,) = status.entity.results
    features = {(f.name, f.value) for f in result.entity.features}
    assert ("filename_extension", "pdf") in features
    assert ("path_depth", "0") in features
    assert ("submitted_by", "local") in features
