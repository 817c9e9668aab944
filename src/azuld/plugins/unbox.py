"""Unbox: extract the members of archives and resubmit each as an `extracted` child.

Formats: zip (plain, ZipCrypto and WinZip AES, via `pyzipper`), tar (plain and inside gzip, bzip2,
xz or lzma), single gzip / bzip2 / xz / lzma streams, 7z (`py7zr`, also with encrypted data or
headers) and rar (`rarfile`, which parses the headers itself and pipes compressed or encrypted
members through the `unar` tool: Debian package `unar`; archives with encrypted *headers* also
need the `cryptography` package). The container is recognised from the content's magic bytes,
falling back to the event's `file_format`; anything else opts out with `unsupported-format`.

Each extracted member becomes a child: ``job.add_child(data, {"action": "extracted",
"container": "zip", ...}, filename="dir/member.txt")``. A tar inside a compressed stream (e.g. a
`.tar.gz`) is unpacked in one go: its members are the children, with ``"container": "tar"`` and
``"compression": "gzip"`` in the relationship. A member opened with a password from the list
has ``"password": ...`` in its relationship too.

Config keys (`-c key=value`), all optional:

``passwords`` (``infected,malware,virus,password``)
    Comma-separated passwords tried, in order, on encrypted members (the one that worked last is
    tried first on the next member).
``max_depth`` (5)
    No unpacking when the event's `source.path` already has this many nodes: opt-out
    ``max-depth``. A sourced archive has depth 1, its children 2, and so on, so by default four
    levels of nested archives are opened. (The runner's own `depth_limit`, 10, applies as well.)
``max_members`` (1000)
    At most this many entries (files, directories, links, everything the listing holds) are
    looked at, in archive order. A larger archive is *truncated*, not refused: the first
    `max_members` entries are processed, the rest are not, and the result carries the feature
    ``archive_truncated`` and ``info["truncated"]`` saying so. `archive_member_count` is the
    archive's real entry count where its directory gives it (zip, 7z, rar); for tar streams,
    which have no directory, it is the number seen, a lower bound (``info["member_count_exact"]``
    is false). A zip whose directory declares more than 100 x `max_members` entries is not
    parsed at all (opt-out ``too-many-members``), so a hostile directory cannot eat the memory.
``max_member_bytes`` (104857600, 100 MiB)
    A member larger than this is skipped: at once when its header says so, otherwise as soon as
    the bytes read while streaming pass the limit (headers are not trusted alone).
``max_total_bytes`` (524288000, 500 MiB)
    All extracted members together stay under this; the member that would pass it is dropped
    and extraction stops there (truncated). For formats that must decompress what they skip
    (compressed tars, 7z) every decompressed byte, kept or not, counts against the same budget.
``max_ratio`` (100) and ``ratio_min_bytes`` (1048576, 1 MiB)
    Compression-bomb guard, checked while streaming: once a member's output passes
    `ratio_min_bytes` it may not exceed `max_ratio` times its compressed size (the member's own
    compressed size for zip and rar, the whole archive's for single streams and 7z). Over it,
    the member is skipped. For a compressed tar the whole decompressed stream is measured against
    the archive size, and extraction stops when it trips.

Members are never written to disk: each is read in 1 MiB chunks into memory, bounded by the
limits above. Only a rar archive itself is written, to a private temporary directory (the
`unar` backend needs a path), which is removed afterwards.

Skipped members are reported in ``archive_skipped`` as ``"<name>: <reason>"`` (at most 100
values, then one summary value): names that are absolute or climb out with ``..`` (never
sanitised into something else), symlinks, hardlinks, devices, fifos and other special entries
(never followed), members over a limit or the ratio, empty members, corrupt members and
encrypted members no listed password opens.

Outcomes:

* the archive cannot be opened or listed at all (corrupt, truncated, not really that format):
  opt-out ``corrupt-archive``, with the parser's message;
* every encrypted member (or the encrypted header) refuses every listed password and nothing was
  extracted: opt-out ``password-required``; with some members extracted, the others are reported
  in ``archive_skipped`` as ``password-required`` instead;
* damage found after some members came out (a CRC error, a truncated tar): the job completes with
  what was extracted, the bad members in ``archive_skipped`` and a ``malformed`` feature;
* a rar member that needs the missing `unar` tool: skipped as ``rar-backend-missing``, or, with
  nothing extracted, opt-out ``rar-backend-missing``.

Not supported: zip members packed with methods pyzipper lacks (deflate64, PPMd, ...: skipped as
``unsupported: ...``), multi-volume rar and 7z sets (only one volume is ever at hand: such a
volume opts out as ``corrupt-archive``), and archive formats outside
`SUPPORTED_FORMATS` (cab, iso, cpio, zstd, ...). Zips that `azuld.identify` calls something
else (`java/jar`, `android/apk`, OOXML documents) are not in the filter.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import stat
import struct
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Protocol, cast

import py7zr
import pyzipper  # type: ignore[import-untyped]
import rarfile  # type: ignore[import-untyped]
import trio
from py7zr.exceptions import DecompressionBombError
from py7zr.io import Py7zIO, WriterFactory

from azuld.plugin import Feature, Filters, Job, OptOut, Plugin

__all__ = ["Limits", "Unbox", "safe_member_path"]

MiB = 1024 * 1024
CHUNK_BYTES = MiB
# Values of `archive_skipped` beyond this many are summed up in one last value.
MAX_SKIP_REPORTS = 100
# A zip whose directory declares more entries than this many times `max_members` is not parsed.
ZIP_DIRECTORY_FACTOR = 100
MAX_NAME_CHARS = 4096

DEFAULT_PASSWORDS = "infected,malware,virus,password"

SUPPORTED_FORMATS = (
    "archive/zip",
    "archive/tar",
    "archive/gzip",
    "archive/bzip2",
    "archive/xz",
    "archive/lzma",
    "archive/7-zip",
    "archive/rar",
)

_FORMAT_CONTAINERS = {
    "archive/zip": "zip",
    "archive/tar": "tar",
    "archive/gzip": "gzip",
    "archive/bzip2": "bzip2",
    "archive/xz": "xz",
    "archive/lzma": "lzma",
    "archive/7-zip": "7z",
    "archive/rar": "rar",
}


# --------------------------------------------------------------------------- #
# Settings
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class Limits:
    """The guards, from the plugin's config (see the module docstring for each key)."""

    passwords: tuple[str, ...] = tuple(DEFAULT_PASSWORDS.split(","))
    max_depth: int = 5
    max_members: int = 1000
    max_member_bytes: int = 100 * MiB
    max_total_bytes: int = 500 * MiB
    max_ratio: float = 100.0
    ratio_min_bytes: int = MiB

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> Limits:
        """Parse the config; raises `ValueError` on a bad value."""
        default = cls()

        def number(key: str, fallback: float, *, integer: bool = True) -> Any:
            raw = config.get(key, "").strip()
            if not raw:
                return fallback
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                raise ValueError(f"unbox config {key}={raw!r}: not a number") from None
            if value <= 0:
                raise ValueError(f"unbox config {key}={raw!r}: must be positive")
            return value

        raw_passwords = config.get("passwords", DEFAULT_PASSWORDS)
        return cls(
            passwords=tuple(p for p in (s.strip() for s in raw_passwords.split(",")) if p),
            max_depth=number("max_depth", default.max_depth),
            max_members=number("max_members", default.max_members),
            max_member_bytes=number("max_member_bytes", default.max_member_bytes),
            max_total_bytes=number("max_total_bytes", default.max_total_bytes),
            max_ratio=number("max_ratio", default.max_ratio, integer=False),
            ratio_min_bytes=number("ratio_min_bytes", default.ratio_min_bytes),
        )


