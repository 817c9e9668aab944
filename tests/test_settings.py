"""Settings: TOML and environment layering, and errors that name the file, key and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from azuld.errors import ConfigError
from azuld.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "azuld.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings.server.listen == "127.0.0.1:8111"
    assert settings.events.backend == "embedded"


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:9000"\n[dispatch]\nlease_seconds = 10\n')
    settings = load_settings(path, environ={"AZULD_DISPATCH__LEASE_SECONDS": "20"})
    assert settings.server.listen == "127.0.0.1:9000"
    assert settings.dispatch.lease_seconds == 20.0


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config.example.toml"
    load_settings(example, environ={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server\nlisten = 1", "invalid TOML: "),
        ('log_level = "info"\n[dispatch]\nlease_seconds = = 3', "(at line 3, column"),
        ("[server]\nlistne = 'x'", "key 'server.listne': unknown setting (did you mean 'listen'?)"),
        ("[dispatch]\nlease_seconds = 'soon'", "key 'dispatch.lease_seconds': expected float"),
        ("[dispatch]\nmax_attempts = 1.5", "expected an integer"),
        ("[events]\nbackend = 'redis'", "expected one of 'embedded'"),
        ("server = 3", "must be a table"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="AZULD_DISPATCH__MAX_ATTEMPTS: expected int"):
        load_settings(environ={"AZULD_DISPATCH__MAX_ATTEMPTS": "many"})
    with pytest.raises(ConfigError, match="AZULD_SERVER__LISTN: unknown setting"):
        load_settings(environ={"AZULD_SERVER__LISTN": "x"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml", environ={})
