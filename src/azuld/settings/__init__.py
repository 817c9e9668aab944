"""Settings: defaults < TOML file < `AZULD_<SECTION>__<KEY>` environment variables < the command
line, parsed once into frozen dataclasses.

Each setting states its range or format where it is declared (`setting(default, check=...)`) and
whether SIGHUP applies it to a running daemon (`reload=True`); the checks themselves are in
`azuld.checks`. `load_settings` reports every problem at once, each naming the file (or
variable), the key, the value and what was expected; an unknown key gets a did-you-mean.
`config.example.toml` documents every setting with its range.

The declarations are in `sections`, reading and checking in `loading`, comparing and showing
settings (what SIGHUP applies) in `flat`; every public name is importable from here.
"""

from __future__ import annotations

from azuld.settings.flat import flatten, in_force, is_reloadable, redacted, settings_diff
from azuld.settings.loading import load_settings
from azuld.settings.sections import (
    CLIENT_ONLY_VARIABLES,
    AuthSettings,
    CliSettings,
    DispatchSettings,
    EventsSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
    SourceSettings,
    StorageSettings,
    TokenSettings,
    default_data_dir,
)

__all__ = [
    "CLIENT_ONLY_VARIABLES",
    "AuthSettings",
    "CliSettings",
    "DispatchSettings",
    "EventsSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "StorageSettings",
    "TokenSettings",
    "default_data_dir",
    "flatten",
    "in_force",
    "is_reloadable",
    "load_settings",
    "redacted",
    "settings_diff",
]
