"""Where the command line finds the daemon, for every command that talks to it.

Precedence: `--server` > `AZULD_SERVER` > the config file (`--config FILE` or `AZULD_CONFIG`):
its `[cli] server`, else its `server.listen` > `http://127.0.0.1:8111`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from azuld.checks import is_http_url
from azuld.cli.errors import UsageError
from azuld.settings import ServerSettings, load_settings

__all__ = ["DEFAULT_SERVER", "config_file", "listen_url", "resolve_server"]

DEFAULT_SERVER = "http://127.0.0.1:8111"


def config_file(given: Path | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file: `--config FILE`, else `$AZULD_CONFIG`, else none."""
    if given is not None:
        return given
    named = environ.get("AZULD_CONFIG", "")
    return Path(named).expanduser() if named else None


def resolve_server(
    flag: str | None, config: Path | None, environ: Mapping[str, str] = os.environ
) -> str:
    """The daemon's URL (see the module's precedence).

    Raises:
        UsageError: `--server` or `AZULD_SERVER` is not an http(s) URL.
        ConfigError: the config file is missing or wrong.
    """
    if flag:
        return _checked(flag, "--server")
    if named := environ.get("AZULD_SERVER", ""):
        return _checked(named, "AZULD_SERVER")
    config = config_file(config, environ)
    if config is not None:
        settings = load_settings(config, environ=environ)
        return (settings.cli.server or listen_url(settings.server)).rstrip("/")
    return DEFAULT_SERVER


def listen_url(server: ServerSettings) -> str:
    """The URL a client on this machine reaches `server.listen` at: every interface (`0.0.0.0`,
    `[::]` or no host) through loopback; https with a certificate."""
    host, _, port = server.listen.rpartition(":")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    scheme = "https" if server.tls_certfile else "http"
    return f"{scheme}://{host}:{port}"


def _checked(url: str, where: str) -> str:
    if not is_http_url(url):
        raise UsageError(
            f"{where} {url!r} is not an http:// or https:// URL (e.g. {DEFAULT_SERVER})"
        )
    return url.rstrip("/")
