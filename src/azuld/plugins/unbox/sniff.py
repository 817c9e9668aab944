"""Which container a blob is: azuld.identify's magic-bytes table first (the one table, shared
with identification), then a tar header check (old tars carry no magic), then the event's
`file_format`."""

from __future__ import annotations

import tarfile

from azuld.identify import signature_format

__all__ = ["SUPPORTED_FORMATS", "is_tar_header", "sniff_container"]

# file_format -> the container Unbox extracts it as.
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

SUPPORTED_FORMATS = tuple(_FORMAT_CONTAINERS)


def is_tar_header(block: bytes) -> bool:
    """Whether `block` starts with a tar header whose checksum holds."""
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def sniff_container(data: bytes, file_format: str) -> str | None:
    """The container kind from magic bytes, else from `file_format`; None if unsupported."""
    container = _FORMAT_CONTAINERS.get(signature_format(data) or "")
    if container is not None:
        return container
    if is_tar_header(data[:512]):
        return "tar"
    return _FORMAT_CONTAINERS.get(file_format)
