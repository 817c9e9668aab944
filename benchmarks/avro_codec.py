"""CPU per event of the Avro codec (`azuld.models.avro`) against the JSON path it sits beside.

POST: decoding a posted body into events — JSON through the dispatcher's own decoder
(`azuld.core.posts.decode_events`), Avro through `decode_posted` (the generated reader,
`azuld.models.avro_fast`) and, for reference, through the careful path it falls back on
(fastavro + msgspec.convert) — for the bodies the Go entropy plugin sends (tests/fixtures/go-avro:
a completed status with one enriched result and its 19-block `info`, and its registration), one
event per body and 100 per body. The statuses are for 1,000 distinct binaries (`of_binary`), as a
plugin's statuses are: the reader remembers small records it has read, and one body decoded over
and over would flatter it.

Fetch: an event as handed out — JSON: msgspec encodes the decoded event (what `Fetcher._render`
does); Avro: the generated writer's halves around `dequeued` (what `AvroRecords` does on a cache
miss; a hit is a join) — and the reply's framing (`encode_fetch_reply`), for the binary event Go
served, 1 and 100 per answer.

Only the codec: no HTTP, no log, no validation (both paths share those). CPU is
`time.process_time()`, best of --repeat rounds:

    .venv/bin/python benchmarks/avro_codec.py
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from azuld.core.posts import decode_events
from azuld.dispatch import FetchResult
from azuld.http.events import encode_fetch_reply
from azuld.models import avro
from azuld.models.avro_fast import encode_long
from azuld.models.responses import FetchInfo

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "go-avro"


def fixture_event(name: str, model: str) -> Any:
    (event,) = avro.decode_posted(model, (FIXTURES / name).read_bytes())
    return event


DISTINCT_JOBS = 1000


def of_binary(status: Any, index: int) -> Any:
    """The Go status again, for another binary: its own sha256 in the input, the input's path
    and the result (as a status for another job has)."""
    sha256 = hashlib.sha256(index.to_bytes(8, "big")).hexdigest()
    copy = msgspec.json.decode(msgspec.json.encode(status), type=type(status))
    job = copy.entity.input
    job.entity.sha256 = job.source.path[-1].sha256 = sha256
    job.kafka_key, job.dequeued = sha256[:32], f"{sha256[:32]}.Entropy.2025.05.16.{index}"
    for result in copy.entity.results:
        result.entity.sha256 = sha256
        for node in result.source.path:
            node.sha256 = sha256
    return copy


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

    def us(run: Callable[[], object], count: int) -> float:
        return cpu_us_per_event(run, count, args.seconds, args.repeat)

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"{'scenario':<24} {'count':>5} {'JSON':>8} {'Avro':>8} {'Avro/JSON':>9} "
        f"{'fastavro':>9}   (CPU µs per event)"
    )
    for label, model, make in (
        ("POST status", "status", lambda index: of_binary(status, index)),
        ("POST plugin", "plugin", lambda _: plugin),  # a plugin registers as itself
    ):
        for count in (1, 100):
            # Statuses of distinct jobs (the reader remembers small records it has read: the
            # same body over and over would flatter it).
            bodies = [
                [make(index) for index in range(start, start + count)]
                for start in range(0, max(DISTINCT_JOBS, count), count)
            ]
            json_bodies = itertools.cycle([msgspec.json.encode(events) for events in bodies])
            avro_bodies = itertools.cycle([avro.encode_events(model, e) for e in bodies])
            for _ in bodies:
                json_body, avro_body = next(json_bodies), next(avro_bodies)
                assert decode_events(model, json_body) == avro.decode_posted(model, avro_body)
            json_us = us(lambda m=model, c=json_bodies: decode_events(m, next(c)), count)
            avro_us = us(lambda m=model, c=avro_bodies: avro.decode_posted(m, next(c)), count)
            careful = us(lambda m=model, c=avro_bodies: avro._decode_carefully(m, next(c)), count)
            print(
                f"{label:<24} {count:>5} {json_us:>8.1f} {avro_us:>8.1f} "
                f"{avro_us / json_us:>8.2f}x {careful:>9.1f}"
            )
    encode = msgspec.json.Encoder().encode
    for count in (1, 100):
        info = FetchInfo(filtered=0, fetched=count, ready=True, paused=False)
        dequeued = binary.dequeued.encode()

        def json_answer(n: int = count, info: FetchInfo = info) -> object:
            return encode_fetch_reply(FetchResult(info, [encode(binary) for _ in range(n)]))

        def avro_answer(
            n: int = count, info: FetchInfo = info, dequeued: bytes = dequeued
        ) -> object:
            datums = []
            for _ in range(n):
                head, tail = avro.FAST.binary_halves(binary)
                datums.append(b"".join((head, encode_long(len(dequeued)), dequeued, tail)))
            return encode_fetch_reply(FetchResult(info, datums), avro=True)

        json_us, avro_us = us(json_answer, count), us(avro_answer, count)
        print(
            f"{'fetch answer (binary)':<24} {count:>5} {json_us:>8.1f} {avro_us:>8.1f} "
            f"{avro_us / json_us:>8.2f}x {'':>9}"
        )


if __name__ == "__main__":
    main()
