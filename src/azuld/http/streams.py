"""`/api/v3/stream` and the seed's `/api/v1/data`: blobs by source, label and sha256, through the
`BlobStore` port. Uploads go through Quart (streamed to a spool file, hashed and identified on the
way in); downloads (whole or one `Range`) and the HEAD that checks a blob exists are hot routes
(`azuld.http.hot`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import quart
import trio
from quart import Response

from azuld.core.keys import validate_name
from azuld.core.params import parse_bool
from azuld.core.ranges import parse_range
from azuld.core.validation import SHA256_PATTERN
from azuld.errors import BadRequest, NotFound, Unprocessable, storage_error
from azuld.http.asgi import Front, Reply, Request, bytes_reply
from azuld.http.steps import Services
from azuld.identify import FileHasher, identify_path, to_datastream
from azuld.models.events import Datastream
from azuld.models.responses import DataResponse

__all__ = ["download", "upload", "v1_upload"]

_OCTETS = b"application/octet-stream"

_SPOOL_FLUSH_BYTES = 1024 * 1024
# Identification holds libmagic handles per thread (tens of MiB each): a few threads do it all.
_IDENTIFY_LIMITER = trio.CapacityLimiter(2)


def _bool_arg(name: str) -> bool:
    raw = quart.request.args.get(name)
    if raw is None:
        return False
    try:
        return parse_bool(name, raw)
    except Unprocessable as exc:
        raise BadRequest(exc.detail) from None


def _write_and_hash(fd: int, hasher: FileHasher, data: bytes) -> None:
    """Runs in a worker thread: hashlib and os.write both release the GIL on big buffers."""
    hasher.update(data)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def _spool(spool_dir: Path, hasher: FileHasher) -> Path:
    """Stream the request body to a spool file, hashing it on the way. Never holds it whole."""
    fd, name = tempfile.mkstemp(prefix="upload-", dir=spool_dir)
    path = Path(name)
    try:
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in quart.request.body:
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _SPOOL_FLUSH_BYTES:
                await trio.to_thread.run_sync(_write_and_hash, fd, hasher, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            await trio.to_thread.run_sync(_write_and_hash, fd, hasher, b"".join(pending))
    except OSError as exc:
        await trio.Path(path).unlink(missing_ok=True)
        raise storage_error("cannot spool the upload", exc) from exc
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.Path(path).unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


async def upload(svc: Services, source: str, label: str) -> Response:
    return await _upload(svc, source, label, quart.request.args.get("expected-sha256", ""))


async def v1_upload(svc: Services, sha256: str) -> Response:
    """The seed's `POST api/v1/data/<hash>` = `POST /api/v3/stream/<source>/<label>` with
    `expected-sha256=<hash>`; `source` and `label` come from the query (`default`, `content`)."""
    source = quart.request.args.get("source", "default")
    label = quart.request.args.get("label", "content")
    return await _upload(svc, source, label, sha256)


async def _upload(svc: Services, source: str, label: str, expected: str) -> Response:
    validate_name("source", source)
    validate_name("label", label)
    skip_identify = _bool_arg("skip-identify")
    if skip_identify and not expected:
        raise BadRequest("must supply sha256 when skipping identify")
    if expected and not SHA256_PATTERN.fullmatch(expected):
        raise BadRequest(f"expected-sha256 {expected!r} is not 64 lowercase hex characters")
    quart.request.max_content_length = svc.settings.server.max_upload_bytes
    quart.request.body_timeout = int(svc.settings.server.upload_body_timeout_seconds)

    hasher = FileHasher(sha256_only=skip_identify)
    path = await _spool(svc.blobs.spool_dir, hasher)
    try:
        digests = hasher.digests()
        if digests.size == 0:
            raise BadRequest("no content in request body")
        if expected and expected != digests.sha256:
            raise BadRequest(f"sha256 mismatch - supplied: {expected} vs calc: {digests.sha256}")
        if skip_identify:
            stream = Datastream(label="content", sha256=digests.sha256, size=digests.size)
        else:
            found = await trio.to_thread.run_sync(identify_path, path, limiter=_IDENTIFY_LIMITER)
            # As Go: "content" whatever the URL label; the runner sets its own.
            stream = to_datastream("content", digests, found)
        await svc.blobs.put_file(source, label, digests.sha256, path)
        svc.metrics.upload_bytes.inc(digests.size)
    finally:
        with trio.CancelScope(shield=True):
            await trio.Path(path).unlink(missing_ok=True)
    return Response(msgspec.json.encode(DataResponse(data=stream)), content_type="application/json")


async def download(front: Front, request: Request, parts: list[str]) -> Reply:
    """A blob, or the `Range` of it asked for; `HEAD` says only whether it exists."""
    source, label, sha256 = parts
    validate_name("source", source)
    validate_name("label", label)
    if not SHA256_PATTERN.fullmatch(sha256):
        raise BadRequest(f"{sha256!r} is not a sha256 (64 lowercase hex characters)")
    blobs = front.svc.blobs
    headers = [(b"accept-ranges", b"bytes")]
    range_header = request.headers.get(b"range")
    chunks: AsyncIterator[bytes]
    if request.method == "GET" and range_header is None:
        # The common download: found and opened in one request (one S3 GET, no HEAD).
        whole = await blobs.read_whole(source, label, sha256)
        if whole is None:
            raise NotFound(f"no blob {sha256} under {source}/{label}")
        size, chunks = whole
        start, length, status = 0, size, 200
    else:
        found = await blobs.size(source, label, sha256)
        if request.method == "HEAD":
            reply = bytes_reply(_OCTETS, b"")
            reply.status = 200 if found is not None else 404
            return reply
        if found is None:
            raise NotFound(f"no blob {sha256} under {source}/{label}")
        size = found
        if range_header is None:
            start, length, status = 0, size, 200
        else:
            start, length = parse_range(range_header, size)
            status = 206
            headers.append(
                (b"content-range", b"bytes %d-%d/%d" % (start, start + length - 1, size))
            )
        chunks = blobs.read(source, label, sha256, start, length)
    headers += [(b"content-length", b"%d" % length), (b"content-type", _OCTETS)]
    front.svc.metrics.download_bytes.inc(length)
    # The first read before the reply starts: a blob gone meanwhile is still a clean 404.
    first = await anext(chunks, b"")
    if len(first) < length:
        return Reply(status, headers, first, chunks)
    # All of it at once (any small blob): one send. The reader ends (and closes its file).
    await anext(chunks, b"")
    return Reply(status, headers, first)
