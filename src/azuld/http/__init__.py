"""The HTTP API: `create_app` builds it over the `Services`.

Every route is described once, in `azuld.http.routes`: the hot protocol routes (publish, fetch,
download) are served as raw ASGI by `hot`, in front of the quart-trio app (`app`) that serves the
rest: uploads in `streams`, the root, health, readiness, metrics and the admin views in `ops`, the
dashboard in `ui`, and the document `openapi` makes from the table. `steps` holds the per-request
steps both paths share; `server` (with `connection`, `exchange` and `h1`) is azuld's own HTTP/1.1
server.
"""

from azuld.http.app import create_app
from azuld.http.steps import Services

__all__ = ["Services", "create_app"]
