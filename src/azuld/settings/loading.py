"""Reading settings: defaults < TOML file < `AZULD_<SECTION>__<KEY>` environment variables < the
command line, each value coerced to its field's type and checked against its range, every problem
reported at once (naming the file or variable, the key, the value and what was expected; an
unknown key gets a did-you-mean), then the settings that do not go together."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from azuld.checks import Check
from azuld.errors import ConfigError
from azuld.settings.sections import (
    CLIENT_ONLY_VARIABLES,
    ENV_PREFIX,
    Settings,
    is_secret,
    is_table_list,
)

__all__ = ["load_settings"]


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
        if is_table_list(hint):
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
            got = f"{len(str(value))} characters" if is_secret(path[-1]) else repr(value)
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
