"""`azuld submit`: upload files and publish them as `sourced` events, with progress.

Everything that can be checked locally is checked before the first upload: the source name, the
references, that every file exists. Empty files are named and skipped (azuld stores no empty
blobs).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from azuld.cli.admin import valid_source
from azuld.cli.client import AzuldClient
from azuld.cli.errors import Refused, UsageError
from azuld.core.publish import sourced_event
from azuld.models.events import Author, BinaryEvent

__all__ = ["submit"]

_EVENTS_PER_POST = 50


def _references(pairs: list[str]) -> dict[str, str]:
    references: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--reference {pair!r} is not KEY=VALUE")
        references[key] = value
    return references


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def submit(args: argparse.Namespace) -> int:
    """Exit 0 when every file was published; 1 when one failed or was skipped (each named)."""
    source = valid_source(args.source)
    references = _references(args.reference)
    author = Author(name=args.user or getpass.getuser(), category="user")
    files = list(_files(args.files))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"azuld submit: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    empty = [f for f in files if f.stat().st_size == 0]
    for path in empty:
        print(f"azuld submit: {path}: the file is empty; skipped", file=sys.stderr)
    files = [f for f in files if f not in empty]
    interactive = sys.stderr.isatty()
    pending: list[BinaryEvent] = []
    published = 0
    failed = 0
    with AzuldClient(args.server) as client:

        def flush() -> None:
            nonlocal published, failed, pending
            if not pending:
                return
            try:
                published += client.publish(pending).total_ok
            except Refused as refused:
                print(f"azuld submit: publish failed: {refused}", file=sys.stderr)
                failed += len(pending)
            pending = []

        for index, path in enumerate(files, 1):
            try:
                with path.open("rb") as handle:
                    data = client.upload(source, "content", handle)
            except Refused as refused:
                print(f"azuld submit: {path}: {refused}", file=sys.stderr)
                failed += 1
                continue
            pending.append(
                sourced_event(
                    data,
                    path.name,
                    source=source,
                    author=author,
                    now=datetime.now(UTC),
                    references=references,
                    expedite=args.expedite,
                )
            )
            line = f"[{index}/{len(files)}] {path.name} {data.sha256} {data.file_format}"
            if interactive:
                print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr)
            if len(pending) >= _EVENTS_PER_POST:
                flush()
        flush()
    if interactive:
        print(file=sys.stderr)
    skipped = f"; {len(empty)} empty skipped" if empty else ""
    print(f"submitted {published} file(s) to source {source!r}; {failed} failed{skipped}")
    return 1 if failed or empty else 0
