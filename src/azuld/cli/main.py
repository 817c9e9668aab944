"""`azuld`'s entry point: parse the command line, find the daemon for the commands that talk to
one, run the handler, and report a wrong argument, a config error or an unreachable daemon as
one message on stderr instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from azuld.cli.commands import Command, build_parser
from azuld.cli.errors import DaemonError, Unreachable, UsageError
from azuld.cli.target import resolve_server
from azuld.errors import ConfigError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the daemon failed or said no (or a handler's own failure),
    2 a wrong argument or setting, 130 interrupted (Ctrl-C) where the handler does not say more."""
    args = build_parser().parse_args(argv)
    command: Command = args.command_spec
    try:
        if command.daemon:
            args.server = resolve_server(args.server, getattr(args, "config_file", None))
        return command.run(args)
    except ConfigError as exc:
        print(f"azuld: config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"azuld {command.name}: {exc}", file=sys.stderr)
        return 2
    except Unreachable as exc:
        print(exc, file=sys.stderr)
        return 1
    except DaemonError as exc:
        print(f"azuld {command.name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"azuld {command.name}: interrupted", file=sys.stderr)
        return 130
