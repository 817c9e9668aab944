"""`azuld.identify.text`: the faster forms give exactly what the plain ones gave."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from azuld.identify.text import decode_text


def reference_decode_text(data: bytes) -> str | None:
    """`decode_text` as it was first written (a character loop over the sample)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    else:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    if not text.strip() or "\x00" in text:
        return None
    sample = text[:8192]
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return text if bad <= len(sample) // 100 else None


# Text-like bytes: mostly printable ASCII and UTF-8, with a sprinkling of what counts against
# text (controls, NULs, invalid UTF-8) and the byte-order marks.
_PIECES = st.sampled_from(
    [
        b"hello world ",
        b"\n",
        b"\t",
        b"\r\n",
        b"\x1b[0m",
        "caf\u00e9 \u20ac \U0001f600 ".encode(),
        b"\x00",
        b"\x01",
        b"\x07",
        b"\x0b\x0c",
        b"\x1a",
        b"\x1c",
        b"\x1f",
        b"\x7f",
        b"\xff",
        b"\xc3",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\xfe\xff",
        b"A\x00",
        b" ",
    ]
)
_TEXTISH = st.lists(_PIECES, max_size=400).map(b"".join)


@given(st.one_of(_TEXTISH, st.binary(max_size=2000)))
@example(b"")
@example(b"   \n\t")
@example(b"\xef\xbb\xbfplain")
@example(b"\xff\xfeh\x00i\x00")
@example(b"text with a NUL\x00 in it")
@example(b"a" * 8190 + b"\x01\x01" + b"\x01" * 100)  # bad characters past the 8192 sample
@example(b"a" * 9900 + b"\x01" * 99)
def test_decode_text_is_the_reference(data: bytes) -> None:
    assert decode_text(data) == reference_decode_text(data)


def test_decode_text_counts_bad_characters_in_the_first_8192_only() -> None:
    assert decode_text(b"a" * 8100 + b"\x01" * 81) == "a" * 8100 + "\x01" * 81
    assert decode_text(b"a" * 8100 + b"\x01" * 82) is None
    assert decode_text(b"a" * 8192 + b"\x01" * 500) is not None
