"""In-daemon counters for `benchmarks/rounds.py --counters` (a benchmark instrument, not azuld).

Python imports `sitecustomize` at start-up from PYTHONPATH: `rounds.py` puts this folder there
for the daemon only, with BENCH_COUNTERS_FILE naming a file. Then it wraps, in the daemon:

* `AIOKafkaClient.send`: Kafka requests by client (producer, tail, reader, member, admin) and
  type (`req.producer.ProduceRequest`, `req.admin.OffsetCommitRequest`, ...);
* `trio_asyncio.aio_as_trio`: bridge calls from Trio into asyncio (`hop.aio_as_trio`), and the
  asyncio callbacks and timers the trio-asyncio loop runs (`loop.*`; each one costs a pass of
  Trio's scheduler);
* `KafkaLog` (where its methods are found): calls through `_call` by operation, with their wall
  time; reads answered from the tail cache, by the reader consumer, or empty; records each
  consumer handed back by topic kind; records followed; appends and commits;
* `Fetcher.fetch` (azuld.dispatch): fetches that came back empty or short, and for those, per lane, whether a
  partition still had records but the lane's window was full (`window_full`) or not yet read.

On SIGUSR2 it writes `{"counts": {...}, "wall_seconds": {...}}` to that file. It only counts;
names it cannot find (after a refactor) are skipped with a note on stderr.
"""

import os

