"""The `azuld` command line: `serve`, `submit` and `plugins`."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec

from azuld import __version__
from azuld.errors import ConfigError
from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEntity,
    BinaryEvent,
    BinaryFlags,
    Datastream,
    PathNode,
    Source,
)
from azuld.plugins import BUNDLED

__all__ = ["main"]

DEFAULT_SERVER = "http://127.0.0.1:8111"
_EVENTS_PER_POST = 50


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="azuld", description=__doc__)
    parser.add_argument("--version", action="version", version=f"azuld {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the dispatcher daemon")
    serve.add_argument("--config", type=Path, help="TOML config file (see config.example.toml)")
    serve.add_argument("--listen", help="host:port to bind (default 127.0.0.1:8111)")
    serve.add_argument("--data-dir", type=Path, help="where the embedded log and blobs live")

    submit = commands.add_parser("submit", help="upload files and publish them as sourced events")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--source", required=True, help="source name, e.g. 'samples'")
    submit.add_argument("--server", default=DEFAULT_SERVER)
    submit.add_argument("--expedite", action="store_true", help="put them in the expedite lane")
    submit.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a source reference (repeatable)",
    )
    submit.add_argument("--user", default=None, help="author name (default: your login)")

    plugins = commands.add_parser("plugins", help="list the plugin keys the daemon serves")
    plugins.add_argument("--server", default=DEFAULT_SERVER)

    show = commands.add_parser(
        "show", help="show a source's binaries as a tree with what plugins found"
    )
    show.add_argument("--source", required=True)
    show.add_argument("--server", default=DEFAULT_SERVER)
    show.add_argument("--all-values", action="store_true", help="print every feature value")

    plugin = commands.add_parser("plugin", help="run analysis plugins")
    plugin_commands = plugin.add_subparsers(dest="plugin_command", required=True)
    run = plugin_commands.add_parser(
        "run",
        help="run a plugin against a dispatcher, or on local files",
        description="PLUGIN is a bundled plugin (" + ", ".join(sorted(BUNDLED)) + ") or "
        "path/to/file.py:ClassName or package.module:ClassName.",
    )
    run.add_argument("plugin")
    run.add_argument("--server", default=DEFAULT_SERVER, help="dispatcher URL")
    run.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    run.add_argument(
        "--grace", type=float, default=30.0, help="seconds running jobs get on SIGTERM"
    )
    run.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a plugin setting (repeatable)",
    )
    run.add_argument(
        "--local",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="run on these files without a dispatcher and print the results",
    )
    run.add_argument("--json", action="store_true", help="with --local: print status events")
    run.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs")
    run.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "submit":
            return _submit(args)
        if args.command == "plugins":
            return _plugins(args)
        if args.command == "show":
            return _show(args)
        if args.command == "plugin":
            from azuld.plugin.cli import run_plugin_command

            return run_plugin_command(args)
    except ConfigError as exc:
        print(f"azuld: config error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"azuld: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse enforces a command


def _serve(args: argparse.Namespace) -> int:
    import trio

    from azuld.logs import configure_logging
    from azuld.service import serve
    from azuld.settings import load_settings

    overrides: dict[str, object] = {}
    if args.listen:
        overrides["server.listen"] = args.listen
    if args.data_dir:
        overrides["data_dir"] = args.data_dir.expanduser()
    settings = load_settings(args.config, overrides=overrides)
    configure_logging(settings.log_level)
    logging.getLogger(__name__).info("azuld %s starting", __version__)
    trio.run(serve, settings)
    return 0


def _references(pairs: list[str]) -> dict[str, str]:
    references: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"azuld submit: --reference {pair!r} is not KEY=VALUE")
        references[key] = value
    return references


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _sourced_event(
    data: Datastream,
    filename: str,
    source: str,
    user: str,
    references: dict[str, str],
    expedite: bool,
) -> BinaryEvent:
    now = datetime.now(UTC)
    author = Author(name=user, category="user")
    return BinaryEvent(
        model_version=CURRENT_MODEL_VERSION,
        timestamp=now,
        author=author,
        action="sourced",
        source=Source(
            name=source,
            timestamp=now,
            references=references,
            path=[
                PathNode(
                    author=author,
                    action="sourced",
                    sha256=data.sha256,
                    timestamp=now,
                    file_format=data.file_format,
                    size=data.size,
                    filename=filename,
                )
            ],
        ),
        entity=BinaryEntity(
            sha256=data.sha256,
            sha512=data.sha512,
            sha1=data.sha1,
            md5=data.md5,
            size=data.size,
            mime=data.mime,
            magic=data.magic,
            file_format=data.file_format,
            file_extension=data.file_extension,
            datastreams=[data],
        ),
        flags=BinaryFlags(expedite=expedite),
    )


def _submit(args: argparse.Namespace) -> int:
    references = _references(args.reference)
    user = args.user or getpass.getuser()
    files = list(_files(args.files))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"azuld submit: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    interactive = sys.stderr.isatty()
    pending: list[BinaryEvent] = []
    published = 0
    failed = 0
    with httpx.Client(base_url=args.server, timeout=httpx.Timeout(60.0, connect=5.0)) as client:

        def flush() -> None:
            nonlocal published, failed, pending
            if not pending:
                return
            response = client.post(
                "/api/v2/event",
                params={"model": "binary"},
                content=msgspec.json.encode(pending),
                headers={"content-type": "application/json"},
            )
            if response.status_code != 200:
                print(f"azuld submit: publish failed: {_error_text(response)}", file=sys.stderr)
                failed += len(pending)
            else:
                published += response.json()["total_ok"]
            pending = []

        for index, path in enumerate(files, 1):
            with path.open("rb") as handle:
                response = client.post(f"/api/v3/stream/{args.source}/content", content=handle)
            if response.status_code != 200:
                print(f"azuld submit: {path}: {_error_text(response)}", file=sys.stderr)
                failed += 1
                continue
            data = msgspec.convert(response.json()["data"], Datastream)
            pending.append(
                _sourced_event(data, path.name, args.source, user, references, args.expedite)
            )
            line = f"[{index}/{len(files)}] {path.name} {data.sha256} {data.file_format}"
            if interactive:
                print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr)
            if len(pending) >= _EVENTS_PER_POST:
                flush()
        flush()
    if interactive:
        print(file=sys.stderr)
    print(f"submitted {published} file(s) to source {args.source!r}; {failed} failed")
    return 1 if failed else 0


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def _plugins(args: argparse.Namespace) -> int:
    response = httpx.get(f"{args.server}/api/azuld/v1/plugins", timeout=10.0)
    response.raise_for_status()
    rows = response.json()["plugins"]
    if not rows:
        print("no plugin has fetched from this daemon yet")
        return 0
    print(f"{'plugin key':60} {'queued':>7} {'leased':>7} {'fetched':>8} {'finished':>8}")
    for row in rows:
        print(
            f"{row['key']:60} {row['queued']:>7} {row['in_flight']:>7} "
            f"{row['fetched']:>8} {row['finished']:>8}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    response = httpx.get(f"{args.server}/api/azuld/v1/sources/{args.source}", timeout=30.0)
    if response.status_code != 200:
        print(f"azuld show: {_error_text(response)}", file=sys.stderr)
        return 1
    binaries = response.json()["binaries"]
    if not binaries:
        print(f"source {args.source!r} has no binaries yet")
        return 0
    for root in binaries:
        _print_node(root, "", args.all_values)
    return 0


def _print_node(node: dict[str, object], indent: str, all_values: bool) -> None:
    name = node["filename"] or str(node["sha256"])[:16]
    print(f"{indent}{name}  {node['file_format']}  {node['size']} bytes  {node['sha256']}")
    features = node["features"]
    assert isinstance(features, dict)
    for plugin, found in sorted(features.items()):
        shown = []
        for feature, values in sorted(found.items()):
            if all_values or len(values) == 1:
                shown.append(f"{feature}={', '.join(values)}")
            else:
                shown.append(f"{feature}=[{len(values)} values]")
        print(f"{indent}    {plugin}: {'; '.join(shown)}")
    children = node["children"]
    assert isinstance(children, list)
    for child in children:
        _print_node(child, indent + "  └ ", all_values)
