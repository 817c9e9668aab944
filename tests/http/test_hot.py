"""`azuld.http.hot`: the hot routes served as raw ASGI in front of Quart behave as Quart did.

Most of their behaviour is covered through the test client by the other files here; this one
covers what is new: the hand-off to Quart, the per-request steps outside Quart (request id,
metrics, errors), body limits, disconnects, and the routing and query details werkzeug had.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from quart.typing import TestClientProtocol as Client
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.sansio.request import Request

from azuld.http import Services, asgi, create_app
from azuld.http.routes import ROUTES
from azuld.service import open_services
from azuld.settings import AuthSettings, Settings, TokenSettings, load_settings
from tests.conftest import make_binary
from tests.http.conftest import error_of

FETCH = "/api/v2/event/binary/active?name=P&version=1&r-live=true&deadline=0.05"
WAITING_FETCH = "/api/v2/event/binary/active?name=Waiter&version=1&r-live=true&deadline=30"
SMALL = b"hello azul\n"
SMALL_SHA = hashlib.sha256(SMALL).hexdigest()
BIG = bytes(range(256)) * 4096  # 1 MiB: several reads of the local store
BIG_SHA = hashlib.sha256(BIG).hexdigest()

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Exchange:
    """What an ASGI app sent for one request."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.messages[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


