"""`azuld submit` against the real daemon: what is checked before anything is uploaded, names
and settings as published, and that no file it reported is ever lost: SIGTERM and SIGINT
mid-submit, a daemon killed and restarted mid-submit, a daemon that does not come back. In every
case each file is either reported (and its event is in the log) or named as not published, and
the summary and exit code say so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from azuld.cli import main
from azuld.cli.client import AzuldClient
from tests.daemon import Daemon, running_daemon, start_daemon
from tests.http.conftest import parse_multipart
from tests.services import free_port

REPORTED = re.compile(r"^\[(\d+)/(\d+)\] (\S+) ([0-9a-f]{64}) ")
NOT_PUBLISHED = re.compile(r"^azuld submit: not published: (\S+): (.*)$")


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_text("hello azul\n")
    return path


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """A folder of 300 small files, f000 … f299."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(300):
        (folder / f"f{i:03d}").write_bytes(os.urandom(48) + str(i).encode())
    return folder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "a/b"], "azuld submit: invalid source 'a/b': use 1-100 letters, digits"),
        (["--source", ""], "azuld submit: invalid source '': use 1-100 letters, digits"),
        (["--source", "ok", "--reference", "nope"], "azuld submit: --reference 'nope' is not"),
        (["--source", "ok", "--setting", "=x"], "azuld submit: --setting '=x' is not KEY=VALUE"),
    ],
)
def test_arguments_are_checked_before_anything_is_sent(
    sample: Path,
    unused_url: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    # Nothing listens at the URL: reaching it would say "waiting" and "cannot reach".
    assert main(["submit", str(sample), *extra, "--server", unused_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "azuld at" not in err


def test_an_unreachable_daemon_is_one_line(
    sample: Path, unused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", str(sample), "--source", "demo", "--server", unused_url, "--wait", "0"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"cannot reach azuld at {unused_url} (is `azuld serve` running? use --server or "
        "AZULD_SERVER)\n"
    )


def test_it_waits_for_a_daemon_that_is_starting_then_says_so(
    sample: Path, unused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", str(sample), "--source", "demo", "--server", unused_url, "--wait", "0.5"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        f"waiting for azuld at {unused_url}… (up to 0.5 s; --wait N)\n"
        f"cannot reach azuld at {unused_url} (is `azuld serve` running? use --server or "
        "AZULD_SERVER)\n"
    )


def source_names(url: str) -> list[str]:
    """The file names of the source `demo`'s top-level binaries, as the daemon holds them."""
    with AzuldClient(url) as client:
        return [node.filename for node in client.source("demo")]


@pytest.mark.slow
async def test_an_empty_file_is_named_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "empty.bin").write_bytes(b"")
    (folder / "full.txt").write_text("hello azul\n")
    async with running_daemon(tmp_path / "data") as daemon:
        argv = ["submit", str(folder), "--source", "demo", "--server", daemon.url]
        assert await trio.to_thread.run_sync(main, argv) == 1
        captured = capsys.readouterr()
        err = captured.err.splitlines()
        assert err[0] == f"azuld submit: {folder / 'empty.bin'}: the file is empty; skipped"
        assert err[1].startswith("[1/1] full.txt ")
        assert len(err) == 2
        assert captured.out.startswith("submitted 1 file(s) to source 'demo' in ")
        assert captured.out.endswith("; 1 empty skipped\n")
        assert await trio.to_thread.run_sync(source_names, daemon.url) == ["full.txt"]


@pytest.mark.slow
async def test_folders_keep_their_sub_folders_and_settings_reach_the_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "case"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "top.bin").write_bytes(b"top")
    (folder / "sub" / "a.bin").write_bytes(b"a")
    (folder / "sub" / "deeper" / "b.bin").write_bytes(b"b")
    single = tmp_path / "single.txt"
    single.write_text("single\n")
    async with running_daemon(tmp_path / "data") as daemon:
        argv = [
            "submit",
            str(folder),
            str(single),
            "--source",
            "demo",
            "--server",
            daemon.url,
            "--setting",
            "password=infected",
            "--setting",
            "depth=2",
            "--reference",
            "case=7",
        ]
        assert await trio.to_thread.run_sync(main, argv) == 0
        assert capsys.readouterr().out.startswith("submitted 4 file(s) to source 'demo' in ")
        names = await trio.to_thread.run_sync(source_names, daemon.url)
        assert sorted(names) == ["single.txt", "sub/a.bin", "sub/deeper/b.bin", "top.bin"]
        async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
            reply = await client.get(
                "/api/v2/event/binary/passive",
                params={"name": "T", "version": "1", "r-historic": "true", "count": "10"},
            )
        parts = parse_multipart(reply.content, reply.headers["content-type"])
        events = msgspec.json.decode(parts["events"])["events"]
        assert len(events) == 4
        for event in events:
            assert event["source"]["settings"] == {"password": "infected", "depth": "2"}
            assert event["source"]["references"] == {"case": "7"}


# -- a submit as a subprocess, interrupted -------------------------------------------------


@dataclass
class Submit:
    """`azuld submit` running as a subprocess; its stderr read line by line."""

    process: trio.Process
    lines: list[str] = field(default_factory=list)
    _buffer: bytes = b""

    async def line(self) -> str | None:
        """The next line of stderr (None at its end)."""
        assert self.process.stderr is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stderr.receive_some()
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    async def until(self, wanted: str | re.Pattern[str], count: int = 1) -> None:
        """Read until `count` lines matched (a regex, or a substring)."""
        seen = 0
        while seen < count:
            line = await self.line()
            assert line is not None, "\n".join(self.lines)
            if wanted.search(line) if isinstance(wanted, re.Pattern) else wanted in line:
                seen += 1

    async def finish(self) -> tuple[int, str]:
        """Read stderr to its end; the exit code and stdout."""
        while await self.line() is not None:
            pass
        assert self.process.stdout is not None
        out = b""
        while chunk := await self.process.stdout.receive_some():
            out += chunk
        return await self.process.wait(), out.decode()

    def reported(self) -> list[str]:
        return [m.group(3) for line in self.lines if (m := REPORTED.match(line))]

    def not_published(self) -> dict[str, str]:
        return {
            Path(m.group(1)).name: m.group(2)
            for line in self.lines
            if (m := NOT_PUBLISHED.match(line))
        }


async def start_submit(folder: Path, url: str, *extra: str) -> Submit:
    command = [sys.executable, "-m", "azuld", "submit", str(folder), "--source", "demo"]
    process = await trio.lowlevel.open_process(
        [*command, "--server", url, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return Submit(process)


def check_nothing_lost(submit: Submit, in_log: list[str], files: set[str]) -> None:
    """Every file is reported or named as not published (not both); every reported file's
    event is in the log; a file in the log that was not reported was named as possibly stored."""
    reported, left = set(submit.reported()), submit.not_published()
    assert len(reported) == len(submit.reported()), "a file reported twice"
    assert reported | set(left) == files
    assert not reported & set(left)
    assert reported <= set(in_log)
    for name in set(in_log) - reported:
        assert left[name].startswith("publish interrupted"), (name, left[name])
    assert not any("Traceback" in line for line in submit.lines), "\n".join(submit.lines)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_mid_submit_loses_nothing_it_reported(
    tmp_path: Path, many: Path, signum: signal.Signals
) -> None:
    files = {f"f{i:03d}" for i in range(300)}
    async with running_daemon(tmp_path / "data") as daemon:
        submit = await start_submit(many, daemon.url)
        with trio.fail_after(120):
            await submit.until(REPORTED, count=30)
            submit.process.send_signal(signum)
            code, out = await submit.finish()
        in_log = await trio.to_thread.run_sync(source_names, daemon.url)
    check_nothing_lost(submit, in_log, files)
    left = submit.not_published()
    assert f"azuld submit: {signum.name}: publishing the " in "\n".join(submit.lines)
    if left:
        assert code == 128 + signum
        assert out == (
            f"submitted {len(submit.reported())} of 300 file(s) to source 'demo'; "
            f"{len(left)} not published (listed above)\n"
        )
    else:  # the machine was quick: every file was published within the grace
        assert code == 0
        assert out.startswith("submitted 300 file(s) to source 'demo' in ")
    assert all(f"({signum.name})" in why for why in left.values()), left
    # What was uploaded when the signal came was published within the grace.
    assert not any(why.startswith(("uploaded", "publish")) for why in left.values()), left


@pytest.fixture
def fixed_port() -> list[str]:
    """`--listen` on one free port, so that a restarted daemon is at the same URL."""
    return ["--listen", f"127.0.0.1:{free_port()}"]


@pytest.mark.slow
async def test_a_daemon_killed_and_restarted_mid_submit_loses_nothing(
    tmp_path: Path, many: Path, fixed_port: list[str]
) -> None:
    files = {f"f{i:03d}" for i in range(300)}
    data = tmp_path / "data"
    daemon: Daemon | None = await start_daemon(data, extra_args=fixed_port)
    assert daemon is not None
    url = daemon.url
    try:
        submit = await start_submit(many, url)
        with trio.fail_after(120):
            await submit.until(REPORTED, count=30)
            await daemon.kill()
            await submit.until("retrying for up to 60 s")
            daemon = await start_daemon(data, extra_args=fixed_port)
            code, out = await submit.finish()
        in_log = await trio.to_thread.run_sync(source_names, url)
    finally:
        if daemon is not None and daemon.process.returncode is None:
            await daemon.kill()
    check_nothing_lost(submit, in_log, files)
    assert (code, submit.not_published()) == (0, {}), "\n".join(submit.lines)
    assert out.startswith("submitted 300 file(s) to source 'demo' in ")
    assert sum("retrying for up to" in line for line in submit.lines) == 1
    back = f"azuld submit: azuld at {url} answers again ("
    assert any(line.startswith(back) for line in submit.lines)


@pytest.mark.slow
async def test_a_daemon_that_does_not_come_back_is_given_up_on(
    tmp_path: Path, many: Path, fixed_port: list[str]
) -> None:
    files = {f"f{i:03d}" for i in range(300)}
    data = tmp_path / "data"
    daemon = await start_daemon(data, extra_args=fixed_port)
    submit = await start_submit(many, daemon.url, "--retry-seconds", "1")
    with trio.fail_after(120):
        await submit.until(REPORTED, count=30)
        await daemon.kill()
        code, out = await submit.finish()
    async with running_daemon(data, extra_args=fixed_port) as again:
        in_log = await trio.to_thread.run_sync(source_names, again.url)
    check_nothing_lost(submit, in_log, files)
    left = submit.not_published()
    assert code == 1
    assert out == (
        f"submitted {len(submit.reported())} of 300 file(s) to source 'demo'; {len(left)} not "
        "published (listed above)\n"
    )
    assert all(f"(azuld at {daemon.url} did not answer for 1 s: " in why for why in left.values())
