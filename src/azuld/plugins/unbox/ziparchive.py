"""Zip: plain, ZipCrypto and WinZip AES, through `pyzipper`."""

from __future__ import annotations

import io
import struct
from typing import Any

import pyzipper  # type: ignore[import-untyped]

from azuld.plugin import OptOut
from azuld.plugins.unbox.guards import SkipMember, StopArchive, special_kind
from azuld.plugins.unbox.limits import ZIP_DIRECTORY_FACTOR
from azuld.plugins.unbox.walk import (
    Context,
    Entry,
    Extraction,
    MemberFailed,
    MemberWalk,
    WrongPassword,
)

__all__ = ["extract_zip"]


def _declared_entries(data: bytes) -> int | None:
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


def _entry(info: Any, archive_size: int) -> Entry:
    # Unix modes only mean something when the entry was made on unix (create_system 3).
    kind = special_kind(info.external_attr >> 16) if info.create_system == 3 else ""
    encrypted = bool(info.flag_bits & 0x1)
    return Entry(
        name=info.filename,
        source=info,
        is_dir=info.is_dir(),
        link="symlink" if kind == "symlink" else "",
        special="" if kind == "symlink" else kind,
        # An encrypted member's declared 0 is not taken as empty: the passwords are tried.
        size=None if encrypted and info.file_size == 0 else info.file_size,
        compressed=min(int(info.compress_size), archive_size),
        encrypted=encrypted,
    )


def extract_zip(data: bytes, context: Context) -> Extraction:
    """Every member of a zip; raises `OptOut` when its directory is absurd or unreadable."""
    limits = context.limits
    result = Extraction("zip", {"action": "extracted", "container": "zip"})
    declared = _declared_entries(data)
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

    def read(entry: Entry, password: str | None) -> bytes:
        pwd = password.encode("utf-8") if password is not None else None
        try:
            with archive.open(entry.source, pwd=pwd) as member:
                return context.budget.read_member(member, entry.compressed)
        except (SkipMember, StopArchive):
            raise
        except NotImplementedError as exc:  # compression or encryption method not supported
            raise MemberFailed(f"unsupported: {exc}") from exc
        except Exception as exc:  # wrong password (RuntimeError), CRC/HMAC mismatch, bad data
            if password is not None:
                raise WrongPassword from exc  # a wrong ZipCrypto key can decrypt to garbage
            raise MemberFailed(
                f"corrupt: {type(exc).__name__}: {exc}", malformed="zip member data is corrupt"
            ) from exc

    with archive:
        entries = (_entry(info, len(data)) for info in infos)
        MemberWalk(result, context).run(entries, read, listed=len(infos))
    return result
