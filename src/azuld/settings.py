"""Settings: defaults < TOML file < `AZULD_<SECTION>__<KEY>` environment variables < the command
line, parsed once into frozen dataclasses.

Each setting states its range or format where it is declared (`setting(default, check=...)`) and
whether SIGHUP applies it to a running daemon (`reload=True`); the checks themselves are in
`azuld.checks`. `load_settings` reports every problem at once, each naming the file (or
variable), the key, the value and what was expected; an unknown key gets a did-you-mean.
`config.example.toml` documents every setting with its range.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from azuld import checks
from azuld.checks import Check
from azuld.errors import ConfigError

__all__ = [
    "CLIENT_ONLY_VARIABLES",
    "AuthSettings",
    "CliSettings",
    "DispatchSettings",
    "EventsSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "StorageSettings",
    "TokenSettings",
    "default_data_dir",
    "in_force",
    "is_reloadable",
    "load_settings",
    "redacted",
    "settings_diff",
]

_SECRET_WORDS = ("secret", "password", "token", "access_key", "secret_key")

ENV_PREFIX = "AZULD_"
# `AZULD_*` variables the command line reads that are not settings (`AZULD_SERVER` would
# otherwise read as the `[server]` table).
CLIENT_ONLY_VARIABLES = frozenset({"AZULD_SERVER", "AZULD_CONFIG"})


def setting(
    default: Any = dataclasses.MISSING, *, check: Check | None = None, reload: bool = False
) -> Any:
    """A settings field: its default, its range or format, and whether SIGHUP applies it."""
    return field(default=default, metadata={"check": check, "reload": reload})


def default_data_dir() -> Path:
    """`$STATE_DIRECTORY` under systemd, else `$XDG_STATE_HOME/azuld` or `~/.local/state/azuld`."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "azuld"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = setting("127.0.0.1:8111", check=checks.LISTEN)
    graceful_timeout_seconds: float = setting(3.0, check=checks.at_least(0))
    max_event_body_bytes: int = setting(16 * 1024 * 1024, check=checks.at_least(256))
    max_upload_bytes: int = setting(4 * 1024 * 1024 * 1024, check=checks.at_least(1))
    upload_body_timeout_seconds: float = setting(600.0, check=checks.at_least(1))
    tls_certfile: str = setting("", check=checks.READABLE_FILE)
    tls_keyfile: str = setting("", check=checks.READABLE_FILE)
    http_server: Literal["azuld", "hypercorn"] = "azuld"
    keep_alive_timeout_seconds: float = setting(75.0, check=checks.above(0))
    # Worker processes sharing `listen` (`azuld serve --processes N`); more than 1 needs Kafka.
    processes: int = setting(1, check=checks.between(1, checks.MAX_PROCESSES))
    # 0: none. Else worker k (0 to processes - 1) also listens on its own port, this + k.
    worker_port_base: int = setting(0, check=checks.between(0, 65536 - checks.MAX_PROCESSES))
    head_timeout_seconds: float = setting(30.0, check=checks.between(0.1, 3600))
    metrics_max_label_values: int = setting(500, check=checks.between(1, 100_000))
    rejected_log_lines_per_second: float = setting(10.0, check=checks.between(0, 10_000))


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """A source's topics: `[[events.sources]]` tables in TOML."""

    name: str = setting(check=checks.NAME)
    # 0: events.default_partitions
    partitions: int = setting(0, check=checks.between(0, checks.MAX_PARTITIONS))
    retention_days: float = setting(0.0, check=checks.at_least(0))  # 0: keep forever


@dataclass(frozen=True, slots=True)
class EventsSettings:
    backend: Literal["embedded", "kafka"] = "embedded"
    topic_prefix: str = setting("local", check=checks.NAME)
    default_partitions: int = setting(1, check=checks.between(1, checks.MAX_PARTITIONS))
    sources: tuple[SourceSettings, ...] = ()
    embedded_synchronous: Literal["normal", "full"] = "normal"
    kafka_bootstrap: str = setting("127.0.0.1:9092", check=checks.HOST_PORTS)
    kafka_replication_factor: int = setting(1, check=checks.at_least(1))
    kafka_connect_timeout_seconds: float = setting(60.0, check=checks.above(0))
    kafka_request_timeout_seconds: float = setting(30.0, check=checks.above(0))
    kafka_tail_cache_records: int = setting(256, check=checks.at_least(0))
    kafka_message_max_bytes: int = setting(3 * 1024 * 1024, check=checks.at_least(1024))


