"""The S3 blob store beyond the shared contract (tests/storage/test_blob_contract.py): Go's key
layout, the checksum sent, skipped re-uploads, multipart aborts, S3 outages and stalls, and the
cost of a 50 MiB round trip."""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import os
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from botocore.exceptions import ClientError

from azuld.errors import NotFound, UpstreamError
from azuld.storage.s3 import S3BlobStore, open_s3_store
from tests.services import S3Server, free_port

MiB = 1024 * 1024
SOURCE, LABEL = "samples", "content"


def new_bucket() -> str:
    return f"s3test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(s3_server: S3Server, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    async with open_s3_store(
        endpoint=s3_server.endpoint,
        bucket=new_bucket(),
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
        spool_dir=tmp_path / "spool",
    ) as s3:
        yield s3


def spool(store: S3BlobStore, data: bytes) -> tuple[Path, str]:
    path = store.spool_dir / f"upload-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def read_all(store: S3BlobStore, sha256: str, start: int, length: int) -> bytes:
    return b"".join([c async for c in store.read(SOURCE, LABEL, sha256, start, length)])


async def keys(store: S3BlobStore) -> list[str]:
    answer = await store._client.list_objects_v2(Bucket=store.bucket)
    return sorted(o["Key"] for o in answer.get("Contents", []))


async def open_uploads(store: S3BlobStore) -> list[Any]:
    answer = await store._client.list_multipart_uploads(Bucket=store.bucket)
    return list(answer.get("Uploads", []))


# A transfer abandoned half-way (a reader stopped early, an upload cancelled) leaves httpx's
# chain of async generators to the garbage collector, and trio warns about each (ResourceWarning,
# ignored outside tests). These tests collect them before they end, under this filter.
ABANDONS = pytest.mark.filterwarnings("ignore::ResourceWarning")


