"""`azuld plugin run`: load a plugin class and run it against a daemon, or on local files.

Trio and the SDK's runner are imported when the command runs, so other commands start quickly.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from azuld.cli.errors import Refused, UsageError
from azuld.plugins import BUNDLED

if TYPE_CHECKING:
    from azuld.plugin.api import Consumer, Plugin
    from azuld.plugin.runner import PluginRunner

__all__ = ["load_plugin_class", "plugin_run"]

log = logging.getLogger(__name__)


def load_plugin_class(spec: str) -> type[Plugin] | type[Consumer]:
    """`entropy`, `pkg.module:Class` or `path/to/file.py:Class` → the plugin class.

    Raises:
        UsageError: naming what could not be found.
    """
    from azuld.plugin.api import Consumer, Plugin

    spec = BUNDLED.get(spec, spec)
    target, sep, class_name = spec.rpartition(":")
    if not sep or not target or not class_name:
        raise UsageError(
            f"{spec!r} is neither a bundled plugin ({', '.join(sorted(BUNDLED))}) nor "
            "MODULE:CLASS or FILE.py:CLASS"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise UsageError(f"no such file {target}")
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
        raise UsageError(f"{class_name} in {target} is not an azuld Plugin or Consumer")
    return cls


def _config(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"-c {pair!r} is not KEY=VALUE")
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


async def serve_until_signalled(runner: PluginRunner) -> None:
    """Run `runner` until it stops. The first SIGTERM/SIGINT lets running jobs finish within the
    runner's grace; a second abandons them (cancels everything)."""
    import trio

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


def _run_consumer(consumer: Consumer, args: argparse.Namespace) -> None:
    import trio

    from azuld.plugin.client import open_dispatcher
    from azuld.plugin.consumer import ConsumerRunner

    if args.local:
        raise UsageError("--local runs plugins; a consumer reads a dispatcher")

    async def main() -> None:
        async with open_dispatcher(args.server, type(consumer).name) as client:
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

    _refusal_is_one_line(main)


def lease_seconds() -> float:
    """The daemon's `dispatch.lease_seconds`, as far as this machine knows it: from the config
    file (`AZULD_CONFIG`) and `AZULD_*` variables the daemon would read, else its default.

    Raises:
        ConfigError: that config file is missing or wrong.
    """
    from azuld.cli.target import config_file
    from azuld.settings import load_settings

    return load_settings(config_file(None)).dispatch.lease_seconds


def _run_plugin(plugin: Plugin, args: argparse.Namespace) -> None:
    from azuld.plugin.client import open_dispatcher
    from azuld.plugin.runner import PluginRunner

    cls = type(plugin)
    lease = lease_seconds()

    async def main() -> None:
        async with open_dispatcher(args.server, cls.name) as client:
            runner = PluginRunner(
                plugin,
                client,
                workers=args.workers,
                grace_seconds=args.grace,
                max_jobs=args.max_jobs,
                lease_seconds=lease,
            )
            log.info(
                "%s %s polling %s with %d worker(s)",
                cls.name,
                cls.version,
                args.server,
                args.workers,
            )
            await serve_until_signalled(runner)

    _refusal_is_one_line(main)


def _refusal_is_one_line(main: Callable[[], Awaitable[None]]) -> None:
    """`run(main)`, with the dispatcher refusing the plugin's registration or fetch as one
    `Refused`, not a traceback through the runner's nurseries. (A dispatcher that is away is
    waited for: the runner retries.)

    Raises:
        Refused: the dispatcher's status and message.
    """
    import trio

    from azuld.plugin.client import DispatcherRefused

    try:
        trio.run(main)
    except BaseException as exc:
        refused = _find(exc, (DispatcherRefused,))
        if isinstance(refused, DispatcherRefused):
            raise Refused(refused.status, "", refused.message) from None
        raise


def _find(error: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _find(inner, kinds)) is not None:
                return found
    return None


def plugin_run(args: argparse.Namespace) -> int:
    """Run until stopped (exit 0); with `--local`, exit 1 when a file's status is an error."""
    import trio

    from azuld.plugin.api import Consumer
    from azuld.plugin.local import run_local

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cls = load_plugin_class(args.plugin)
    if issubclass(cls, Consumer):
        _run_consumer(cls(_config(args.config)), args)
        return 0
    plugin = cls(_config(args.config))
    if not args.local:
        _run_plugin(plugin, args)
        return 0
    statuses = trio.run(run_local, plugin, args.local)
    for path, status in zip(args.local, statuses, strict=True):
        if args.json:
            print(msgspec.json.encode(status).decode())
        else:
            print(_summarise(path, status))
    return 0 if all(not s.entity.status.startswith("error") for s in statuses) else 1
