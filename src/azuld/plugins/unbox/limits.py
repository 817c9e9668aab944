"""Unbox's settings: the guards' limits, from the plugin's config (`-c key=value`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_PASSWORDS",
    "MAX_NAME_CHARS",
    "MAX_SKIP_REPORTS",
    "ZIP_DIRECTORY_FACTOR",
    "Limits",
    "MiB",
]

MiB = 1024 * 1024
CHUNK_BYTES = MiB
# Values of `archive_skipped` beyond this many are summed up in one last value.
MAX_SKIP_REPORTS = 100
# A zip whose directory declares more entries than this many times `max_members` is not parsed.
ZIP_DIRECTORY_FACTOR = 100
MAX_NAME_CHARS = 4096

DEFAULT_PASSWORDS = "infected,malware,virus,password"


@dataclass(frozen=True, slots=True)
class Limits:
    """The guards, from the plugin's config (see the package docstring for each key)."""

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
