"""`azuld submit`: upload files and publish them as `sourced` events.

Everything that can be checked locally is checked before the first upload: the source name, the
references and settings, that every file exists. Empty files are named and skipped (azuld stores
no empty blobs). A file under a submitted folder is published with its path below that folder
(`dir/sub/a.bin` as `sub/a.bin`); a file given by name, with its name.

A file is reported (`[n/N] name sha256 type`) only once the daemon acknowledged its event. The run
ends with every file that was not published (name and reason, on stderr) and one summary line
(stdout), however it ended: done, a signal, an outage, a refusal. `azuld.cli.uploads` does the
work.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from azuld.cli.admin import valid_source
from azuld.cli.client import AsyncAzuldClient
from azuld.cli.errors import Unreachable, UsageError
from azuld.cli.ledger import Item, Ledger
from azuld.cli.uploads import Pacing, Reporter, Submission
from azuld.core.publish import sourced_event
from azuld.models.events import Author, BinaryEvent, Datastream

__all__ = ["submit"]


def pairs(option: str, given: list[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments of `option` as a dict.

    Raises:
        UsageError: one is not KEY=VALUE.
    """
    found: dict[str, str] = {}
    for pair in given:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} {pair!r} is not KEY=VALUE")
        found[key] = value
    return found


def _files(paths: list[Path]) -> Iterator[tuple[Path, str]]:
    """Each file to submit, with the name it is published as."""
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                yield found, found.relative_to(path).as_posix()
        else:
            yield path, path.name


class _Progress(Reporter):
    """On a terminal one line, rewritten; otherwise a line per published file."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.interactive = sys.stderr.isatty()
        self._line_open = False

    def published(self, item: Item, stream: Datastream, count: int) -> None:
        line = f"[{count}/{self.total}] {item.filename} {stream.sha256} {stream.file_format}"
        if self.interactive:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
            self._line_open = True
        else:
            print(line, file=sys.stderr, flush=True)

    def say(self, message: str) -> None:
        self.end_line()
        print(f"azuld submit: {message}", file=sys.stderr, flush=True)

    def end_line(self) -> None:
        if self._line_open:
            print(file=sys.stderr, flush=True)
            self._line_open = False


def submit(args: argparse.Namespace) -> int:
    """Exit 0 when every file was published; 1 when one was not (each named); 128 + the signal
    when a signal stopped it before every file was published; 2 for a wrong argument."""
    import trio

    source = valid_source(args.source)
    references = pairs("--reference", args.reference)
    settings = pairs("--setting", args.setting)
    author = Author(name=args.user or getpass.getuser(), category="user")
    files = list(_files(args.files))
    missing = [str(path) for path, _ in files if not path.is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}")
    empty = [path for path, _ in files if path.stat().st_size == 0]
    for path in empty:
        print(f"azuld submit: {path}: the file is empty; skipped", file=sys.stderr)
    items = [
        Item(index, path, name)
        for index, (path, name) in enumerate(((p, n) for p, n in files if p not in empty), start=1)
    ]

    def make_event(item: Item, stream: Datastream) -> BinaryEvent:
        return sourced_event(
            stream,
            item.filename,
            source=source,
            author=author,
            now=datetime.now(UTC),
            references=references,
            settings=settings,
            expedite=args.expedite,
        )

    ledger = Ledger(items)
    progress = _Progress(len(items))
    pacing = Pacing(retry_seconds=args.retry_seconds)
    started = time.monotonic()

    async def run() -> Submission:
        async with AsyncAzuldClient(args.server, wait_seconds=args.wait) as client:
            submission = Submission(client, source, ledger, make_event, progress, pacing)
            await submission.run()
            return submission

    try:
        submission = trio.run(run)
    except Unreachable:
        raise  # nothing was uploaded: one line says so (azuld.cli.main)
    except BaseException as exc:
        # A Ctrl-C before any upload began, or a bug: still say what became of every file.
        progress.end_line()
        _report(ledger, source, f"stopped by {type(exc).__name__}", started, len(empty))
        raise
    progress.end_line()
    left = _report(ledger, source, submission.stop_reason, started, len(empty))
    if left and submission.signal is not None:
        return 128 + submission.signal
    return 1 if left or empty else 0


def _report(ledger: Ledger, source: str, stop_reason: str, started: float, empty: int) -> int:
    """Name every file not published (stderr), then the summary (stdout); how many were not."""
    seconds = time.monotonic() - started
    left = ledger.unpublished(stop_reason)
    for item, reason in left:
        print(f"azuld submit: not published: {item.path}: {reason}", file=sys.stderr)
    skipped = f"; {empty} empty skipped" if empty else ""
    total, published = len(ledger.items), ledger.published
    if left:
        print(
            f"submitted {published} of {total} file(s) to source {source!r}; "
            f"{len(left)} not published (listed above){skipped}"
        )
    else:
        rate = f" ({published / seconds:.0f} files/s)" if published >= 10 else ""
        print(
            f"submitted {published} file(s) to source {source!r} in {seconds:.1f} s{rate}{skipped}"
        )
    return len(left)
