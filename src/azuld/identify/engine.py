"""The identification engine: runs the rules of rules.toml over a blob, in this order.

1. An empty blob is `unknown`.
2. Magic bytes (`signatures`), with the structure checks behind them (PE, ELF, OLE2, ...).
3. Otherwise libmagic's description lines against the ordered `rules`; a text/* mime that
   matched none is text/plain.
4. Still unknown or text/plain: a `trusted_mimes` entry for libmagic's mime type.
5. Zip, jar, unknown, or an office document that is not OLE2: the zip member names decide
   (OpenDocument keeps libmagic's mime).
6. Still unknown or text/plain, and it decodes as text: the `[text]` indicators.

libmagic (via python-magic) also gives every blob its ``mime`` and ``magic`` (the first
description line, as Azul reports it), whichever step decided the id.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Final

import magic

from azuld.identify.hashing import FileDigests
from azuld.identify.rules import RULES, Rules
from azuld.identify.structure import (
    Blob,
    cart_format,
    elf_format,
    fat_mach_o_or_class,
    ole_format,
    ole_stream_names,
    pe_format,
    zip_format,
    zip_names,
)
from azuld.identify.text import decode_text, text_format
from azuld.models.events import Datastream

__all__ = [
    "IDENTIFY_VERSION",
    "UNKNOWN",
    "FileType",
    "identify_bytes",
    "identify_path",
    "signature_format",
    "to_datastream",
]

IDENTIFY_VERSION: Final = RULES.version

UNKNOWN: Final = "unknown"

# How much of the start of a blob the text heuristics look at.
_TEXT_BYTES: Final = 64 * 1024
# How much of the end of a blob the text heuristics look at.
_TAIL_BYTES: Final = 256
# Ids the zip member names may refine (bedrock's zip_ident trigger_on).
_ZIP_REFINED: Final = ("archive/zip", "java/jar", UNKNOWN)


@dataclass(frozen=True, slots=True)
class FileType:
    """libmagic mime/description plus Azul-style file_format and file_extension."""

    mime: str
    magic: str
    file_format: str
    file_extension: str


# --------------------------------------------------------------------------- #
# The magic-bytes table, its checks resolved
# --------------------------------------------------------------------------- #

_CHECKS: Final[dict[str, Callable[[Blob], str | None]]] = {
    "pe": pe_format,
    "elf": elf_format,
    "fat-mach-o-or-class": fat_mach_o_or_class,
    "cart": cart_format,
    "ole": lambda blob: ole_format(ole_stream_names(blob), RULES.ole_streams),
}


@dataclass(frozen=True, slots=True)
class _Signature:
    prefixes: tuple[bytes, ...]
    offset: int
    id: str
    check: Callable[[Blob], str | None] | None
    undecided: str
    ole: bool


def resolve_signatures(rules: Rules) -> tuple[_Signature, ...]:
    """The magic-bytes table of ``rules`` with its checks looked up; raises `ValueError` when
    it names a check this module does not have."""
    unknown = sorted({s.check for s in rules.signatures if s.check} - _CHECKS.keys())
    if unknown:
        raise ValueError(f"identify rules: signatures name unknown checks {unknown}")
    return tuple(
        _Signature(
            s.prefixes,
            s.offset,
            s.id,
            _CHECKS[s.check] if s.check else None,
            s.undecided,
            s.check == "ole",
        )
        for s in rules.signatures
    )


_SIGNATURES: Final = resolve_signatures(RULES)


def _by_signature(blob: Blob) -> tuple[str | None, _Signature | None]:
    """The id the magic bytes give (None: libmagic decides) and the signature that matched."""
    head = blob.head
    for signature in _SIGNATURES:
        if not head.startswith(signature.prefixes, signature.offset):
            continue
        if signature.check is None:
            return signature.id, signature
        found = signature.check(blob)
        if found is not None or signature.undecided:
            return found, signature
    return None, None


def signature_format(data: bytes) -> str | None:
    """The id the magic-bytes table (and its structure checks) gives ``data``, without
    libmagic; None when no signature decides."""
    found, _ = _by_signature(Blob(io.BytesIO(data), len(data)))
    return found


def _from_magic_rules(magics: list[str], default: str) -> str:
    """Apply the ordered libmagic description rules; ``default`` if none match."""
    lowered = [line.lower() for line in magics]
    for pattern, fmt in RULES.magic:
        if any(pattern.search(line) for line in lowered):
            return fmt
    return default


# --------------------------------------------------------------------------- #
# libmagic (a small pool of handle pairs)
# --------------------------------------------------------------------------- #

# Handle pairs in the pool: libmagic releases the GIL, so this many identify at once. Each pair
# holds about 5 MB, so they are shared by whichever threads identify rather than made per thread.
MAGIC_HANDLES: Final = 2


class _MagicPool:
    """Up to `size` pairs of libmagic handles (descriptions, mime types), each lent to one thread
    at a time: libmagic cookies are not thread-safe. A thread finding none free waits."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: queue.SimpleQueue[tuple[magic.Magic, magic.Magic]] = queue.SimpleQueue()
        self._made = 0
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[tuple[magic.Magic, magic.Magic]]:
        try:
            pair = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                make = self._made < self.size
                if make:
                    self._made += 1
            if make:
                try:
                    pair = (magic.Magic(keep_going=True, raw=True), magic.Magic(mime=True))
                except BaseException:
                    with self._lock:
                        self._made -= 1
                    raise
            else:
                pair = self._free.get()
        try:
            yield pair
        finally:
            self._free.put(pair)