# --------------------------------------------------------------------------- #
# Results and guards
# --------------------------------------------------------------------------- #


@dataclass(slots=True)
class Member:
    filename: str
    data: bytes
    relationship: dict[str, str]


@dataclass(slots=True)
class Extraction:
    """What came out of one archive."""

    container: str
    relationship: dict[str, str]
    members: list[Member] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    entries: int = 0
    entries_exact: bool = True
    truncated: str = ""
    passwords: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    total_bytes: int = 0
    backend_missing: bool = False
    password_failures: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(f"{_display(name)}: {reason}")

    def add(self, filename: str, data: bytes, password: str | None = None) -> None:
        relationship = dict(self.relationship)
        if password is not None:
            relationship["password"] = password
            if password not in self.passwords:
                self.passwords.append(password)
        self.members.append(Member(filename, data, relationship))

    def bad(self, message: str) -> None:
        if message not in self.malformed:
            self.malformed.append(message)


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


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


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

    def read_member(self, stream: _Readable, compressed: int | None) -> bytes:
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


class _MeteredStream:
    """A decompressing stream that counts its output against the archive-wide guards."""

    def __init__(self, inner: _Readable, budget: Budget, compressed: int) -> None:
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
# Names
# --------------------------------------------------------------------------- #

_DRIVE = re.compile(r"^[A-Za-z]:")


