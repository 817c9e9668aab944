"""Settings: defaults < TOML file < `AZULD_<SECTION>__<KEY>` environment variables, parsed once into
frozen dataclasses. A mistake raises `ConfigError` naming the file (or variable), the key and what
was expected; an unknown key is an error with a did-you-mean. `config.example.toml` documents every
setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from azuld.errors import ConfigError

__all__ = [
    "RELOADABLE",
    "AuthSettings",
    "DispatchSettings",
    "EventsSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TokenSettings",
    "default_data_dir",
    "load_settings",
    "redacted",
    "settings_diff",
]

# Settings a SIGHUP applies to a running daemon; every other change needs a restart.
RELOADABLE = ("log_level", "dispatch.", "auth.")
_SECRET_WORDS = ("secret", "password", "token", "access_key", "secret_key")

ENV_PREFIX = "AZULD_"


def default_data_dir() -> Path:
    """`$STATE_DIRECTORY` under systemd, else `$XDG_STATE_HOME/azuld` or `~/.local/state/azuld`."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "azuld"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = "127.0.0.1:8111"
    graceful_timeout_seconds: float = 3.0
    max_event_body_bytes: int = 16 * 1024 * 1024
    max_upload_bytes: int = 4 * 1024 * 1024 * 1024
    upload_body_timeout_seconds: float = 600.0
    tls_certfile: str = ""
    tls_keyfile: str = ""
    http_server: Literal["azuld", "hypercorn"] = "azuld"
    keep_alive_timeout_seconds: float = 75.0


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """A source's topics: `[[events.sources]]` tables in TOML."""

    name: str
    partitions: int = 0  # 0: events.default_partitions
    retention_days: float = 0.0  # 0: keep forever


@dataclass(frozen=True, slots=True)
class EventsSettings:
    backend: Literal["embedded", "kafka"] = "embedded"
    topic_prefix: str = "local"
    default_partitions: int = 1
    sources: tuple[SourceSettings, ...] = ()
    embedded_synchronous: Literal["normal", "full"] = "normal"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_replication_factor: int = 1
    kafka_connect_timeout_seconds: float = 60.0
    kafka_request_timeout_seconds: float = 30.0
    kafka_tail_cache_records: int = 256
    kafka_message_max_bytes: int = 3 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StorageSettings:
    backend: Literal["local", "s3"] = "local"
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_bucket: str = "azul"
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """A bearer token: `[[auth.tokens]]` tables in TOML."""

    name: str
    token: str
    roles: tuple[str, ...] = ("plugin",)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """No tokens: every request is allowed (the embedded default, like the Go dispatcher). With
    tokens: requests need a token with the route's role, except from `open_networks`, which get
    `open_roles` without a token (azul-runner sends none)."""

    tokens: tuple[TokenSettings, ...] = ()
    open_networks: tuple[str, ...] = ()
    open_roles: tuple[str, ...] = ("plugin",)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    lease_seconds: float = 120.0
    max_attempts: int = 3
    default_deadline_seconds: float = 5.0
    max_deadline_seconds: float = 60.0
    max_count: int = 1000
    read_ahead: int = 64
    window: int = 1000
    max_job_seconds: float = 3600.0
    replay_cache_bytes: int = 64 * 1024 * 1024
    replay_min_runtime_seconds: float = 1.0
    historic_share: float = 0.0
    max_events_per_post: int = 1000
    max_polls_per_key: int = 200


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """`max-security` enforcement: Azul's label model (`checker = "model"`, see
    `azuld.core.security`) or an external `azul-security can-access` style command."""

    checker: Literal["model", "command"] = "model"
    # The label model. Classifications from least to most restrictive.
    classifications: tuple[str, ...] = (
        "UNOFFICIAL",
        "OFFICIAL",
        "OFFICIAL:SENSITIVE",
        "PROTECTED",
        "SECRET",
        "TOP SECRET",
    )
    caveats: tuple[str, ...] = ()
    releasability: tuple[str, ...] = ()
    releasability_prefix: str = "REL:"
    releasability_origin: str = ""
    releasable_from: str = ""
    markings: tuple[str, ...] = (
        "TLP:CLEAR",
        "TLP:GREEN",
        "TLP:AMBER",
        "TLP:AMBER+STRICT",
        "TLP:RED",
    )
    enforced_markings: tuple[str, ...] = ("TLP:AMBER+STRICT", "TLP:RED")
    # The label of an event that carries none ("": such events are not checked, as in Go).
    default_label: str = ""
    # checker = "command": argv, to which the clearance and the label are appended.
    command: tuple[str, ...] = ("azul-security", "can-access")
    command_timeout_seconds: float = 10.0
    command_concurrency: int = 4
    command_retry_seconds: float = 30.0
    # Decisions kept per (max-security, label) pair.
    cache_entries: int = 4096


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "text", "json", "keyvalue"] = "auto"
    server: ServerSettings = ServerSettings()
    events: EventsSettings = EventsSettings()
    storage: StorageSettings = StorageSettings()
    dispatch: DispatchSettings = DispatchSettings()
    auth: AuthSettings = AuthSettings()
    security: SecuritySettings = SecuritySettings()


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, hint: Any, where: str, from_env: bool) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: expected a path (string), got {value!r}")
        return Path(value).expanduser()
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int or hint is float:
        if from_env and isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        if hint is int and not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint!r}")  # pragma: no cover


