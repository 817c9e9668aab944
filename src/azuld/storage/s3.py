"""S3 blob store: keys `[<prefix>/]<source>/<label>/<sha256>` (Go's), read fallback `//<sha256>`.

Runs natively on trio through aiobotocore's httpx backend (`HttpxSession`; no asyncio bridge).

Uploads stream the spooled file from disk, chunk by chunk in worker threads, and never hold it
whole: one `PutObject` below `multipart_threshold` (checked by S3 against the blob's SHA-256,
which the caller already knows), a multipart upload above it (parts of `part_bytes` or more,
each with a `Content-MD5`, a few in parallel; aborted on failure or cancellation). A blob that
already exists at its key with the same size is not sent again (content-addressed). Downloads
are one ranged `GetObject` read in `read_chunk_bytes` pieces.

Every request runs under a trio deadline: `call_timeout` for a metadata request (HEAD, create
bucket, start/complete a multipart upload); `stall_timeout` for data transfers, a deadline that
moves on each chunk sent or received, so a slow but moving transfer is fine and a stalled one
fails. botocore's own retries are off; transient failures (connection refused or dropped, 5xx,
throttling) are retried here a few times with a short backoff inside those deadlines.

Failures reach the caller as `UpstreamError` (HTTP 503) saying what failed and where; a missing
blob is `NotFound` (or `None` from `size`), never a 503 (`s3_failures.py` tells them apart). The
upload bodies read from the spool are in `s3_bodies.py`.
"""

from __future__ import annotations

import base64
import logging
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from aiobotocore.httpxsession import HttpxSession  # type: ignore[import-untyped]
from aiobotocore.session import AioSession, get_session  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from azuld.errors import NotFound, UpstreamError
from azuld.storage.s3_bodies import FileRegion, md5_of, work_and_spool
from azuld.storage.s3_failures import Missing, Transient, classify, error_code, upstream_error

