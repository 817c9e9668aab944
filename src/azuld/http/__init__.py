"""The HTTP API: `create_app` builds it. The hot protocol routes (publish, fetch, download) are
served as raw ASGI by `hot`, in front of the quart-trio app that serves the rest: uploads in
`streams`, the root, health, readiness and introspection in `ops`, the dashboard in `ui` and the
document in `openapi`."""

from azuld.http.app import Services, create_app

__all__ = ["Services", "create_app"]