_HANDLES: Final = _MagicPool(MAGIC_HANDLES)


def _libmagic(buf: bytes) -> tuple[list[str], str]:
    """Return (libmagic description lines, mime type) for ``buf``."""
    with _HANDLES.lend() as (describe, mime_of):
        try:
            raw = describe.from_buffer(buf)
        except magic.MagicException:
            raw = ""
        try:
            mime = mime_of.from_buffer(buf).strip()
        except magic.MagicException:
            mime = ""
    lines = [line.removeprefix("-").strip() for line in raw.split("\n")]
    return [line for line in lines if line], mime


# --------------------------------------------------------------------------- #
# Identification
# --------------------------------------------------------------------------- #


def _identify(stream: BinaryIO, size: int) -> FileType:
    """Identify a seekable stream of ``size`` bytes."""
    blob = Blob(stream, size)
    magics, mime = _libmagic(blob.head)
    first_magic = magics[0] if magics else ""
    if size == 0:
        return FileType(mime=mime, magic=first_magic, file_format=UNKNOWN, file_extension="")

    fmt, signature = _by_signature(blob)
    if fmt is None:
        fmt = _from_magic_rules(magics, signature.undecided if signature else UNKNOWN)
        if fmt == UNKNOWN and mime.startswith("text/"):
            fmt = "text/plain"
    if fmt in (UNKNOWN, "text/plain"):
        fmt = RULES.trusted_mimes.get(mime, fmt)

    ole = signature is not None and signature.ole
    if fmt in _ZIP_REFINED or (fmt == "document/office/unknown" and not ole):
        if mime.startswith("application/vnd.oasis.opendocument."):
            fmt = RULES.trusted_mimes.get(mime, fmt)
        else:
            names = zip_names(blob)
            if names is not None:
                fmt = zip_format(names)

    if fmt in (UNKNOWN, "text/plain"):
        text = decode_text(blob.head[:_TEXT_BYTES])
        if text is not None:
            if size <= _TEXT_BYTES:
                tail = text[-_TAIL_BYTES:]
            else:
                tail = blob.read_at(size - _TAIL_BYTES, _TAIL_BYTES).decode("utf-8", "replace")
            fmt = text_format(text, tail, RULES.text)

    extension = RULES.extensions.get(fmt, "")
    return FileType(mime=mime, magic=first_magic, file_format=fmt, file_extension=extension)


def identify_path(path: str | os.PathLike[str]) -> FileType:
    """Identify the file at ``path``, reading only what identification needs."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        return _identify(fh, size)


def identify_bytes(data: bytes) -> FileType:
    """Identify an in-memory blob."""
    return _identify(io.BytesIO(data), len(data))


def to_datastream(label: str, digests: FileDigests, found: FileType) -> Datastream:
    """The wire description of a blob (reference 2.5): hashes, size and file type."""
    return Datastream(
        identify_version=IDENTIFY_VERSION,
        label=label,  # type: ignore[arg-type]
        size=digests.size,
        sha512=digests.sha512,
        sha256=digests.sha256,
        sha1=digests.sha1,
        md5=digests.md5,
        mime=found.mime,
        magic=found.magic,
        file_format=found.file_format,
        file_extension=found.file_extension,
    )
