"""`/api/v3/stream` and the seed's `/api/v1/data`: blobs by source, label and sha256, through the
`BlobStore` port. Hot routes (`azuld.http.hot`), uploads included.

An upload is read here with its own limits, `server.max_upload_bytes` (413) and
`server.upload_body_timeout_seconds` (408), whether it comes with a Content-Length or chunked
(the event-body limit is for the other routes). A body of up to `MEMORY_BODY_BYTES` is kept in
memory (at most `MEMORY_TOTAL_BYTES` across the uploads in flight) and hashed as it arrives; one
worker-thread hop then identifies and stores it (`BlobStore.put_bytes`). A larger body is
written to a spool file as it arrives, hashed in the worker threads that write it, then
identified and stored (`BlobStore.put_file`). Either way a 200 means the blob is durable.
Downloads (whole or one `Range`) and the HEAD that checks a blob exists stream from the store.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import msgspec
import trio
from werkzeug.exceptions import RequestTimeout

from azuld.core.keys import validate_name
from azuld.core.params import parse_bool
from azuld.core.ranges import parse_range
from azuld.core.validation import SHA256_PATTERN
from azuld.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    storage_error,
)
from azuld.http.asgi import ClientGone, Front, Query, Reply, Request, bytes_reply
from azuld.identify import FileDigests, FileHasher, identify_bytes, identify_path, to_datastream
from azuld.models.events import Datastream
from azuld.models.responses import DataResponse

__all__ = ["MEMORY_BODY_BYTES", "MEMORY_TOTAL_BYTES", "download", "upload", "v1_upload"]

_OCTETS = b"application/octet-stream"
_JSON = b"application/json"

# Bodies up to this size are held in memory and written once (most uploads: one hop, no spool
# file); larger ones are spooled to disk as they arrive.
MEMORY_BODY_BYTES = 1024 * 1024
# What all the uploads in flight may hold in memory together; beyond it, bodies are spooled.
MEMORY_TOTAL_BYTES = 64 * 1024 * 1024
_SPOOL_FLUSH_BYTES = 1024 * 1024
_WRITE_BYTES = 256 * 1024
# Threads identifying spooled uploads at once (they share `azuld.identify`'s libmagic handles).
_IDENTIFY_LIMITER = trio.CapacityLimiter(2)


class _MemoryBudget:
    """The bytes of upload bodies held in memory, against `MEMORY_TOTAL_BYTES`."""

    def __init__(self, total_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.held_bytes = 0

    def take(self, size: int) -> bool:
        if self.held_bytes + size > self.total_bytes:
            return False
        self.held_bytes += size
        return True

    def give(self, size: int) -> None:
        self.held_bytes -= size


_MEMORY = _MemoryBudget(MEMORY_TOTAL_BYTES)


def _bool_arg(query: Query, name: str) -> bool:
    """The first `name` in the query as a Go bool; absent is false."""
    for key, value in query.pairs:
        if key == name:
            try:
                return parse_bool(name, value)
            except Unprocessable as exc:
                raise BadRequest(exc.detail) from None
    return False


def _write_and_hash(fd: int, hasher: FileHasher | None, data: bytes) -> None:
    """Runs in a worker thread: hashlib and os.write both release the GIL on big buffers. Writes
    in pieces of `_WRITE_BYTES` (as `azuld.storage.local` does, for the kernel's CPU)."""
    if hasher is not None:
        hasher.update(data)
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written : written + _WRITE_BYTES])