def _clean_text(name: str) -> str:
    """`name` as valid Unicode (lone surrogates from undecodable bytes become U+FFFD)."""
    return name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _display(name: str) -> str:
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


def _special_kind(mode: int) -> str:
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


# --------------------------------------------------------------------------- #
# Sniffing
# --------------------------------------------------------------------------- #


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def sniff_container(data: bytes, file_format: str) -> str | None:
    """The container kind from magic bytes, else from `file_format`; None if unsupported."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if data.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if data.startswith((b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")):
        return "rar"
    if data.startswith(b"\x1f\x8b"):
        return "gzip"
    if data.startswith(b"BZh") and data[3:4].isdigit():
        return "bzip2"
    if data.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if _is_tar_header(data[:512]):
        return "tar"
    return _FORMAT_CONTAINERS.get(file_format)


def _gzip_name(data: bytes) -> str:
    """The original file name stored in a gzip header (FNAME), if any."""
    if len(data) < 10 or not data.startswith(b"\x1f\x8b"):
        return ""
    flags = data[3]
    pos = 10
    if flags & 0x04:  # FEXTRA
        if len(data) < pos + 2:
            return ""
        (extra,) = struct.unpack_from("<H", data, pos)
        pos += 2 + extra
    if not flags & 0x08:  # FNAME
        return ""
    end = data.find(b"\x00", pos, pos + 1024)
    return data[pos:end].decode("latin-1") if end > pos else ""


_STREAM_SUFFIXES = {
    ".tgz": ".tar",
    ".taz": ".tar",
    ".tbz": ".tar",
    ".tbz2": ".tar",
    ".txz": ".tar",
    ".tlz": ".tar",
    ".gz": "",
    ".gzip": "",
    ".z": "",
    ".bz2": "",
    ".bz": "",
    ".xz": "",
    ".lzma": "",
}


def _stream_member_name(data: bytes, container: str, parent: str) -> str:
    """A name for the one member of a gzip/bzip2/xz/lzma stream."""
    if container == "gzip":
        stored = _gzip_name(data).replace("\\", "/").rsplit("/", 1)[-1]
        safe, _ = safe_member_path(stored)
        if safe:
            return safe
    base = parent.replace("\\", "/").rsplit("/", 1)[-1]
    lowered = base.lower()
    for suffix, replacement in _STREAM_SUFFIXES.items():
        if lowered.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + replacement
    safe, _ = safe_member_path(base)
    return f"{safe}.decompressed" if safe else "decompressed"


# --------------------------------------------------------------------------- #
# Extraction (synchronous: runs in a worker thread)
# --------------------------------------------------------------------------- #


@dataclass(slots=True)
class _Context:
    limits: Limits
    budget: Budget
    parent_name: str

    @property
    def passwords(self) -> tuple[str, ...]:
        return self.limits.passwords


def extract(
    data: bytes, container: str, limits: Limits, stop: threading.Event, parent_name: str = ""
) -> Extraction:
    """Extract `data` as `container` under `limits`. Raises `OptOut` when nothing can be done."""
    context = _Context(limits, Budget(limits, stop), parent_name)
    extractors: dict[str, Callable[[bytes, _Context], Extraction]] = {
        "zip": _extract_zip,
        "tar": _extract_tar,
        "gzip": partial(_extract_stream, container="gzip"),
        "bzip2": partial(_extract_stream, container="bzip2"),
        "xz": partial(_extract_stream, container="xz"),
        "lzma": partial(_extract_stream, container="lzma"),
        "7z": _extract_7z,
        "rar": _extract_rar,
    }
    extractor = extractors.get(container)
    if extractor is None:
        raise OptOut("unsupported-format", f"Unbox does not extract {container!r} archives")
    result = extractor(data, context)
    result.total_bytes = context.budget.total
    if not result.members:
        if result.password_failures:
            tried = ", ".join(limits.passwords) or "none configured"
            raise OptOut(
                "password-required",
                f"the {result.container} archive is encrypted and none of the configured "
                f"passwords ({tried}) opens it",
            )
        if result.backend_missing:
            raise OptOut(
                "rar-backend-missing",
                "this rar archive needs the 'unar' tool (Debian package unar), not found",
            )
    return result


# -- zip ---------------------------------------------------------------------------------


def _zip_declared_entries(data: bytes) -> int | None:
    """Entry count from a zip's end-of-central-directory record (zip64 aware); None if absent."""
    start = max(0, len(data) - (22 + 65535))
    pos = data.rfind(b"PK\x05\x06", start)
    if pos < 0 or len(data) < pos + 22:
        return None
    total = int(struct.unpack_from("<H", data, pos + 10)[0])
    if total == 0xFFFF and pos >= 20 and data[pos - 20 : pos - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack_from("<Q", data, pos - 20 + 8)
        if offset + 56 <= len(data) and data[offset : offset + 4] == b"PK\x06\x06":
            total = int(struct.unpack_from("<Q", data, offset + 32)[0])
    return total


def _extract_zip(data: bytes, context: _Context) -> Extraction:
    limits = context.limits
    result = Extraction("zip", {"action": "extracted", "container": "zip"})
    declared = _zip_declared_entries(data)
    if declared is not None and declared > limits.max_members * ZIP_DIRECTORY_FACTOR:
        raise OptOut(
            "too-many-members",
            f"the zip directory declares {declared} entries, over "
            f"{ZIP_DIRECTORY_FACTOR} x max_members ({limits.max_members}); not parsed",
        )
    try:
        archive = pyzipper.AESZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except Exception as exc:  # hostile input: any failure to list means a corrupt archive
        raise OptOut("corrupt-archive", f"cannot open the zip archive: {exc}") from exc
    result.entries = len(infos)
    working: list[str] = []
    with archive:
        for index, info in enumerate(infos):
            if index >= limits.max_members:
                result.truncated = _truncation(len(infos) - index, len(infos), limits)
                break
            name: str = info.filename
            if info.is_dir():
                continue
            path, reason = safe_member_path(name)
            if reason:
                result.skip(name, reason)
                continue
            kind = _special_kind(info.external_attr >> 16) if info.create_system == 3 else ""
            if kind:
                result.skip(
                    name, f"{kind} {'not followed' if kind == 'symlink' else 'not extracted'}"
                )
                continue
            if info.file_size > limits.max_member_bytes:
                result.skip(name, _oversize(info.file_size, limits))
                continue
            if info.file_size == 0 and not info.flag_bits & 0x1:
                result.skip(name, "empty")
                continue
            compressed = min(int(info.compress_size), len(data))
            encrypted = bool(info.flag_bits & 0x1)
            candidates: list[str | None] = (
                [*working, *(p for p in context.passwords if p not in working)]
                if encrypted
                else [None]
            )
            try:
                outcome = _zip_member(archive, info, candidates, compressed, context)
            except SkipMember as skipped:
                result.skip(name, skipped.reason)
                continue
            except StopArchive as stopped:
                result.skip(name, stopped.reason)
                result.truncated = stopped.reason
                break
            if outcome is None:
                result.skip(name, "password-required")
                result.password_failures += 1
                continue
            if isinstance(outcome, str):
                result.skip(name, outcome)
                if outcome.startswith("corrupt"):
                    result.bad("zip member data is corrupt")
                continue
            content, password = outcome
            if not content:
                result.skip(name, "empty")
                continue
            if password is not None and password not in working:
                working.insert(0, password)
            result.add(path, content, password)
    return result


def _zip_member(
    archive: Any,
    info: Any,
    candidates: list[str | None],
    compressed: int,
    context: _Context,
) -> tuple[bytes, str | None] | str | None:
    """`(data, password)`; or why the member is unreadable; or None when no password opened it."""
    for password in candidates:
        pwd = password.encode("utf-8") if password is not None else None
        try:
            with archive.open(info, pwd=pwd) as member:
                return context.budget.read_member(member, compressed), password
        except (SkipMember, StopArchive):
            raise
        except NotImplementedError as exc:  # compression or encryption method not supported
            return f"unsupported: {exc}"
        except RuntimeError as exc:  # wrong or missing password
            if password is None:
                return f"corrupt: {type(exc).__name__}: {exc}"
            continue
        except Exception as exc:  # CRC/HMAC mismatch, bad data
            if password is not None:
                continue  # a wrong ZipCrypto key can pass the check byte and decrypt garbage
            return f"corrupt: {type(exc).__name__}: {exc}"
    return None


def _oversize(size: int, limits: Limits) -> str:
    return f"header size {size} over max_member_bytes ({limits.max_member_bytes})"


def _truncation(left: int, total: int, limits: Limits) -> str:
    return f"{left} of {total} entries not processed: over max_members ({limits.max_members})"


# -- tar and single streams -------------------------------------------------------------


def _opener(container: str) -> Callable[[IO[bytes]], _Readable]:
    if container == "gzip":
        return lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")
    if container == "bzip2":
        return lambda raw: bz2.BZ2File(raw, mode="rb")
    if container in ("xz", "lzma"):
        return lambda raw: lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_AUTO)
    raise ValueError(container)


_DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def _extract_stream(data: bytes, context: _Context, container: str) -> Extraction:
    """gzip / bzip2 / xz / lzma: a tar inside is unpacked; anything else is one member."""
    opener = _opener(container)
    try:
        head = opener(io.BytesIO(data)).read(512)
    except _DECOMPRESSION_ERRORS as exc:
        raise OptOut("corrupt-archive", f"cannot decompress the {container} stream: {exc}") from exc
    if _is_tar_header(head):
        stream = _MeteredStream(opener(io.BytesIO(data)), context.budget, len(data))
        return _extract_tar_stream(
            stream, context, {"action": "extracted", "container": "tar", "compression": container}
        )
    result = Extraction(container, {"action": "extracted", "container": container})
    result.entries = 1
    name = _stream_member_name(data, container, context.parent_name)
    try:
        content = context.budget.read_member(opener(io.BytesIO(data)), len(data))
    except SkipMember as skipped:
        result.skip(name, skipped.reason)
        return result
    except StopArchive as stopped:
        result.skip(name, stopped.reason)
        result.truncated = stopped.reason
        return result
    except _DECOMPRESSION_ERRORS as exc:
        raise OptOut("corrupt-archive", f"cannot decompress the {container} stream: {exc}") from exc
    if content:
        result.add(name, content)
    else:
        result.skip(name, "empty")
    return result


