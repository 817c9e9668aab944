"""Single-range parsing for downloads: Go's 400s, and 416 past the end."""

from __future__ import annotations

import pytest

from azuld.core.ranges import parse_range
from azuld.errors import BadRequest, RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=10-", 100, (10, 90)),
        ("bytes=-10", 100, (90, 10)),
        ("bytes=-1048576", 11, (0, 11)),  # the runner's size probe on a small blob
        ("bytes=0-1048575", 11, (0, 11)),  # a length past the end is truncated
        ("bytes=99-99", 100, (99, 1)),
        ("bytes=0-", 1, (0, 1)),
    ],
)
def test_valid_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        "0-9",
        "items=0-9",
        "bytes=0-1,5-9",
        "bytes=1-2-3",
        "bytes=",
        "bytes=-",
        "bytes=a-b",
        "bytes=9-1",
    ],
)
def test_malformed_ranges_are_400(header: str) -> None:
    with pytest.raises(BadRequest, match="invalid range provided"):
        parse_range(header, 100)


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=100-", 100),
        ("bytes=200-300", 100),
        ("bytes=-5", 0),
        ("bytes=0-", 0),
        ("bytes=-0", 10),
    ],
)
def test_unsatisfiable_ranges_are_416(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, size)
    assert info.value.size == size


@pytest.mark.parametrize("header", ["bytes=\xb2-", "bytes=0-\xb3", "bytes=-\xb9", "bytes=\xb9-4"])
def test_non_ascii_digits_are_400_not_500(header: str) -> None:
    with pytest.raises(BadRequest, match="invalid range provided"):
        parse_range(header, 100)
