"""The SDK's HTTP/1.1 client against scripted servers: keep-alive reuse, Content-Length,
chunked and close-delimited replies, 1xx, a keep-alive connection the server had closed,
timeouts, cancellation, garbage, refused connections, and a real loopback socket."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from azuld.plugin.http1 import Http1Client, HttpFailure
from tests.services import free_port

Handler = Callable[[trio.abc.Stream, int], Awaitable[None]]


class Server:
    """Serves each connection the client opens (over in-memory streams) with `handler`, which
    gets the stream and the connection's number; keeps every request's raw bytes."""

    def __init__(self, nursery: trio.Nursery, handler: Handler) -> None:
        self.nursery = nursery
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def open(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        self.connections += 1
        self.nursery.start_soon(self.handler, server, self.connections)
        return client

    async def read_request(self, stream: trio.abc.Stream) -> bytes | None:
        request = await read_request(stream)
        if request is not None:
            self.requests.append(request)
        return request


async def read_request(stream: trio.abc.Stream) -> bytes | None:
    """One request (head and Content-Length body); None at end of stream."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head + b"\r\n\r\n" + body


def reply(body: bytes, *extra: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n" + "".join(
        f"{h}\r\n" for h in extra
    )
    return head.encode() + b"\r\n" + body


def client_for(server: Server, base: str = "http://dispatcher.test:8111") -> Http1Client:
    return Http1Client(
        base, headers=(("user-agent", "azuld-plugin-Test"),), open_stream=server.open
    )


async def test_keep_alive_reuses_one_connection(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        while (request := await server.read_request(stream)) is not None:
            await stream.send_all(reply(b"answer to " + request.split(b" ")[1]))

    server = Server(nursery, handler)
    client = client_for(server, "http://dispatcher.test:8111/prefix/")
    first = await client.request("GET", "/a?x=1")
    second = await client.request("POST", "/b", body=b'{"k": 1}', headers=(("x-y", "z"),))
    assert (first.status, first.body) == (200, b"answer to /prefix/a?x=1")
    assert second.body == b"answer to /prefix/b"
    assert second.headers["content-length"] == str(len(second.body))
    assert server.connections == 1
    get, post = server.requests
    assert get.startswith(b"GET /prefix/a?x=1 HTTP/1.1\r\n")
    assert b"host: dispatcher.test:8111\r\n" in get
    assert b"user-agent: azuld-plugin-Test\r\n" in get
    assert b"content-length" not in get
    assert b"content-length: 8\r\n" in post
    assert b"x-y: z\r\n" in post
    assert post.endswith(b'\r\n\r\n{"k": 1}')
    await client.aclose()


async def test_chunked_and_informational_replies(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        while await server.read_request(stream) is not None:
            await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            await stream.send_all(b"HTTP/1.1 206 Partial Content\r\ntransfer-encoding: chunked\r\n")
            await stream.send_all(b"\r\n5\r\nhello\r\n")
            await trio.sleep(0.01)
            await stream.send_all(b"7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n")

    server = Server(nursery, handler)
    client = client_for(server)
    for _ in range(2):
        answer = await client.request("GET", "/stream")
        assert (answer.status, answer.body) == (206, b"hello, world")
    assert server.connections == 1


async def test_a_close_delimited_reply_is_read_to_the_end(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        await server.read_request(stream)
        await stream.send_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of ")
        await stream.send_all(b"it")
        await stream.aclose()

    server = Server(nursery, handler)
    client = client_for(server)
    assert (await client.request("GET", "/")).body == b"all of it"
    assert (await client.request("GET", "/")).body == b"all of it"
    assert server.connections == 2  # not reused: the server ended it


@pytest.mark.parametrize("when", ["idle", "on the next request"])
async def test_a_connection_the_server_closed_is_replaced_once(
    nursery: trio.Nursery, when: str
) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        await server.read_request(stream)
        await stream.send_all(reply(b"from connection %d" % number))
        if number == 1:
            if when != "idle":
                await stream.receive_some(65536)  # read, never answered
            await stream.aclose()  # a keep-alive timeout: closed without saying so

    server = Server(nursery, handler)
    client = client_for(server)
    assert (await client.request("POST", "/x", body=b"1")).body == b"from connection 1"
    assert (await client.request("POST", "/x", body=b"2")).body == b"from connection 2"
    assert [r[-1:] for r in server.requests] == [b"1", b"2"]  # the second was sent once


async def test_a_new_connection_closed_without_a_reply_fails(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        await server.read_request(stream)
        await stream.aclose()

    server = Server(nursery, handler)
    with pytest.raises(HttpFailure, match="connection closed without a reply"):
        await client_for(server).request("GET", "/")
    assert server.connections == 1  # not retried: it was not a reused connection


async def test_a_reply_cut_short_fails(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        await server.read_request(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await stream.aclose()

    server = Server(nursery, handler)
    with pytest.raises(HttpFailure):
        await client_for(server).request("GET", "/")


async def test_garbage_is_not_http(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        await server.read_request(stream)
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    server = Server(nursery, handler)
    with pytest.raises(HttpFailure, match=r"not an HTTP/1\.1 reply"):
        await client_for(server).request("GET", "/")


async def test_silence_times_out_and_the_connection_is_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        while await server.read_request(stream) is not None:
            if number == 1:
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                await trio.sleep(50)  # progress resets the clock: 50 s < 60 s
                await stream.send_all(b"cd")
                await server.read_request(stream)
                await trio.sleep_forever()
            await stream.send_all(reply(b"fresh"))

    server = Server(nursery, handler)
    client = client_for(server)
    assert (await client.request("GET", "/slow")).body == b"abcd"
    start = trio.current_time()
    with pytest.raises(HttpFailure, match="no reply for 5 s"):
        await client.request("GET", "/silent", wait_seconds=5)
    assert trio.current_time() - start == 5
    assert (await client.request("GET", "/again")).body == b"fresh"
    assert server.connections == 2


async def test_cancelled_mid_request_drops_the_connection(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.abc.Stream, number: int) -> None:
        while (request := await server.read_request(stream)) is not None:
            if b"/hang" in request:
                await trio.sleep_forever()
            await stream.send_all(reply(b"ok"))

    server = Server(nursery, handler)
    client = client_for(server)
    await client.request("GET", "/")
    with trio.move_on_after(0.05):
        await client.request("GET", "/hang")
    assert (await client.request("GET", "/")).body == b"ok"
    assert server.connections == 2


async def test_nothing_listening() -> None:
    with pytest.raises(HttpFailure, match=r"^cannot connect: Connection refused$"):
        await Http1Client(f"http://127.0.0.1:{free_port()}").request("GET", "/")


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Http1Client("ftp://example.test/")


async def test_over_a_real_socket(nursery: trio.Nursery) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        while (request := await read_request(stream)) is not None:
            await stream.send_all(reply(b"%d bytes" % len(request)))

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    client = Http1Client(f"http://127.0.0.1:{port}")
    big = b"x" * 3_000_000
    answer = await client.request("POST", "/upload", body=big)
    assert answer.status == 200
    assert int(answer.body.split()[0]) > len(big)
    assert (await client.request("GET", "/")).status == 200
    await client.aclose()
