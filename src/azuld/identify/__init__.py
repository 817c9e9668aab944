"""Blob hashing and file-type identification in the style of the Azul dispatcher.

The ``file_format`` names and ``file_extension`` values follow Azul's ``identify.yaml``
(identify version 2) id mappings, e.g. ``archive/zip``, ``executable/windows/pe32`` or
``text/plain``. ``mime`` and ``magic`` come from libmagic (via python-magic); ``magic`` is the
first description libmagic gives when asked to keep going, as Azul reports it.

The rules are data, in ``rules.toml`` (magic bytes, libmagic description rules, trusted mime
types, text indicators, extensions), loaded by ``rules``; ``engine`` runs them in a fixed order
(its docstring lists it), with the header parsers of ``structure`` and the text scoring of
``text``. ``signature_format`` is the magic-bytes step alone, for callers (the Unbox plugin)
that need to recognise a container without libmagic.
"""

from __future__ import annotations

from azuld.identify.engine import (
    IDENTIFY_VERSION,
    FileType,
    identify_bytes,
    identify_path,
    signature_format,
    to_datastream,
)
from azuld.identify.hashing import FileDigests, FileHasher

__all__ = [
    "IDENTIFY_VERSION",
    "FileDigests",
    "FileHasher",
    "FileType",
    "identify_bytes",
    "identify_path",
    "signature_format",
    "to_datastream",
]