def client_error(code: str, status: int, operation: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


# --------------------------------------------------------------------------------------------
# Keys and uploads


async def test_keys_follow_go_layout(store: S3BlobStore) -> None:
    path, digest = spool(store, b"go layout")
    await store.put_file(SOURCE, LABEL, digest, path)
    assert await keys(store) == [f"{SOURCE}/{LABEL}/{digest}"]

    # A blob that Go stored under its legacy key `//<sha256>` is found from any source.
    legacy = hashlib.sha256(b"legacy").hexdigest()
    await store._client.put_object(Bucket=store.bucket, Key=f"//{legacy}", Body=b"legacy")
    assert await store.size("any", "thing", legacy) == len(b"legacy")
    assert b"".join([c async for c in store.read("any", "thing", legacy, 1, 3)]) == b"ega"


async def test_key_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    async with open_s3_store(
        endpoint=s3_server.endpoint,
        bucket=new_bucket(),
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        region=s3_server.region,
        spool_dir=tmp_path / "spool",
        prefix="/azul/blobs/",
    ) as store:
        path, digest = spool(store, b"prefixed")
        await store.put_file(SOURCE, LABEL, digest, path)
        legacy = hashlib.sha256(b"old").hexdigest()
        # `<prefix>/` + Go's key: the legacy `//<sha256>` becomes `azul/blobs///<sha256>`.
        await store._client.put_object(
            Bucket=store.bucket, Key=f"azul/blobs///{legacy}", Body=b"old"
        )
        assert await keys(store) == sorted(
            [f"azul/blobs/{SOURCE}/{LABEL}/{digest}", f"azul/blobs///{legacy}"]
        )
        assert await store.size(SOURCE, LABEL, digest) == len(b"prefixed")
        assert await store.size(SOURCE, LABEL, legacy) == len(b"old")


async def test_put_sends_the_content_sha256(store: S3BlobStore) -> None:
    """A single PUT carries `x-amz-checksum-sha256`, so S3 checks the bytes against the content
    address (moto accepts the header without checking it)."""
    headers: list[dict[str, str]] = []

    def capture(request: Any, **_: Any) -> None:
        headers.append(
            {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        )

    store._client.meta.events.register("before-send.s3.PutObject", capture)
    path, digest = spool(store, b"checked by S3")
    await store.put_file(SOURCE, LABEL, digest, path)
    assert len(headers) == 1
    expected = base64.b64encode(bytes.fromhex(digest)).decode()
    assert headers[0]["x-amz-checksum-sha256"] == expected
    assert headers[0]["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"  # the file is read once


async def test_existing_blob_is_not_sent_again(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    real_put = store._client.put_object

    async def counting_put(**kwargs: Any) -> Any:
        sent.append(kwargs["Key"])
        return await real_put(**kwargs)

    monkeypatch.setattr(store._client, "put_object", counting_put)
    data = b"content-addressed"
    for _ in range(3):
        path, digest = spool(store, data)
        await store.put_file(SOURCE, LABEL, digest, path)
        assert not path.exists()
    assert sent == [store.key(SOURCE, LABEL, digest)]

    # A different size at the key (a damaged object) is overwritten.
    await real_put(Bucket=store.bucket, Key=store.key(SOURCE, LABEL, digest), Body=b"x")
    path, _ = spool(store, data)
    await store.put_file(SOURCE, LABEL, digest, path)
    assert len(sent) == 2
    assert await read_all(store, digest, 0, len(data)) == data


async def test_upload_recreates_a_missing_bucket(store: S3BlobStore) -> None:
    await store._client.delete_bucket(Bucket=store.bucket)
    path, digest = spool(store, b"after the bucket went away")
    await store.put_file(SOURCE, LABEL, digest, path)
    assert await store.size(SOURCE, LABEL, digest) == len(b"after the bucket went away")


async def test_read_of_missing_bucket_is_not_found(store: S3BlobStore) -> None:
    await store._client.delete_bucket(Bucket=store.bucket)
    digest = hashlib.sha256(b"x").hexdigest()
    assert await store.size(SOURCE, LABEL, digest) is None
    with pytest.raises(NotFound):
        await read_all(store, digest, 0, 1)


@ABANDONS
async def test_reader_stopped_early(store: S3BlobStore) -> None:
    """A download the client abandons (aclose) releases the S3 response cleanly."""
    data = os.urandom(2 * MiB)
    path, digest = spool(store, data)
    await store.put_file(SOURCE, LABEL, digest, path)
    reader = store.read(SOURCE, LABEL, digest, 0, len(data))
    first = await reader.__anext__()
    assert first == data[: len(first)]
    await reader.aclose()  # type: ignore[attr-defined]
    assert await read_all(store, digest, 0, 10) == data[:10]  # the client still works
    gc.collect()


def multipart_store_file(store: S3BlobStore, size: int = 24 * MiB) -> tuple[Path, str]:
    block = os.urandom(MiB)
    return spool(store, block * (size // MiB))


@ABANDONS
async def test_failed_part_aborts_the_multipart_upload(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload_part = store._client.upload_part

    async def failing_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise client_error("InternalError", 500, "UploadPart")
        return await real_upload_part(**kwargs)

    monkeypatch.setattr(store._client, "upload_part", failing_part)
    path, digest = multipart_store_file(store)
    with pytest.raises(UpstreamError, match=r"refused to store part 2 of .*InternalError"):
        await store.put_file(SOURCE, LABEL, digest, path)
    assert await open_uploads(store) == []
    assert await keys(store) == []
    assert path.exists(), "a failed upload leaves the spooled file to the caller"
    gc.collect()


@ABANDONS
async def test_cancelled_upload_aborts_the_multipart_upload(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_upload_part = store._client.upload_part
    stuck = trio.Event()

    async def stuck_part(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 3:
            stuck.set()
            await trio.sleep_forever()
        return await real_upload_part(**kwargs)

    monkeypatch.setattr(store._client, "upload_part", stuck_part)
    path, digest = multipart_store_file(store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.put_file, SOURCE, LABEL, digest, path)
        await stuck.wait()
        assert len(await open_uploads(store)) == 1
        nursery.cancel_scope.cancel()
    assert await open_uploads(store) == []
    assert await keys(store) == []
    gc.collect()


# --------------------------------------------------------------------------------------------
# Failures: S3 down, S3 silent


async def test_s3_outage_and_recovery(store: S3BlobStore, s3_server: S3Server) -> None:
    path, digest = spool(store, b"stored before the outage")
    await store.put_file(SOURCE, LABEL, digest, path)
    unreachable = f"S3 at {s3_server.endpoint} is unreachable"
    # Every request botocore sends, retries included: its own back-off ladder would multiply them.
    sent: list[str] = []
    store._client.meta.events.register(
        "before-send.s3", lambda request, **_: sent.append(request.method)
    )
    await s3_server.astop()
    try:
        with trio.fail_after(30):  # a hang guard, not a speed limit
            with pytest.raises(UpstreamError, match=unreachable):
                await store.size(SOURCE, LABEL, digest)
            # One request per azuld try (it retries refused connections itself, within deadlines).
            assert sent == ["HEAD"] * store.attempts
            with pytest.raises(UpstreamError, match=unreachable):
                await read_all(store, digest, 0, 4)
            path, digest2 = spool(store, b"stored during the outage")
            with pytest.raises(UpstreamError, match=unreachable):
                await store.put_file(SOURCE, LABEL, digest2, path)
            assert path.exists()
            reason = await store.health()
            assert reason is not None
            assert unreachable in reason
    finally:
        # moto keeps nothing: the bucket and its blobs are gone after this.
        await s3_server.astart()
    assert await store.health() is None  # and the bucket is back
    await store.put_file(SOURCE, LABEL, digest2, path)
    assert await read_all(store, digest2, 0, 6) == b"stored"
    assert await store.size(SOURCE, LABEL, digest) is None  # lost with moto's memory


async def test_refused_at_start(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    options: dict[str, Any] = {
        "endpoint": endpoint,
        "bucket": "azul",
        "access_key": "test",
        "secret_key": "test",
        "region": "us-east-1",
        "spool_dir": tmp_path / "spool",
    }
    with trio.fail_after(5), pytest.raises(UpstreamError, match="is unreachable"):
        async with open_s3_store(**options):
            pass
    async with open_s3_store(**options, check_at_start=False) as store:
        reason = await store.health()
        assert reason is not None
        assert f"S3 at {endpoint} is unreachable: cannot check bucket azul" in reason


async def test_silent_s3_times_out(nursery: trio.Nursery, tmp_path: Path) -> None:
    """A server that accepts connections and never answers: every call ends at its deadline."""

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    options: dict[str, Any] = {
        "endpoint": f"http://127.0.0.1:{port}",
        "bucket": "azul",
        "access_key": "test",
        "secret_key": "test",
        "region": "us-east-1",
        "spool_dir": tmp_path / "spool",
        "call_timeout": 0.3,
        "stall_timeout": 0.3,
        "health_timeout": 0.3,
    }
    digest = hashlib.sha256(b"x").hexdigest()
    with trio.fail_after(5):
        with pytest.raises(UpstreamError, match=r"did not answer within 0\.3 s"):
            async with open_s3_store(**options):
                pass
        async with open_s3_store(**options, check_at_start=False) as store:
            with pytest.raises(UpstreamError, match=r"did not answer within 0\.3 s: cannot check"):
                await store.size(SOURCE, LABEL, digest)
            with pytest.raises(UpstreamError, match=r"did not answer within 0\.3 s: cannot read"):
                await read_all(store, digest, 0, 1)
            path, digest = spool(store, b"x")
            with pytest.raises(UpstreamError, match="did not answer"):
                await store.put_file(SOURCE, LABEL, digest, path)
            assert (
                await store.health() == f"S3 at {options['endpoint']} did not answer within 0.3 s"
            )


@ABANDONS
async def test_s3_that_stalls_mid_transfer(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Answers HEAD (404) and starts a GET answer, then goes quiet; never reads a PUT body."""

    async def stall(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(65536)
            if head.startswith(b"HEAD"):
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            elif head.startswith(b"GET"):
                await stream.send_all(
                    b"HTTP/1.1 206 Partial Content\r\nContent-Length: 1000\r\n"
                    b"Content-Range: bytes 0-999/1000\r\n\r\n" + b"x" * 10
                )
            await trio.sleep_forever()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, stall, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    async with open_s3_store(
        endpoint=f"http://127.0.0.1:{port}",
        bucket="azul",
        access_key="test",
        secret_key="test",
        region="us-east-1",
        spool_dir=tmp_path / "spool",
        call_timeout=0.3,
        stall_timeout=0.3,
        check_at_start=False,
    ) as store:
        with trio.fail_after(5):
            digest = hashlib.sha256(b"x").hexdigest()
            with pytest.raises(UpstreamError, match=r"stalled for 0\.3 s: cannot read blob"):
                await read_all(store, digest, 0, 1000)
            path, digest = spool(store, os.urandom(6 * MiB))
            with pytest.raises(
                UpstreamError, match=r"did not answer within 0\.3 s: cannot store blob"
            ):
                await store.put_file(SOURCE, LABEL, digest, path)
    gc.collect()


# --------------------------------------------------------------------------------------------
# Cost


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
async def test_50_mib_round_trip_throughput_and_memory(store: S3BlobStore) -> None:
    """Streams both ways: the process never holds the blob (50 MiB) in memory."""
    size = 50 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    path = store.spool_dir / "upload-big"
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(block)
            digest.update(block)
    sha = digest.hexdigest()

    peak_rss = 0

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, _rss())
            await trio.sleep(0.005)

    base_rss = _rss()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_rss)
        started = time.perf_counter()
        await store.put_file(SOURCE, "big", sha, path)
        put_seconds = time.perf_counter() - started
        started = time.perf_counter()
        check = hashlib.sha256()
        async for chunk in store.read(SOURCE, "big", sha, 0, size):
            check.update(chunk)
        get_seconds = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    assert check.hexdigest() == sha
    rss_growth = peak_rss - base_rss

    # Python-level allocations, traced (slower), on a second round trip under another label.
    with path.open("wb") as out:  # put_file consumed the first one
        for _ in range(size // MiB):
            out.write(block)
    tracemalloc.start()
    try:
        await store.put_file(SOURCE, "big2", sha, path)
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        async for _chunk in store.read(SOURCE, "big2", sha, 0, size):
            pass
        get_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    print(
        f"\n50 MiB via moto: PUT {put_seconds:.2f} s ({size / MiB / put_seconds:.0f} MiB/s), "
        f"GET {get_seconds:.2f} s ({size / MiB / get_seconds:.0f} MiB/s); "
        f"peak RSS growth {rss_growth / MiB:.1f} MiB; traced peak PUT {put_peak / MiB:.1f} MiB, "
        f"GET {get_peak / MiB:.1f} MiB"
    )
    assert put_peak < 16 * MiB
    assert get_peak < 4 * MiB
    assert rss_growth < 40 * MiB
