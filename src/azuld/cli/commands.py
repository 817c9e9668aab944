"""Every `azuld` command in one table: its name, help, arguments and handler. `build_parser`
turns the table into the argument parser; `azuld.cli.main` runs the chosen handler.

A command marked `daemon=True` talks to a running daemon. It also gets `--server URL` and, unless
it has a `--config` of its own, `--config FILE`; `azuld.cli.target` resolves them before the
handler runs, so the handler finds the URL to use in `args.server`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azuld import __version__
from azuld.cli import admin, daemon, plugin_run, submit, watch
from azuld.plugins import BUNDLED

__all__ = ["COMMANDS", "GROUPS", "Arg", "Command", "arg", "build_parser"]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: its flags (or its name) and the keywords of `add_argument`."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True, slots=True)
class Command:
    """`azuld <name>`: `name` is one word, or a group and a word ("config check")."""

    name: str
    help: str
    run: Handler
    args: tuple[Arg, ...] = ()
    daemon: bool = False  # talks to a daemon: gets --server (and --config FILE)
    description: str = ""


# The help of each group of two-word commands.
GROUPS = {"config": "check a config file", "plugin": "run analysis plugins"}


def _repeated(help: str) -> dict[str, Any]:
    return {"action": "append", "default": [], "metavar": "KEY=VALUE", "help": help}


# How long a command waits for a daemon that is starting (not listening yet) before it says it
# cannot reach it: `scripts/serve &` followed at once by a command works.
WAIT_SECONDS = 30.0
_WAIT = arg(
    "--wait",
    type=float,
    default=WAIT_SECONDS,
    metavar="SECONDS",
    help=f"wait this long for a daemon that is starting (default {WAIT_SECONDS:g}; 0: do not)",
)


COMMANDS: tuple[Command, ...] = (
    Command(
        "serve",
        "run the dispatcher daemon",
        daemon.serve,
        (
            arg(
                "--config",
                type=Path,
                help="TOML config file (see config.example.toml; default: $AZULD_CONFIG)",
            ),
            arg("--listen", help="host:port to bind (default 127.0.0.1:8111)"),
            arg("--data-dir", type=Path, help="where the embedded log and blobs live"),
            arg(
                "--processes",
                type=int,
                metavar="N",
                help="run N azuld processes sharing the port, under a supervisor (Kafka only; "
                "default: server.processes, 1)",
            ),
            # How the supervisor starts its workers (azuld.process.WorkerRole); not for people.
            arg("--worker", help=argparse.SUPPRESS),
            arg("--listen-fds", help=argparse.SUPPRESS),
            arg("--lifeline-fd", type=int, default=-1, help=argparse.SUPPRESS),
        ),
    ),
    Command(
        "submit",
        "upload files and publish them as sourced events",
        submit.submit,
        (
            arg("files", nargs="+", type=Path, help="files, and folders (every file below)"),
            arg("--source", required=True, help="source name, e.g. 'samples'"),
            arg("--expedite", action="store_true", help="put them in the expedite lane"),
            arg("--reference", **_repeated("a source reference (repeatable)")),
            arg(
                "--setting",
                **_repeated("a source setting for plugins, e.g. passwords=a,b (repeatable)"),
            ),
            arg("--user", default=None, help="author name (default: your login)"),
            arg(
                "--retry-seconds",
                type=float,
                default=60.0,
                metavar="SECONDS",
                help="how long to keep retrying while the daemon does not answer (default 60)",
            ),
            _WAIT,
        ),
        daemon=True,
    ),
    Command(
        "plugins", "list the plugin keys the daemon serves", admin.plugins, (_WAIT,), daemon=True
    ),
    Command(
        "config check",
        "validate a config file (and AZULD_* variables) and print the result",
        daemon.config_check,
        (arg("file", type=Path, nargs="?", help="default: $AZULD_CONFIG"),),
    ),
    Command(
        "status",
        "per plugin key: lanes, lag, in flight, errors",
        admin.status,
        (_WAIT,),
        daemon=True,
    ),
    Command(
        "watch",
        "follow job statuses as they are stored",
        watch.watch,
        (
            arg("--plugin", help="only this plugin's statuses"),
            arg(
                "--since",
                default=watch.DEFAULT_SINCE,
                metavar="WHEN",
                help="start this far back: a duration (30s, 5m, 2h, 1d), an ISO 8601 time, or "
                f"now (default: {watch.DEFAULT_SINCE}, so a submit started at the same moment "
                "is seen)",
            ),
            arg(
                "--last",
                type=int,
                metavar="N",
                help="start N statuses back on each partition of the status topic instead",
            ),
            _WAIT,
        ),
        daemon=True,
    ),
    Command(
        "failed",
        "dead letters: jobs that ended in an error status, newest first (within the status "
        "topic's retention: a day)",
        admin.failed,
        (
            arg("--plugin", default="", help="only this plugin's"),
            arg("--limit", type=int, default=50),
            _WAIT,
        ),
        daemon=True,
    ),
    Command(
        "reoffer",
        "put failed jobs back in front of their plugin (kept as an audit trail)",
        admin.reoffer,
        (
            arg("job_ids", nargs="*", help="job ids, as `azuld failed` lists them"),
            arg("--failed-of", metavar="PLUGIN", help="every listed failure of PLUGIN"),
            arg("--by", default=None, help="who asks (default: your login)"),
            _WAIT,
        ),
        daemon=True,
    ),
    Command(
        "show",
        "show a source's binaries as a tree with what plugins found",
        admin.show,
        (
            arg("--source", required=True),
            arg("--all-values", action="store_true", help="print every feature value"),
            _WAIT,
        ),
        daemon=True,
    ),
    Command(
        "plugin run",
        "run a plugin against a dispatcher, or on local files",
        plugin_run.plugin_run,
        (
            arg("plugin"),
            arg("--workers", type=int, default=1, help="jobs run at once (default 1)"),
            arg(
                "--grace",
                type=float,
                default=30.0,
                help="seconds running jobs, and statuses being retried, get on SIGTERM",
            ),
            # `--config` is the plugin's here; the config file comes from $AZULD_CONFIG.
            arg("-c", "--config", **_repeated("a plugin setting (repeatable)")),
            arg(
                "--local",
                nargs="+",
                type=Path,
                metavar="FILE",
                help="run on these files without a dispatcher and print the results",
            ),
            arg("--json", action="store_true", help="with --local: print status events"),
            arg("--max-jobs", type=int, default=None, help="stop after this many jobs"),
            arg("-v", "--verbose", action="store_true"),
        ),
        daemon=True,
        description="PLUGIN is a bundled plugin (" + ", ".join(sorted(BUNDLED)) + ") or "
        "path/to/file.py:ClassName or package.module:ClassName.",
    ),
)

_SERVER_HELP = (
    "the daemon's URL (default: $AZULD_SERVER, else the config file's [cli] server or "
    "server.listen, else http://127.0.0.1:8111)"
)


def build_parser(commands: tuple[Command, ...] = COMMANDS) -> argparse.ArgumentParser:
    """The parser of `commands`; the chosen one is in the parsed `command_spec`."""
    parser = argparse.ArgumentParser(
        prog="azuld", description="azuld: the dispatcher of an Azul-style analysis pipeline."
    )
    parser.add_argument("--version", action="version", version=f"azuld {__version__}")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for command in commands:
        *group, word = command.name.split()
        where = top
        if group:
            if group[0] not in groups:
                parent = top.add_parser(group[0], help=GROUPS[group[0]])
                groups[group[0]] = parent.add_subparsers(dest=f"{group[0]}_command", required=True)
            where = groups[group[0]]
        sub = where.add_parser(
            word, help=command.help, description=command.description or command.help
        )
        for argument in command.args:
            sub.add_argument(*argument.flags, **argument.options)
        if command.daemon:
            sub.add_argument("--server", metavar="URL", help=_SERVER_HELP)
            if not any("--config" in argument.flags for argument in command.args):
                sub.add_argument(
                    "--config",
                    dest="config_file",
                    type=Path,
                    metavar="FILE",
                    help="a config file to read the daemon's URL from (default: $AZULD_CONFIG)",
                )
        sub.set_defaults(command_spec=command)
    return parser
