"""Where the command line finds the daemon: `--server` > `AZULD_SERVER` > the config file
(`[cli] server`, else `server.listen`) > http://127.0.0.1:8111."""

from __future__ import annotations

from pathlib import Path

import pytest

from azuld.cli import main
from azuld.cli.errors import UsageError
from azuld.cli.target import DEFAULT_SERVER, resolve_server
from azuld.errors import ConfigError


def test_precedence(tmp_path: Path) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text('[cli]\nserver = "http://from-config:1"\n')
    env = {"AZULD_SERVER": "http://from-env:2"}
    assert resolve_server("http://flag:3/", config, env) == "http://flag:3"
    assert resolve_server(None, config, env) == "http://from-env:2"
    assert resolve_server(None, config, {}) == "http://from-config:1"
    assert resolve_server(None, None, {"AZULD_CONFIG": str(config)}) == "http://from-config:1"
    assert resolve_server(None, None, {}) == DEFAULT_SERVER == "http://127.0.0.1:8111"


@pytest.mark.parametrize(
    ("server_table", "url"),
    [
        ('listen = "127.0.0.1:9000"', "http://127.0.0.1:9000"),
        ('listen = "0.0.0.0:9000"', "http://127.0.0.1:9000"),
        ('listen = "[::]:9000"', "http://[::1]:9000"),
        ('listen = "azuld.example:443"\ntls_certfile = "CERT"', "https://azuld.example:443"),
    ],
)
def test_the_servers_listen_address_when_cli_server_is_empty(
    tmp_path: Path, server_table: str, url: str
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked here")
    config = tmp_path / "azuld.toml"
    config.write_text(f"[server]\n{server_table.replace('CERT', str(cert))}\n")
    assert resolve_server(None, config, {}) == url


@pytest.mark.parametrize(
    ("flag", "env", "message"),
    [
        ("nonsense", {}, "--server 'nonsense' is not an http:// or https:// URL"),
        (None, {"AZULD_SERVER": "h:1"}, "AZULD_SERVER 'h:1' is not an http:// or https:// URL"),
    ],
)
def test_a_url_that_is_not_one(flag: str | None, env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_server(flag, None, env)


def test_a_wrong_config_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "azuld.toml"
    config.write_text('[cli]\nserver = "azuld:8111"\n')
    with pytest.raises(ConfigError, match=r"key 'cli\.server': expected empty, or an http"):
        resolve_server(None, config, {})


def test_every_daemon_command_uses_the_resolved_url(
    unused_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AZULD_SERVER", unused_url)
    unreachable = (
        f"cannot reach azuld at {unused_url} (is `azuld serve` running? use --server or "
        "AZULD_SERVER)\n"
    )
    for argv in (
        ["status"],
        ["plugins"],
        ["show", "--source", "demo"],
        ["failed"],
        ["reoffer", "some-job"],
        ["watch"],
    ):
        assert main([*argv, "--wait", "0"]) == 1, argv
        assert capsys.readouterr().err.endswith(unreachable), argv
