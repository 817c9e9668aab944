"""One archive in, its members out: the extractor for each container, synchronous (the plugin
runs it in a worker thread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from azuld.plugin import OptOut
from azuld.plugins.unbox.compressed import extract_stream
from azuld.plugins.unbox.guards import Budget
from azuld.plugins.unbox.limits import Limits
from azuld.plugins.unbox.rararchive import extract_rar
from azuld.plugins.unbox.sevenzip import extract_7z
from azuld.plugins.unbox.tararchive import extract_tar
from azuld.plugins.unbox.walk import Context, Extraction
from azuld.plugins.unbox.ziparchive import extract_zip

__all__ = ["extract"]

_EXTRACTORS: dict[str, Callable[[bytes, Context], Extraction]] = {
    "zip": extract_zip,
    "tar": extract_tar,
    "gzip": partial(extract_stream, container="gzip"),
    "bzip2": partial(extract_stream, container="bzip2"),
    "xz": partial(extract_stream, container="xz"),
    "lzma": partial(extract_stream, container="lzma"),
    "7z": extract_7z,
    "rar": extract_rar,
}


def extract(
    data: bytes, container: str, limits: Limits, stop: threading.Event, parent_name: str = ""
) -> Extraction:
    """Extract `data` as `container` under `limits`. Raises `OptOut` when nothing can be done.

    Setting `stop` (from another thread) ends the extraction at its next chunk, as truncated.
    """
    context = Context(limits, Budget(limits, stop), parent_name)
    extractor = _EXTRACTORS.get(container)
    if extractor is None:
        raise OptOut("unsupported-format", f"Unbox does not extract {container!r} archives")
    result = extractor(data, context)
    result.total_bytes = context.budget.total
    if not result.members:
        if result.password_failures:
            tried = ", ".join(limits.passwords) or "none configured"
            raise OptOut(
                "password-required",
                f"the {result.container} archive is encrypted and none of the configured "
                f"passwords ({tried}) opens it",
            )
        if result.backend_missing:
            raise OptOut(
                "rar-backend-missing",
                "this rar archive needs the 'unar' tool (Debian package unar), not found",
            )
    return result