@dataclass(frozen=True, slots=True)
class StorageSettings:
    backend: Literal["local", "s3"] = "local"
    s3_endpoint: str = setting("http://127.0.0.1:9000", check=checks.HTTP_URL)
    s3_bucket: str = setting("azul", check=checks.BUCKET)
    s3_region: str = setting("us-east-1", check=checks.REGION)
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = setting("", check=checks.KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """A bearer token: `[[auth.tokens]]` tables in TOML."""

    name: str = setting(check=checks.TOKEN_NAME)
    token: str = setting(check=checks.TOKEN)
    roles: tuple[str, ...] = setting(("plugin",), check=checks.TOKEN_ROLES)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """No tokens: every request is allowed (the embedded default, like the Go dispatcher). With
    tokens: requests need a token with the route's role, except from `open_networks`, which get
    `open_roles` without a token (azul-runner sends none)."""

    tokens: tuple[TokenSettings, ...] = setting((), reload=True)
    open_networks: tuple[str, ...] = setting((), check=checks.NETWORKS, reload=True)
    open_roles: tuple[str, ...] = setting(("plugin",), check=checks.ROLES, reload=True)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    lease_seconds: float = setting(120.0, check=checks.above(0), reload=True)
    max_attempts: int = setting(3, check=checks.at_least(1), reload=True)
    default_deadline_seconds: float = setting(5.0, check=checks.above(0), reload=True)
    max_deadline_seconds: float = setting(60.0, check=checks.above(0), reload=True)
    max_count: int = setting(1000, check=checks.at_least(1), reload=True)
    # Read when a plugin key is first seen, so a new value needs a restart to reach every key.
    read_ahead: int = setting(64, check=checks.at_least(1))
    window: int = setting(1000, check=checks.at_least(1))
    max_job_seconds: float = setting(3600.0, check=checks.at_least(0), reload=True)
    # The cache is sized when the daemon starts.
    replay_cache_bytes: int = setting(64 * 1024 * 1024, check=checks.at_least(0))
    replay_min_runtime_seconds: float = setting(1.0, check=checks.at_least(0), reload=True)
    historic_share: float = setting(0.0, check=checks.between(0, 1), reload=True)
    max_events_per_post: int = setting(1000, check=checks.at_least(1), reload=True)
    max_polls_per_key: int = setting(200, check=checks.at_least(1), reload=True)
    # How long every instance remembers the final statuses stored anywhere (so that a job is
    # neither offered nor stored twice when its partition moves). Sized when the daemon starts.
    finished_memory_seconds: float = setting(600.0, check=checks.at_least(0))
    # Signs job ids (all instances of a cluster must share it). Empty: one is generated at the
    # first start and kept in the event log, where every instance finds it.
    job_id_secret: str = setting("", check=checks.SECRET_OR_EMPTY)
    # On a shared log (Kafka): how long the commits that statuses moved are gathered before they
    # are stored, in one request per consumer group (0: each post stores its own before it is
    # answered). A status is stored before it is answered either way; `finished_memory_seconds`
    # covers the jobs whose commits an instance that died had not stored yet.
    commit_interval_seconds: float = setting(0.05, check=checks.between(0, 5), reload=True)
    # An ephemeral key (a watcher's feed) is forgotten once no poll has come for this long.
    ephemeral_idle_seconds: float = setting(60.0, check=checks.between(1, 86400), reload=True)


@dataclass(frozen=True, slots=True)
class CliSettings:
    """Read by the command line only: where `azuld status`, `submit`, `plugin run`… find the
    daemon. Empty: the `server.listen` address of the same file."""

    server: str = setting("", check=checks.HTTP_URL_OR_EMPTY)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """`max-security` enforcement: Azul's label model (`checker = "model"`, see
    `azuld.core.security`) or an external `azul-security can-access` style command."""

    checker: Literal["model", "command"] = "model"
    # The label model. Classifications from least to most restrictive.
    classifications: tuple[str, ...] = setting(
        ("UNOFFICIAL", "OFFICIAL", "OFFICIAL:SENSITIVE", "PROTECTED", "SECRET", "TOP SECRET"),
        check=checks.LABEL_WORDS_NON_EMPTY,
    )
    caveats: tuple[str, ...] = setting((), check=checks.LABEL_WORDS)
    releasability: tuple[str, ...] = setting((), check=checks.LABEL_WORDS)
    releasability_prefix: str = setting("REL:", check=checks.NON_EMPTY)
    releasability_origin: str = setting("", check=checks.LABEL)
    releasable_from: str = setting("", check=checks.LABEL)
    markings: tuple[str, ...] = setting(
        ("TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"),
        check=checks.LABEL_WORDS,
    )
    enforced_markings: tuple[str, ...] = setting(
        ("TLP:AMBER+STRICT", "TLP:RED"), check=checks.LABEL_WORDS
    )
    # The label of an event that carries none ("": such events are not checked, as in Go).
    default_label: str = setting("", check=checks.LABEL)
    # checker = "command": argv, to which the clearance and the label are appended.
    command: tuple[str, ...] = setting(("azul-security", "can-access"), check=checks.NON_EMPTY)
    command_timeout_seconds: float = setting(10.0, check=checks.above(0))
    command_concurrency: int = setting(4, check=checks.at_least(1))
    command_retry_seconds: float = setting(30.0, check=checks.at_least(0))
    # Decisions kept per (max-security, label) pair.
    cache_entries: int = setting(4096, check=checks.at_least(1))


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", reload=True)
    log_format: Literal["auto", "text", "json", "keyvalue"] = "auto"
    server: ServerSettings = ServerSettings()
    events: EventsSettings = EventsSettings()
    storage: StorageSettings = StorageSettings()
    dispatch: DispatchSettings = DispatchSettings()
    auth: AuthSettings = AuthSettings()
    cli: CliSettings = CliSettings()
    security: SecuritySettings = SecuritySettings()


# --- reading ----------------------------------------------------------------------------------


class _Invalid(Exception):
    """A value that is not of its setting's type."""


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _expected(hint: Any, check: Check | None) -> str:
    """What a setting expects, in words: "an integer >= 1", "one of 'a', 'b'", "a path"."""
    if get_origin(hint) is Literal:
        return f"one of {', '.join(map(repr, get_args(hint)))}"
    if hint is int or hint is float:
        noun = "an integer" if hint is int else "a number"
        return f"{noun} {check.expected}" if check else noun
    if get_origin(hint) is tuple:
        return check.expected if check else "a list of strings"
    if hint is Path:
        return "a path"
    if hint is bool:
        return "true or false"
    return check.expected if check else "a string"


def _coerce(value: Any, hint: Any, from_env: bool) -> Any:
    """`value` as the type `hint` says, or `_Invalid`. Environment values arrive as strings."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise _Invalid
        return value
    if hint is Path:
        if isinstance(value, Path):
            return value
        if not isinstance(value, str) or not value:
            raise _Invalid
        return Path(value).expanduser()
    if hint is bool:
        if from_env and isinstance(value, str):
            lowered = value.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        if not isinstance(value, bool):
            raise _Invalid
        return value
    if hint is int or hint is float:
        if from_env and isinstance(value, str):
            try:
                value = hint(value)
            except ValueError:
                raise _Invalid from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid
        if (hint is int and not isinstance(value, int)) or not math.isfinite(value):
            raise _Invalid  # 1.5 for an integer; inf and nan for anything
        return hint(value)
    if origin is tuple:
        if from_env and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise _Invalid
        return tuple(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid
        return value
    raise _Invalid  # pragma: no cover - every settings type is handled above


def _is_required(spec: dataclasses.Field[Any]) -> bool:
    return spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING


def _is_secret(key: str) -> bool:
    return any(word in key for word in _SECRET_WORDS)


def _is_table_list(hint: Any) -> bool:
    if get_origin(hint) is not tuple:
        return False
    item = get_args(hint)[0]
    return isinstance(item, type) and dataclasses.is_dataclass(item)


class _Reader:
    """Builds `Settings` from merged raw values, collecting every problem on the way.

    `origins` mirrors the values: `"env"` or `"cli"` where a value came from the environment or
    the command line; anything else came from `where` (the file).
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []
        self.places: dict[str, str] = {}  # dotted key → where its value came from
        self.broken: set[str] = set()  # dotted keys with a wrong value

    def place(self, path: tuple[str, ...], origin: object) -> str:
        dotted = ".".join(path)
        if origin == "env":
            return f"environment variable {ENV_PREFIX}{'__'.join(path).upper()}"
        if origin == "cli":
            return f"command line: {dotted}"
        return f"{self.where}: key {dotted!r}"

    def place_of(self, dotted: str) -> str:
        return self.places.get(dotted) or f"{self.where}: key {dotted!r}"

    def build(
        self, cls: type[Any], values: Mapping[str, Any], origins: Any, section: tuple[str, ...]
    ) -> Any:
        """An instance of `cls`: a wrong value is noted and its default taken instead, so the
        rest can still be checked. `None` when a required key is missing."""
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        origins = origins if isinstance(origins, Mapping) else {}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            path = (*section, key)
            place = self.place(path, origins.get(key))
            self.places[".".join(path)] = place
            if key not in fields:
                self.problems.append(f"{place}: unknown setting{_did_you_mean(key, list(fields))}")
                continue
            built = self.field(hints[key], fields[key], value, origins.get(key), path, place)
            if built is _BROKEN:
                self.broken.add(".".join(path))
            else:
                kwargs[key] = built
        required = [name for name, f in fields.items() if _is_required(f)]
        if missing := [name for name in required if name not in values]:
            table = ".".join(section) or "top level"
            needs = ", ".join(repr(m) for m in missing)
            self.problems.append(f"{self.where}: {table} needs {needs}")
        if any(name not in kwargs for name in required):
            return None  # missing, or wrong (and noted)
        return cls(**kwargs)

    def field(
        self,
        hint: Any,
        spec: dataclasses.Field[Any],
        value: Any,
        origin: Any,
        path: tuple[str, ...],
        place: str,
    ) -> Any:
        """The value of one field, or `_BROKEN` (and the problem noted)."""
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if isinstance(value, hint):  # a section built in code (tests), taken as it is
                return value
            if not isinstance(value, Mapping):
                self.problems.append(f"{place}: must be a table ([{'.'.join(path)}])")
                return _BROKEN
            built = self.build(hint, value, origin, path)
            return _BROKEN if built is None else built
        if _is_table_list(hint):
            if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
                self.problems.append(f"{place}: must be a list of tables ([[{'.'.join(path)}]])")
                return _BROKEN
            item = get_args(hint)[0]
            entries = [
                self.build(item, entry, {}, (*path[:-1], f"{path[-1]}[{index}]"))
                for index, entry in enumerate(value)
            ]
            return _BROKEN if any(e is None for e in entries) else tuple(entries)
        check: Check | None = spec.metadata.get("check")
        try:
            coerced = _coerce(value, hint, origin == "env")
        except _Invalid:
            coerced = _BROKEN
        if coerced is _BROKEN or (check is not None and not check.accepts(coerced)):
            # A secret is never shown, not even a wrong one.
            got = f"{len(str(value))} characters" if _is_secret(path[-1]) else repr(value)
            self.problems.append(f"{place}: expected {_expected(hint, check)}, got {got}")
            return _BROKEN
        return coerced

    def cross_check(self, settings: Settings) -> None:
        """Settings that are each fine but do not go together (unless one of them is wrong)."""

        def fine(*keys: str) -> bool:
            return not any(key in self.broken for key in keys)

        dispatch, server, storage = settings.dispatch, settings.server, settings.storage
        deadlines = ("dispatch.default_deadline_seconds", "dispatch.max_deadline_seconds")
        if fine(*deadlines) and dispatch.default_deadline_seconds > dispatch.max_deadline_seconds:
            self.problems.append(
                f"{self.place_of(deadlines[0])}: expected at most dispatch.max_deadline_seconds "
                f"({dispatch.max_deadline_seconds:g}), got {dispatch.default_deadline_seconds:g}"
            )
        if fine("server.tls_keyfile") and server.tls_keyfile and not server.tls_certfile:
            self.problems.append(
                f"{self.place_of('server.tls_keyfile')}: a key file needs "
                "server.tls_certfile (the certificate) as well"
            )
        if server.processes > 1 and settings.events.backend == "embedded":
            self.problems.append(
                f"{self.place_of('server.processes')}: {server.processes} processes need "
                'events.backend = "kafka": the embedded event log (SQLite in the data folder) '
                "belongs to one process; run one process, or keep the events on Kafka"
            )
        if bool(storage.s3_access_key) != bool(storage.s3_secret_key):
            self.problems.append(
                f"{self.place_of('storage.s3_access_key')}: set both s3_access_key and "
                "s3_secret_key, or neither (to use the environment's AWS credentials)"
            )
        for what, names in (
            ("events.sources", [s.name for s in settings.events.sources]),
            ("auth.tokens", [t.name for t in settings.auth.tokens]),
        ):
            if twice := sorted({n for n in names if names.count(n) > 1}):
                self.problems.append(
                    f"{self.where}: {what}: each name once, got {', '.join(map(repr, twice))} "
                    "more than once"
                )
        secrets = [t.token for t in settings.auth.tokens]
        if len(set(secrets)) != len(secrets):
            self.problems.append(f"{self.where}: auth.tokens: two tokens have the same secret")


_BROKEN = object()


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`AZULD_SERVER__LISTEN=...` → `{"server": {"listen": ...}}`; top-level `AZULD_DATA_DIR`."""
    values: dict[str, Any] = {}
    origins: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ONLY_VARIABLES:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        _put(values, origins, path, raw, "env")
    return values, origins


def _put(
    values: dict[str, Any], origins: dict[str, Any], path: list[str], value: Any, origin: str
) -> None:
    """Set `path` in `values` to `value`, and in `origins` to where it came from."""
    for part in path[:-1]:
        if not isinstance(values.get(part), dict):
            values[part] = {}
        if not isinstance(origins.get(part), dict):
            origins[part] = {}
        values, origins = values[part], origins[part]
    values[path[-1]] = value
    origins[path[-1]] = origin


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
    """Read the TOML file (if given), the environment and `overrides` into `Settings`.

    `overrides` are dotted keys from the command line (`{"server.listen": "127.0.0.1:0"}`) and win
    over both; they are checked like the rest.

    Raises:
        ConfigError: the file is unreadable or invalid TOML, or settings are wrong; every
            problem is in the message (and in `problems`), one a line.
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
    env_values, origins = _env_overrides(environ)
    values = _merge(values, env_values)
    for dotted, value in (overrides or {}).items():
        _put(values, origins, dotted.split("."), value, "cli")
    reader = _Reader(where)
    settings = reader.build(Settings, values, origins, ())
    if settings is not None:
        reader.cross_check(settings)
    if reader.problems:
        raise ConfigError.of(reader.problems)
    assert isinstance(settings, Settings)
    return settings


# --- looking at settings ----------------------------------------------------------------------


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
        name: "***" if value and _is_secret(name.rsplit(".", 1)[-1]) else value
        for name, value in flatten(settings).items()
    }


