"""`/api/v3/stream` over HTTP: upload with identify, ranged download, HEAD, and the rejections;
the upload size limit through both HTTP servers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import streams
from azuld.service import serve
from azuld.settings import load_settings
from tests.http.conftest import error_of

DATA = b"hello azul\n"
SHA = hashlib.sha256(DATA).hexdigest()


async def upload(
    client: Client, data: bytes = DATA, path: str = "samples/content", query: str = ""
) -> tuple[int, dict]:
    response = await client.post(f"/api/v3/stream/{path}{query}", data=data)
    return response.status_code, await response.get_json()


async def test_upload_reports_hashes_and_type(client: Client) -> None:
    status, body = await upload(client, path="samples/text")
    assert status == 200
    data = body["data"]
    assert data["label"] == "content"  # as Go, whatever the URL label
    assert data["sha256"] == SHA
    assert data["sha1"] == hashlib.sha1(DATA).hexdigest()
    assert data["md5"] == hashlib.md5(DATA).hexdigest()
    assert data["sha512"] == hashlib.sha512(DATA).hexdigest()
    assert data["size"] == len(DATA)
    assert data["file_format"] == "text/plain"
    assert data["identify_version"] == 2
    allowed = {
        "identify_version",
        "label",
        "size",
        "sha256",
        "sha512",
        "sha1",
        "md5",
        "ssdeep",
        "tlsh",
        "mime",
        "magic",
        "file_format",
        "file_extension",
        "language",
    }
    assert set(data) <= allowed


async def test_skip_identify_needs_and_checks_the_hash(client: Client) -> None:
    status, body = await upload(client, query="?skip-identify=true")
    assert status == 400
    assert "must supply sha256 when skipping identify" in error_of(body)[1]
    status, body = await upload(client, query=f"?skip-identify=true&expected-sha256={SHA}")
    assert status == 200
    assert body["data"]["sha256"] == SHA
    assert "file_format" not in body["data"]


@pytest.mark.parametrize(
    ("data", "path", "query", "status", "detail"),
    [
        (b"", "samples/content", "", 400, "no content in request body"),
        (DATA, "samples/content", f"?expected-sha256={'0' * 64}", 400, "sha256 mismatch"),
        (DATA, "samples/content", "?expected-sha256=XYZ", 400, "not 64 lowercase hex"),
        (DATA, "samples/content", "?skip-identify=maybe", 400, "is not a boolean"),
        (DATA, "%2e%2e/content", "", 400, "invalid source '..'"),
        (DATA, "samples/%2e%2e", "", 400, "invalid label '..'"),
        (DATA, "sam%20ples/content", "", 400, "invalid source 'sam ples'"),
        (DATA, "a/b/content", "", 400, "invalid source 'a/b'"),  # was a 405 from routing
        (DATA, "a/b/c/content", "", 400, "invalid source 'a/b/c'"),  # was a 404
    ],
)
async def test_upload_rejections(
    client: Client, data: bytes, path: str, query: str, status: int, detail: str
) -> None:
    got_status, body = await upload(client, data, path, query)
    assert got_status == status
    assert detail in error_of(body)[1]


async def test_download_whole_and_ranges(client: Client) -> None:
    await upload(client)
    url = f"/api/v3/stream/samples/content/{SHA}"
    response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert "Content-Range" not in response.headers
    assert await response.get_data() == DATA
    for header, expected, content_range in [
        ("bytes=0-4", DATA[:5], "bytes 0-4/11"),
        ("bytes=6-", DATA[6:], "bytes 6-10/11"),
        ("bytes=-1048576", DATA, "bytes 0-10/11"),
        ("bytes=0-1048575", DATA, "bytes 0-10/11"),
    ]:
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 206
        assert response.headers["Content-Range"] == content_range
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.get_data() == expected


async def test_range_past_the_end_is_416(client: Client) -> None:
    await upload(client)
    response = await client.get(
        f"/api/v3/stream/samples/content/{SHA}", headers={"Range": "bytes=11-"}
    )
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */11"


async def test_bad_range_is_400(client: Client) -> None:
    await upload(client)
    response = await client.get(
        f"/api/v3/stream/samples/content/{SHA}", headers={"Range": "bytes=0-1,3-4"}
    )
    assert response.status_code == 400
    assert "invalid range provided" in error_of(await response.get_json())[1]


async def test_unknown_hash_is_404(client: Client) -> None:
    response = await client.get(f"/api/v3/stream/samples/content/{'a' * 64}")
    assert response.status_code == 404
    assert "no blob" in error_of(await response.get_json())[1]


async def test_malformed_hash_is_400(client: Client) -> None:
    response = await client.get("/api/v3/stream/samples/content/..%2f..%2fetc%2fpasswd")
    assert response.status_code in (400, 404)
    error_of(await response.get_json())


async def test_head(client: Client) -> None:
    await upload(client)
    assert (await client.head(f"/api/v3/stream/samples/content/{SHA}")).status_code == 200
    assert (await client.head(f"/api/v3/stream/samples/content/{'b' * 64}")).status_code == 404


async def test_download_falls_back_from_label_to_content(client: Client) -> None:
    await upload(client, path="samples/content")
    response = await client.get(f"/api/v3/stream/other/content/{SHA}")
    assert response.status_code == 404  # sources are separate; the fallback is by bare hash only


async def test_a_body_spooled_to_disk_answers_as_one_held_in_memory(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small bodies are held in memory, within a budget; over it they go to a spool file: the
    answer is the same, and the budget is given back whatever the outcome."""
    data = b"#!/bin/sh\necho spooled or not\n" + bytes(range(256)) * 3
    status, held = await upload(client, data, "held/content")
    assert status == 200
    assert streams._MEMORY.held_bytes == 0
    monkeypatch.setattr(streams, "_MEMORY", streams._MemoryBudget(100))  # less than the body
    status, spooled = await upload(client, data, "spooled/content")
    assert (status, spooled) == (200, held)
    assert streams._MEMORY.held_bytes == 0
    for query in (f"?expected-sha256={'0' * 64}", ""):
        status, _ = await upload(client, data[:50] if query else b"", "x/content", query)
        assert status == 400
        assert streams._MEMORY.held_bytes == 0


