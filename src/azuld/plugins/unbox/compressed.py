"""Single gzip, bzip2, xz and lzma streams: a tar inside is unpacked as a tar; anything else is
one member, named after the gzip header or the archive's own name."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
from collections.abc import Callable
from typing import IO

from azuld.plugin import OptOut
from azuld.plugins.unbox.guards import MeteredStream, Readable, safe_member_path
from azuld.plugins.unbox.sniff import is_tar_header
from azuld.plugins.unbox.tararchive import DECOMPRESSION_ERRORS, extract_tar_stream
from azuld.plugins.unbox.walk import Context, Entry, Extraction, MemberWalk

__all__ = ["extract_stream", "stream_member_name"]


def _opener(container: str) -> Callable[[IO[bytes]], Readable]:
    if container == "gzip":
        return lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")
    if container == "bzip2":
        return lambda raw: bz2.BZ2File(raw, mode="rb")
    if container in ("xz", "lzma"):
        return lambda raw: lzma.LZMAFile(raw, mode="rb", format=lzma.FORMAT_AUTO)
    raise ValueError(container)


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


def stream_member_name(data: bytes, container: str, parent: str) -> str:
    """A safe name for the one member of a gzip/bzip2/xz/lzma stream."""
    if container == "gzip":
        stored = _gzip_name(data).replace("\\", "/").rsplit("/", 1)[-1]
        safe, _ = safe_member_path(stored)
        if safe:
            return safe
    base = parent.replace("\\", "/").rsplit("/", 1)[-1]
    lowered = base.lower()
    for suffix, replacement in _STREAM_SUFFIXES.items():
        if lowered.endswith(suffix) and len(base) > len(suffix):
            safe, _ = safe_member_path(base[: -len(suffix)] + replacement)
            if safe:
                return safe
            break
    safe, _ = safe_member_path(base)
    return f"{safe}.decompressed" if safe else "decompressed"


def extract_stream(data: bytes, context: Context, container: str) -> Extraction:
    """gzip / bzip2 / xz / lzma: a tar inside is unpacked; anything else is one member.
    Raises `OptOut` when the stream does not decompress."""
    opener = _opener(container)
    try:
        head = opener(io.BytesIO(data)).read(512)
    except DECOMPRESSION_ERRORS as exc:
        raise OptOut("corrupt-archive", f"cannot decompress the {container} stream: {exc}") from exc
    if is_tar_header(head):
        stream = MeteredStream(opener(io.BytesIO(data)), context.budget, len(data))
        return extract_tar_stream(
            stream, context, {"action": "extracted", "container": "tar", "compression": container}
        )
    result = Extraction(container, {"action": "extracted", "container": container})
    name = stream_member_name(data, container, context.parent_name)

    def read(entry: Entry, password: str | None) -> bytes:
        return context.budget.read_member(opener(io.BytesIO(data)), entry.compressed)

    try:
        # The whole archive is the member's packed size; its declared size is unknown.
        MemberWalk(result, context).run([Entry(name, compressed=len(data))], read, listed=1)
    except DECOMPRESSION_ERRORS as exc:
        raise OptOut("corrupt-archive", f"cannot decompress the {container} stream: {exc}") from exc
    return result
