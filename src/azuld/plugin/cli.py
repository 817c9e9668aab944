"""`azuld plugin run`: load a plugin class and run it against a server or on local files."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
from pathlib import Path

import httpx
import msgspec
import trio

from azuld.plugin.api import Consumer, Plugin
from azuld.plugin.client import HttpDispatcherClient
from azuld.plugin.consumer import ConsumerRunner
from azuld.plugin.local import run_local
from azuld.plugin.runner import PluginRunner
from azuld.plugins import BUNDLED

__all__ = ["load_plugin_class", "run_plugin_command"]

log = logging.getLogger(__name__)


def load_plugin_class(spec: str) -> type[Plugin] | type[Consumer]:
    """`entropy`, `pkg.module:Class` or `path/to/file.py:Class` → the plugin class.

    Raises:
        SystemExit: with a message naming what could not be found.
    """
    spec = BUNDLED.get(spec, spec)
    target, sep, class_name = spec.rpartition(":")
    if not sep or not target or not class_name:
        raise SystemExit(
            f"azuld plugin run: {spec!r} is neither a bundled plugin "
            f"({', '.join(sorted(BUNDLED))}) nor MODULE:CLASS or FILE.py:CLASS"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SystemExit(f"azuld plugin run: no such file {target}")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None
        assert module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Plugin | Consumer)):
        raise SystemExit(
            f"azuld plugin run: {class_name} in {target} is not an azuld Plugin or Consumer"
        )
    return cls


def _config(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"azuld plugin run: -c {pair!r} is not KEY=VALUE")
        config[key] = value
    return config


def _summarise(path: Path, status: msgspec.Struct) -> str:
    entity = status.entity  # type: ignore[attr-defined]
    lines = [
        f"{path}: {entity.status}"
        + (f" ({entity.error}: {entity.message})" if entity.error else "")
    ]
    for result in entity.results:
        where = result.source.path[-1].filename or result.entity.sha256[:16]
        lines.append(f"  {result.action} {where} {result.entity.file_format}".rstrip())
        for feature in result.entity.features:
            extra = f" @{feature.offset}" if feature.offset else ""
            lines.append(f"    {feature.name} = {feature.value}{extra}")
    return "\n".join(lines)


async def _serve(runner: PluginRunner) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def watch() -> None:
                async for _ in signals:
                    if runner.stopping:
                        log.warning("second signal: abandoning running jobs")
                        nursery.cancel_scope.cancel()
                        return
                    log.info(
                        "stopping: finishing running jobs (grace %.0f s)", runner.grace_seconds
                    )
                    runner.stop()

            nursery.start_soon(watch)
            await runner.serve()
            nursery.cancel_scope.cancel()


def _run_consumer(consumer: Consumer, args: argparse.Namespace) -> int:
    if args.local:
        raise SystemExit("azuld plugin run: --local runs plugins; a consumer reads a dispatcher")

    async def main() -> None:
        timeout = httpx.Timeout(60.0, connect=10.0)
        async with httpx.AsyncClient(base_url=args.server, timeout=timeout) as http:
            client = HttpDispatcherClient(http, type(consumer).name)
            runner = ConsumerRunner(consumer, client, max_events=args.max_jobs)
            async with trio.open_nursery() as nursery:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

                    async def watch() -> None:
                        async for _ in signals:
                            runner.stop()
                            return

                    nursery.start_soon(watch)
                    await runner.serve()
                    nursery.cancel_scope.cancel()
            log.info("%s consumed %d events", type(consumer).name, runner.consumed)

    trio.run(main)
    return 0


def run_plugin_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    cls = load_plugin_class(args.plugin)
    if issubclass(cls, Consumer):
        return _run_consumer(cls(_config(args.config)), args)
    plugin = cls(_config(args.config))
    if args.local:
        statuses = trio.run(run_local, plugin, args.local)
        for path, status in zip(args.local, statuses, strict=True):
            if args.json:
                print(msgspec.json.encode(status).decode())
            else:
                print(_summarise(path, status))
        return 0 if all(not s.entity.status.startswith("error") for s in statuses) else 1

    async def main() -> None:
        timeout = httpx.Timeout(60.0, connect=10.0)
        async with httpx.AsyncClient(base_url=args.server, timeout=timeout) as http:
            runner = PluginRunner(
                plugin,
                HttpDispatcherClient(http, cls.name),
                workers=args.workers,
                grace_seconds=args.grace,
                max_jobs=args.max_jobs,
            )
            log.info(
                "%s %s polling %s with %d worker(s)",
                cls.name,
                cls.version,
                args.server,
                args.workers,
            )
            await _serve(runner)

    trio.run(main)
    return 0
