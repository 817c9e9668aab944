"""`/api/v3/stream`: upload blobs (hashed and identified on the way in). Downloads (with a single
`Range`) and the HEAD that checks a blob exists are served as raw ASGI by `azuld.http.hot`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec
import trio
from quart import Blueprint, Response, request

from azuld.core.keys import validate_name
from azuld.core.params import parse_bool
from azuld.core.validation import SHA256_PATTERN
from azuld.errors import BadRequest, Unprocessable, storage_error
from azuld.http.app import services
from azuld.identify import FileHasher, identify_path, to_datastream
from azuld.models.events import Datastream
from azuld.models.responses import DataResponse

__all__ = ["blueprint"]

blueprint = Blueprint("streams", __name__)

_SPOOL_FLUSH_BYTES = 1024 * 1024
# Identification holds libmagic handles per thread (tens of MiB each): a few threads do it all.
_IDENTIFY_LIMITER = trio.CapacityLimiter(2)


def _bool_arg(name: str) -> bool:
    raw = request.args.get(name)
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
        async for chunk in request.body:
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


@blueprint.post("/api/v3/stream/<source>/<label>")
async def upload(source: str, label: str) -> Response:
    return await _upload(source, label, request.args.get("expected-sha256", ""))


@blueprint.post("/api/v1/data/<sha256>")
async def v1_upload(sha256: str) -> Response:
    """The seed's `POST api/v1/data/<hash>` = `POST /api/v3/stream/<source>/<label>` with
    `expected-sha256=<hash>`; `source` and `label` come from the query (`default`, `content`)."""
    source = request.args.get("source", "default")
    label = request.args.get("label", "content")
    return await _upload(source, label, sha256)


async def _upload(source: str, label: str, expected: str) -> Response:
    validate_name("source", source)
    validate_name("label", label)
    svc = services()
    skip_identify = _bool_arg("skip-identify")
    if skip_identify and not expected:
        raise BadRequest("must supply sha256 when skipping identify")
    if expected and not SHA256_PATTERN.fullmatch(expected):
        raise BadRequest(f"expected-sha256 {expected!r} is not 64 lowercase hex characters")
    request.max_content_length = svc.settings.server.max_upload_bytes
    request.body_timeout = int(svc.settings.server.upload_body_timeout_seconds)

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
        svc.dispatcher.metrics.upload_bytes.inc(digests.size)
    finally:
        with trio.CancelScope(shield=True):
            await trio.Path(path).unlink(missing_ok=True)
    return Response(msgspec.json.encode(DataResponse(data=stream)), content_type="application/json")
