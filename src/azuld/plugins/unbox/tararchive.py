"""Tar, plain or as the stream inside a compressor: read in stream mode, one member after the
other, never seeking."""

from __future__ import annotations

import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO, cast

from azuld.plugin import OptOut
from azuld.plugins.unbox.guards import Readable, StopArchive
from azuld.plugins.unbox.walk import Context, Entry, Extraction, MemberFailed, MemberWalk

__all__ = ["DECOMPRESSION_ERRORS", "extract_tar", "extract_tar_stream"]

# What a damaged compressed stream raises while it is read.
DECOMPRESSION_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def extract_tar(data: bytes, context: Context) -> Extraction:
    """Every member of an uncompressed tar."""
    return extract_tar_stream(
        io.BytesIO(data), context, {"action": "extracted", "container": "tar"}
    )


def _open_tar(stream: Readable) -> tarfile.TarFile:
    """A tar reader in stream mode: members in order, each read once, no seeking."""
    return tarfile.open(
        fileobj=cast("IO[bytes]", stream),  # tarfile's stream mode only calls read()
        mode="r|",
        encoding="utf-8",
        errors="surrogateescape",
    )


def _special(info: tarfile.TarInfo) -> str:
    if info.ischr():
        return "character device"
    if info.isblk():
        return "block device"
    if info.isfifo():
        return "fifo"
    return f"entry type {info.type!r}"


def _entries(archive: tarfile.TarFile) -> Iterator[Entry]:
    while True:
        info = archive.next()
        if info is None:
            return
        link = "symlink" if info.issym() else "hardlink" if info.islnk() else ""
        yield Entry(
            name=info.name,
            source=info,
            is_dir=info.isdir(),
            link=link,
            target=info.linkname if link else None,
            special="" if link or info.isreg() or info.isdir() else _special(info),
            size=info.size,
            compressed=None,  # a compressed tar's ratio is measured on the whole stream
        )


def extract_tar_stream(
    stream: Readable, context: Context, relationship: dict[str, str]
) -> Extraction:
    """Every member of the tar `stream` holds; raises `OptOut` when it is not a readable tar.

    A tar that breaks after some members keeps them: the break is reported as `malformed`.
    """
    result = Extraction("tar", relationship)
    try:
        archive = _open_tar(stream)
    except StopArchive as stopped:
        result.truncated = stopped.reason
        return result
    except (tarfile.TarError, *DECOMPRESSION_ERRORS) as exc:
        raise OptOut("corrupt-archive", f"cannot open the tar archive: {exc}") from exc

    def read(entry: Entry, password: str | None) -> bytes:
        try:
            member = archive.extractfile(entry.source)
            if member is None:
                raise MemberFailed("no data")
            return context.budget.read_member(member, None)
        except tarfile.StreamError as exc:  # e.g. a sparse member in stream mode
            raise MemberFailed(f"unsupported: {exc}") from exc

    walk = MemberWalk(result, context)
    with archive:
        try:
            walk.run(_entries(archive), read, listed=None)
        except StopArchive as stopped:  # the stream itself, between members
            result.skip(walk.current or "(rest of the archive)", stopped.reason)
            result.truncated = stopped.reason
        except (tarfile.TarError, *DECOMPRESSION_ERRORS) as exc:
            if not result.members:
                raise OptOut("corrupt-archive", f"cannot read the tar archive: {exc}") from exc
            if walk.current:
                result.skip(walk.current, f"corrupt: {exc}")
            result.bad(f"truncated or corrupt tar archive: {exc}")
    return result
