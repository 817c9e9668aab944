"""`azuld submit`: what is checked before anything is uploaded (the source name, references),
empty files named and skipped, and one line when the daemon cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from azuld.cli import main
from azuld.cli.client import AzuldClient
from tests.daemon import running_daemon


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_text("hello azul\n")
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "a/b"], "azuld submit: invalid source 'a/b': use 1-100 letters, digits"),
        (["--source", ""], "azuld submit: invalid source '': use 1-100 letters, digits"),
        (["--source", "ok", "--reference", "nope"], "azuld submit: --reference 'nope' is not"),
    ],
)
def test_arguments_are_checked_before_anything_is_sent(
    sample: Path,
    unused_url: str,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    # Nothing listens at the URL: reaching it would say "cannot reach".
    assert main(["submit", str(sample), *extra, "--server", unused_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "cannot reach" not in err


def test_an_unreachable_daemon_is_one_line(
    sample: Path, unused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", str(sample), "--source", "demo", "--server", unused_url]) == 1
    assert capsys.readouterr().err == (
        f"cannot reach azuld at {unused_url} (is `azuld serve` running? use --server or "
        "AZULD_SERVER)\n"
    )


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
        assert f"azuld submit: {folder / 'empty.bin'}: the file is empty; skipped\n" in (
            captured.err
        )
        assert "[1/1] full.txt " in captured.err
        assert captured.out == ("submitted 1 file(s) to source 'demo'; 0 failed; 1 empty skipped\n")

        def names() -> list[str]:
            with AzuldClient(daemon.url) as client:
                return [node.filename for node in client.source("demo")]

        assert await trio.to_thread.run_sync(names) == ["full.txt"]
