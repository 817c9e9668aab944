"""The guards, each in one place: archive depth, member names (`../`, absolute), links and
special entries, member count, declared and streamed sizes, the total, and the compression
ratio. The member walk (`walk.py`) applies them to every format alike.
"""

from __future__ import annotations

import re
import stat
import threading
from typing import Protocol

from azuld.plugin import OptOut
from azuld.plugins.unbox.limits import CHUNK_BYTES, MAX_NAME_CHARS, Limits

__all__ = [
    "Budget",
    "MeteredStream",
    "Readable",
    "SkipMember",
    "StopArchive",
    "check_depth",
    "display",
    "oversize",
    "safe_member_path",
    "special_kind",
    "truncation",
]


class SkipMember(Exception):
    """The member being read broke a per-member guard; the archive goes on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StopArchive(Exception):
    """An archive-wide guard tripped (or the job was cancelled); extraction stops here."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


# --------------------------------------------------------------------------- #
# Depth and count
# --------------------------------------------------------------------------- #


def check_depth(depth: int, limits: Limits) -> None:
    """Raise `OptOut` ``max-depth`` when an archive ``depth`` nodes deep may not be opened."""
    if depth >= limits.max_depth:
        raise OptOut(
            "max-depth",
            f"the archive is already {depth} deep (max_depth is {limits.max_depth})",
        )


def truncation(left: int, total: int, limits: Limits) -> str:
    """Why the last `left` of a directory's `total` entries were not looked at."""
    return f"{left} of {total} entries not processed: over max_members ({limits.max_members})"


# --------------------------------------------------------------------------- #
# Sizes and ratio
# --------------------------------------------------------------------------- #


def oversize(size: int, limits: Limits) -> str:
    """Why a member whose header declares `size` bytes is skipped."""
    return f"header size {size} over max_member_bytes ({limits.max_member_bytes})"


class Budget:
    """Counts what an extraction produced and enforces the byte and ratio guards."""

    def __init__(self, limits: Limits, stop: threading.Event) -> None:
        self.limits = limits
        self.stop = stop
        self.total = 0

    def check(self, size: int, compressed: int | None) -> None:
        """Raise if a member now `size` bytes long (of `compressed` packed) broke a guard."""
        limits = self.limits
        if self.stop.is_set():
            raise StopArchive("cancelled")
        if size > limits.max_member_bytes:
            raise SkipMember(f"larger than max_member_bytes ({limits.max_member_bytes})")
        if (
            compressed is not None
            and size > limits.ratio_min_bytes
            and size > limits.max_ratio * max(compressed, 1)
        ):
            raise SkipMember(
                f"compression ratio over max_ratio {limits.max_ratio:g}:1 "
                f"({size} bytes out of {compressed} and counting)"
            )
        if self.total + size > limits.max_total_bytes:
            raise StopArchive(f"max_total_bytes ({limits.max_total_bytes}) reached")

    def read_member(self, stream: Readable, compressed: int | None) -> bytes:
        """Read `stream` to its end in chunks, checking the guards after each chunk."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if self.stop.is_set():
                raise StopArchive("cancelled")
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            self.check(size, compressed)
            chunks.append(chunk)
        self.total += size
        return b"".join(chunks)


class MeteredStream:
    """A decompressing stream that counts its output against the archive-wide guards."""

    def __init__(self, inner: Readable, budget: Budget, compressed: int) -> None:
        self.inner = inner
        self.budget = budget
        self.compressed = compressed
        self.produced = 0

    def read(self, size: int = -1) -> bytes:
        limits = self.budget.limits
        if self.budget.stop.is_set():
            raise StopArchive("cancelled")
        data = self.inner.read(size if size >= 0 else CHUNK_BYTES)
        self.produced += len(data)
        if self.produced > limits.max_total_bytes:
            raise StopArchive(
                f"decompressed stream passed max_total_bytes ({limits.max_total_bytes})"
            )
        if self.produced > limits.ratio_min_bytes and self.produced > limits.max_ratio * max(
            self.compressed, 1
        ):
            raise StopArchive(
                f"compression ratio of the stream over max_ratio {limits.max_ratio:g}:1 "
                f"({self.produced} bytes out of {self.compressed})"
            )
        return data


# --------------------------------------------------------------------------- #
# Names and entry kinds
# --------------------------------------------------------------------------- #

_DRIVE = re.compile(r"^[A-Za-z]:")


def _clean_text(name: str) -> str:
    """`name` as valid Unicode (lone surrogates from undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def display(name: str) -> str:
    """`name` fit for a report: valid Unicode, NULs visible, at most 200 characters."""
    text = _clean_text(name).replace("\x00", "\\x00")
    return text if len(text) <= 200 else text[:200] + "..."


def safe_member_path(name: str) -> tuple[str, str]:
    """`(safe relative path, "")` for a member name, or `("", reason)` when it must be skipped.

    Backslashes count as separators; `.` and empty components are dropped. Absolute names (`/x`,
    `\\\\host\\x`, `C:x`) and any `..` component are refused, not rewritten.
    """
    if "\x00" in name:
        return "", "nul byte in name"
    if len(name) > MAX_NAME_CHARS:
        return "", "name too long"
    text = _clean_text(name).replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        return "", "absolute path"
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        return "", "path traversal"
    if not parts:
        return "", "empty name"
    return "/".join(parts), ""


def special_kind(mode: int) -> str:
    """The kind of a non-regular entry from its st_mode bits ("" for regular or unknown)."""
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG):
        return ""
    return {
        stat.S_IFLNK: "symlink",
        stat.S_IFDIR: "directory",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
    }.get(kind, f"special file (mode {kind:o})")
