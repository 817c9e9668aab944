"""`azuld serve` and `azuld config check`: settings are checked before the daemon starts, every
problem reported at once; `AZULD_CONFIG` names the file when `--config` does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from azuld.cli import main


def test_serve_refuses_wrong_settings_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text("[dispatch]\nlease_seconds = -5\nmax_attempts = 0\n")
    argv = ["serve", "--config", str(config), "--listen", "nonsense", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "azuld: config error: 3 problems:\n"
        f"  {config}: key 'dispatch.lease_seconds': expected a number > 0, got -5\n"
        f"  {config}: key 'dispatch.max_attempts': expected an integer >= 1, got 0\n"
        "  command line: server.listen: expected host:port with a port from 0 to 65535 (e.g. "
        "127.0.0.1:8111, 0.0.0.0:8111, [::1]:8111), got 'nonsense'\n"
    )
    assert not (tmp_path / "events.sqlite3").exists()  # nothing was opened


def test_config_check_reads_azuld_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text('[server]\nlisten = "0.0.0.0:9000"\n[auth]\nopen_roles = ["root"]\n')
    monkeypatch.setenv("AZULD_CONFIG", str(config))
    assert main(["config", "check"]) == 2
    assert capsys.readouterr().err == (
        f"azuld: config error: {config}: key 'auth.open_roles': expected a list of roles from "
        "'plugin', 'ingest', 'admin', got ['root']\n"
    )
    config.write_text('[server]\nlisten = "0.0.0.0:9000"\n')
    assert main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# {config}: valid. Effective settings:\n")
    assert "server.listen = '0.0.0.0:9000'\n" in out
