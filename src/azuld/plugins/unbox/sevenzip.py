"""7z, also with encrypted data or headers, through `py7zr`.

py7zr extracts the chosen members in one call, so the walk only admits them here; the data
streams into one `_Sink` per member, which checks the same guards as it grows.
"""

from __future__ import annotations

import io
from typing import Any

import py7zr
from py7zr.exceptions import DecompressionBombError
from py7zr.io import Py7zIO, WriterFactory

from azuld.plugin import OptOut
from azuld.plugins.unbox.guards import Budget, SkipMember, StopArchive, special_kind
from azuld.plugins.unbox.walk import Context, Entry, Extraction, MemberWalk

__all__ = ["extract_7z"]


class _WrongPassword(Exception):
    pass


def _new_result() -> Extraction:
    return Extraction("7z", {"action": "extracted", "container": "7z"})


def extract_7z(data: bytes, context: Context) -> Extraction:
    """Every member of a 7z archive, trying the passwords on an encrypted one; raises `OptOut`
    when it does not open at all."""
    limits = context.limits

    def open_archive(password: str | None) -> py7zr.SevenZipFile:
        return py7zr.SevenZipFile(
            io.BytesIO(data), mode="r", password=password, max_extract_size=limits.max_total_bytes
        )

    try:
        archive = open_archive(None)
    except py7zr.PasswordRequired:
        encrypted = True  # encrypted headers: the listing itself needs the password
    except Exception as exc:  # hostile input
        raise OptOut("corrupt-archive", f"cannot open the 7z archive: {exc}") from exc
    else:
        encrypted = archive.needs_password()
        if not encrypted:
            with archive:
                return _extract_pass(archive, None, data, context)
        archive.close()
    for password in context.passwords:
        try:
            archive = open_archive(password)
        except Exception:  # wrong password for encrypted headers: garbage in, any error out
            continue
        try:
            with archive:
                return _extract_pass(archive, password, data, context)
        except _WrongPassword:
            continue
    result = _new_result()
    result.password_failures = 1
    return result


def _entry(member: Any) -> Entry:
    mode = member.posix_mode
    kind = special_kind(mode) if mode is not None else ""
    return Entry(
        name=member.filename,
        source=member,
        is_dir=member.is_directory,
        link="symlink" if member.is_symlink or member.is_junction else "",
        special=(kind or "special file") if member.is_socket or kind else "",
        size=member.uncompressed,  # 0 for an empty stream (py7zr sets it so)
    )


def _extract_pass(archive: Any, password: str | None, data: bytes, context: Context) -> Extraction:
    """One try at the archive with one password; raises `_WrongPassword` when the data does
    not decrypt to anything."""
    result = _new_result()
    files = list(archive.files)
    targets = list(MemberWalk(result, context).admitted(map(_entry, files), listed=len(files)))
    if not targets:
        return result
    factory = _SinkFactory(context.budget, len(data))
    error: Exception | None = None
    try:
        archive.extract(targets=[entry.name for entry, _ in targets], factory=factory)
    except StopArchive as stopped:
        result.truncated = stopped.reason
    except DecompressionBombError as exc:
        result.truncated = f"decompressed data passed max_total_bytes: {exc}"
    except Exception as exc:  # corrupt data, or garbage from a wrong password
        error = exc
    completed = [sink for sink in factory.sinks if sink.done]
    if error is not None and password is not None and not completed:
        raise _WrongPassword from error
    for (entry, path), sink in zip(targets, factory.sinks, strict=False):
        if sink.dropped:
            result.skip(entry.name, sink.dropped)
        elif sink.done:
            result.add(path, b"".join(sink.chunks), password)
        elif error is not None:
            result.skip(entry.name, f"corrupt: {type(error).__name__}: {error}")
        else:
            result.skip(entry.name, result.truncated or "not extracted")
    for entry, _ in targets[len(factory.sinks) :]:
        result.skip(entry.name, result.truncated or ("not reached" if error else "not extracted"))
    if error is not None:
        if not result.members and not result.truncated:
            raise OptOut("corrupt-archive", f"cannot extract the 7z archive: {error}") from error
        result.bad(f"corrupt 7z data: {type(error).__name__}: {error}")
    return result


class _Sink(Py7zIO):
    """Receives one 7z member's data from py7zr, checking the guards as it streams."""

    def __init__(self, budget: Budget, compressed: int) -> None:
        self.budget = budget
        self.compressed = compressed
        self.chunks: list[bytes] = []
        self.length = 0
        self.dropped = ""
        self.done = False

    def write(self, s: bytes | bytearray) -> int:
        if self.budget.stop.is_set():
            raise StopArchive("cancelled")
        if self.dropped:
            return len(s)
        self.length += len(s)
        try:
            self.budget.check(self.length, self.compressed)
        except SkipMember as skipped:
            # py7zr goes on decompressing up to the header size (bounded, and counted by its
            # max_extract_size); the bytes are dropped, not kept.
            self.dropped = skipped.reason
            self.chunks.clear()
            return len(s)
        self.chunks.append(bytes(s))
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.length

    def close(self) -> None:
        # py7zr closes a writer only when its member decompressed without error.
        if not self.dropped:
            self.done = True
            self.budget.total += self.length


class _SinkFactory(WriterFactory):
    """Hands py7zr one `_Sink` per member, in archive order."""

    def __init__(self, budget: Budget, compressed: int) -> None:
        self.budget = budget
        self.compressed = compressed
        self.sinks: list[_Sink] = []

    def create(self, filename: str) -> _Sink:
        sink = _Sink(self.budget, self.compressed)
        self.sinks.append(sink)
        return sink
