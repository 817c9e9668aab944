"""Who may call what: bearer tokens with roles, checked once per request before the handler.

Roles: `plugin` (fetch jobs, post statuses, heartbeats and registrations, upload and download
blobs), `ingest` (publish sourced binaries and other events, upload and download blobs) and
`admin` (everything, including `reset` and the introspection routes). With no tokens configured
every request is allowed (the embedded default, as the Go dispatcher). With tokens, a request
without a valid token is 401, one whose token lacks the role is 403; requests from
`auth.open_networks` get `auth.open_roles` without a token (azul-runner sends no header).
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from azuld.errors import ClientError
from azuld.settings import AuthSettings

__all__ = ["Authorizer", "Forbidden", "Unauthorized", "required_roles"]

PUBLIC = frozenset({"/", "/healthz", "/readyz", "/metrics", "/openapi.json"})


class Unauthorized(ClientError):
    http_status = 401
    default_title = "unauthorized"


class Forbidden(ClientError):
    http_status = 403
    default_title = "forbidden"


def required_roles(method: str, path: str, model: str, reset: bool) -> frozenset[str] | None:
    """Roles any one of which allows the request; `None` for public routes."""
    if path in PUBLIC:
        return None
    if path.startswith("/api/v2/event/") and method == "GET":
        return frozenset({"admin"}) if reset else frozenset({"plugin", "admin"})
    if path == "/api/v2/event" and method == "POST":
        if model in ("status", "plugin"):
            return frozenset({"plugin", "admin"})
        if model in ("binary", "download"):
            return frozenset({"ingest", "plugin", "admin"})
        return frozenset({"ingest", "admin"})
    if path.startswith(("/api/v3/stream/", "/api/v1/data/")):
        return frozenset({"plugin", "ingest", "admin"})
    if path.startswith(("/api/v1/processing/", "/api/v1/events/plugin")):
        return frozenset({"admin"}) if reset else frozenset({"plugin", "admin"})
    return frozenset({"admin"})


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    secret: bytes
    roles: frozenset[str]


class Authorizer:
    """Checks requests against the configured tokens; `reload` swaps them (SIGHUP)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.reload(settings)

    def reload(self, settings: AuthSettings) -> None:
        self._tokens = [
            _Token(t.name, t.token.encode(), frozenset(t.roles)) for t in settings.tokens
        ]
        self._open_networks = [
            ipaddress.ip_network(n, strict=False) for n in settings.open_networks
        ]
        self._open_roles = frozenset(settings.open_roles)

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def _match(self, presented: bytes) -> _Token | None:
        found = None
        for token in self._tokens:  # no early exit: the time does not depend on which matched
            if hmac.compare_digest(token.secret, presented):
                found = token
        return found

    def _open(self, remote: str) -> bool:
        try:
            address = ipaddress.ip_address(remote)
        except ValueError:
            return False
        return any(address in network for network in self._open_networks)

    def check(self, roles: Iterable[str] | None, authorization: str, remote: str) -> str:
        """The caller's name if allowed. Raises `Unauthorized` or `Forbidden` saying why."""
        if roles is None or not self._tokens:
            return "anonymous"
        needed = frozenset(roles)
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and presented:
            token = self._match(presented.strip().encode())
            if token is None:
                raise Unauthorized("the bearer token is not valid")
            if token.roles & needed:
                return token.name
            raise Forbidden(
                f"token {token.name!r} has roles {sorted(token.roles)}; this needs one of "
                f"{sorted(needed)}"
            )
        if self._open(remote) and self._open_roles & needed:
            return f"open:{remote}"
        raise Unauthorized(
            "this request needs a bearer token (Authorization: Bearer <token>) with one of the "
            f"roles {sorted(needed)}"
        )
