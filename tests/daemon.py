"""Run the real `azuld serve` as a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

_SERVING = re.compile(r"serving on (https?://127\.0\.0\.1:\d+)")


@dataclass
class Daemon:
    process: trio.Process
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crash would."""
        self.process.kill()
        await self.process.wait()

    async def terminate(self, timeout_seconds: float = 15) -> int:
        """SIGTERM, then the exit code (fails the test if it does not exit in time)."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(timeout_seconds):
            return await self.process.wait()


async def start_daemon(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    ready: re.Pattern[str] = _SERVING,
    within_seconds: float = 30,
) -> Daemon:
    """Start `azuld serve` and wait until it reports its URL (the first group of `ready`).

    Raises:
        RuntimeError: it exited or did not report readiness within `within_seconds` (with its
            log).
    """
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    log_path = trio.Path(data_dir.parent / f"{data_dir.name}-daemon.log")
    start = (await log_path.stat()).st_size if await log_path.exists() else 0
    with open(log_path, "ab") as log_file:  # noqa: ASYNC230 - opening a local file is instant
        process = await trio.lowlevel.open_process(
            [
                sys.executable,
                "-m",
                "azuld",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(data_dir),
                *(extra_args or []),
            ],
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, **(env or {})},
        )
    with trio.move_on_after(within_seconds):
        while process.returncode is None:
            text = (await log_path.read_text(errors="replace"))[start:]
            if match := ready.search(text):
                return Daemon(process, match.group(1), Path(log_path))
            await trio.sleep(0.05)
    process.kill()
    await process.wait()
    raise RuntimeError(f"azuld did not start:\n{await log_path.read_text(errors='replace')}")


@asynccontextmanager
async def running_daemon(
    data_dir: Path, *, env: dict[str, str] | None = None, extra_args: list[str] | None = None
) -> AsyncIterator[Daemon]:
    daemon = await start_daemon(data_dir, env=env, extra_args=extra_args)
    try:
        yield daemon
    finally:
        if daemon.process.returncode is None:
            with trio.CancelScope(shield=True):
                await daemon.kill()
