"""`azuld serve` (the daemon) and `azuld config check`."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from azuld import __version__
from azuld.cli.target import config_file
from azuld.errors import ConfigError, UpstreamError

__all__ = ["config_check", "serve"]


def serve(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT. Exit 1 when it cannot start (named on stderr) or
    fails. The last log line says it stopped, and why: the signal, or the error.

    With `server.processes` (`--processes`) above 1, run a supervisor of that many worker
    processes instead (`azuld.supervisor`); `--worker` & co. are how it starts each of them.
    """
    import trio

    from azuld.logs import configure_logging
    from azuld.process import WorkerRole
    from azuld.settings import load_settings

    overrides: dict[str, object] = {}
    if args.listen:
        overrides["server.listen"] = args.listen
    if args.data_dir:
        overrides["data_dir"] = args.data_dir.expanduser()
    worker = None
    if args.worker is not None:
        worker = WorkerRole.parse(args.worker, args.listen_fds or "", args.lifeline_fd)
    elif args.processes is not None:
        overrides["server.processes"] = args.processes
    config = config_file(args.config)
    settings = load_settings(config, overrides=overrides)
    configure_logging(settings.log_level, settings.log_format, worker.name if worker else None)
    log = logging.getLogger(__name__)
    if worker is None and settings.server.processes > 1:
        from azuld.supervisor import Supervisor, worker_command

        log.info("azuld %s starting %d processes", __version__, settings.server.processes)
        command = worker_command(config, args.listen, settings.data_dir)
        supervisor = Supervisor(settings, command, config_path=config, overrides=overrides)
        run: Callable[[], Awaitable[int | str]] = supervisor.run
    else:
        from azuld.service import serve as serve_daemon

        if worker is None:
            log.info("azuld %s starting", __version__)
        else:
            log.info("azuld %s starting: worker %d of %d", __version__, worker.index, worker.count)
        run = functools.partial(
            serve_daemon, settings, config_path=config, overrides=overrides, worker=worker
        )
    try:
        outcome = trio.run(run)
    except KeyboardInterrupt:
        # SIGINT before the signal handlers were installed (while the backends opened).
        log.info("azuld stopped: SIGINT while starting")
        return 130
    except BaseException as exc:
        # Exceptions through trio-asyncio's loop arrive wrapped in groups (stack.md P3).
        failure = _find_error(exc, (UpstreamError, ConfigError, OSError))
        if failure is None:
            log.critical("azuld stopped: error: %s", _describe(exc), exc_info=exc)
            return 1
        log.error("azuld stopped: cannot start: %s", failure)
        print(f"azuld: cannot start: {failure}", file=sys.stderr)
        return 1
    if isinstance(outcome, int):  # the supervisor's exit status (its workers log their own)
        log.info("azuld stopped: %s", "every worker drained" if outcome == 0 else "a worker failed")
        return outcome
    log.info("azuld stopped: %s", outcome)
    return 0


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _find_error(exc: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _find_error(inner, kinds)) is not None:
                return found
    return None


def config_check(args: argparse.Namespace) -> int:
    """Print the effective settings (secrets hidden), or every problem (exit 2, by `main`)."""
    from azuld.settings import load_settings, redacted

    path: Path | None = config_file(args.file)
    settings = load_settings(path)
    print(f"# {path or 'defaults and environment'}: valid. Effective settings:")
    for name, value in redacted(settings).items():
        print(f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}")
    return 0
