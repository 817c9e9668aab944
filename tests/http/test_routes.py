"""The route table (`azuld.http.routes`) and the router made from it (`azuld.http.router`): the
router decides as Quart's URL map (werkzeug) does, and every route is served one way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from azuld.http import Services, create_app
from azuld.http.router import Router
from azuld.http.routes import ROUTES

WORDS = ["api", "v1", "v2", "v3", "event", "binary", "active", "stream", "processing", "events"]
WORDS += ["plugin", "data", "azuld", "sources", "s", "content", "a" * 64, "healthz", "ui", ".."]
SEGMENTS = st.sampled_from(["", *WORDS])
# Leading slashes are folded before routing (`hot._route_path`, werkzeug's `Request.path`).
PATHS = st.tuples(st.sampled_from(WORDS), st.lists(SEGMENTS, max_size=6)).map(
    lambda parts: "/" + "/".join([parts[0], *parts[1]])
)
METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE"])


@st.composite
def near_routes(draw: st.DrawFn) -> tuple[str, str]:
    """A route's rule with its parts filled in (some empty, some with a slash), perhaps a
    trailing slash, under the route's method or another."""
    route = draw(st.sampled_from(ROUTES))
    segments = [
        draw(st.sampled_from(["", "x", "binary", "a" * 64, "x/y"])) if s.startswith("<") else s
        for s in route.rule.split("/")
    ]
    path = "/".join(segments) + draw(st.sampled_from(["", "", "/", "/x"]))
    method = draw(st.sampled_from([route.method, route.method, "HEAD", "POST"]))
    return method, "/" + path.lstrip("/")  # leading slashes folded, as for PATHS


def test_each_route_is_served_one_way_and_listed_once() -> None:
    assert all((route.hot is None) != (route.quart is None) for route in ROUTES)
    keys = [(route.method, route.rule) for route in ROUTES]
    assert len(keys) == len(set(keys))
    assert len({route.doc.operation_id for route in ROUTES}) == len(ROUTES)


async def test_router_decides_as_werkzeug(services: Services) -> None:
    adapter = create_app(services).url_map.bind("localhost")
    router = Router(ROUTES)

    @settings(max_examples=2000, deadline=None, database=None, derandomize=True)
    @given(st.one_of(st.tuples(METHODS, PATHS), near_routes()))
    def check(request: tuple[str, str]) -> None:
        method, path = request
        found = router.match(method, path)
        try:
            endpoint, parts = adapter.match(path, method)
        except (HTTPException, RequestRedirect):
            assert found is None, (method, path)
            return
        assert found is not None, (method, path)
        route, values = found
        matched = next(r for r in ROUTES if r.doc.operation_id == endpoint)
        assert route.rule == matched.rule, (method, path)
        assert values == list(parts.values())

    check()
