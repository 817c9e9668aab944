"""Single-range parsing for downloads: Go's 400s, and 416 past the end."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- properties (Hypothesis) -----------------------------------------------------------------------

# No example database: keep runs free of files in the working tree. A failure prints its minimal
# example (and a `@reproduce_failure` blob) all the same.
PLAIN = settings(max_examples=100, database=None)

POSITIONS = st.one_of(
    st.just(""),
    st.integers(0, 2**70).map(str),
    st.text(st.sampled_from("0123456789 +-,x"), max_size=6),
    # Other digits: decimal ones int() reads, superscripts it does not ('²' is latin-1, so a
    # header can carry it), and spaces.
    st.text(st.characters(categories=("Nd", "No", "Zs")), max_size=3),
)
HEADERS = st.one_of(
    st.text(max_size=30),
    st.builds(
        "{}={}{}{}{}".format,
        st.sampled_from(["bytes", " bytes ", "Bytes", "items", ""]),
        POSITIONS,
        st.sampled_from(["-", "-", "-", "--", ""]),
        POSITIONS,
        st.sampled_from(["", "", " ", ",0-1", "-"]),
    ),
)
SIZES = st.integers(0, 2**64) | st.integers(0, 20)


@PLAIN
@given(header=HEADERS, size=SIZES)
def test_parse_range_fails_only_with_client_errors(header: str, size: int) -> None:
    outcome: tuple[int, int] | RangeNotSatisfiable
    try:
        outcome = parse_range(header, size)
    except BadRequest:
        return
    except RangeNotSatisfiable as error:
        outcome = error
    if isinstance(outcome, RangeNotSatisfiable):
        assert outcome.size == size  # for `Content-Range: bytes */<size>`
        return
    start, length = outcome
    assert 0 <= start < size
    assert length >= 1
    assert start + length <= size


@pytest.mark.parametrize(
    "header",
    ["bytes=\N{SUPERSCRIPT TWO}-", "bytes=-\N{SUPERSCRIPT TWO}", "bytes=0-\N{SUPERSCRIPT ONE}"],
)
def test_parse_range_rejects_superscript_digits(header: str) -> None:
    """`str.isdigit()` is true for them, `int()` cannot read them."""
    with pytest.raises(BadRequest):
        parse_range(header, 10)


@pytest.mark.parametrize(
    "header", ["bytes=0-" + "9" * 5000, "bytes=" + "9" * 5000 + "-", "bytes=-" + "9" * 5000]
)
def test_parse_range_very_long_positions(header: str) -> None:
    """A position past `sys.get_int_max_str_digits()` (4300) used to make `int()` raise
    ValueError (a 500): such a header fits in h11's 16 KiB limit. Now it is "very far": a huge
    end or suffix means the whole blob, a huge start is a 416."""
    try:
        start, length = parse_range(header, 10)
    except (BadRequest, RangeNotSatisfiable):
        return
    assert (start, length) == (0, 10)


@PLAIN
@given(
    first=st.none() | st.integers(0, 2**64),
    last=st.none() | st.integers(0, 2**64),
    size=SIZES,
)
def test_parse_range_arithmetic(first: int | None, last: int | None, size: int) -> None:
    """Well-formed headers against RFC 9110's arithmetic (and quirks 16-17: 416, not 200)."""
    if first is None and last is None:
        return
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    expected: object
    if first is None:
        assert last is not None
        expected = None if last == 0 or size == 0 else (max(size - last, 0), min(last, size))
    elif last is not None and last < first:
        expected = "bad"
    elif first >= size:
        expected = None
    else:
        end = size - 1 if last is None else min(last, size - 1)
        expected = (first, end - first + 1)
    try:
        got: object = parse_range(header, size)
    except BadRequest:
        got = "bad"
    except RangeNotSatisfiable:
        got = None
    assert got == expected
