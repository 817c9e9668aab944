"""The README's whole loop, run as a newcomer runs it: its lines verbatim, in order, in one shell,
with no sleeps between them (`scripts/serve &` then a command at once: the command waits for the
daemon). The environment points the daemon and the commands at a free port and a private data
folder; nothing else differs from the README."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from pathlib import Path

import pytest
import trio

from tests.services import REPO, free_port

pytestmark = pytest.mark.slow


def readme_loop() -> str:
    """The shell block under README.md's "## The whole loop", verbatim."""
    text = (REPO / "README.md").read_text()
    section = text.split("## The whole loop", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


WHOLE_LOOP = readme_loop()

# Around the loop: stop at the first failing command, and never leave the daemon behind.
HARNESS = "set -e\ntrap 'kill %1 2>/dev/null || true; wait' EXIT\n{loop}wait\n"


async def test_the_readme_loop_works_verbatim(tmp_path: Path) -> None:
    # A folder like the checkout's root, as far as the loop can tell.
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    sample = (REPO / "config.example.toml").read_bytes()
    (tmp_path / "config.example.toml").write_bytes(sample)
    port = free_port()
    env = {
        **os.environ,
        "AZULD_SERVER__LISTEN": f"127.0.0.1:{port}",  # where scripts/serve listens
        "AZULD_DATA_DIR": str(tmp_path / "data"),
        "AZULD_SERVER": f"http://127.0.0.1:{port}",  # where the commands look
    }
    with trio.fail_after(300):
        done = await trio.run_process(
            ["bash", "-c", HARNESS.format(loop=WHOLE_LOOP)],
            cwd=tmp_path,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{out}\n{err}"

    # What scripts/serve said it did, and the daemon's first and last words.
    assert re.search(r"^bootstrap: (nothing to do|installed).*\(.*\d s\)$", err, re.M), err
    assert "serve: starting azuld" in err
    assert f"azuld serving on http://127.0.0.1:{port} " in err
    assert err.rstrip().endswith("INFO azuld.cli.daemon [-] azuld stopped: SIGTERM"), err

    # `azuld submit` waited for the daemon if it had to, and published the sample.
    assert re.search(r"^submitted 1 file\(s\) to source 'demo' in ", out, re.M), out
    lines = out.splitlines()
    tree = lines[lines.index(next(line for line in lines if line.startswith("sample.zip"))) :]
    assert tree[0].startswith("sample.zip  archive/zip")
    assert "Unbox: archive_member_count=2" in out
    assert any(line.startswith("└── config.example.toml  text/plain") for line in tree), out
    assert any(line.startswith("└── serve  code/shell") for line in tree), out
    assert out.count("Entropy: entropy=") == 3


async def test_a_command_waits_for_a_setup_in_progress() -> None:
    """`scripts/serve &` sets up on a first run; `scripts/azuld` started meanwhile waits for it
    (the setup's lock), says so, then runs."""
    with (REPO / ".venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a setup in progress
        async with trio.open_nursery() as nursery:
            result: list[subprocess.CompletedProcess[bytes]] = []

            async def run() -> None:
                command = [str(REPO / "scripts" / "azuld"), "--version"]
                result.append(
                    await trio.run_process(command, capture_stdout=True, capture_stderr=True)
                )

            nursery.start_soon(run)
            await trio.sleep(1)
            assert result == []  # still waiting
            fcntl.flock(lock, fcntl.LOCK_UN)
    (done,) = result
    assert done.stderr.decode() == (
        "bootstrap: waiting for the setup already running in this checkout…\n"
    )
    assert done.stdout.decode().startswith("azuld ")