__all__ = ["S3BlobStore", "open_s3_store"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 16 * MiB
PART_BYTES = 8 * MiB  # S3's minimum part is 5 MiB (except the last); at most 10 000 parts
MAX_PARTS = 10_000
PART_CONCURRENCY = 4
UPLOAD_CHUNK_BYTES = 1 * MiB  # one worker-thread read per chunk sent
READ_CHUNK_BYTES = 256 * 1024  # what `read` yields (as the local store)
CALL_TIMEOUT = 10.0
STALL_TIMEOUT = 30.0
HEALTH_TIMEOUT = 2.0
ATTEMPTS = 3
_BACKOFF = (0.1, 0.4, 1.0)
# `put_bytes` hops at once (each spools a blob; the caller's work in them is bounded by its
# own means).
_PUT_LIMITER = trio.CapacityLimiter(16)
_CLOSE_TIMEOUT = 5.0


class S3BlobStore:
    """`BlobStore` on one S3 bucket. Build it with `open_s3_store` (which owns the client)."""

    def __init__(
        self,
        client: Any,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        spool_dir: Path,
        prefix: str = "",
        call_timeout: float = CALL_TIMEOUT,
        stall_timeout: float = STALL_TIMEOUT,
        health_timeout: float = HEALTH_TIMEOUT,
        attempts: int = ATTEMPTS,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_bytes: int = PART_BYTES,
        part_concurrency: int = PART_CONCURRENCY,
        upload_chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        read_chunk_bytes: int = READ_CHUNK_BYTES,
    ) -> None:
        if part_bytes < 5 * MiB:
            raise ValueError("S3 parts are at least 5 MiB")
        self._client = client
        self.endpoint = endpoint
        self.bucket = bucket
        self.region = region
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.spool_dir = spool_dir
        self.call_timeout = call_timeout
        self.stall_timeout = stall_timeout
        self.health_timeout = health_timeout
        self.attempts = max(1, attempts)
        self.multipart_threshold = max(multipart_threshold, 5 * MiB)
        self.part_bytes = part_bytes
        self.part_concurrency = max(1, part_concurrency)
        self.upload_chunk_bytes = upload_chunk_bytes
        self.read_chunk_bytes = read_chunk_bytes
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stray in self.spool_dir.iterdir():  # left by a crash mid-upload
            stray.unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------
    # Keys and requests

    def key(self, source: str, label: str, sha256: str) -> str:
        """Go's key `<source>/<label>/<sha256>` after `<prefix>/` if there is a prefix.

        `("", "")` gives Go's legacy key `//<sha256>` (`<prefix>///<sha256>` with a prefix).
        """
        return f"{self.prefix}{source}/{label}/{sha256}"

    def _keys(self, source: str, label: str, sha256: str) -> list[str]:
        primary, fallback = self.key(source, label, sha256), self.key("", "", sha256)
        return [primary] if primary == fallback else [primary, fallback]

    async def _request(
        self,
        what: str,
        call: Callable[[trio.CancelScope], Awaitable[T]],
        *,
        stall: bool = False,
        attempts: int | None = None,
        limit: float | None = None,
    ) -> T:
        """Run `call(scope)` under a deadline, retrying transient failures.

        Raises `Missing` for 404-like answers, `UpstreamError` for anything else that fails.
        With `stall=True` the deadline is `stall_timeout` and `call` may push it on (progress).
        """
        if limit is None:
            limit = self.stall_timeout if stall else self.call_timeout
        tries = attempts if attempts is not None else self.attempts
        for attempt in range(tries):
            with trio.CancelScope(deadline=trio.current_time() + limit) as scope:
                try:
                    return await call(scope)
                except (BotoCoreError, ClientError) as exc:
                    cause, failure = exc, classify(self.endpoint, what, exc)
            if scope.cancelled_caught:
                raise UpstreamError(
                    f"S3 at {self.endpoint} did not answer within {limit:g} s: cannot {what}"
                )
            if isinstance(failure, Transient):
                if attempt + 1 < tries:
                    log.debug("S3: retrying %s after: %s", what, failure.error)
                    await trio.sleep(
                        _BACKOFF[min(attempt, len(_BACKOFF) - 1)] * random.uniform(0.5, 1)
                    )
                    continue
                raise failure.error from cause
            raise failure from cause
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------------------------------
    # Bucket

    async def ensure_bucket(self) -> None:
        """Create the bucket if missing; `UpstreamError` if S3 cannot be reached or refuses."""

        async def head(_: trio.CancelScope) -> None:
            await self._client.head_bucket(Bucket=self.bucket)

        try:
            await self._request(f"check bucket {self.bucket}", head)
            return
        except Missing:
            pass

        async def create(_: trio.CancelScope) -> None:
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region and self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await self._client.create_bucket(**kwargs)
            except ClientError as exc:
                if error_code(exc)[0] != "BucketAlreadyOwnedByYou":  # lost a race: fine
                    raise

        try:
            await self._request(f"create bucket {self.bucket}", create)
        except Missing as exc:  # pragma: no cover - a 404 to CreateBucket
            raise UpstreamError(
                f"S3 at {self.endpoint} cannot create bucket {self.bucket}"
            ) from exc
        log.info("created S3 bucket %s at %s", self.bucket, self.endpoint)

    async def health(self) -> str | None:
        with trio.move_on_after(self.health_timeout):
            try:

                async def head(_: trio.CancelScope) -> None:
                    await self._client.head_bucket(Bucket=self.bucket)

                await self._request(
                    f"check bucket {self.bucket}", head, attempts=1, limit=self.health_timeout
                )
                return None
            except Missing:
                try:
                    await self.ensure_bucket()  # moto or an admin dropped it: put it back
                except UpstreamError as exc:
                    return f"S3 bucket {self.bucket} is missing and cannot be created: {exc}"
                return None
            except UpstreamError as exc:
                return str(exc)
        return f"S3 at {self.endpoint} did not answer within {self.health_timeout:g} s"

    # ----------------------------------------------------------------------------------------
    # Reads

    async def _head_size(self, key: str) -> int | None:
        async def head(_: trio.CancelScope) -> int:
            answer = await self._client.head_object(Bucket=self.bucket, Key=key)
            return int(answer["ContentLength"])

        try:
            return await self._request(f"check blob {key}", head)
        except Missing:
            return None

    async def copy(self, from_source: str, to_source: str, label: str, sha256: str) -> bool:
        """Server-side copy to `<to_source>/<label>/<sha256>` (nothing passes through azuld)."""
        target = self.key(to_source, label, sha256)
        if await self._head_size(target) is not None:
            return True
        for key in self._keys(from_source, label, sha256):
            if await self._head_size(key) is None:
                continue

            async def copy(_: trio.CancelScope, key: str = key) -> None:
                await self._client.copy_object(
                    Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": key}
                )

            await self._request(f"copy blob {key} to {target}", copy)
            return True
        return False

    async def size(self, source: str, label: str, sha256: str) -> int | None:
        for key in self._keys(source, label, sha256):
            found = await self._head_size(key)
            if found is not None:
                return found
        return None

    async def _open_range(self, key: str, start: int, length: int) -> Any:
        async def get(_: trio.CancelScope) -> Any:
            return await self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )

        return await self._request(f"read blob {key}", get, stall=True)

    async def read(
        self, source: str, label: str, sha256: str, start: int, length: int
    ) -> AsyncIterator[bytes]:
        answer: Any = None
        found_key = ""
        for key in self._keys(source, label, sha256):
            if length <= 0:  # nothing to fetch: only say whether it exists
                if await self._head_size(key) is not None:
                    return
                continue
            try:
                answer = await self._open_range(key, start, length)
            except Missing:
                continue
            found_key = key
            break
        if answer is None:
            raise NotFound(f"no blob {source}/{label}/{sha256}")
        status = int(answer.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if status != 206 and start > 0:
            async with answer["Body"]:
                raise UpstreamError(
                    f"S3 at {self.endpoint} ignored the Range: cannot read blob {found_key}"
                )
        async with aclosing(self._stream(answer, found_key, length)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def read_whole(
        self, source: str, label: str, sha256: str
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        """One GET (no HEAD first): its `Content-Length` is the size."""
        for key in self._keys(source, label, sha256):

            async def get(_: trio.CancelScope, key: str = key) -> Any:
                return await self._client.get_object(Bucket=self.bucket, Key=key)

            try:
                answer = await self._request(f"read blob {key}", get, stall=True)
            except Missing:
                continue
            size = int(answer["ContentLength"])
            return size, self._stream(answer, key, size)
        return None

    async def _stream(self, answer: Any, key: str, length: int) -> AsyncGenerator[bytes, None]:
        """The `length` bytes of a GET's body, in chunks; the response closed at the end."""
        what = f"read blob {key}"
        async with answer["Body"] as body:
            remaining = length
            while remaining > 0:
                try:
                    with trio.fail_after(self.stall_timeout):
                        chunk: bytes = await body.read(min(self.read_chunk_bytes, remaining))
                except trio.TooSlowError:
                    raise UpstreamError(
                        f"S3 at {self.endpoint} stalled for {self.stall_timeout:g} s: cannot {what}"
                    ) from None
                except (BotoCoreError, ClientError) as exc:
                    raise upstream_error(self.endpoint, what, exc) from exc
                if not chunk:
                    raise UpstreamError(
                        f"S3 at {self.endpoint} ended {what} {remaining} bytes short"
                    )
                remaining -= len(chunk)
                yield chunk
            # Read to the end (the ranged answer has exactly `length` bytes): that finishes
            # httpx's chain of byte iterators. A reader stopped early (client gone, cancelled)
            # leaves them to the garbage collector, and trio then emits a ResourceWarning;
            # closing the response (`async with`) still closes the connection.
            with trio.move_on_after(self.stall_timeout):
                try:
                    await body.read(1)
                except (BotoCoreError, ClientError) as exc:  # we have every byte anyway
                    log.debug("S3: after %s: %s", what, exc)

    # ----------------------------------------------------------------------------------------
    # Writes

    async def put_file(self, source: str, label: str, sha256: str, path: Path) -> None:
        """Upload the spooled file, then delete it. On failure the file is left to the caller."""
        key = self.key(source, label, sha256)
        try:
            size = (await trio.Path(path).stat()).st_size
        except OSError as exc:
            raise UpstreamError(
                f"cannot read spooled blob {sha256}: {exc.strerror or exc}"
            ) from exc
        if await self._head_size(key) != size:
            try:
                await self._upload(key, sha256, path, size)
            except Missing:  # the bucket went away (an S3 restart, an admin): once more
                await self.ensure_bucket()
                try:
                    await self._upload(key, sha256, path, size)
                except Missing as exc:
                    raise UpstreamError(
                        f"S3 at {self.endpoint} lost bucket {self.bucket} while storing {key}"
                    ) from exc
        with trio.CancelScope(shield=True):
            await trio.Path(path).unlink(missing_ok=True)

    async def put_bytes(
        self, source: str, label: str, sha256: str, data: bytes, work: Callable[[], T]
    ) -> T:
        """`work()` and a spool file of `data` in one worker-thread hop, then `put_file`."""
        result, path = await trio.to_thread.run_sync(
            work_and_spool, work, data, self.spool_dir, limiter=_PUT_LIMITER
        )
        try:
            await self.put_file(source, label, sha256, path)
        finally:
            with trio.CancelScope(shield=True):
                await trio.Path(path).unlink(missing_ok=True)
        return result

    async def _upload(self, key: str, sha256: str, path: Path, size: int) -> None:
        if size < self.multipart_threshold:
            await self._put_single(key, sha256, path, size)
        else:
            await self._put_multipart(key, path, size)

    async def _put_single(self, key: str, sha256: str, path: Path, size: int) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()

        async def put(scope: trio.CancelScope) -> None:
            body = FileRegion(path, 0, size, self._progress(scope), self.upload_chunk_bytes)
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body if size else b"",
                ContentLength=size,
                ContentType="application/octet-stream",
                ChecksumSHA256=checksum,  # S3 checks the bytes against the content address
            )

        await self._request(f"store blob {key} ({size} bytes)", put, stall=True)

    def _progress(self, scope: trio.CancelScope) -> Callable[[], None]:
        def moved() -> None:
            scope.deadline = trio.current_time() + self.stall_timeout

        return moved

    async def _put_multipart(self, key: str, path: Path, size: int) -> None:
        part_bytes = max(self.part_bytes, math.ceil(size / MAX_PARTS / MiB) * MiB)
        parts = [
            (number, offset, min(part_bytes, size - offset))
            for number, offset in enumerate(range(0, size, part_bytes), start=1)
        ]

        async def start(_: trio.CancelScope) -> str:
            answer = await self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType="application/octet-stream"
            )
            return str(answer["UploadId"])

        upload_id = await self._request(f"start a multipart upload of {key}", start)
        try:
            etags = await self._upload_parts(key, upload_id, path, parts)

            async def complete(_: trio.CancelScope) -> None:
                await self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]
                    },
                )

            # S3 may take a while to assemble a big object (it sends spaces meanwhile).
            await self._request(
                f"complete the multipart upload of {key}",
                complete,
                limit=self.call_timeout + self.stall_timeout,
            )
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(self.call_timeout):
                await self._abort(key, upload_id)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            # A bucket lifecycle rule for incomplete uploads is the backstop.
            log.warning("S3: cannot abort multipart upload %s of %s: %s", upload_id, key, exc)

    async def _upload_parts(
        self, key: str, upload_id: str, path: Path, parts: list[tuple[int, int, int]]
    ) -> list[str]:
        etags = [""] * len(parts)
        failures: list[Exception] = []
        limiter = trio.CapacityLimiter(self.part_concurrency)

        async def one(number: int, offset: int, length: int) -> None:
            async with limiter:
                try:
                    etags[number - 1] = await self._upload_part(
                        key, upload_id, path, number, offset, length
                    )
                except Exception as exc:  # first failure wins; the rest are cancelled
                    failures.append(exc)
                    nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for number, offset, length in parts:
                nursery.start_soon(one, number, offset, length)
        if failures:
            raise failures[0]
        return etags

    async def _upload_part(
        self, key: str, upload_id: str, path: Path, number: int, offset: int, length: int
    ) -> str:
        md5 = await trio.to_thread.run_sync(md5_of, path, offset, length, self.upload_chunk_bytes)

        async def put(scope: trio.CancelScope) -> str:
            body = FileRegion(path, offset, length, self._progress(scope), self.upload_chunk_bytes)
            answer = await self._client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=length,
                ContentMD5=md5,
            )
            return str(answer["ETag"])

        return await self._request(f"store part {number} of {key}", put, stall=True)