# -- the upload limit, through the real servers -------------------------------------------------


async def _serving(
    nursery: trio.Nursery, tmp_path: Path, http_server: str, **overrides: object
) -> str:
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path / "data",
            "server.listen": "127.0.0.1:0",
            "server.http_server": http_server,
            **overrides,
        },
    )
    urls: list[str] = await nursery.start(partial(serve, settings, handle_signals=False))
    return urls[0]


async def _chunks(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _body(data: bytes, chunked: bool) -> bytes | AsyncIterator[bytes]:
    """httpx sends bytes with a Content-Length and an async iterator chunked."""
    return _chunks(data) if chunked else data


@pytest.mark.parametrize("http_server", ["azuld", "hypercorn"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_uploads_are_limited_by_max_upload_bytes_however_framed(
    nursery: trio.Nursery, tmp_path: Path, http_server: str, chunked: bool
) -> None:
    url = await _serving(
        nursery,
        tmp_path,
        http_server,
        **{"server.max_event_body_bytes": 4096, "server.max_upload_bytes": 96 * 1024},
    )
    allowed = os.urandom(64 * 1024)  # over the event-body limit, under the upload limit
    refused = os.urandom(128 * 1024)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/api/v3/stream/s/content", content=_body(allowed, chunked))
        assert response.status_code == 200, response.text
        assert response.json()["data"]["sha256"] == hashlib.sha256(allowed).hexdigest()
        response = await client.post(
            "/api/v1/data/" + hashlib.sha256(allowed).hexdigest(), content=_body(allowed, chunked)
        )
        assert response.status_code == 200, response.text

        response = await client.post("/api/v3/stream/s/content", content=_body(refused, chunked))
        assert response.status_code == 413
        assert error_of(response.json()) == (
            "payload too large",
            "the upload is over server.max_upload_bytes (98304 bytes)",
        )

        # Everything else keeps the event-body limit.
        events = b"[" + b" " * 8000 + b"]"
        response = await client.post("/api/v2/event?model=binary", content=_body(events, chunked))
        assert response.status_code == 413


@pytest.mark.parametrize("http_server", ["azuld", "hypercorn"])
async def test_an_upload_over_16_mib_with_a_content_length_is_stored(
    nursery: trio.Nursery, tmp_path: Path, http_server: str
) -> None:
    """The defaults: `max_event_body_bytes` is 16 MiB, uploads may be much larger."""
    url = await _serving(nursery, tmp_path, http_server)
    data = os.urandom(17 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        response = await client.post("/api/v3/stream/s/content", content=data)
        assert response.status_code == 200, response.text
        sha256 = hashlib.sha256(data).hexdigest()
        assert response.json()["data"]["size"] == len(data)
        stored = await client.get(f"/api/v3/stream/s/content/{sha256}")
        assert stored.content == data
