"""Text: whether a blob's start decodes as text, and which script or markup it looks like,
scored with the patterns of `[text]` in rules.toml."""

from __future__ import annotations

import os
import re

from azuld.identify.rules import TextRules

__all__ = ["decode_text", "text_format"]

_SHEBANG = re.compile(r"\A#!\s*(\S+)(?:[ \t]+(\S+))?")


# What counts against text: replacement characters and controls other than \t \n \v \f \r ESC.
_NOT_TEXT = re.compile("[\ufffd\x00-\x08\x0e-\x1a\x1c-\x1f]")


def decode_text(data: bytes) -> str | None:
    """Decode ``data`` if it looks like text (BOM aware); None if binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    elif b"\x00" in data:  # as UTF-8 that is a NUL in the text (below), without decoding it all
        return None
    else:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    if not text.strip() or "\x00" in text:
        return None
    sample = text[:8192]
    bad = len(_NOT_TEXT.findall(sample))
    return text if bad <= len(sample) // 100 else None


def _count(patterns: tuple[re.Pattern[str], ...], text: str) -> int:
    """Number of ``patterns`` that occur in ``text``."""
    return sum(1 for pattern in patterns if pattern.search(text))


def text_format(text: str, tail: str, rules: TextRules) -> str:
    """Classify decoded text (``tail``: its last characters) as a script or markup id, or
    text/plain."""
    shebang = _SHEBANG.match(text)
    if shebang:
        interp = os.path.basename(shebang.group(1))
        if interp == "env" and shebang.group(2):
            interp = os.path.basename(shebang.group(2))
        interp = re.sub(r"[\d.]+$", "", interp)  # python3.11 -> python
        if interp in rules.interpreters:
            return rules.interpreters[interp]
    head = text[:1024]
    if (
        rules.html_start.match(head)
        or rules.html_line.search(text[:256])
        or rules.html_end.search(tail)
    ):
        return "code/html"
    if rules.batch_echo_off.match(text):
        return "code/batch"
    cmdlets = len({m.group(0).lower() for m in rules.ps_cmdlet.finditer(text)})
    ps_score = 2 * min(cmdlets, 3) + 2 * _count(rules.ps_strong, text) + _count(rules.ps_weak, text)
    js_score = 2 * _count(rules.js_strong, text) + _count(rules.js_weak, text)
    if ps_score >= 4 and ps_score >= js_score:
        return "code/ps1"
    if js_score >= 4:
        return "code/javascript"
    if _count(rules.batch_lines, text) >= 3:
        return "code/batch"
    return "text/plain"
