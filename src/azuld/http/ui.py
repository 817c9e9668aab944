"""The dashboard: one self-contained page at `/ui` that polls `/api/azuld/v1/plugins`.

The page is three files shipped as package data in `static/`: `dashboard.html` (the markup),
`dashboard.css` and `dashboard.js` (vanilla, no build step). They are put together once, at
import: the html's empty `<style data-inline="dashboard.css">` and
`<script data-inline="dashboard.js">` elements receive the two files inline, so the page loads
nothing but its API. The Content-Security-Policy allows exactly those two blocks (by hash), so
text that clients control (plugin names, error messages) can never become markup or script even
if a bug let it through. The JS only inserts text with DOM text nodes and `setAttribute`, never
`innerHTML`.
"""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files

from quart import Response

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE", "dashboard"]

_STATIC = files("azuld.http") / "static"


def _inline(page: str, tag: str, name: str) -> tuple[str, str]:
    """`page` with the empty `<tag data-inline="name">` element holding the file `name`, and
    the inlined block (what the policy hashes)."""
    placeholder = f'<{tag} data-inline="{name}"></{tag}>'
    if page.count(placeholder) != 1:
        raise RuntimeError(f"dashboard.html must hold exactly one {placeholder}")
    block = "\n" + (_STATIC / name).read_text(encoding="utf-8")
    return page.replace(placeholder, f"<{tag}>{block}</{tag}>"), block


def _csp_source(block: str) -> str:
    digest = hashlib.sha256(block.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE, _STYLE = _inline(
    (_STATIC / "dashboard.html").read_text(encoding="utf-8"), "style", "dashboard.css"
)
PAGE, _SCRIPT = _inline(PAGE, "script", "dashboard.js")

# Only the two inline blocks may run or style; nothing may be loaded but the API.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_source(_SCRIPT)}; style-src {_csp_source(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


async def dashboard() -> Response:
    """The dashboard page (it fetches its data itself, from `/api/azuld/v1/plugins`)."""
    return Response(
        PAGE,
        content_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