class _Body:
    """An upload body as it arrives: in memory while it is small (and the budget allows), then
    in a spool file. `discard` gives back the memory and removes the spool file."""

    __slots__ = ("_chunks", "_fd", "_held", "_pending", "_spool_dir", "hasher", "path", "size")

    def __init__(self, spool_dir: Path, hasher: FileHasher) -> None:
        self._spool_dir = spool_dir
        self.hasher = hasher
        self._chunks: list[bytes] = []  # held in memory, or waiting to be written
        self._pending = 0  # bytes in `_chunks` not yet written to the spool file
        self._held = 0  # bytes taken from the memory budget
        self._fd = -1
        self.path: Path | None = None  # the spool file, once the body went to disk
        self.size = 0

    async def receive(self, request: Request, limit_bytes: int, timeout_seconds: float) -> None:
        """Read the whole body.

        Raises:
            PayloadTooLarge: it is (or says it is) over `limit_bytes` (413).
            RequestTimeout: it did not all arrive within `timeout_seconds` (408).
            ClientGone: the client disconnected.
            UpstreamError: the spool file cannot be written (503, 507 when the disk is full).
        """
        declared = request.headers.get(b"content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit_bytes:
            raise _too_large(limit_bytes)
        receive = request.receive
        # An absolute deadline for the whole body, as the event bodies have.
        with trio.CancelScope(deadline=trio.current_time() + timeout_seconds) as timeout:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                chunk = message.get("body", b"")
                if chunk:
                    self.size += len(chunk)
                    if self.size > limit_bytes:
                        raise _too_large(limit_bytes)
                    await self._add(chunk)
                if not message.get("more_body", False):
                    break
        if timeout.cancelled_caught:
            raise RequestTimeout()
        if self.path is not None:
            if self._chunks:
                await self._flush()
            os.close(self._fd)
            self._fd = -1

    async def _add(self, chunk: bytes) -> None:
        if self.path is None:
            if self.size <= MEMORY_BODY_BYTES and _MEMORY.take(len(chunk)):
                self._held += len(chunk)
                self.hasher.update(chunk)  # on the event loop: small pieces, as they arrive
                self._chunks.append(chunk)
                return
            await self._open_spool()
        self._chunks.append(chunk)
        self._pending += len(chunk)
        if self._pending >= _SPOOL_FLUSH_BYTES:
            await self._flush()

    async def _open_spool(self) -> None:
        """Go on in a spool file: what is held so far (hashed already) is written first."""
        try:
            self._fd, name = await trio.to_thread.run_sync(
                partial(tempfile.mkstemp, prefix="upload-", dir=self._spool_dir)
            )
        except OSError as exc:
            raise storage_error("cannot spool the upload", exc) from exc
        self.path = Path(name)
        if self._chunks:
            held, self._chunks = b"".join(self._chunks), []
            await self._write(held, None)
        _MEMORY.give(self._held)
        self._held = 0

    async def _flush(self) -> None:
        data, self._chunks, self._pending = b"".join(self._chunks), [], 0
        await self._write(data, self.hasher)

    async def _write(self, data: bytes, hasher: FileHasher | None) -> None:
        try:
            await trio.to_thread.run_sync(_write_and_hash, self._fd, hasher, data)
        except OSError as exc:
            raise storage_error("cannot spool the upload", exc) from exc

    def data(self) -> bytes:
        """The body held in memory (when `path` is None)."""
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def discard(self) -> None:
        """Give back the memory, close and remove the spool file (shielded: it always runs)."""
        _MEMORY.give(self._held)
        self._held = 0
        self._chunks = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.path is not None:
            with trio.CancelScope(shield=True):
                await trio.Path(self.path).unlink(missing_ok=True)


def _too_large(limit_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload is over server.max_upload_bytes ({limit_bytes} bytes)")


async def upload(front: Front, request: Request, parts: list[str]) -> Reply:
    source, label = parts
    return await _upload(front, request, source, label, request.query.get("expected-sha256"))


async def v1_upload(front: Front, request: Request, parts: list[str]) -> Reply:
    """The seed's `POST api/v1/data/<hash>` = `POST /api/v3/stream/<source>/<label>` with
    `expected-sha256=<hash>`; `source` and `label` come from the query (`default`, `content`)."""
    source = request.query.get("source", "default")
    label = request.query.get("label", "content")
    return await _upload(front, request, source, label, parts[0])


def _identified(data: bytes, digests: FileDigests) -> Datastream:
    # As Go: "content" whatever the URL label; the runner sets its own.
    return to_datastream("content", digests, identify_bytes(data))


def _identified_file(path: Path, digests: FileDigests) -> Datastream:
    return to_datastream("content", digests, identify_path(path))


async def _upload(front: Front, request: Request, source: str, label: str, expected: str) -> Reply:
    validate_name("source", source)
    validate_name("label", label)
    skip_identify = _bool_arg(request.query, "skip-identify")
    if skip_identify and not expected:
        raise BadRequest("must supply sha256 when skipping identify")
    if expected and not SHA256_PATTERN.fullmatch(expected):
        raise BadRequest(f"expected-sha256 {expected!r} is not 64 lowercase hex characters")
    svc = front.svc
    server = svc.settings.server
    blobs = svc.blobs
    body = _Body(blobs.spool_dir, FileHasher(sha256_only=skip_identify))
    try:
        await body.receive(request, server.max_upload_bytes, server.upload_body_timeout_seconds)
        digests = body.hasher.digests()
        if digests.size == 0:
            raise BadRequest("no content in request body")
        sha256 = digests.sha256
        if expected and expected != sha256:
            raise BadRequest(f"sha256 mismatch - supplied: {expected} vs calc: {sha256}")
        if body.path is None:
            data = body.data()
            if skip_identify:
                work = partial(Datastream, label="content", sha256=sha256, size=digests.size)
            else:
                work = partial(_identified, data, digests)
            stream = await blobs.put_bytes(source, label, sha256, data, work)
        else:
            if skip_identify:
                stream = Datastream(label="content", sha256=sha256, size=digests.size)
            else:
                stream = await trio.to_thread.run_sync(
                    _identified_file, body.path, digests, limiter=_IDENTIFY_LIMITER
                )
            await blobs.put_file(source, label, sha256, body.path)
    finally:
        await body.discard()
    svc.metrics.upload_bytes.inc(digests.size)
    return bytes_reply(_JSON, msgspec.json.encode(DataResponse(data=stream)))


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
