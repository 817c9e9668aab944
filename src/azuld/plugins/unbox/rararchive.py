"""Rar, through `rarfile`: it parses the headers itself and pipes compressed or encrypted
members through the `unar` tool. The archive is written to a private temporary folder first
(the tool needs a path); archives with encrypted headers also need the `cryptography` package.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import rarfile  # type: ignore[import-untyped]

from azuld.plugin import OptOut
from azuld.plugins.unbox.guards import SkipMember, StopArchive
from azuld.plugins.unbox.walk import (
    Context,
    Entry,
    Extraction,
    MemberFailed,
    MemberWalk,
    WrongPassword,
)

__all__ = ["extract_rar"]

_RAR_REDIRECTS = {
    1: "unix symlink",
    2: "windows symlink",
    3: "junction",
    4: "hardlink",
    5: "file copy",
}


def _new_result() -> Extraction:
    return Extraction("rar", {"action": "extracted", "container": "rar"})


def extract_rar(data: bytes, context: Context) -> Extraction:
    """Every member of a rar archive; raises `OptOut` when it does not open."""
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
                header_password = _header_password(archive, context)
                if header_password is None:
                    result = _new_result()
                    result.password_failures = 1
                    return result
            return _extract_members(archive, header_password, data, context)


def _header_password(archive: Any, context: Context) -> str | None:
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


def _entry(info: Any, archive_size: int) -> Entry:
    redirect = getattr(info, "file_redir", None)
    if redirect:
        link, target = _RAR_REDIRECTS.get(redirect[0], "link"), str(redirect[2])
    else:
        link, target = ("symlink" if info.is_symlink() else ""), None
    return Entry(
        name=info.filename,
        source=info,
        is_dir=info.is_dir(),
        link=link,
        target=target,
        special="" if link or info.is_file() else "special file",
        size=info.file_size,
        compressed=min(int(info.compress_size), archive_size),
        encrypted=info.needs_password(),
    )


def _extract_members(
    archive: Any, header_password: str | None, data: bytes, context: Context
) -> Extraction:
    result = _new_result()
    if header_password is not None:
        result.passwords.append(header_password)
    infos = archive.infolist()

    def read(entry: Entry, password: str | None) -> bytes:
        try:
            with archive.open(entry.source, pwd=password) as member:
                return context.budget.read_member(member, entry.compressed)
        except rarfile.RarCannotExec as exc:
            raise MemberFailed(
                "rar-backend-missing (install the 'unar' tool)", backend_missing=True
            ) from exc
        except (SkipMember, StopArchive):
            raise
        except Exception as exc:  # wrong password, CRC error, tool failure
            if entry.encrypted:
                raise WrongPassword from exc
            raise MemberFailed(
                f"corrupt: {type(exc).__name__}: {exc}",
                malformed=f"rar member data is corrupt ({type(exc).__name__})",
            ) from exc

    walk = MemberWalk(result, context, working=[header_password] if header_password else [])
    walk.run((_entry(info, len(data)) for info in infos), read, listed=len(infos))
    return result