def _build(
    cls: type[Any],
    values: Mapping[str, Any],
    where: str,
    from_env: Mapping[str, Any],
    section: tuple[str, ...] = (),
) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        path = (*section, key)
        env_flag = from_env.get(key, False)
        place = (
            f"environment variable {ENV_PREFIX}{'__'.join(path).upper()}"
            if env_flag is True
            else f"{where}: key {'.'.join(path)!r}"
        )
        if key not in hints:
            raise ConfigError(f"{place}: unknown setting{_did_you_mean(key, names)}")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{place}: must be a table ([{'.'.join(path)}])")
            nested_flags = env_flag if isinstance(env_flag, Mapping) else {}
            kwargs[key] = _build(hint, value, where, nested_flags, path)
        elif get_origin(hint) is tuple and get_args(hint)[0] is str:
            if env_flag is True and isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{place}: expected a list of strings, got {value!r}")
            kwargs[key] = tuple(value)
        elif get_origin(hint) is tuple:
            item = get_args(hint)[0]
            if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
                raise ConfigError(f"{place}: must be a list of tables ([[{'.'.join(path)}]])")
            kwargs[key] = tuple(
                _build(item, entry, where, {}, (*path[:-1], f"{path[-1]}[{index}]"))
                for index, entry in enumerate(value)
            )
        else:
            kwargs[key] = _coerce(value, hint, place, env_flag is True)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        table = ".".join(section) or "top level"
        raise ConfigError(f"{where}: {table} needs {', '.join(repr(m) for m in missing)}")
    return cls(**kwargs)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`AZULD_SERVER__LISTEN=...` → `{"server": {"listen": ...}}`; top-level `AZULD_DATA_DIR`."""
    values: dict[str, Any] = {}
    flags: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        target, target_flags = values, flags
        for part in path[:-1]:
            target = target.setdefault(part, {})
            target_flags = target_flags.setdefault(part, {})
        target[path[-1]] = raw
        target_flags[path[-1]] = True
    return values, flags


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file (if given) and the environment into `Settings`.

    `overrides` are dotted keys from the command line (`{"server.listen": "127.0.0.1:0"}`) and win
    over both.

    Raises:
        ConfigError: the file is unreadable or invalid TOML, or a key is unknown or mistyped.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            values = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    env_values, env_flags = _env_overrides(environ)
    settings: Settings = _build(Settings, _merge(values, env_values), where, env_flags)
    if overrides:
        settings = _replace(settings, overrides)
    return settings


def _as_dict(settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        out[f.name] = _as_dict(value) if dataclasses.is_dataclass(value) else value
    return out


def _replace(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """Apply dotted overrides from the command line, e.g. `{"server.listen": "127.0.0.1:0"}`."""
    tree: dict[str, Any] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        target = tree
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    replaced: Settings = _apply(settings, tree)
    return replaced


def _apply(obj: Any, tree: Mapping[str, Any]) -> Any:
    changes = {}
    for key, value in tree.items():
        current = getattr(obj, key)
        changes[key] = _apply(current, value) if isinstance(value, Mapping) else value
    return dataclasses.replace(obj, **changes)


def flatten(settings: Any, prefix: str = "") -> dict[str, Any]:
    """`{"server.listen": ..., ...}` for every leaf setting."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for index, item in enumerate(value):
                out.update(flatten(item, f"{name}[{index}]."))
        else:
            out[name] = value
    return out


def redacted(settings: Settings) -> dict[str, Any]:
    """The flattened settings with anything secret-looking replaced by `***`."""
    return {
        name: "***" if value and any(w in name.rsplit(".", 1)[-1] for w in _SECRET_WORDS) else value
        for name, value in flatten(settings).items()
    }


def settings_diff(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """Changed setting names, split into (reloadable, needing a restart)."""
    before, after = flatten(old), flatten(new)
    changed = [name for name in after if before.get(name) != after[name]]
    reloadable = [n for n in changed if n.startswith(RELOADABLE)]
    return reloadable, [n for n in changed if n not in reloadable]
