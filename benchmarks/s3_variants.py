"""The three S3 clients `s3_backends.py` compares, behind the same small interface (`Variant`),
with the botocore settings they share (azuld's):

  (a) `NativeHttpx`: aiobotocore with its httpx backend natively on trio, as azuld does;
  (b) `BridgedAiohttp`: aiobotocore with its default aiohttp backend, through trio-asyncio;
  (c) `Boto3Threads`: sync boto3, one `trio.to_thread.run_sync` per call.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import trio
from aiobotocore.config import AioConfig
from aiobotocore.httpxsession import HttpxSession
from aiobotocore.session import get_session
from trio_asyncio import aio_as_trio

try:
    import boto3
    from botocore.config import Config
except ImportError:  # boto3 comes with moto; (c) is skipped without it
    boto3 = None
import aiohttp  # noqa: F401  # likewise, so that no variant pays an import inside a timing
import anyio._backends._trio  # noqa: F401  # imported lazily by anyio on first use: do it now

HAVE_BOTO3 = boto3 is not None

MiB = 1024 * 1024
BUCKET = "bench"
CHUNK = 256 * 1024  # PUT body chunks and streamed GET chunks
CONCURRENCY = 16
COMMON_CONFIG: dict[str, Any] = {
    "connect_timeout": 5.0,
    "read_timeout": 60.0,
    "max_pool_connections": CONCURRENCY,
    "retries": {"mode": "standard", "total_max_attempts": 1},
    "s3": {"addressing_style": "path", "payload_signing_enabled": False},
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}


class ChunkedBytesIO(io.BytesIO):
    """A body that aiobotocore's httpx backend sends in 256 KiB chunks, not line by line (P4)."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(CHUNK), b"")


Sink = Callable[[bytes], None]


class Variant:
    key: str
    label: str

    def __init__(self, endpoint: str, credentials: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self.client: Any = None
        self._handle: Any = None

    async def open_client(self) -> tuple[Any, Any]:
        """(handle to close, client), from a fresh botocore session."""
        raise NotImplementedError

    async def close_client(self, handle: Any) -> None:
        raise NotImplementedError

    def use(self, handle: Any, client: Any) -> None:
        self._handle, self.client = handle, client

    async def aclose(self) -> None:
        if self._handle is not None:
            with trio.CancelScope(shield=True):
                await self.close_client(self._handle)
            self._handle = self.client = None

    async def create_bucket(self) -> None:
        raise NotImplementedError

    async def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    async def get(self, key: str, size: int, sink: Sink) -> None:
        """A ranged GET of bytes [0, size) streamed in CHUNK pieces to `sink` (on trio)."""
        raise NotImplementedError

    async def head(self, key: str) -> int:
        raise NotImplementedError


def _check_status(answer: dict[str, Any], key: str) -> None:
    status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if status != 206:
        raise RuntimeError(f"ranged GET of {key} answered HTTP {status}, not 206")


class NativeHttpx(Variant):
    key = "a"
    label = "aiobotocore + httpx, native trio"

    async def open_client(self) -> tuple[Any, Any]:
        config = AioConfig(http_session_cls=HttpxSession, **COMMON_CONFIG)
        creator = get_session().create_client(
            "s3", endpoint_url=self.endpoint, config=config, **self.credentials
        )
        return creator, await creator.__aenter__()

    async def close_client(self, handle: Any) -> None:
        await handle.__aexit__(None, None, None)

    async def create_bucket(self) -> None:
        await self.client.create_bucket(Bucket=BUCKET)

    async def put(self, key: str, data: bytes) -> None:
        await self.client.put_object(Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data))

    async def get(self, key: str, size: int, sink: Sink) -> None:
        answer = await self.client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}")
        _check_status(answer, key)
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                sink(chunk)

    async def head(self, key: str) -> int:
        return int((await self.client.head_object(Bucket=BUCKET, Key=key))["ContentLength"])


async def _aio_open(endpoint: str, credentials: dict[str, str]) -> tuple[Any, Any]:
    stack = contextlib.AsyncExitStack()
    config = AioConfig(**COMMON_CONFIG)  # default http_session_cls: aiohttp
    client = await stack.enter_async_context(
        get_session().create_client("s3", endpoint_url=endpoint, config=config, **credentials)
    )
    return stack, client


async def _aio_chunks(client: Any, key: str, size: int) -> AsyncIterator[bytes]:
    answer = await client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}")
    _check_status(answer, key)
    async with answer["Body"] as body:
        async for chunk in body.iter_chunks(CHUNK):
            yield chunk


class BridgedAiohttp(Variant):
    key = "b"
    label = "aiobotocore + aiohttp, via trio-asyncio"

    async def open_client(self) -> tuple[Any, Any]:
        return await aio_as_trio(_aio_open)(self.endpoint, self.credentials)

    async def close_client(self, handle: Any) -> None:
        await aio_as_trio(handle.aclose)()

    async def create_bucket(self) -> None:
        await aio_as_trio(self.client.create_bucket)(Bucket=BUCKET)

    async def put(self, key: str, data: bytes) -> None:
        await aio_as_trio(self.client.put_object)(Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data))

    async def get(self, key: str, size: int, sink: Sink) -> None:
        async for chunk in aio_as_trio(_aio_chunks(self.client, key, size)):
            sink(chunk)

    async def head(self, key: str) -> int:
        answer = await aio_as_trio(self.client.head_object)(Bucket=BUCKET, Key=key)
        return int(answer["ContentLength"])


class Boto3Threads(Variant):
    key = "c"
    label = "boto3 in trio.to_thread"

    async def open_client(self) -> tuple[Any, Any]:
        def create() -> Any:
            return boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, config=Config(**COMMON_CONFIG), **self.credentials
            )

        client = await trio.to_thread.run_sync(create)
        return client, client

    async def close_client(self, handle: Any) -> None:
        await trio.to_thread.run_sync(handle.close)

    async def create_bucket(self) -> None:
        await trio.to_thread.run_sync(functools.partial(self.client.create_bucket, Bucket=BUCKET))

    async def put(self, key: str, data: bytes) -> None:
        await trio.to_thread.run_sync(
            functools.partial(
                self.client.put_object, Bucket=BUCKET, Key=key, Body=ChunkedBytesIO(data)
            )
        )

    async def get(self, key: str, size: int, sink: Sink) -> None:
        answer = await trio.to_thread.run_sync(
            functools.partial(
                self.client.get_object, Bucket=BUCKET, Key=key, Range=f"bytes=0-{size - 1}"
            )
        )
        _check_status(answer, key)
        body = answer["Body"]
        try:
            while chunk := await trio.to_thread.run_sync(body.read, CHUNK):
                sink(chunk)
        finally:
            body.close()

    async def head(self, key: str) -> int:
        answer = await trio.to_thread.run_sync(
            functools.partial(self.client.head_object, Bucket=BUCKET, Key=key)
        )
        return int(answer["ContentLength"])
