"""Who may call what: bearer tokens with roles, checked once per request before the handler.

Roles: `plugin` (fetch jobs; post statuses, heartbeats and registrations), `ingest` (publish
sourced binaries and the other models), both (upload and download blobs), and `admin`
(everything, including `reset` and the introspection routes). Which route needs which is its
`Access` in the route table (`azuld.http.routes`). With no tokens configured every request is
allowed (the embedded default, as the Go dispatcher). With tokens, a request without a valid token
is 401, one whose token lacks the role is 403; requests from `auth.open_networks` get
`auth.open_roles` without a token (azul-runner sends no header). Tokens are compared in constant
time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from azuld.errors import ClientError
from azuld.settings import AuthSettings

__all__ = [
    "ADMIN",
    "ADMIN_ONLY",
    "INGEST",
    "PLUGIN",
    "PUBLIC",
    "Access",
    "Authorizer",
    "Forbidden",
    "Unauthorized",
    "allow",
]

ADMIN = "admin"
PLUGIN = "plugin"
INGEST = "ingest"


class Unauthorized(ClientError):
    http_status = 401
    default_title = "unauthorized"


class Forbidden(ClientError):
    http_status = 403
    default_title = "forbidden"


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a route: a caller with any one of `roles`; `None` for a public route (no
    token needed). `by_model` replaces `roles` for the `?model=` values it names (what may be
    published depends on the model); with `reset_needs_admin`, a true `reset` (forgetting a
    plugin key's progress) needs `admin`. Build with `allow`, or use `PUBLIC` / `ADMIN_ONLY`."""

    roles: frozenset[str] | None
    by_model: Mapping[str, frozenset[str]] = field(default_factory=dict)
    reset_needs_admin: bool = False

    @property
    def public(self) -> bool:
        return self.roles is None

    def roles_for(self, model: str, reset: bool) -> frozenset[str] | None:
        """The roles any one of which allows a request with this `model` and `reset`."""
        if self.roles is None:
            return None
        if reset and self.reset_needs_admin:
            return _ADMIN
        return self.by_model.get(model, self.roles)


_ADMIN = frozenset({ADMIN})


def allow(
    *roles: str,
    by_model: Mapping[str, Iterable[str]] | None = None,
    reset_needs_admin: bool = False,
) -> Access:
    """Access for callers with any of `roles` (`by_model`: per `?model=`) or `admin`, who may do
    everything."""
    return Access(
        _ADMIN | frozenset(roles),
        {model: _ADMIN | frozenset(named) for model, named in (by_model or {}).items()},
        reset_needs_admin,
    )


PUBLIC = Access(None)
ADMIN_ONLY = allow()


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
