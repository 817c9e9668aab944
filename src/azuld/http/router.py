"""Which route a request is for, decided as werkzeug's URL map decides it.

`Router` is built from routes of the table (`azuld.http.routes`): `azuld.http.hot.HotRoutes` has
one of the hot routes, to answer them in front of Quart without werkzeug's cost. Quart's own URL
map, made from the same table, routes the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

from azuld.http.routes import Route

__all__ = ["Router"]


class Router:
    """Matches requests to `routes` as werkzeug's URL map does: the method exact (a `GET` route
    also matches `HEAD`), each `<part>` one or more characters other than `/`, nothing else
    (a trailing slash, an empty segment) matching. Rules with parts have them after a fixed
    prefix, as every rule here does."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        # By (method, number of segments, the fixed segments before the parts).
        self._with_parts: dict[tuple[object, ...], Route] = {}
        fixed_counts: set[int] = set()
        for route in routes:
            methods = (route.method, "HEAD") if route.method == "GET" else (route.method,)
            segments = route.rule.split("/")
            fixed = next(i for i, s in enumerate([*segments, "<"]) if s.startswith("<"))
            assert all(s.startswith("<") for s in segments[fixed:]), route.rule
            for method in methods:
                # An explicit HEAD route wins over the HEAD of its GET twin.
                twin_head = method == "HEAD" and route.method != "HEAD"
                if twin_head and self._has(method, route.rule, segments, fixed):
                    continue
                if fixed == len(segments):
                    self._static[(method, route.rule)] = route
                else:
                    fixed_counts.add(fixed)
                    self._with_parts[(method, len(segments), *segments[1:fixed])] = route
        self._fixed_counts = sorted(fixed_counts)

    def _has(self, method: str, rule: str, segments: list[str], fixed: int) -> bool:
        if fixed == len(segments):
            return (method, rule) in self._static
        return (method, len(segments), *segments[1:fixed]) in self._with_parts

    def match(self, method: str, path: str) -> tuple[Route, list[str]] | None:
        """The route and the values of its parts, or `None` if no route matches."""
        found = self._static.get((method, path))
        if found is not None:
            return found, []
        segments = path.split("/")
        count = len(segments)
        for fixed in self._fixed_counts:
            if fixed >= count:
                break
            found = self._with_parts.get((method, count, *segments[1:fixed]))
            if found is not None:
                parts = segments[fixed:]
                if all(parts):  # an empty part: werkzeug's rules do not match it either
                    return found, parts
                return None
        return None
