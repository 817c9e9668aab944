"""Blob hashing: size and md5/sha1/sha256/sha512 in one pass."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["FileDigests", "FileHasher"]


@dataclass(frozen=True, slots=True)
class FileDigests:
    """Size and lowercase hex digests of a blob ("" for digests not computed)."""

    size: int
    md5: str
    sha1: str
    sha256: str
    sha512: str


class FileHasher:
    """Incremental md5/sha1/sha256/sha512 + size; feed chunks with update()."""

    __slots__ = ("_md5", "_sha1", "_sha256", "_sha512", "size")

    def __init__(self, *, sha256_only: bool = False) -> None:
        """Start empty hashes; with ``sha256_only`` only sha256 is computed."""
        self.size: int = 0
        self._sha256 = hashlib.sha256()
        self._md5: hashlib._Hash | None = None
        self._sha1: hashlib._Hash | None = None
        self._sha512: hashlib._Hash | None = None
        if not sha256_only:
            self._md5 = hashlib.md5(usedforsecurity=False)
            self._sha1 = hashlib.sha1(usedforsecurity=False)
            self._sha512 = hashlib.sha512()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the blob."""
        self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)
        if self._sha512 is not None:
            self._sha512.update(chunk)
        self.size += memoryview(chunk).nbytes

    def digests(self) -> FileDigests:
        """Return the digests of everything fed so far (hasher stays usable)."""
        return FileDigests(
            size=self.size,
            md5=self._md5.hexdigest() if self._md5 is not None else "",
            sha1=self._sha1.hexdigest() if self._sha1 is not None else "",
            sha256=self._sha256.hexdigest(),
            sha512=self._sha512.hexdigest() if self._sha512 is not None else "",
        )
