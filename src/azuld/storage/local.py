"""A content-addressed folder: `<root>/<source>/<label>/<h[0]>/<h[1]>/<sha256>` (Go's layout).

Large uploads arrive as spooled files on the same filesystem; `put_file` fsyncs and renames them
into place. Small ones arrive in memory; `put_bytes` writes, fsyncs and renames them in the same
worker-thread hop as the caller's identification. Either way a reader never sees half a blob, a
crash leaves at worst a stray spool file (removed at the next start), and the blob's directory
entry is fsynced before the call returns. A blob that already exists is kept (same hash, same
bytes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import trio

from azuld.errors import NotFound, storage_error

__all__ = ["LocalBlobStore"]


_CHUNK_BYTES = 256 * 1024
# Below this much free space the store reports itself not ready (uploads would fail with 507).
MIN_FREE_BYTES = 1024 * 1024
# Reads up to this size are served inline; larger ones stream through a worker thread.
INLINE_READ_BYTES = 256 * 1024
_FALLBACK = ("", "")  # Go's legacy key `//<sha256>`: stored with an empty source and label
# `put_bytes` hops at once. Mostly they wait on the disk (fsync), and waiting together lets the
# filesystem commit their fsyncs at once (ext4's journal does); the caller's work in them is
# bounded by its own means (identification by its pool of libmagic handles).
_PUT_LIMITER = trio.CapacityLimiter(16)
_WRITE_BYTES = 256 * 1024
# Spool file names of `put_bytes` (the folder is emptied at start; O_EXCL guards the rest).
_SPOOL_NAMES = itertools.count()

T = TypeVar("T")


class LocalBlobStore:
    """`BlobStore` on a local folder. Names are validated by the caller (HTTP layer)."""

    def __init__(self, root: Path, spool_dir: Path | None = None) -> None:
        """`spool_dir` (default `<root>/.spool`) must be on `root`'s filesystem (uploads are
        renamed into place), and this store's alone: what it holds at start is deleted."""
        self.root = root
        self._root = str(root)  # string joins: pathlib costs more than the stat on the hot path
        self.spool_dir = spool_dir or root / ".spool"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        for stray in self.spool_dir.iterdir():  # left by a crash mid-upload
            stray.unlink(missing_ok=True)

    async def copy(self, from_source: str, to_source: str, label: str, sha256: str) -> bool:
        found = self._find(from_source, label, sha256)
        if found is None:
            return False
        target = self._path(to_source, label, sha256)
        if target == found or target.exists():
            return True
        try:
            await trio.to_thread.run_sync(_link_or_copy, found, target, self.spool_dir)
        except OSError as exc:
            raise storage_error(f"cannot copy blob {sha256}", exc) from exc
        return True

    async def health(self) -> str | None:
        if not os.access(self.spool_dir, os.W_OK):
            return f"blob folder {self.root} is not writable"
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            return f"blob folder {self.root} is full ({free} bytes free)"
        return None

    def _path(self, source: str, label: str, sha256: str) -> Path:
        if (source, label) == _FALLBACK:
            return self.root / "_" / sha256[0] / sha256[1] / sha256
        return self.root / source / label / sha256[0] / sha256[1] / sha256

    def _find_sized(self, source: str, label: str, sha256: str) -> tuple[str, int] | None:
        """The blob's file and size (one stat per candidate, on the event loop: a stat of a
        cached inode is microseconds, cheaper than a thread hop)."""
        tail = f"{sha256[0]}/{sha256[1]}/{sha256}"
        fallback = f"{self._root}/_/{tail}"
        own = fallback if (source, label) == _FALLBACK else f"{self._root}/{source}/{label}/{tail}"
        for candidate in (own, fallback):
            try:
                found = os.stat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISREG(found.st_mode):
                return candidate, found.st_size
        return None

    def _find(self, source: str, label: str, sha256: str) -> Path | None:
        found = self._find_sized(source, label, sha256)
        return None if found is None else Path(found[0])

    async def put_file(self, source: str, label: str, sha256: str, path: Path) -> None:
        target = self._path(source, label, sha256)
        try:
            await trio.to_thread.run_sync(_install, path, target)
        except OSError as exc:
            raise storage_error(f"cannot store blob {sha256}", exc) from exc

    async def put_bytes(
        self, source: str, label: str, sha256: str, data: bytes, work: Callable[[], T]
    ) -> T:
        target = str(self._path(source, label, sha256))
        spooled = f"{self.spool_dir}/put-{os.getpid()}-{next(_SPOOL_NAMES)}"
        return await trio.to_thread.run_sync(
            _work_and_install, work, data, spooled, target, sha256, limiter=_PUT_LIMITER
        )

    async def size(self, source: str, label: str, sha256: str) -> int | None:
        found = self._find_sized(source, label, sha256)
        return None if found is None else found[1]

    async def read(
        self, source: str, label: str, sha256: str, start: int, length: int
    ) -> AsyncIterator[bytes]:
        sized = self._find_sized(source, label, sha256)
        if sized is None:
            raise NotFound(f"no blob {source}/{label}/{sha256}")
        async with aclosing(_read_file(sized[0], start, length)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def read_whole(
        self, source: str, label: str, sha256: str
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        sized = self._find_sized(source, label, sha256)
        if sized is None:
            return None
        found, size = sized
        return size, _read_file(found, 0, size)


async def _read_file(found: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
    """`length` bytes of the file from `start`."""
    if length <= INLINE_READ_BYTES:
        # Small reads (most plugin downloads) straight from the page cache: one pread, no
        # thread hop.
        fd = os.open(found, os.O_RDONLY)
        try:
            yield os.pread(fd, length, start)
        finally:
            os.close(fd)
        return
    async with await trio.open_file(found, "rb") as handle:
        await handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(_CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk


def _link_or_copy(found: Path, target: Path, spool_dir: Path) -> None:
    """A hard link when possible (same content, no space), else a copy installed atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(found, target)
    except FileExistsError:
        return
    except OSError:
        import shutil
        import tempfile

        fd, name = tempfile.mkstemp(prefix="copy-", dir=spool_dir)
        os.close(fd)
        shutil.copyfile(found, name)
        _install(Path(name), target)


def _install(spooled: Path, target: Path) -> None:
    """fsync the spooled file and rename it into place (atomic on one filesystem)."""
    if target.exists():
        spooled.unlink(missing_ok=True)
        return
    _make_folder(str(target.parent))
    fd = os.open(spooled, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(spooled, target)
    _fsync_folder(target.parent)


def _work_and_install(
    work: Callable[[], T], data: bytes, spooled: str, target: str, sha256: str
) -> T:
    """`work()`, then `data` written to `spooled`, fsynced and renamed to `target` (unless that
    exists), and `target`'s folder fsynced. In a worker thread.

    Raises:
        What `work` raises (nothing is written then); UpstreamError: the write failed.
    """
    result = work()
    if os.path.exists(target):
        return result
    folder = os.path.dirname(target)
    try:
        try:
            fd = os.open(spooled, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.replace(spooled, target)
            except FileNotFoundError:  # the blob's folder is new (the usual case has it)
                _make_folder(folder)
                os.replace(spooled, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(spooled)
            raise
        _fsync_folder(folder)
    except OSError as exc:
        raise storage_error(f"cannot store blob {sha256}", exc) from exc
    return result


def _write_all(fd: int, data: bytes) -> None:
    """Write `data` to `fd` in pieces of `_WRITE_BYTES`: on ext4 one 1 MiB write took the kernel
    3-5 times the CPU of four 256 KiB ones (measured on the reference machine)."""
    with memoryview(data) as view:
        written = 0
        while written < len(view):
            written += os.write(fd, view[written : written + _WRITE_BYTES])


def _make_folder(folder: str) -> None:
    """Make `folder` and its missing parents, each new one fsynced into its parent (so that the
    blob's folder, fsynced after the rename, is itself reachable after a crash)."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another upload
            os.mkdir(new)
        _fsync_folder(os.path.dirname(new))


def _fsync_folder(folder: str | Path) -> None:
    """Make the folder's entries (a file just renamed into it) durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
