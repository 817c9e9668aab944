"""trio-asyncio's event loop with aiokafka's callbacks run in bursts.

Why: trio-asyncio 0.16 runs every asyncio callback in a pass of its own through Trio's
scheduler: its loop task awaits the next callback from a memory channel, under a new cancel
scope, one at a time. aiokafka queues many (a future resolved, a task stepped, a socket ready:
about 12 per count=1 job, 3 per record batch), so under trio-asyncio the same aiokafka work cost
about twice its CPU on plain asyncio, and each hop added latency (benchmarks/README.md, "Where
the Kafka path's CPU and latency go"). `run_in_bursts(loop)` gives that loop a step that runs the
callbacks already queued one after another, with a checkpoint every `BURST` (Trio's tasks are not
starved), and waits (until the next timer is due) only when none is queued; and it checks each
callback queued as asyncio does outside its debug mode.

This replaces a private method, `BaseTrioEventLoop._main_loop_one`, of the trio-asyncio that
pyproject.toml pins (0.16.0), on the one loop it is given. It does so only while that method is
the one this step was written from (the hash of its source): after an upgrade that changes it,
the loop keeps trio-asyncio's own step (slower, correct) and a warning says so, and
tests/backends/test_kafka_loop.py fails until this module is checked against the new code.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import inspect
import logging
import math
import types
from typing import Any

import trio
from sniffio import thread_local as sniffio_library
from trio_asyncio._base import BaseTrioEventLoop
from trio_asyncio._handles import AsyncHandle

__all__ = ["BURST", "run_in_bursts", "stock_step_is_known"]

log = logging.getLogger(__name__)

# Callbacks run in a row before the loop lets Trio's other tasks in.
BURST = 64

# sha256 of trio-asyncio 0.16.0's `BaseTrioEventLoop._main_loop_one` source.
STOCK_STEP_SHA256 = "cbe727d658663f0749012b72fedbce5efc7dfde7261f4358536c261e327d71a1"


def stock_step_is_known() -> bool:
    """Whether the installed trio-asyncio's loop step is the one `_step` was written from."""
    try:
        source = inspect.getsource(BaseTrioEventLoop._main_loop_one)
    except (OSError, TypeError):
        return False
    return hashlib.sha256(source.encode()).hexdigest() == STOCK_STEP_SHA256


def run_in_bursts(loop: Any) -> bool:
    """Give `loop` (a running trio-asyncio loop) the burst step; `False` (and a warning) if
    the installed trio-asyncio is not the one it was written for."""
    if not stock_step_is_known():
        log.warning(
            "trio-asyncio's event loop is not the version azuld knows (0.16.0): its asyncio "
            "callbacks run one per Trio scheduler pass (Kafka costs more CPU)"
        )
        return False
    loop._azuld_burst = 0
    loop._main_loop_one = types.MethodType(_step, loop)
    # trio-asyncio checks every callback it is given as asyncio does in debug mode only (an
    # `inspect` call each, 2 % of a count=1 job's samples): a plain `callable` check here.
    loop._check_callback = _check_callable
    return True


def _check_callable(callback: Any, method: str) -> None:
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")


async def _step(self: Any, no_wait: bool = False) -> None:
    """trio-asyncio 0.16's `_main_loop_one`, except that a callback already queued runs without
    an await first (one in `BURST` checkpoints). `no_wait` (draining at close) raises
    `trio.WouldBlock` when nothing is queued, as the original does."""
    obj = None
    if self._timers:
        timeout = self._timers[0]._when - self.time()
        if timeout <= 0:
            obj = heapq.heappop(self._timers)
    else:
        timeout = math.inf
    if obj is None:
        try:
            obj = self._q_recv.receive_nowait()
        except trio.WouldBlock:
            if no_wait:
                raise
            self._azuld_burst = 0
            with trio.move_on_after(timeout):
                obj = await self._q_recv.receive()
            if obj is None:
                return  # a timer is due
        else:
            self._azuld_burst += 1
            if self._azuld_burst >= BURST and not no_wait:
                self._azuld_burst = 0
                await trio.lowlevel.checkpoint()
        if isinstance(obj, asyncio.TimerHandle):
            heapq.heappush(self._timers, obj)
            return
    if isinstance(obj, AsyncHandle):
        obj._context.run(self._nursery.start_soon, obj._run, name=obj._callback)
        await obj._started.wait()
    elif not obj._cancelled:
        previous, sniffio_library.name = sniffio_library.name, "asyncio"
        try:
            obj._run()
        finally:
            sniffio_library.name = previous
