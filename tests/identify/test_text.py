"""`azuld.identify.text` and the `[text]` rules: the faster forms give exactly what the plain
ones gave, and hostile text takes linear time."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from azuld.identify import identify_bytes
from azuld.identify.rules import RULES
from azuld.identify.text import decode_text, text_format


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


# -- the text patterns: linear, and matching what the plain forms matched --------------------

# The patterns as first written (rules.toml says why each was rewritten), by where they are now.
_ORIGINAL = {
    (
        "html_start",
        None,
    ): r"(?is)\A\s*(?:<!--.*?-->\s*|<\?xml[^>]*>\s*)*<(?:!doctype\s+html|html)\b",
    ("js_weak", 4): r"(?m)\breturn\b[^;\n]*;",
    ("ps_strong", 0): r"(?im)^\s*param\s*\(",
    ("js_strong", 0): r"(?m)(?:^|[;\s(])(?:var|let|const)\s+[\w$]+\s*=",
    ("js_strong", 1): r"(?m)\b(?:document|window)\.\w+",
    ("js_strong", 2): r"(?m)\bconsole\.\w+\(",
    ("js_strong", 3): r"""(?m)\bmodule\.exports\b|\brequire\(\s*['\"]""",
    ("js_strong", 4): r"(?m)\bnew\s+ActiveXObject\(|\bWScript\.\w+",
    ("js_strong", 5): r"(?m)\bfunction\s*[\w$]*\s*\([\w$\s,]*\)\s*\{",
    ("js_strong", 6): r"(?m)\b(?:eval|unescape|setTimeout|decodeURIComponent)\(",
    ("js_weak", 3): r"(?m)\bthis\.\w+",
    **{
        ("batch_lines", index): pattern.replace(r"^[^\S\n]*", r"^\s*")
        for index, pattern in enumerate(p.pattern for p in RULES.text.batch_lines)
        if pattern.startswith(r"(?im)^[^\S\n]*")
    },
}


def _shipped(name: str, index: int | None) -> re.Pattern[str]:
    found = getattr(RULES.text, name)
    return found if index is None else found[index]


_TOKENS = st.sampled_from(
    [
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\n\n",
        "\x0b",
        "\u00a0",
        "x",
        "word",
        "_",
        "@",
        ":",
        "::",
        "%",
        "/",
        "/b",
        "/f",
        "/i",
        "=",
        '"',
        ";",
        "(",
        "rem",
        "REM",
        "set",
        "setlocal",
        "goto",
        "if",
        "not",
        "exist",
        "for",
        "call",
        "exit",
        "taskkill",
        "reg",
        "add",
        "net",
        "user",
        "param",
        "return",
        "re",
        "turn",
        "<!--",
        "-->",
        "--",
        "<?xml",
        ">",
        "<",
        "<html",
        "<HTML>",
        "<!doctype html",
        "<!DOCTYPE",
        "html",
        "\u00e9",
        "\u2028",
        "$",
        ".",
        ",",
        ")",
        "{",
        "'",
        "var",
        "let",
        "const",
        "document",
        "window",
        "console",
        "module",
        "exports",
        "require",
        "new",
        "ActiveXObject",
        "WScript",
        "function",
        "eval",
        "unescape",
        "setTimeout",
        "decodeURIComponent",
        "this",
    ]
)
_TEXTS = st.lists(_TOKENS, max_size=60).map("".join)


@pytest.mark.parametrize(("name", "index"), sorted(_ORIGINAL, key=str))
@settings(max_examples=200)
@given(text=_TEXTS)
def test_a_rewritten_pattern_matches_what_the_original_matched(
    name: str, index: int | None, text: str
) -> None:
    original = re.compile(_ORIGINAL[(name, index)])
    shipped = _shipped(name, index)
    if name == "html_start":  # used with match (and on 1 KiB at most)
        assert bool(shipped.match(text)) == bool(original.match(text))
    else:
        assert bool(shipped.search(text)) == bool(original.search(text))


@pytest.mark.parametrize(
    "hostile",
    [
        "\n" * 65536 + "x",  # every line start retried every later blank line (hours)
        " \n" * 32768 + "x",
        "return " * 9000,  # every `return` scanned to the end of its one long line (seconds)
        "<!---->" * 146 + "x",  # html_start's comments split 2^146 ways (forever)
        "<!-- a --> " * 90 + "<?xml ?>" * 10 + "x",
    ],
    ids=["blank-lines", "blank-lines-with-spaces", "returns", "comments", "comments-and-xml"],
)
def test_hostile_text_is_classified_in_linear_time(hostile: str) -> None:
    """Each of these held the GIL for seconds to forever before (no timing asserted: a
    regression hangs the test)."""
    assert text_format(hostile, hostile[-256:], RULES.text) == "text/plain"
    assert identify_bytes(hostile.encode()[:2048]).file_format  # libmagic may call it sgml
