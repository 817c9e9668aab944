"""`/api/v3/stream` over HTTP: upload with identify, ranged download, HEAD, and the rejections."""

from __future__ import annotations

import hashlib

import pytest
from quart.typing import TestClientProtocol as Client

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
