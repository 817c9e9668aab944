"""One route of the table (`azuld.http.routes.ROUTES`): its method, rule, access, handler and
OpenAPI description. Its own module so that the table can be written in parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quart import Response

from azuld.http.asgi import HotHandler
from azuld.http.auth import Access
from azuld.http.openapi import Doc

__all__ = ["QuartView", "Route"]

QuartView = Callable[..., Awaitable[Response]]  # (svc, **the rule's parts) -> Response


@dataclass(frozen=True, slots=True)
class Route:
    """One route: `method` and `rule` (werkzeug syntax, `<part>` matching one path segment),
    who may call it, who serves it (exactly one of `hot` and `quart`) and its description."""

    method: str
    rule: str
    access: Access
    doc: Doc
    hot: HotHandler | None = None
    quart: QuartView | None = None

    def __post_init__(self) -> None:
        assert (self.hot is None) != (self.quart is None), f"{self.rule}: hot or quart"
