"""What an HTTP request costs before azuld does anything: the server and framework alone.

Serves one trivial route (a small JSON reply) with each combination below in its own process,
drives it with 16 keep-alive connections of `loadgen.RawClient` for a few seconds, and reports
the server process's CPU per request (the figure that matters on a shared 2-core machine) and
the requests per second it managed:

* `floor`: a hand-written trio loop that parses nothing but the blank line (no HTTP server
  could do less on trio),
* `azuld+asgi`, `azuld+quart`: azuld's own server (`azuld.http.server`) with a raw ASGI app and
  with a quart-trio app,
* `hypercorn+asgi`, `hypercorn+quart`: the same apps under hypercorn's trio worker.

    .venv/bin/python benchmarks/http_servers.py [--seconds 5] [--workers 16] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import RawClient

SERVERS = ("floor", "azuld+asgi", "hypercorn+asgi", "azuld+quart", "hypercorn+quart")

# The server side, run as `python http_servers.py --serve KIND PORT`.
_BODY = b'{"ok":true}'


async def _raw_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()  # type: ignore[operator]
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
            else:
                await send({"type": "lifespan.shutdown.complete"})  # type: ignore[operator]
                return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": _BODY})  # type: ignore[operator]


def _quart_app() -> object:
    from quart_trio import QuartTrio

    app = QuartTrio("bench")

    @app.get("/<path:path>")
    async def reply(path: str) -> dict[str, bool]:
        return {"ok": True}

    return app


async def _floor(port: int) -> None:
    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(_BODY),
        _BODY,
    )

    async def handle(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while data := await stream.receive_some(65536):
            buffer += data
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                del buffer[: end + 4]
                await stream.send_all(reply)

    await trio.serve_tcp(handle, port, host="127.0.0.1")


def _serve(kind: str, port: int) -> None:
    if kind == "floor":
        trio.run(_floor, port)
        return
    server, _, framework = kind.partition("+")
    app = _raw_app if framework == "asgi" else _quart_app()
    if server == "azuld":
        from azuld.http.server import ServerConfig, serve

        config = ServerConfig(listen=f"127.0.0.1:{port}")
        trio.run(lambda: serve(app, config, shutdown=trio.Event()))  # type: ignore[arg-type]
    else:
        from hypercorn.config import Config
        from hypercorn.trio import serve as hypercorn_serve

        hypercorn_config = Config()
        hypercorn_config.bind = [f"127.0.0.1:{port}"]
        hypercorn_config.accesslog = None
        trio.run(hypercorn_serve, app, hypercorn_config)


# The measuring side.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(port: int, workers: int, seconds: float) -> int:
    done = 0

    async def worker() -> None:
        nonlocal done
        client = RawClient(f"http://127.0.0.1:{port}")
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            status, _, _ = await client.request("GET", "/api/bench?a=1")
            assert status == 200
            done += 1
        await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return done


def measure(kind: str, workers: int, seconds: float) -> dict[str, float | str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        trio.run(_drive, port, workers, 0.5)  # warm-up
        before = _cpu_seconds(process.pid)
        requests = trio.run(_drive, port, workers, seconds)
        cpu = _cpu_seconds(process.pid) - before
    finally:
        process.terminate()
        process.wait()
    return {
        "server": kind,
        "requests_per_second": round(requests / seconds, 1),
        "server_cpu_us_per_request": round(cpu / requests * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve[0], int(args.serve[1]))
        return
    rows = [measure(kind, args.workers, args.seconds) for kind in SERVERS]
    base = {row["server"]: row for row in rows}["azuld+asgi"]["server_cpu_us_per_request"]
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at end {os.getloadavg()[0]:.2f}"
    )
    print(f"{'server':18} {'req/s':>9} {'CPU us/req':>11} {'vs azuld+asgi':>14}")
    for row in rows:
        cpu = float(row["server_cpu_us_per_request"])
        print(
            f"{row['server']:18} {row['requests_per_second']:>9} {cpu:>11} {cpu / float(base):>13.2f}x"
        )
    if args.output:
        args.output.write_text(json.dumps({"loadavg": os.getloadavg(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
