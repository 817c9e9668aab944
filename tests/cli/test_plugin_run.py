"""`azuld plugin run`: loading plugins by name or path, SIGTERM and local mode. (A daemon that
is away is waited for: tests/plugin/test_survival.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from azuld.cli.errors import UsageError
from azuld.cli.plugin_run import load_plugin_class, serve_until_signalled
from azuld.plugin.runner import PluginRunner
from azuld.plugins.entropy import Entropy
from tests.plugin.test_runner import FakeDispatcher, Sleeper, statuses


def test_load_bundled_and_by_path(tmp_path: Path) -> None:
    assert load_plugin_class("entropy") is Entropy
    source = tmp_path / "myplugin.py"
    source.write_text(
        "from azuld.plugin import Plugin\n"
        "class Mine(Plugin):\n"
        "    name = 'Mine'\n"
        "    async def execute(self, job):\n"
        "        pass\n"
    )
    assert load_plugin_class(f"{source}:Mine").name == "Mine"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "neither a bundled plugin"),
        ("/no/such/file.py:X", "no such file"),
        ("azuld.plugins.entropy:Missing", "is not an azuld Plugin"),
    ],
)
def test_load_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_plugin_class(spec)


async def test_sigterm_finishes_the_running_job_then_exits() -> None:
    fake = FakeDispatcher()
    await fake.add(b"abc")
    runner = PluginRunner(Sleeper({"sleep": "1"}), fake, grace_seconds=30)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_until_signalled, runner)
            await trio.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)
    assert runner.stopping
    assert statuses(fake) == ["completed"]
    assert fake.fetches == 1


def test_local_mode_prints_results(tmp_path: Path) -> None:
    sample = tmp_path / "sample.bin"
    sample.write_bytes(bytes(range(256)) * 4)
    done = subprocess.run(
        [sys.executable, "-m", "azuld", "plugin", "run", "entropy", "--local", str(sample)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{sample}: completed" in done.stdout
    assert "entropy = 8.0" in done.stdout