def scope_of(method: str, target: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


def receive_of(*chunks: bytes, then: trio.Event | None = None) -> Receive:
    """The body in `chunks`, then `http.disconnect` once `then` is set (never if `None`)."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or (b"",))
    ]

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then is None:
            await trio.sleep_forever()
        else:
            await then.wait()
        return {"type": "http.disconnect"}

    return receive


async def call(
    app: QuartTrio,
    method: str,
    target: str,
    body: bytes | list[bytes] = b"",
    *,
    headers: dict[str, str] | None = None,
    scope: dict[str, Any] | None = None,
    receive: Receive | None = None,
) -> Exchange:
    exchange = Exchange()

    async def send(message: dict[str, Any]) -> None:
        exchange.messages.append(message)

    chunks = body if isinstance(body, list) else [body]
    with trio.fail_after(10):
        await app(scope or scope_of(method, target, headers), receive or receive_of(*chunks), send)
    return exchange


@pytest.fixture
async def app(services: Services, nursery: trio.Nursery) -> AsyncIterator[QuartTrio]:
    """The app with its lifespan running, called as a server would (no test client)."""
    await nursery.start(services.dispatcher.run)
    created = create_app(services)
    async with created.test_app():
        yield created


async def store(services: Services, tmp_path: Path, data: bytes, sha256: str) -> None:
    path = tmp_path / "upload"
    path.write_bytes(data)
    await services.blobs.put_file("samples", "content", sha256, path)


def polls(services: Services) -> int:
    states = services.dispatcher.keys()
    return sum(ks.polls for ks in states)


async def wait_for(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.01)


# --- the hand-off to Quart -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "status", "title"),
    [
        ("PUT", "/api/v2/event?model=binary", 405, "method not allowed"),
        ("GET", "/api/v2/event", 405, "method not allowed"),
        ("DELETE", FETCH, 405, "method not allowed"),
        ("POST", FETCH, 405, "method not allowed"),
        ("PUT", "/api/v1/processing/binary", 405, "method not allowed"),
        ("GET", "/api/v1/events/plugin", 405, "method not allowed"),
        ("POST", f"/api/v3/stream/samples/content/{SMALL_SHA}", 405, "method not allowed"),
        ("OPTIONS", "/api/v2/event", 405, "method not allowed"),
        ("GET", "/api/v2/event/binary/active/", 404, "not found"),
        ("GET", "/api/v2/event//active", 404, "not found"),
        ("GET", "/api/v2/event/binary", 404, "not found"),
        ("GET", "/api/v1/processing/", 404, "not found"),
        ("GET", f"/api/v3/stream/samples/content/{SMALL_SHA}/", 404, "not found"),
        ("GET", "/api/v3/stream/samples/content/../../etc/passwd", 404, "not found"),
    ],
)
async def test_other_methods_and_paths_get_quarts_answer(
    client: Client, services: Services, method: str, target: str, status: int, title: str
) -> None:
    response = await client.open(target, method=method)
    assert response.status_code == status
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch("[0-9a-f]{16}", response.headers["X-Request-Id"])
    got_title, detail = error_of(await response.get_json())
    assert got_title == title
    if status == 404:
        assert detail == "no such route; see docs/protocol.md for the API"
    sample = services.dispatcher.metrics.registry.get_sample_value(
        "azuld_http_requests_total", {"route": "unmatched", "method": method, "code": str(status)}
    )
    assert sample == 1.0


async def test_a_doubled_slash_inside_is_quarts_redirect(client: Client) -> None:
    response = await client.get("/api/v2/event/binary//active?name=P&r-live=true")
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/api/v2/event/binary/active?name=P&r-live=true")


async def test_every_route_is_in_quarts_url_map(services: Services) -> None:
    app = create_app(services)
    served = {
        (rule.rule, method, rule.endpoint)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if rule.endpoint != "static" and method != "HEAD"  # werkzeug's HEAD of every GET
    }
    listed = {(r.rule, r.method, r.doc.operation_id) for r in ROUTES if r.method != "HEAD"}
    assert served == listed
    # A HEAD route is answered by its GET twin's rule in Quart's map (and in front by HotRoutes).
    assert all((r.rule, "GET") in {s[:2] for s in served} for r in ROUTES if r.method == "HEAD")
    # The hot routes' views never run: HotRoutes answers them in front.
    for route in ROUTES:
        if route.method != "HEAD":
            view = app.view_functions[route.doc.operation_id]
            assert (view.__name__ == "_served_in_front") == (route.hot is not None), route.rule


@pytest.mark.parametrize(
    ("method", "target", "scope_changes"),
    [
        ("POST", "//api/v2/event?model=binary", {}),  # werkzeug folds leading slashes
        ("post", "/api/v2/event?model=binary", {}),  # and upper-cases the method
        ("POST", "/azuld/api/v2/event?model=binary", {"root_path": "/azuld"}),
        ("POST", "http://example/api/v2/event?model=binary", {}),  # absolute-form target
    ],
)
async def test_paths_werkzeug_would_route_are_served_in_front(
    app: QuartTrio, method: str, target: str, scope_changes: dict[str, str]
) -> None:
    scope = {**scope_of(method, target), **scope_changes}
    exchange = await call(app, method, target, b"[]", scope=scope)
    # Served: the dispatcher's own rejection, not the 500 of the URL map's placeholder view.
    assert exchange.status == 422
    assert "event message too small" in exchange.json()["detail"]


async def test_a_path_outside_the_root_path_is_quarts_404(app: QuartTrio) -> None:
    scope = {**scope_of("POST", "/api/v2/event?model=binary"), "root_path": "/azuld"}
    exchange = await call(app, "POST", "", b"[]", scope=scope)
    assert exchange.status == 404


# --- the per-request steps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "echoed"),
    [("plugin-7.job_3", "plugin-7.job_3"), ("not plain!", None), ("x" * 65, None), ("", None)],
)
async def test_request_id_is_echoed_when_plain(
    client: Client, offered: str, echoed: str | None
) -> None:
    for target, method in [
        (FETCH, "GET"),
        ("/api/v2/event?model=binary", "POST"),
        (f"/api/v3/stream/samples/content/{'a' * 64}", "GET"),  # an error reply too
    ]:
        response = await client.open(target, method=method, headers={"X-Request-Id": offered})
        got = response.headers["X-Request-Id"]
        if echoed is None:
            assert re.fullmatch("[0-9a-f]{16}", got), got
        else:
            assert got == echoed


async def test_metrics_use_quarts_rule_strings(
    client: Client, services: Services, tmp_path: Path
) -> None:
    await store(services, tmp_path, SMALL, SMALL_SHA)
    await client.post("/api/v2/event?model=binary", data=msgspec.json.encode([make_binary("m")]))
    await client.get(FETCH)
    await client.get("/api/v2/event/binary/sideways?name=P&r-live=true")
    await client.get("/api/v1/processing/binary?name=P&version=1&r-live=true&deadline=0.05")
    await client.post("/api/v1/events/plugin", data=b"")
    await client.post("/api/v1/processing/binary", data=b"[]")
    await client.get(f"/api/v3/stream/samples/content/{SMALL_SHA}")
    await client.head(f"/api/v3/stream/samples/content/{SMALL_SHA}")
    registry = services.dispatcher.metrics.registry
    expected = [
        ("/api/v2/event", "POST", "200"),
        ("/api/v2/event/<model>/<mode>", "GET", "200"),
        ("/api/v2/event/<model>/<mode>", "GET", "404"),
        ("/api/v1/processing/<entity_type>", "GET", "200"),
        ("/api/v1/events/plugin", "POST", "400"),
        ("/api/v1/processing/<entity_type>", "POST", "422"),
        ("/api/v3/stream/<source>/<label>/<sha256>", "GET", "200"),
        ("/api/v3/stream/<source>/<label>/<sha256>", "HEAD", "200"),
    ]
    for route, method, code in expected:
        labels = {"route": route, "method": method, "code": code}
        assert registry.get_sample_value("azuld_http_requests_total", labels) == 1.0, labels
    count = registry.get_sample_value(
        "azuld_http_request_duration_seconds_count", {"route": "/api/v2/event/<model>/<mode>"}
    )
    assert count == 2.0


async def test_unexpected_errors_are_a_logged_500(
    app: QuartTrio,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services.dispatcher, "publish", broken)
    exchange = await call(app, "POST", "/api/v2/event?model=binary", b"[]")
    assert exchange.status == 500
    assert exchange.json() == {
        "status": "500",
        "title": "internal error",
        "detail": "RuntimeError: the error was logged",
        "error_enum": "ErrorStringEnumUnset",
    }
    assert b"secret internals" not in exchange.body
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None


async def test_a_later_true_reset_needs_admin_too(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A fetch honours the last `reset`; the role check looks at all of them."""
    tokens = AuthSettings(tokens=(TokenSettings(name="runner", token="p" * 32, roles=("plugin",)),))
    settings = load_settings(environ={}, overrides={"data_dir": tmp_path / "d", "auth": tokens})
    async with open_services(settings) as svc:
        await nursery.start(svc.dispatcher.run)
        async with create_app(svc).test_app() as test_app:
            client = test_app.test_client()
            plugin = {"Authorization": "Bearer " + "p" * 32}
            for reset, status in [("", 200), ("&reset=false", 200), ("&reset=false&reset=1", 403)]:
                response = await client.get(FETCH + reset, headers=plugin)
                assert response.status_code == status, reset


# --- request bodies --------------------------------------------------------------------------


@pytest.fixture
def small_body_settings(tmp_path: Path) -> Settings:
    return load_settings(
        environ={}, overrides={"data_dir": tmp_path / "d", "server.max_event_body_bytes": 1000}
    )


@pytest.mark.parametrize(
    ("chunks", "headers"),
    [
        ([b"[" + b" " * 2000 + b"]"], {}),
        ([b"[" + b" " * 600, b" " * 600 + b"]"], {}),  # only the sum is too big
        ([b"[]"], {"Content-Length": "5000"}),  # refused on the declared length
    ],
)
async def test_a_too_big_event_body_is_413(
    small_body_settings: Settings, chunks: list[bytes], headers: dict[str, str]
) -> None:
    async with open_services(small_body_settings) as svc:
        exchange = await call(
            create_app(svc), "POST", "/api/v2/event?model=binary", chunks, headers=headers
        )
    assert exchange.status == 413
    assert exchange.headers["content-type"] == "application/json; charset=utf-8"
    assert exchange.json() == {
        "status": "413",
        "title": "request entity too large",
        "detail": "The data value transmitted exceeds the capacity limit.",
        "error_enum": "ErrorStringEnumUnset",
    }


async def test_a_body_in_pieces_is_whole(app: QuartTrio) -> None:
    body = msgspec.json.encode([make_binary("pieces")])
    exchange = await call(app, "POST", "/api/v2/event?model=binary", [body[:10], body[10:], b""])
    assert (exchange.status, exchange.json()["total_ok"]) == (200, 1)


async def test_a_body_that_stops_coming_is_408(services: Services) -> None:
    app = create_app(services)
    app.asgi_app.body_timeout_seconds = 0.05  # type: ignore[attr-defined]

    async def silent() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    exchange = await call(app, "POST", "/api/v2/event?model=binary", receive=silent)
    assert exchange.status == 408
    assert error_of(exchange.json())[0] == "request timeout"


async def test_a_client_gone_mid_body_gets_nothing(services: Services) -> None:
    messages = [
        {"type": "http.request", "body": b"[", "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    exchange = await call(
        create_app(services), "POST", "/api/v2/event?model=binary", receive=receive
    )
    assert exchange.messages == []


# --- long-polls and disconnects --------------------------------------------------------------


@pytest.mark.parametrize("lifespan", [True, False])
async def test_a_disconnect_cancels_a_waiting_long_poll(
    services: Services, nursery: trio.Nursery, lifespan: bool
) -> None:
    """With the lifespan running, fetches get their watcher after a while; without it (a bare
    ASGI call), at once. Either way the poll stops counting against max_polls_per_key."""
    await nursery.start(services.dispatcher.run)
    app = create_app(services)
    await call(app, "GET", WAITING_FETCH.replace("deadline=30", "deadline=0.01"))  # the key exists
    exchange = Exchange()
    gone = trio.Event()

    async def send(message: dict[str, Any]) -> None:
        exchange.messages.append(message)

    async with app.test_app() if lifespan else nullcontext(), trio.open_nursery() as requests:
        requests.start_soon(app, scope_of("GET", WAITING_FETCH), receive_of(then=gone), send)
        await wait_for(lambda: polls(services) == 1)
        await trio.sleep(0.3)  # with the lifespan, a watcher has been given by now
        assert polls(services) == 1
        hot = app.asgi_app
        assert len(hot._watched) == lifespan  # type: ignore[attr-defined]
        gone.set()
        await wait_for(lambda: polls(services) == 0)  # long before the fetch's 30 s deadline
    assert exchange.messages == []  # no reply, and not counted
    assert (
        services.dispatcher.metrics.registry.get_sample_value(
            "azuld_http_request_duration_seconds_count", {"route": "/api/v2/event/<model>/<mode>"}
        )
        == 1.0
    )


async def test_a_freed_slot_admits_a_new_long_poll(tmp_path: Path, nursery: trio.Nursery) -> None:
    settings = load_settings(
        environ={},
        overrides={"data_dir": tmp_path / "d", "dispatch.max_polls_per_key": 1},
    )
    async with open_services(settings) as svc:
        await nursery.start(svc.dispatcher.run)
        app = create_app(svc)
        async with app.test_app():
            await call(app, "GET", WAITING_FETCH.replace("deadline=30", "deadline=0.01"))
            gone = trio.Event()
            async with trio.open_nursery() as requests:

                async def ignore(message: dict[str, Any]) -> None:
                    pass

                requests.start_soon(
                    app, scope_of("GET", WAITING_FETCH), receive_of(then=gone), ignore
                )
                await wait_for(lambda: polls(svc) == 1)
                refused = await call(app, "GET", WAITING_FETCH)
                assert refused.status == 429
                gone.set()
            admitted = await call(app, "GET", WAITING_FETCH.replace("deadline=30", "deadline=0.05"))
            assert admitted.status == 200


async def test_a_fetch_that_finds_jobs_replies_and_leaves_no_watcher(
    app: QuartTrio, services: Services
) -> None:
    await call(app, "POST", "/api/v2/event?model=binary", msgspec.json.encode([make_binary("w")]))
    fetch = "/api/v2/event/binary/active?name=Quick&version=1&r-historic=true&deadline=5"
    exchange = await call(app, "GET", fetch)
    assert exchange.status == 200
    assert len(exchange.messages) == 2
    assert exchange.messages[1]["more_body"] is False
    hot = app.asgi_app
    assert hot._unwatched == {}  # type: ignore[attr-defined]
    assert hot._watched == {}  # type: ignore[attr-defined]


async def test_head_on_a_fetch_route_is_served_without_a_body(app: QuartTrio) -> None:
    exchange = await call(app, "HEAD", FETCH)
    assert exchange.status == 200
    assert exchange.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(exchange.headers["content-length"]) > 0
    assert exchange.body == b""


# --- downloads -------------------------------------------------------------------------------


async def test_download_headers_and_ranges(
    app: QuartTrio, services: Services, tmp_path: Path
) -> None:
    await store(services, tmp_path, SMALL, SMALL_SHA)
    url = f"/api/v3/stream/samples/content/{SMALL_SHA}"
    whole = await call(app, "GET", url)
    assert (whole.status, whole.body) == (200, SMALL)
    assert whole.headers == {
        "accept-ranges": "bytes",
        "content-length": str(len(SMALL)),
        "content-type": "application/octet-stream",
        "x-request-id": whole.headers["x-request-id"],
    }
    assert len(whole.messages) == 2  # a small blob is one send
    part = await call(app, "GET", url, headers={"Range": "bytes=2-5"})
    assert (part.status, part.body) == (206, SMALL[2:6])
    assert part.headers["content-range"] == f"bytes 2-5/{len(SMALL)}"
    assert part.headers["content-length"] == "4"
    past = await call(app, "GET", url, headers={"Range": "bytes=11-"})
    assert past.status == 416
    assert past.headers["content-range"] == f"bytes */{len(SMALL)}"
    assert past.headers["x-content-type-options"] == "nosniff"


async def test_head_replies_have_no_body(
    app: QuartTrio, services: Services, tmp_path: Path
) -> None:
    await store(services, tmp_path, SMALL, SMALL_SHA)
    for sha256, status in [(SMALL_SHA, 200), ("b" * 64, 404), ("B" * 64, 400)]:
        exchange = await call(app, "HEAD", f"/api/v3/stream/samples/content/{sha256}")
        assert exchange.status == status
        assert exchange.body == b""
        assert exchange.messages[-1]["more_body"] is False
    found = await call(app, "HEAD", f"/api/v3/stream/samples/content/{SMALL_SHA}")
    assert found.headers["content-length"] == "0"
    assert found.headers["content-type"] == "application/octet-stream"


async def test_a_big_download_streams(app: QuartTrio, services: Services, tmp_path: Path) -> None:
    await store(services, tmp_path, BIG, BIG_SHA)
    exchange = await call(app, "GET", f"/api/v3/stream/samples/content/{BIG_SHA}")
    assert exchange.status == 200
    assert exchange.headers["content-length"] == str(len(BIG))
    assert exchange.body == BIG
    bodies = exchange.messages[1:]
    assert len(bodies) > 2
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    ranged = await call(
        app,
        "GET",
        f"/api/v3/stream/samples/content/{BIG_SHA}",
        headers={"Range": "bytes=1000-700000"},
    )
    assert (ranged.status, ranged.body) == (206, BIG[1000:700001])


async def test_a_big_download_stops_when_its_client_leaves(
    app: QuartTrio, services: Services, tmp_path: Path
) -> None:
    await store(services, tmp_path, BIG, BIG_SHA)
    gone = trio.Event()
    sent: list[dict[str, Any]] = []

    async def slow_send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            gone.set()  # the client leaves after the first piece
            await trio.sleep(0.05)

    with trio.fail_after(5):
        await app(
            scope_of("GET", f"/api/v3/stream/samples/content/{BIG_SHA}"),
            receive_of(then=gone),
            slow_send,
        )
    assert sent[0]["status"] == 200
    assert sum(len(m.get("body", b"")) for m in sent[1:]) < len(BIG)
    assert all(m.get("more_body") for m in sent[1:])  # never told the body was complete


# --- the query string, as werkzeug's request.args ----------------------------------------------

QUERY_TEXT = st.text(alphabet=st.sampled_from("ab=&+%;2Fcé€ \x00zZ0"), max_size=40)


@given(QUERY_TEXT)
def test_query_parsing_is_parse_qsl(query: str) -> None:
    expected = parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
    assert asgi.parse_qsl(query) == expected


@given(QUERY_TEXT)
def test_query_pairs_are_werkzeugs_args(query: str) -> None:
    # Quart's request is werkzeug's sans-I/O one: these are `request.args` as Quart had them.
    args = Request("GET", "http", None, "", "/", query.encode(), Headers(), None).args
    ours = MultiDict(asgi.parse_qsl(query))
    assert ours == args
    assert list(ours.items(multi=True)) == list(args.items(multi=True))


async def test_undecodable_escapes_stay_escaped(app: QuartTrio) -> None:
    exchange = await call(app, "GET", "/api/v2/event/binary/active?name=P&r-live=%FF%zz")
    assert exchange.status == 422
    assert "r-live='%FF%zz' is not a boolean" in exchange.json()["detail"]
