"""How deeply a JSON body nests, found before it is decoded.

The JSON decoder recurses once per nested array or object, so a body of 100,000 `[` ends in a
`RecursionError` deep inside it (a 500, and a traceback per request). Every route that decodes a
JSON request body calls `check_nesting` first: deeper than `MAX_JSON_DEPTH` is a 422.

The check runs in a few C-level passes over the body (no Python step per byte): strings are
removed (their brackets do not nest), the brackets that remain are mapped to +1 and -1, and the
deepest point is the largest running sum. A body with no more opening brackets than the limit
(a heartbeat, a registration) is let through after counting them.
"""

from __future__ import annotations

from itertools import accumulate

from azuld.errors import Unprocessable

__all__ = ["MAX_JSON_DEPTH", "check_nesting", "nesting_depth"]

# Azul's events nest about ten levels (a plugin's `info` a few more); decoding, checking and
# re-encoding a body stays far inside Python's recursion limit at this depth.
MAX_JSON_DEPTH = 100

_OPEN, _CLOSE = b"\x01", b"\xff"  # +1 and -1 as signed bytes
_BRACKETS = bytes.maketrans(b"[{]}", _OPEN * 2 + _CLOSE * 2)
_ALL_BUT_BRACKETS_AND_QUOTES = bytes(byte for byte in range(256) if byte not in b'[]{}"')
# Above this many brackets, leaves (`[]`, `{}` once strings are gone) are dropped a level at a
# time by `bytes.replace` before the running sum, which costs a Python step per bracket.
_SHRINK_ABOVE = 4096


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body`, read as JSON. Exact for valid JSON
    and for the part of invalid JSON a decoder reads before it fails; past that (an unclosed
    string, stray brackets) it may count one level too many, never too few."""
    if b"\\" in body:  # escapes: `\\` first, so that `\\"` still ends its string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = body.translate(_BRACKETS, _ALL_BUT_BRACKETS_AND_QUOTES)
    # Two quotes side by side are a string without brackets, or the end of one string and the
    # start of the next with no bracket between: dropping them keeps every other quote's
    # meaning, and leaves only the strings that hold brackets to split out.
    marks = marks.replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    dropped = 0
    while len(marks) > _SHRINK_ABOVE:
        # The deepest bracket is always a leaf: each pass lowers the depth by exactly one. Only
        # while a pass takes a quarter of what is left, so the passes cost at most four times
        # the first (one long chain of brackets loses a single leaf a pass).
        shorter = marks.replace(_OPEN + _CLOSE, b"")
        if len(shorter) > len(marks) * 3 // 4:
            break
        marks, dropped = shorter, dropped + 1
    if not marks:
        return dropped
    return dropped + max(0, max(accumulate(memoryview(marks).cast("b"))))


def check_nesting(body: bytes, *, what: str, title: str) -> None:
    """Refuse `body` if it nests deeper than `MAX_JSON_DEPTH`. The 422's detail begins with
    `what` (e.g. "ensure events were in json format: event message"); `title` is its title.

    Raises:
        Unprocessable: too deep.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return
    if nesting_depth(body) > MAX_JSON_DEPTH:
        raise Unprocessable(
            f"{what} has nesting deeper than {MAX_JSON_DEPTH} levels (arrays and objects)",
            title=title,
        )