def _warm_up(session: AioSession) -> None:
    """Load botocore's S3 model and anyio's trio backend (runs in a worker thread: P10)."""
    import anyio._backends._trio  # noqa: F401  # imported lazily by anyio, ~45 ms

    loader = session.get_component("data_loader")
    loader.load_service_model("s3", "service-2")
    loader.load_service_model("s3", "endpoint-rule-set-1")
    for name in ("endpoints", "partitions", "_retry", "sdk-default-configuration"):
        loader.load_data(name)


@asynccontextmanager
async def open_s3_store(
    *,
    endpoint: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str,
    spool_dir: Path,
    prefix: str = "",
    call_timeout: float = CALL_TIMEOUT,
    stall_timeout: float = STALL_TIMEOUT,
    health_timeout: float = HEALTH_TIMEOUT,
    check_at_start: bool = True,
    **tuning: Any,
) -> AsyncIterator[S3BlobStore]:
    """Create the S3 client once, make sure the bucket exists and yield the store.

    With `check_at_start` (the default), an unreachable S3 or a bucket that cannot be created
    raises `UpstreamError` here, like Go's start-up; without it that is only logged, `health()`
    reports it, and the bucket is created on the first upload or health check that finds it
    missing. `tuning` passes the remaining `S3BlobStore` knobs (part sizes, attempts, ...).
    """
    session = get_session()
    await trio.to_thread.run_sync(_warm_up, session)
    config = AioConfig(
        http_session_cls=HttpxSession,
        connect_timeout=min(call_timeout, 5.0),
        read_timeout=stall_timeout,
        connector_args={"write_timeout": stall_timeout, "pool_timeout": stall_timeout},
        max_pool_connections=64,
        retries={"mode": "standard", "total_max_attempts": 1},  # retried here, within deadlines
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    creator = session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name=region or "us-east-1",
        aws_access_key_id=access_key or None,
        aws_secret_access_key=secret_key or None,
        config=config,
    )
    client = await creator.__aenter__()
    try:
        store = S3BlobStore(
            client,
            endpoint=endpoint,
            bucket=bucket,
            region=region,
            spool_dir=spool_dir,
            prefix=prefix,
            call_timeout=call_timeout,
            stall_timeout=stall_timeout,
            health_timeout=health_timeout,
            **tuning,
        )
        try:
            await store.ensure_bucket()
        except UpstreamError as exc:
            if check_at_start:
                raise
            log.warning("S3 is not usable yet (carrying on): %s", exc)
        yield store
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            await creator.__aexit__(None, None, None)