def _extract_tar(data: bytes, context: _Context) -> Extraction:
    return _extract_tar_stream(
        io.BytesIO(data), context, {"action": "extracted", "container": "tar"}
    )


def _iter_tar(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        info = archive.next()
        if info is None:
            return
        yield info


def _open_tar(stream: _Readable) -> tarfile.TarFile:
    """A tar reader in stream mode: members in order, each read once, no seeking."""
    return tarfile.open(
        fileobj=cast("IO[bytes]", stream),  # tarfile's stream mode only calls read()
        mode="r|",
        encoding="utf-8",
        errors="surrogateescape",
    )


def _extract_tar_stream(
    stream: _Readable, context: _Context, relationship: dict[str, str]
) -> Extraction:
    limits = context.limits
    result = Extraction("tar", relationship)
    try:
        archive = _open_tar(stream)
    except StopArchive as stopped:
        result.truncated = stopped.reason
        return result
    except (tarfile.TarError, *_DECOMPRESSION_ERRORS) as exc:
        raise OptOut("corrupt-archive", f"cannot open the tar archive: {exc}") from exc
    current = ""  # the member being read, for reporting a guard that trips inside it
    with archive:
        try:
            for info in _iter_tar(archive):
                result.entries += 1
                if result.entries > limits.max_members:
                    result.entries_exact = False
                    result.truncated = (
                        f"more than max_members ({limits.max_members}) entries; the rest were "
                        "not processed"
                    )
                    break
                current = info.name
                _tar_member(archive, info, result, context)
                current = ""
        except StopArchive as stopped:
            result.skip(current or "(rest of the archive)", stopped.reason)
            result.truncated = stopped.reason
        except (tarfile.TarError, *_DECOMPRESSION_ERRORS) as exc:
            if not result.members:
                raise OptOut("corrupt-archive", f"cannot read the tar archive: {exc}") from exc
            if current:
                result.skip(current, f"corrupt: {exc}")
            result.bad(f"truncated or corrupt tar archive: {exc}")
    return result


def _tar_member(
    archive: tarfile.TarFile, info: tarfile.TarInfo, result: Extraction, context: _Context
) -> None:
    limits = context.limits
    name = info.name
    if info.isdir():
        return
    path, reason = safe_member_path(name)
    if reason:
        result.skip(name, reason)
        return
    if info.issym():
        result.skip(name, f"symlink to {_display(info.linkname)!r} not followed")
        return
    if info.islnk():
        result.skip(name, f"hardlink to {_display(info.linkname)!r} not followed")
        return
    if not info.isreg():
        kind = (
            "character device"
            if info.ischr()
            else "block device"
            if info.isblk()
            else "fifo"
            if info.isfifo()
            else f"entry type {info.type!r}"
        )
        result.skip(name, f"{kind} not extracted")
        return
    if info.size > limits.max_member_bytes:
        result.skip(name, _oversize(info.size, limits))
        return
    if info.size == 0:
        result.skip(name, "empty")
        return
    try:
        member = archive.extractfile(info)
        if member is None:
            result.skip(name, "no data")
            return
        content = context.budget.read_member(member, None)
    except SkipMember as skipped:
        result.skip(name, skipped.reason)
        return
    except tarfile.StreamError as exc:  # e.g. a sparse member in stream mode
        result.skip(name, f"unsupported: {exc}")
        return
    result.add(path, content)


# -- 7z ----------------------------------------------------------------------------------


class _WrongPassword(Exception):
    pass


def _extract_7z(data: bytes, context: _Context) -> Extraction:
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
                return _extract_7z_pass(archive, None, data, context)
        archive.close()
    for password in context.passwords:
        try:
            archive = open_archive(password)
        except Exception:  # wrong password for encrypted headers: garbage in, any error out
            continue
        try:
            with archive:
                return _extract_7z_pass(archive, password, data, context)
        except _WrongPassword:
            continue
    result = Extraction("7z", {"action": "extracted", "container": "7z"})
    result.password_failures = 1
    return result


def _extract_7z_pass(
    archive: Any, password: str | None, data: bytes, context: _Context
) -> Extraction:
    limits = context.limits
    result = Extraction("7z", {"action": "extracted", "container": "7z"})
    files = list(archive.files)
    result.entries = len(files)
    targets: list[tuple[str, str]] = []  # (name in the archive, safe path)
    for index, member in enumerate(files):
        if index >= limits.max_members:
            result.truncated = _truncation(len(files) - index, len(files), limits)
            break
        name: str = member.filename
        if member.is_directory:
            continue
        path, reason = safe_member_path(name)
        if reason:
            result.skip(name, reason)
            continue
        mode = member.posix_mode
        if member.is_symlink or member.is_junction:
            result.skip(name, "symlink not followed")
            continue
        if member.is_socket or (mode is not None and _special_kind(mode)):
            result.skip(name, f"{_special_kind(mode or 0) or 'special file'} not extracted")
            continue
        if member.uncompressed > limits.max_member_bytes:
            result.skip(name, _oversize(member.uncompressed, limits))
            continue
        if member.emptystream or member.uncompressed == 0:
            result.skip(name, "empty")
            continue
        targets.append((name, path))
    if not targets:
        return result
    factory = _SinkFactory(context.budget, len(data))
    error: Exception | None = None
    try:
        archive.extract(targets=[name for name, _ in targets], factory=factory)
    except StopArchive as stopped:
        result.truncated = stopped.reason
    except DecompressionBombError as exc:
        result.truncated = f"decompressed data passed max_total_bytes: {exc}"
    except Exception as exc:  # corrupt data, or garbage from a wrong password
        error = exc
    completed = [sink for sink in factory.sinks if sink.done]
    if error is not None and password is not None and not completed:
        raise _WrongPassword from error
    for (name, path), sink in zip(targets, factory.sinks, strict=False):
        if sink.dropped:
            result.skip(name, sink.dropped)
        elif sink.done:
            result.add(path, b"".join(sink.chunks), password)
        elif error is not None:
            result.skip(name, f"corrupt: {type(error).__name__}: {error}")
        else:
            result.skip(name, result.truncated or "not extracted")
    for name, _ in targets[len(factory.sinks) :]:
        result.skip(name, result.truncated or ("not reached" if error else "not extracted"))
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


# -- rar ---------------------------------------------------------------------------------

_RAR_REDIRECTS = {
    1: "unix symlink",
    2: "windows symlink",
    3: "junction",
    4: "hardlink",
    5: "file copy",
}


def _extract_rar(data: bytes, context: _Context) -> Extraction:
    with tempfile.TemporaryDirectory(prefix="azuld-unbox-") as tmp:
        # Alone in its own folder under a fixed name: unar looks for sibling volumes by name.
        path = Path(tmp) / "archive.rar"
        path.write_bytes(data)
        try:
            archive = rarfile.RarFile(str(path), errors="strict")
        except Exception as exc:  # hostile input
            raise OptOut("corrupt-archive", f"cannot open the rar archive: {exc}") from exc
        with archive:
            header_password = None
            if archive.needs_password() and not archive.infolist():
                header_password = _rar_header_password(archive, context)
                if header_password is None:
                    result = Extraction("rar", {"action": "extracted", "container": "rar"})
                    result.password_failures = 1
                    return result
            return _extract_rar_members(archive, header_password, data, context)


def _rar_header_password(archive: Any, context: _Context) -> str | None:
    for password in context.passwords:
        try:
            archive.setpassword(password)
        except rarfile.NoCrypto as exc:
            raise OptOut(
                "password-required",
                "the rar archive has encrypted headers and no AES library ('cryptography') "
                "is installed to decrypt them",
            ) from exc
        except Exception:
            continue
        if archive.infolist():
            return password
    return None


def _extract_rar_members(
    archive: Any, header_password: str | None, data: bytes, context: _Context
) -> Extraction:
    limits = context.limits
    result = Extraction("rar", {"action": "extracted", "container": "rar"})
    if header_password is not None:
        result.passwords.append(header_password)
    infos = archive.infolist()
    result.entries = len(infos)
    working: list[str] = [header_password] if header_password else []
    for index, info in enumerate(infos):
        if index >= limits.max_members:
            result.truncated = _truncation(len(infos) - index, len(infos), limits)
            break
        name: str = info.filename
        if info.is_dir():
            continue
        path, reason = safe_member_path(name)
        if reason:
            result.skip(name, reason)
            continue
        redirect = getattr(info, "file_redir", None)
        if redirect:
            kind = _RAR_REDIRECTS.get(redirect[0], "link")
            result.skip(name, f"{kind} to {_display(str(redirect[2]))!r} not followed")
            continue
        if info.is_symlink():
            result.skip(name, "symlink not followed")
            continue
        if not info.is_file():
            result.skip(name, "special file not extracted")
            continue
        if info.file_size > limits.max_member_bytes:
            result.skip(name, _oversize(info.file_size, limits))
            continue
        if info.file_size == 0:
            result.skip(name, "empty")
            continue
        encrypted = info.needs_password()
        candidates: list[str | None] = (
            [*working, *(p for p in context.passwords if p not in working)] if encrypted else [None]
        )
        compressed = min(int(info.compress_size), len(data))
        outcome: tuple[bytes, str | None] | str | None = None
        try:
            for password in candidates:
                try:
                    with archive.open(info, pwd=password) as member:
                        outcome = context.budget.read_member(member, compressed), password
                    break
                except rarfile.RarCannotExec:
                    outcome = "rar-backend-missing (install the 'unar' tool)"
                    result.backend_missing = True
                    break
                except (SkipMember, StopArchive):
                    raise
                except Exception as exc:  # wrong password, CRC error, tool failure
                    if encrypted:
                        continue
                    outcome = f"corrupt: {type(exc).__name__}: {exc}"
                    result.bad(f"rar member data is corrupt ({type(exc).__name__})")
                    break
        except SkipMember as skipped:
            result.skip(name, skipped.reason)
            continue
        except StopArchive as stopped:
            result.skip(name, stopped.reason)
            result.truncated = stopped.reason
            break
        if outcome is None:
            result.skip(name, "password-required")
            result.password_failures += 1
        elif isinstance(outcome, str):
            result.skip(name, outcome)
        else:
            content, password = outcome
            if password is not None and password not in working:
                working.insert(0, password)
            result.add(path, content, password)
    return result


# --------------------------------------------------------------------------- #
# The plugin
# --------------------------------------------------------------------------- #


def _parent_name(job: Job) -> str:
    for node in reversed(job.event.source.path):
        if node.filename:
            return node.filename
    return ""


class Unbox(Plugin):
    """Extracts zip, tar, gzip, bzip2, xz, lzma, 7z and rar archives into child binaries."""

    name = "Unbox"
    version = "1.0.0"
    features = (
        Feature("archive_member_count", "Number of entries the archive lists", "integer"),
        Feature("archive_skipped", "A member not extracted, and why ('name: reason')", "string"),
        Feature("archive_password", "Password that opened encrypted members", "string"),
        Feature("archive_truncated", "Why extraction stopped early", "string"),
    )
    filters = Filters(actions=("sourced", "extracted"), data_types={"content": SUPPORTED_FORMATS})

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self.limits = Limits.from_config(self.config)

    async def execute(self, job: Job) -> None:
        limits = self.limits
        depth = len(job.event.source.path)
        if depth >= limits.max_depth:
            raise OptOut(
                "max-depth",
                f"the archive is already {depth} deep (max_depth is {limits.max_depth})",
            )
        data = await job.read()
        container = sniff_container(data, job.event.entity.file_format)
        if container is None:
            fmt = job.event.entity.file_format or "unknown"
            raise OptOut("unsupported-format", f"Unbox does not extract {fmt} content")
        stop = threading.Event()
        try:
            result = await trio.to_thread.run_sync(
                partial(extract, data, container, limits, stop, _parent_name(job)),
                abandon_on_cancel=True,
            )
        finally:
            stop.set()  # a cancelled (timed-out) extraction stops at its next chunk
        for member in result.members:
            job.add_child(member.data, member.relationship, filename=member.filename)
        job.add_feature("archive_member_count", result.entries)
        for value in result.skipped[:MAX_SKIP_REPORTS]:
            job.add_feature("archive_skipped", value)
        if len(result.skipped) > MAX_SKIP_REPORTS:
            job.add_feature(
                "archive_skipped",
                f"... and {len(result.skipped) - MAX_SKIP_REPORTS} more skipped members",
            )
        for password in result.passwords:
            job.add_feature("archive_password", password)
        if result.truncated:
            job.add_feature("archive_truncated", result.truncated)
        for message in result.malformed:
            job.add_feature("malformed", message)
        job.add_info(
            {
                "container": result.container,
                "compression": result.relationship.get("compression", ""),
                "member_count": result.entries,
                "member_count_exact": result.entries_exact,
                "extracted": len(result.members),
                "skipped": len(result.skipped),
                "extracted_bytes": result.total_bytes,
                "truncated": result.truncated,
            }
        )
