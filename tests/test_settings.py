"""Settings: TOML, environment and command-line layering; every setting's range or format; errors
that name the file (or variable), key, value and expectation, all at once; what SIGHUP applies."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from azuld.errors import ConfigError
from azuld.settings import (
    Settings,
    flatten,
    in_force,
    is_reloadable,
    load_settings,
    settings_diff,
)


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
        (
            "[dispatch]\nlease_seconds = 'soon'",
            "key 'dispatch.lease_seconds': expected a number > 0, got 'soon'",
        ),
        ("[dispatch]\nmax_attempts = 1.5", "expected an integer >= 1, got 1.5"),
        ("[dispatch]\nlease_seconds = inf", "expected a number > 0, got inf"),
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
    with pytest.raises(
        ConfigError, match="AZULD_DISPATCH__MAX_ATTEMPTS: expected an integer >= 1, got 'many'"
    ):
        load_settings(environ={"AZULD_DISPATCH__MAX_ATTEMPTS": "many"})
    with pytest.raises(ConfigError, match="AZULD_SERVER__LISTN: unknown setting"):
        load_settings(environ={"AZULD_SERVER__LISTN": "x"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "nope.toml", environ={})


# --- ranges and formats -------------------------------------------------------------------------

# A wrong value for every setting that has a range or format, and what the error says it expects.
WRONG = {
    "server.listen": ("nonsense", "expected host:port with a port from 0 to 65535"),
    "server.graceful_timeout_seconds": (-1, "expected a number >= 0"),
    "server.max_event_body_bytes": (10, "expected an integer >= 256"),
    "server.max_upload_bytes": (0, "expected an integer >= 1"),
    "server.upload_body_timeout_seconds": (0.5, "expected a number >= 1"),
    "server.tls_certfile": ("/no/such/cert.pem", "expected empty, or a readable file"),
    "server.tls_keyfile": ("/no/such/key.pem", "expected empty, or a readable file"),
    "server.keep_alive_timeout_seconds": (0, "expected a number > 0"),
    "server.processes": (0, "expected an integer from 1 to 64"),
    "server.worker_port_base": (65500, "expected an integer from 0 to 65472"),
    "server.head_timeout_seconds": (0, "expected a number from 0.1 to 3600"),
    "server.metrics_max_label_values": (0, "expected an integer from 1 to 100000"),
    "server.rejected_log_lines_per_second": (-1, "expected a number from 0 to 10000"),
    "events.topic_prefix": ("a.b", "expected 1-100 letters, digits, '_' or '-'"),
    "events.default_partitions": (0, "expected an integer from 1 to 10000"),
    "events.kafka_bootstrap": ("kafka1", "expected host:port, or several separated by commas"),
    "events.kafka_replication_factor": (0, "expected an integer >= 1"),
    "events.kafka_connect_timeout_seconds": (0, "expected a number > 0"),
    "events.kafka_request_timeout_seconds": (-3, "expected a number > 0"),
    "events.kafka_tail_cache_records": (-1, "expected an integer >= 0"),
    "events.kafka_message_max_bytes": (100, "expected an integer >= 1024"),
    "storage.s3_endpoint": ("minio:9000", "expected an http:// or https:// URL"),
    "storage.s3_bucket": ("My_Bucket", "expected an S3 bucket name"),
    "storage.s3_region": ("", "expected a region name"),
    "storage.s3_prefix": ("a//b", "expected empty, or up to 200 letters"),
    "dispatch.lease_seconds": (-5, "expected a number > 0"),
    "dispatch.max_attempts": (0, "expected an integer >= 1"),
    "dispatch.default_deadline_seconds": (0, "expected a number > 0"),
    "dispatch.max_deadline_seconds": (-1, "expected a number > 0"),
    "dispatch.max_count": (0, "expected an integer >= 1"),
    "dispatch.read_ahead": (0, "expected an integer >= 1"),
    "dispatch.window": (20_001, "expected an integer from 1 to 20000"),
    "dispatch.max_job_seconds": (-1, "expected a number >= 0"),
    "dispatch.replay_cache_bytes": (-1, "expected an integer >= 0"),
    "dispatch.replay_min_runtime_seconds": (-0.5, "expected a number >= 0"),
    "dispatch.historic_share": (1.5, "expected a number from 0 to 1"),
    "dispatch.max_events_per_post": (0, "expected an integer >= 1"),
    "dispatch.max_polls_per_key": (0, "expected an integer >= 1"),
    "dispatch.finished_memory_seconds": (-1, "expected a number >= 0"),
    "dispatch.job_id_secret": ("short", "expected empty, or at least 16 characters"),
    "dispatch.commit_interval_seconds": (6, "expected a number from 0 to 5"),
    "dispatch.ephemeral_idle_seconds": (0.5, "expected a number from 1 to 86400"),
    "auth.open_networks": (["10.0.0.0/8", "lan"], "expected a list of IP networks"),
    "auth.open_roles": (["root"], "expected a list of roles from 'plugin', 'ingest', 'admin'"),
    "cli.server": ("azuld:8111", "expected empty, or an http:// or https:// URL"),
    "security.classifications": ([], "expected a non-empty list of security markings"),
    "security.caveats": (["a;b"], "expected a list of security markings"),
    "security.releasability": ([""], "expected a list of security markings"),
    "security.releasability_prefix": ("", "expected not empty"),
    "security.releasability_origin": ("REL;X", "expected empty, or a security label"),
    "security.releasable_from": ("$", "expected empty, or a security label"),
    "security.markings": (["TLP;RED"], "expected a list of security markings"),
    "security.enforced_markings": (["<x>"], "expected a list of security markings"),
    "security.default_label": ("OFFICIAL;", "expected empty, or a security label"),
    "security.command": ([], "expected not empty"),
    "security.command_timeout_seconds": (0, "expected a number > 0"),
    "security.command_concurrency": (0, "expected an integer >= 1"),
    "security.command_retry_seconds": (-1, "expected a number >= 0"),
    "security.cache_entries": (0, "expected an integer >= 1"),
}
# In tables of tables: `[[events.sources]]` and `[[auth.tokens]]`.
WRONG_IN_LISTS = {
    "events.sources.name": ("a/b", "expected 1-100 letters, digits, '_' or '-'"),
    "events.sources.partitions": (-1, "expected an integer from 0 to 10000"),
    "events.sources.retention_days": (-1, "expected a number >= 0"),
    "auth.tokens.name": ("two words", "expected 1-100 letters, digits"),
    "auth.tokens.token": ("short", "expected at least 16 characters, without spaces"),
    "auth.tokens.roles": ([], "expected a non-empty list of roles"),
}
GOOD_ENTRY = {
    "events.sources": {"name": "samples"},
    "auth.tokens": {"name": "ops", "token": "t" * 32, "roles": ["admin"]},
}


def _checked_settings(cls: type[Any], prefix: str = "") -> list[str]:
    """Dotted names of every setting declared with a range or format check."""
    names = []
    hints = get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        if get_origin(hint) is tuple and dataclasses.is_dataclass(get_args(hint)[0]):
            hint = get_args(hint)[0]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names += _checked_settings(hint, f"{prefix}{spec.name}.")
        elif spec.metadata.get("check") is not None:
            names.append(f"{prefix}{spec.name}")
    return names


def _unchecked_settings(cls: type[Any], prefix: str = "") -> list[str]:
    """Dotted names of settings with neither a check nor a closed type (Literal, bool, Path)."""
    names = []
    hints = get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        hint = hints[spec.name]
        if get_origin(hint) is tuple and dataclasses.is_dataclass(get_args(hint)[0]):
            hint = get_args(hint)[0]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            names += _unchecked_settings(hint, f"{prefix}{spec.name}.")
        elif (
            spec.metadata.get("check") is None
            and get_origin(hint) is not Literal
            and hint not in (bool, Path)
        ):
            names.append(f"{prefix}{spec.name}")
    return names


def test_every_setting_has_a_range_or_format() -> None:
    # The S3 keys are free-form secrets (checked only as a pair).
    assert _unchecked_settings(Settings) == ["storage.s3_access_key", "storage.s3_secret_key"]
    assert sorted(_checked_settings(Settings)) == sorted([*WRONG, *WRONG_IN_LISTS])


def _toml(value: Any) -> str:
    return json.dumps(value)  # JSON scalars and lists of strings are TOML too


@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_value_is_rejected(tmp_path: Path, name: str) -> None:
    value, expected = WRONG[name]
    section, key = name.split(".")
    path = write(tmp_path, f"[{section}]\n{key} = {_toml(value)}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: key {name!r}: {expected}")
    # A secret is never shown, not even a wrong one: only its length.
    shown = f"{len(value)} characters" if name.endswith("secret") else repr(value)
    assert message.endswith(f", got {shown}")


@pytest.mark.parametrize("name", sorted(WRONG_IN_LISTS))
def test_a_wrong_value_in_a_list_of_tables_is_rejected(tmp_path: Path, name: str) -> None:
    value, expected = WRONG_IN_LISTS[name]
    section, table, key = name.split(".")
    entry = {**GOOD_ENTRY[f"{section}.{table}"], key: value}
    lines = "".join(f"{k} = {_toml(v)}\n" for k, v in entry.items())
    path = write(tmp_path, f"[[{section}.{table}]]\n{lines}")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert f"{path}: key '{section}.{table}[0].{key}': {expected}" in str(info.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nlisten = "nonsense"\nlistne = "x"\n'
        "[dispatch]\nlease_seconds = -5\nmax_attempts = 0\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"AZULD_DISPATCH__MAX_COUNT": "0"})
    assert info.value.problems == (
        f"{path}: key 'server.listen': expected host:port with a port from 0 to 65535 (e.g. "
        "127.0.0.1:8111, 0.0.0.0:8111, [::1]:8111), got 'nonsense'",
        f"{path}: key 'server.listne': unknown setting (did you mean 'listen'?)",
        f"{path}: key 'dispatch.lease_seconds': expected a number > 0, got -5",
        f"{path}: key 'dispatch.max_attempts': expected an integer >= 1, got 0",
        "environment variable AZULD_DISPATCH__MAX_COUNT: expected an integer >= 1, got '0'",
    )
    assert str(info.value).startswith("5 problems:\n  ")


def test_command_line_values_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"command line: server\.listen: expected host:port"):
        load_settings(environ={}, overrides={"server.listen": "nonsense"})
    settings = load_settings(environ={}, overrides={"server.listen": "[::1]:0"})
    assert settings.server.listen == "[::1]:0"


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:8111", "0.0.0.0:0", ":8111", "localhost:8111", "[::]:8111"]
)
def test_listen_addresses(listen: str) -> None:
    assert load_settings(environ={"AZULD_SERVER__LISTEN": listen}).server.listen == listen


@pytest.mark.parametrize("listen", ["8111", "127.0.0.1:65536", "[nope]:1", "a b:1", "300.1.1.1:1"])
def test_listen_address_errors(listen: str) -> None:
    with pytest.raises(ConfigError, match="AZULD_SERVER__LISTEN: expected host:port"):
        load_settings(environ={"AZULD_SERVER__LISTEN": listen})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[dispatch]\ndefault_deadline_seconds = 90\n",
            "key 'dispatch.default_deadline_seconds': expected at most "
            "dispatch.max_deadline_seconds (60), got 90",
        ),
        ('[storage]\ns3_access_key = "AKIA"\n', "set both s3_access_key and s3_secret_key"),
        (
            '[[events.sources]]\nname = "a"\n[[events.sources]]\nname = "a"\n',
            "events.sources: each name once, got 'a' more than once",
        ),
        (
            '[[auth.tokens]]\nname = "a"\ntoken = "' + "x" * 20 + '"\n'
            '[[auth.tokens]]\nname = "b"\ntoken = "' + "x" * 20 + '"\n',
            "auth.tokens: two tokens have the same secret",
        ),
    ],
)
def test_settings_that_do_not_go_together(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(path, environ={})


def test_several_processes_need_kafka(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={"server.processes": 2})
    assert str(info.value) == (
        'command line: server.processes: 2 processes need events.backend = "kafka": the '
        "embedded event log (SQLite in the data folder) belongs to one process; run one "
        "process, or keep the events on Kafka"
    )
    path = write(tmp_path, '[server]\nprocesses = 4\n[events]\nbackend = "kafka"\n')
    assert load_settings(path, environ={}).server.processes == 4


def test_a_wrong_secret_is_not_shown(tmp_path: Path) -> None:
    path = write(tmp_path, '[[auth.tokens]]\nname = "ops"\ntoken = "hunter2 x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "hunter2" not in str(info.value)
    assert "expected at least 16 characters, without spaces, got 9 characters" in str(info.value)


def test_the_command_lines_variables_are_not_settings() -> None:
    settings = load_settings(
        environ={"AZULD_SERVER": "http://h:1", "AZULD_CONFIG": "/etc/azuld.toml"}
    )
    assert settings == load_settings(environ={})


def test_the_example_documents_every_setting() -> None:
    example = (Path(__file__).parent.parent / "config.example.toml").read_text()
    for name, value in flatten(Settings()).items():
        if value == ():  # the lists of tables: their keys are below
            continue
        key = name.rsplit(".", 1)[-1]
        assert re.search(rf"^#? ?{key} = ", example, re.MULTILINE), name
    for name in WRONG_IN_LISTS:
        assert re.search(rf"^# {name.rsplit('.', 1)[-1]} = ", example, re.MULTILINE), name


# --- what SIGHUP applies ------------------------------------------------------------------------


def test_what_a_reload_applies() -> None:
    running = load_settings(environ={})
    new = load_settings(
        environ={
            "AZULD_SERVER__LISTEN": "0.0.0.0:9000",
            "AZULD_DISPATCH__LEASE_SECONDS": "30",
            "AZULD_DISPATCH__READ_AHEAD": "8",
            "AZULD_LOG_LEVEL": "debug",
            "AZULD_AUTH__OPEN_ROLES": "plugin,ingest",
            "AZULD_CLI__SERVER": "http://elsewhere:1",
        }
    )
    applied, restart = settings_diff(running, new)
    assert applied == ["log_level", "dispatch.lease_seconds", "auth.open_roles"]
    assert restart == ["server.listen", "dispatch.read_ahead"]
    kept = in_force(running, new)
    assert kept.server.listen == "127.0.0.1:8111"
    assert kept.dispatch.read_ahead == 64
    assert (kept.dispatch.lease_seconds, kept.log_level) == (30.0, "debug")
    assert kept.auth.open_roles == ("plugin", "ingest")
    assert is_reloadable("auth.tokens[0].roles")
    assert not is_reloadable("events.sources[0].partitions")
