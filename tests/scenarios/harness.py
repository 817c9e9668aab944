"""Processes and folders: the daemons of one scenario, the plugin processes it starts, what is
left in a data folder afterwards, and a small filesystem to fill.

Nothing here kills anything it did not start: daemons and plugin processes are killed by their
`trio.Process`, and a filesystem this module mounted is unmounted by the same context manager.
"""

from __future__ import annotations

import gc
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.daemon import Daemon, start_daemon
from tests.scenarios.outcome import Outcome
from tests.scenarios.profile import write_config


class Harness:
    """Starts the daemons of one scenario, all with the same config; kills leftovers at the end."""

    def __init__(self, workdir: Path, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.workdir = workdir
        self.config = write_config(workdir / "azuld.toml", overrides)
        self.daemons: list[Daemon] = []
        self.processes: list[trio.Process] = []

    async def start(self, data_dir: Path | None = None) -> Daemon:
        daemon = await start_daemon(
            data_dir or self.workdir / "data", extra_args=["--config", str(self.config)]
        )
        self.daemons.append(daemon)
        return daemon

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for process in [d.process for d in self.daemons] + self.processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()


@asynccontextmanager
async def harness(
    workdir: Path, overrides: dict[str, dict[str, Any]] | None = None
) -> AsyncIterator[Harness]:
    await trio.Path(workdir).mkdir(parents=True, exist_ok=True)
    h = Harness(workdir, overrides)
    try:
        yield h
    finally:
        await h.aclose()
        # Requests cut off by a SIGKILL leave httpx body generators suspended; collect them
        # while the test (and its warning filter) is still running.
        gc.collect()
        with trio.CancelScope(shield=True):
            await trio.sleep(0.05)


# -- a daemon's process and folder ----------------------------------------------------------


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def integrity_check(data_dir: Path) -> str:
    """`PRAGMA integrity_check` on events.sqlite3, opened read-only (the daemon must be gone)."""
    db = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return "; ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def read_commits(data_dir: Path) -> list[tuple[str, str, int, int, str]]:
    db = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT grp, topic, partition, offset, metadata FROM commits"))
    finally:
        db.close()


def spool_files(data_dir: Path) -> list[Path]:
    spool = data_dir / "blobs" / ".spool"
    return sorted(spool.iterdir()) if spool.is_dir() else []


def bad_blob_files(data_dir: Path) -> tuple[int, list[str]]:
    """Every file under blobs/ (but the spool) must be named by the sha256 of its bytes."""
    root = data_dir / "blobs"
    count, bad = 0, []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".spool" in path.relative_to(root).parts:
            continue
        count += 1
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != path.name:
            bad.append(f"{path.relative_to(root)} hashes to {digest.hexdigest()}")
    return count, bad


def blob_paths(data_dir: Path, digest: str) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob(digest) if p.is_file()]


# -- a small filesystem ---------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@asynccontextmanager
async def small_filesystem(where: Path, outcome: Outcome) -> AsyncIterator[Path | None]:
    """A 4 MiB filesystem mounted at `where`: tmpfs if allowed, else a loop-mounted ext4 image.
    Yields None (with `outcome.skipped` saying why) when neither works."""
    await trio.Path(where).mkdir(parents=True, exist_ok=True)
    tmpfs = _run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where))
    if tmpfs.returncode == 0:
        outcome.served["filesystem"] = "tmpfs size=4m"
        try:
            yield where
        finally:
            _run("umount", str(where))
        return
    image = where.parent / "small.ext4"
    steps = [
        ("truncate", "-s", "8M", str(image)),
        ("mkfs.ext4", "-q", "-F", str(image)),
        ("mount", "-o", "loop", str(image), str(where)),
    ]
    failures = [f"tmpfs: {tmpfs.stderr.strip()}"]
    for step in steps:
        done = _run(*step)
        if done.returncode != 0:
            failures.append(f"{' '.join(step)}: {done.stderr.strip()}")
            outcome.skipped = "no small filesystem could be made: " + "; ".join(failures)
            image.unlink(missing_ok=True)
            yield None
            return
    outcome.served["filesystem"] = "FALLBACK: loop-mounted 8 MiB ext4 image (tmpfs not allowed)"
    outcome.note(outcome.served["filesystem"] + "; " + failures[0])
    try:
        yield where
    finally:
        _run("umount", str(where))
        image.unlink(missing_ok=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem has no byte left; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            block = b"\0" * size
            while True:
                try:
                    written += os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    return written