if os.environ.get("BENCH_COUNTERS_FILE"):
    import json
    import signal
    import sys
    import time
    from collections import Counter
    from typing import Any

    COUNTS: Counter[str] = Counter()
    WALL: Counter[str] = Counter()
    CLIENTS: dict[int, str] = {}

    LOGS: list[Any] = []  # the KafkaLog, once started: some counts are its own

    def _dump(*_: Any) -> None:
        for log in LOGS:
            ahead = getattr(getattr(log, "reads", None), "kept", None)
            if ahead is not None:  # reads answered from what an earlier fetch brought
                COUNTS["read.from_read_ahead"] = ahead.hits
            rounds = getattr(log, "rounds", None)
            if rounds is not None:  # produce rounds (appends sent together)
                COUNTS["produce.rounds"] = rounds.rounds
            COUNTS["commit.requests"] = getattr(log, "commit_requests", 0)
        path = os.environ["BENCH_COUNTERS_FILE"]
        with open(path + ".tmp", "w") as out:
            json.dump({"counts": dict(COUNTS), "wall_seconds": dict(WALL)}, out)
        os.replace(path + ".tmp", path)

    signal.signal(signal.SIGUSR2, _dump)

    def _missing(what: str) -> None:
        print(f"benchmarks/counters: {what} not found, not counted", file=sys.stderr)

    def _wrap_async(owner: Any, name: str, before: Any = None, after: Any = None) -> None:
        original = getattr(owner, name, None)
        if original is None:
            _missing(f"{getattr(owner, '__name__', owner)}.{name}")
            return

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if before is not None:
                before(*args, **kwargs)
            result = await original(*args, **kwargs)
            if after is not None:
                after(result, *args, **kwargs)
            return result

        setattr(owner, name, wrapper)

    # -- the bridge and the trio-asyncio loop ----------------------------------------------
    import trio_asyncio
    from trio_asyncio import _base

    _aio_as_trio = trio_asyncio.aio_as_trio

    def _counted_aio_as_trio(proc: Any, *args: Any, **kwargs: Any) -> Any:
        bridged = _aio_as_trio(proc, *args, **kwargs)

        async def call(*a: Any, **k: Any) -> Any:
            COUNTS["hop.aio_as_trio"] += 1
            return await bridged(*a, **k)

        return call

    trio_asyncio.aio_as_trio = _counted_aio_as_trio
    for _name in ("call_soon", "call_later", "call_at"):
        _original = getattr(_base.BaseTrioEventLoop, _name)

        def _counting(original: Any = _original, label: str = f"loop.{_name}") -> Any:
            def method(self: Any, *args: Any, **kwargs: Any) -> Any:
                COUNTS[label] += 1
                return original(self, *args, **kwargs)

            return method

        setattr(_base.BaseTrioEventLoop, _name, _counting())

    # -- aiokafka requests --------------------------------------------------------------------
    import aiokafka.client

    def _request(self: Any, node_id: Any, request: Any, *args: Any, **kwargs: Any) -> None:
        kind = type(request).__name__.split("_")[0]
        COUNTS[f"req.{CLIENTS.get(id(self), 'other')}.{kind}"] += 1

    _wrap_async(aiokafka.client.AIOKafkaClient, "send", before=_request)

    # -- azuld's Kafka adapter ---------------------------------------------------------------
    from azuld.backends import kafka

    KafkaLog: Any = kafka.KafkaLog

    async def _timed_call(self: Any, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        COUNTS[f"call.{what}"] += 1
        started = time.perf_counter()
        try:
            return await _original_call(self, what, fn, *args, **kwargs)
        finally:
            WALL[f"call.{what}"] += time.perf_counter() - started

    _original_call = getattr(KafkaLog, "_call", None)
    if _original_call is not None:
        KafkaLog._call = _timed_call
    else:
        _missing("KafkaLog._call")

    def _topic_kind(topic: str) -> str:
        if topic.endswith(".system.status"):
            return "status"
        return "system" if ".system." in topic else "source"

    def _count_records(name: str) -> Any:
        def after(batch: Any, *_: Any, **__: Any) -> None:
            for ktp, messages in batch.items():
                COUNTS[f"records.{name}.{_topic_kind(ktp.topic)}"] += len(messages)

        return after

    def _started(_: Any, self: Any) -> None:
        LOGS.append(self)
        for name, client in (
            ("producer", getattr(getattr(self, "producer", None), "client", None)),
            ("admin", getattr(getattr(self, "admin", None), "_client", None)),
        ):
            if client is not None:
                CLIENTS[id(client)] = name
        for name in ("tail", "reader", "member"):
            consumer = getattr(self, name, None)
            if consumer is None:
                continue
            CLIENTS[id(consumer._client)] = name
            _wrap_async(consumer, "getmany", after=_count_records(name))

    _wrap_async(KafkaLog, "_start", after=_started)

    def _read(self: Any, tp: Any, offset: int, limit: int) -> None:
        recent = getattr(self, "_recent", {}).get(tp)
        if offset >= self.known_end(tp):
            COUNTS["read.at_end"] += 1
        elif recent and recent[0][0] <= offset:
            COUNTS["read.tail_cache"] += 1
        else:  # by the reader consumer, or from what it fetched before (read.from_read_ahead)
            COUNTS["read.reader"] += 1

    def _read_done(records: Any, self: Any, tp: Any, offset: int, limit: int) -> None:
        COUNTS["read.records"] += len(records)
        if not records and offset < self.known_end(tp):
            COUNTS["read.empty_below_known_end"] += 1

    _wrap_async(KafkaLog, "read", before=_read, after=_read_done)

    def _append(self: Any, records: Any) -> None:
        COUNTS["append.calls"] += 1
        COUNTS["append.records"] += len(records)

    _wrap_async(KafkaLog, "append", before=_append)
    _wrap_async(KafkaLog, "commit", before=lambda *_, **__: COUNTS.update(["commit.calls"]))

    _follow = getattr(KafkaLog, "follow", None)
    if _follow is not None:

        async def _counted_follow(self: Any, topic: str) -> Any:
            label = "follow." + topic.rsplit(".", 1)[-1]
            async for value in _follow(self, topic):
                COUNTS[label] += 1
                yield value

        KafkaLog.follow = _counted_follow

    # -- the dispatcher's fetches ------------------------------------------------------------
    try:
        from azuld.dispatch.fetch import Fetcher as _Fetcher
    except ImportError:  # moved: fetch counts are skipped
        _Fetcher = None
        _missing("azuld.dispatch.fetch.Fetcher")

    def _fetched(result: Any, self: Any, params: Any) -> None:
        got = len(result.events)
        COUNTS["fetch.calls"] += 1
        COUNTS["fetch.events"] += got
        if got >= params.count:
            return
        COUNTS["fetch.empty" if not got else "fetch.short"] += 1
        state = self.registry.get(params.key) if hasattr(self, "registry") else None
        lanes = getattr(state, "lanes", None)
        for lane, cursors in getattr(lanes, "cursors", {}).items():
            for tp, cursor in cursors.items():
                end = self.log.known_end(tp)
                if cursor.stop is not None:
                    end = min(end, cursor.stop)
                if cursor.position < end:
                    full = cursor.readable(lanes.window) == 0
                    COUNTS[f"fetch.unfilled.{lane}.{'window_full' if full else 'not_read'}"] += 1

    if _Fetcher is not None:
        _wrap_async(_Fetcher, "fetch", after=_fetched)
