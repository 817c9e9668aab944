"""CPU per event of the Avro codec (`azuld.models.avro`) against the JSON path it sits beside.

POST: decoding a posted body into events — JSON through the dispatcher's own decoder
(`azuld.core.posts.decode_events`), Avro through `decode_posted` — for the bodies the Go
entropy plugin sends (tests/fixtures/go-avro: a completed status with one enriched result and
its 19-block `info`, and its registration), one event per body and 100 per body.

Fetch: framing a fetch answer from the events' JSON (what `FetchResult.events` holds) — JSON
through `azuld.http.events.multipart_body` (the events pass through as they are), Avro through
`encode_fetch_answer` (decoded and written as Avro) — for the binary event Go served, 1 and 100
per answer.

Only the codec: no HTTP, no log, no validation (both paths share those). CPU is
`time.process_time()`, best of --repeat rounds:

    .venv/bin/python benchmarks/avro_codec.py
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from azuld.core.posts import decode_events
from azuld.dispatch import FetchResult
from azuld.http.events import multipart_body
from azuld.models import avro
from azuld.models.responses import FetchInfo

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "go-avro"


def fixture_event(name: str, model: str) -> Any:
    (event,) = avro.decode_posted(model, (FIXTURES / name).read_bytes())
    return event


def cpu_us_per_event(run: Callable[[], object], events: int, seconds: float, repeat: int) -> float:
    """Best-of-`repeat` CPU microseconds per event, each round running for about `seconds`."""
    loops = 1
    while True:  # calibrate
        start = time.process_time()
        for _ in range(loops):
            run()
        spent = time.process_time() - start
        if spent > seconds / 10:
            break
        loops *= 4
    loops = max(1, int(loops * seconds / 10 / spent * 10))
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(loops):
            run()
        best = min(best, time.process_time() - start)
    return best / loops / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="per round")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    status = fixture_event("04-request.bin", "status")
    plugin = fixture_event("01-request.bin", "plugin")
    binary = fixture_event("02-response.part2-events.bin", "binary")

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"{'scenario':<28} {'count':>5} {'JSON us/event':>14} {'Avro us/event':>14} {'Avro/JSON':>9}"
    )
    for label, model, event in (
        ("POST status", "status", status),
        ("POST plugin", "plugin", plugin),
    ):
        for count in (1, 100):
            events = [event] * count
            json_body = msgspec.json.encode(events)
            avro_body = avro.encode_events(model, events)
            assert decode_events(model, json_body) == avro.decode_posted(model, avro_body)
            json_us = cpu_us_per_event(
                lambda m=model, b=json_body: decode_events(m, b), count, args.seconds, args.repeat
            )
            avro_us = cpu_us_per_event(
                lambda m=model, b=avro_body: avro.decode_posted(m, b),
                count,
                args.seconds,
                args.repeat,
            )
            print(
                f"{label:<28} {count:>5} {json_us:>14.1f} {avro_us:>14.1f} {avro_us / json_us:>8.2f}x"
            )
    for count in (1, 100):
        info = FetchInfo(filtered=0, fetched=count, ready=True, paused=False)
        encoded = [msgspec.json.encode(binary)] * count
        result = FetchResult(info, encoded)
        json_us = cpu_us_per_event(
            lambda r=result: multipart_body(r), count, args.seconds, args.repeat
        )
        avro_us = cpu_us_per_event(
            lambda i=info, e=encoded: avro.encode_fetch_answer("binary", i, e),
            count,
            args.seconds,
            args.repeat,
        )
        label = "fetch answer (binary)"
        print(
            f"{label:<28} {count:>5} {json_us:>14.1f} {avro_us:>14.1f} {avro_us / json_us:>8.2f}x"
        )


if __name__ == "__main__":
    main()
