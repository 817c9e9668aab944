"""Settings as flat dotted names (`server.listen`): to show them (secrets redacted), to compare
two (what changed), and what SIGHUP leaves in force."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, get_args, get_type_hints

from azuld.settings.sections import Settings, is_secret, is_table_list

__all__ = ["flatten", "in_force", "is_reloadable", "redacted", "settings_diff"]


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
        name: "***" if value and is_secret(name.rsplit(".", 1)[-1]) else value
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
        if is_table_list(hint):
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
