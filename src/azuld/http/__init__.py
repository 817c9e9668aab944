"""The HTTP API on quart-trio: `create_app` builds it; the routes live in `events` (events),
`streams` (blobs) and `ops` (root, health, readiness, introspection)."""

from azuld.http.app import Services, create_app

__all__ = ["Services", "create_app"]