def is_reloadable(name: str) -> bool:
    """Whether SIGHUP applies the setting `name` ("dispatch.lease_seconds",
    "auth.tokens[0].roles") to a running daemon."""
    cls: Any = Settings
    for part in re.sub(r"\[\d+\]", "", name).split("."):
        spec = {f.name: f for f in dataclasses.fields(cls)}.get(part)
        if spec is None:
            return False
        if spec.metadata.get("reload"):
            return True
        hint = get_type_hints(cls)[part]
        if _is_table_list(hint):
            hint = get_args(hint)[0]
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            return False
        cls = hint
    return False


def settings_diff(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """Changed setting names the daemon uses, split into (reloadable, needing a restart)."""
    before, after = flatten(old), flatten(new)
    names = [*after, *(name for name in before if name not in after)]
    changed = [
        name
        for name in names
        if before.get(name) != after.get(name) and not name.startswith("cli.")
    ]
    reloadable = [n for n in changed if is_reloadable(n)]
    return reloadable, [n for n in changed if n not in reloadable]


def in_force(running: Settings, new: Settings) -> Settings:
    """What a SIGHUP leaves in force: the reloadable settings from `new`, the rest as running."""
    return _in_force(running, new)  # type: ignore[no-any-return]


def _in_force(running: Any, new: Any) -> Any:
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(running):
        if f.metadata.get("reload"):
            changes[f.name] = getattr(new, f.name)
        elif dataclasses.is_dataclass(getattr(running, f.name)):
            changes[f.name] = _in_force(getattr(running, f.name), getattr(new, f.name))
    return dataclasses.replace(running, **changes)
