"""Upload bodies from the spool: a blob's bytes written to a spool file (with the caller's work,
in one worker-thread hop), and a region of a spool file as a request body, streamed in chunks read
in worker threads, with the MD5 a multipart part is sent with."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import trio

from azuld.errors import storage_error

__all__ = ["FileRegion", "md5_of", "work_and_spool"]

T = TypeVar("T")


def work_and_spool(work: Callable[[], T], data: bytes, spool_dir: Path) -> tuple[T, Path]:
    """`work()`, then `data` in a new spool file (in a worker thread).

    Raises:
        What `work` raises; UpstreamError: the spool file cannot be written.
    """
    result = work()
    try:
        fd, name = tempfile.mkstemp(prefix="put-", dir=spool_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            os.unlink(name)
            raise
    except OSError as exc:
        raise storage_error("cannot spool the upload", exc) from exc
    return result, Path(name)


class FileRegion:
    """Bytes `[offset, offset + length)` of a file as a request body.

    botocore sizes it (`len`) and rewinds it for a retry (`seek`); aiobotocore's httpx backend
    streams it with `async for`, which reads `chunk` bytes at a time in a worker thread (so the
    event loop never blocks on the disk, and it is not split at newlines: stack.md P4). Each
    chunk handed over calls `progress()`, which pushes the request's stall deadline on. The sync
    `read`/`__iter__` exist because botocore and aiobotocore check for them; with payload signing
    and default checksums off, nothing calls them.
    """

    def __init__(
        self, path: Path, offset: int, length: int, progress: Callable[[], None], chunk: int
    ) -> None:
        self._path = path
        self._offset = offset
        self._length = length
        self._progress = progress
        self._chunk = chunk
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = min(max(0, base + pos), self._length)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        want = self._length - self._pos if size is None or size < 0 else size
        want = min(want, self._length - self._pos)
        if want <= 0:
            return b""
        with self._path.open("rb") as handle:
            handle.seek(self._offset + self._pos)
            data = handle.read(want)
        self._pos += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.read(self._chunk), b"")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fd = await trio.to_thread.run_sync(os.open, self._path, os.O_RDONLY)
        try:
            while self._pos < self._length:
                want = min(self._chunk, self._length - self._pos)
                data = await trio.to_thread.run_sync(os.pread, fd, want, self._offset + self._pos)
                if not data:
                    raise OSError(f"{self._path} is shorter than expected")
                self._pos += len(data)
                self._progress()
                yield data
        finally:
            os.close(fd)


def md5_of(path: Path, offset: int, length: int, chunk: int) -> str:
    """Base64 MD5 of a file region, for `Content-MD5` (runs in a worker thread)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                raise OSError(f"{path} is shorter than expected")
            digest.update(data)
            remaining -= len(data)
    return base64.b64encode(digest.digest()).decode()
