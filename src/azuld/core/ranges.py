"""HTTP `Range` for blob downloads: one `bytes=` range, forms `a-b`, `a-` and `-n` (reference 2.6).

Unlike Go, a range that starts past the end is 416 with `Content-Range: bytes */<size>` (quirk 17),
which azul-runner treats as end of file, and a range on an empty blob is 416 too (quirk 16).
"""

from __future__ import annotations

from azuld.errors import BadRequest, RangeNotSatisfiable

__all__ = ["parse_range"]


def _invalid(header: str, why: str) -> BadRequest:
    return BadRequest(f"invalid range provided: {header!r} ({why})", title="invalid range")


def _position(digits: str) -> int:
    """A byte position; absurdly long numbers (past any blob, and past int()'s digit limit)
    count as "very far". Numbers up to 30 digits are exact: a cap at 19 digits mis-sized
    20-digit positions (up to 2**64) against equally large sizes."""
    return int(digits) if len(digits) <= 30 else 10**30


def parse_range(header: str, size: int) -> tuple[int, int]:
    """`(start, length)` of the bytes `header` asks for in a blob of `size` bytes.

    Raises:
        BadRequest: the header is malformed (400, as Go).
        RangeNotSatisfiable: the range starts at or past the end (416).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip() != "bytes":
        raise _invalid(header, "expected 'bytes=<start>-<end>'")
    spec = spec.strip()
    if "," in spec:
        raise _invalid(header, "only one range is supported")
    if spec.count("-") != 1 or spec == "-":
        raise _invalid(header, "expected '<start>-<end>', '<start>-' or '-<suffix length>'")
    first, _, last = spec.partition("-")
    if not all(part == "" or (part.isascii() and part.isdigit()) for part in (first, last)):
        raise _invalid(header, "positions must be non-negative integers")
    if first == "":
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {header!r} selects no bytes", size=size)
        start = max(size - suffix, 0)
        return start, size - start
    start = _position(first)
    if last and _position(last) < start:
        raise _invalid(header, "the end is before the start")
    end = _position(last) if last else size - 1
    if start >= size:
        raise RangeNotSatisfiable(
            f"range {header!r} starts at or past the end of the {size}-byte blob", size=size
        )
    end = min(end, size - 1)
    return start, end - start + 1
