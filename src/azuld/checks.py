"""The ranges and formats settings are checked against. `azuld.settings` names one per setting,
where the setting is declared; each says in words what it accepts (for the error message, after
"expected an integer" or "expected a number" for numbers)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azuld.core.keys import NAME_PATTERN

__all__ = [
    "BUCKET",
    "HOST_PORTS",
    "HTTP_URL",
    "HTTP_URL_OR_EMPTY",
    "KEY_PREFIX",
    "LABEL",
    "LABEL_WORDS",
    "LABEL_WORDS_NON_EMPTY",
    "LISTEN",
    "MAX_PARTITIONS",
    "NAME",
    "NETWORKS",
    "NON_EMPTY",
    "READABLE_FILE",
    "REGION",
    "ROLES",
    "SECRET_OR_EMPTY",
    "TOKEN",
    "TOKEN_NAME",
    "TOKEN_ROLES",
    "Check",
    "above",
    "at_least",
    "between",
    "is_http_url",
    "is_listen_address",
]

MAX_PARTITIONS = 10_000
# `server.processes`: more than a host has cores only adds memory and Kafka clients.
MAX_PROCESSES = 64
_ROLE_NAMES = ("plugin", "ingest", "admin")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9._/-]{0,200}")
_TOKEN_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,100}")


@dataclass(frozen=True, slots=True)
class Check:
    """A setting's range or format: `expected` in words, `accepts` the test."""

    expected: str
    accepts: Callable[[Any], bool]


def at_least(low: float) -> Check:
    return Check(f">= {low:g}", lambda value: value >= low)


def above(low: float) -> Check:
    return Check(f"> {low:g}", lambda value: value > low)


def between(low: float, high: float) -> Check:
    return Check(f"from {low:g} to {high:g}", lambda value: low <= value <= high)


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if host.replace(".", "").isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return _HOSTNAME.fullmatch(host) is not None


def is_listen_address(value: str) -> bool:
    """`host:port` (`[v6]:port`; an empty host: every interface; port 0: any free one)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return False
    return host == "" or _is_host(host)


def _is_host_ports(value: str) -> bool:
    for address in value.split(","):
        host, sep, port = address.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535 or not _is_host(host):
            return False
    return True


def is_http_url(value: str) -> bool:
    """An `http://` or `https://` URL with a host (and maybe a port and a path)."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError when it is not a port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.query or parts.fragment or port == 0:
        return False
    host = parts.netloc.rpartition("@")[2]
    if port is not None:
        host = host.rpartition(":")[0]
    return _is_host(host)


def _is_readable_file(value: str) -> bool:
    path = Path(value).expanduser()
    return path.is_file() and os.access(path, os.R_OK)


def _roles(values: tuple[str, ...]) -> bool:
    return all(role in _ROLE_NAMES for role in values)


def _networks(values: tuple[str, ...]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


_ROLES_WORDS = ", ".join(map(repr, _ROLE_NAMES))

NON_EMPTY = Check("not empty", bool)
SECRET_OR_EMPTY = Check(
    "empty, or at least 16 characters without spaces",
    lambda v: v == "" or (len(v) >= 16 and not any(c.isspace() for c in v)),
)
_LABEL_WORD = re.compile(r"[A-Za-z0-9 :+_./-]{1,100}")
LABEL_WORDS = Check(
    "a list of security markings (letters, digits, spaces and ':+_./-', none empty)",
    lambda v: all(_LABEL_WORD.fullmatch(w) is not None for w in v),
)
LABEL_WORDS_NON_EMPTY = Check(
    "a non-empty list of security markings (letters, digits, spaces and ':+_./-')",
    lambda v: bool(v) and LABEL_WORDS.accepts(v),
)
LABEL = Check(
    "empty, or a security label (letters, digits, spaces and ':+_./,-')",
    lambda v: v == "" or re.fullmatch(r"[A-Za-z0-9 :+_./,\\-]{1,1000}", v) is not None,
)
NAME = Check("1-100 letters, digits, '_' or '-'", lambda v: NAME_PATTERN.fullmatch(v) is not None)
LISTEN = Check(
    "host:port with a port from 0 to 65535 (e.g. 127.0.0.1:8111, 0.0.0.0:8111, [::1]:8111)",
    is_listen_address,
)
HOST_PORTS = Check(
    "host:port, or several separated by commas (e.g. kafka1:9092,kafka2:9092)", _is_host_ports
)
HTTP_URL = Check("an http:// or https:// URL (e.g. http://127.0.0.1:9000)", is_http_url)
HTTP_URL_OR_EMPTY = Check(
    "empty, or an http:// or https:// URL (e.g. http://azuld.example:8111)",
    lambda v: v == "" or is_http_url(v),
)
BUCKET = Check(
    "an S3 bucket name: 3-63 lowercase letters, digits, '.' or '-', starting and ending with "
    "a letter or digit",
    lambda v: _BUCKET.fullmatch(v) is not None and ".." not in v,
)
REGION = Check(
    "a region name such as us-east-1 (lowercase letters, digits and '-')",
    lambda v: _REGION.fullmatch(v) is not None,
)
KEY_PREFIX = Check(
    "empty, or up to 200 letters, digits, '.', '_', '-' and '/'",
    lambda v: _KEY_PREFIX.fullmatch(v) is not None and "//" not in v,
)
READABLE_FILE = Check("empty, or a readable file", lambda v: v == "" or _is_readable_file(v))
TOKEN_NAME = Check(
    "1-100 letters, digits, '.', '_', '@', '+' or '-'",
    lambda v: _TOKEN_NAME.fullmatch(v) is not None,
)
TOKEN = Check(
    "at least 16 characters, without spaces",
    lambda v: len(v) >= 16 and not any(c.isspace() for c in v),
)
TOKEN_ROLES = Check(
    f"a non-empty list of roles from {_ROLES_WORDS}", lambda v: bool(v) and _roles(v)
)
ROLES = Check(f"a list of roles from {_ROLES_WORDS}", _roles)
NETWORKS = Check("a list of IP networks (e.g. 10.0.0.0/8, 127.0.0.1/32)", _networks)
