"""The `azuld` command line: `serve`, `submit` and `plugins`."""

from __future__ import annotations

import argparse
import functools
import getpass
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from azuld import __version__
from azuld.core.publish import sourced_event
from azuld.errors import ConfigError, UpstreamError
from azuld.models.events import Author, BinaryEvent, Datastream
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

    config = commands.add_parser("config", help="check a config file")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check", help="validate a config file (and AZULD_* variables) and print the result"
    )
    check.add_argument("file", type=Path, nargs="?")

    status = commands.add_parser("status", help="per plugin key: lanes, lag, in flight, errors")
    status.add_argument("--server", default=DEFAULT_SERVER)

    watch = commands.add_parser("watch", help="follow job statuses as they are stored")
    watch.add_argument("--server", default=DEFAULT_SERVER)
    watch.add_argument("--plugin", help="only this plugin's statuses")

    failed = commands.add_parser(
        "failed",
        help="dead letters: jobs that ended in an error status, newest first (within the "
        "status topic's retention: a day)",
    )
    failed.add_argument("--server", default=DEFAULT_SERVER)
    failed.add_argument("--plugin", default="", help="only this plugin's")
    failed.add_argument("--limit", type=int, default=50)

    reoffer = commands.add_parser(
        "reoffer", help="put failed jobs back in front of their plugin (kept as an audit trail)"
    )
    reoffer.add_argument("job_ids", nargs="*", help="job ids, as `azuld failed` lists them")
    reoffer.add_argument("--server", default=DEFAULT_SERVER)
    reoffer.add_argument("--failed-of", metavar="PLUGIN", help="every listed failure of PLUGIN")
    reoffer.add_argument("--by", default=None, help="who asks (default: your login)")

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
        if args.command == "failed":
            return _failed(args)
        if args.command == "reoffer":
            return _reoffer(args)
        if args.command == "config":
            return _config_check(args)
        if args.command == "status":
            return _status(args)
        if args.command == "watch":
            return _watch(args)
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
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger(__name__).info("azuld %s starting", __version__)
    try:
        trio.run(functools.partial(serve, settings, config_path=args.config, overrides=overrides))
    except BaseException as exc:
        # Exceptions through trio-asyncio's loop arrive wrapped in groups (stack.md P3).
        failure = _find_error(exc, (UpstreamError, ConfigError, OSError))
        if failure is None:
            raise
        print(f"azuld: cannot start: {failure}", file=sys.stderr)
        return 1
    return 0


def _find_error(exc: BaseException, kinds: tuple[type[Exception], ...]) -> BaseException | None:
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := _find_error(inner, kinds)) is not None:
                return found
    return None


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
    author = Author(name=user, category="user")
    return sourced_event(
        data,
        filename,
        source=source,
        author=author,
        now=datetime.now(UTC),
        references=references,
        expedite=expedite,
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
            f"{row['fetched']:>8} {sum(row['finished'].values()):>8}"
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
    """One binary, its features, then its children one level deeper."""
    name = node["filename"] or str(node["sha256"])[:16]
    branch = f"{indent[:-4]}└── " if indent else ""
    print(f"{branch}{name}  {node['file_format']}  {node['size']} bytes  {node['sha256']}")
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
        _print_node(child, indent + "    ", all_values)


def _config_check(args: argparse.Namespace) -> int:
    from azuld.settings import load_settings, redacted

    settings = load_settings(args.file)
    print(f"# {args.file or 'defaults and environment'}: valid. Effective settings:")
    for name, value in redacted(settings).items():
        print(f"{name} = {value!r}" if isinstance(value, str) else f"{name} = {value}")
    return 0


def _ago(seconds: float) -> str:
    if seconds <= 0:
        return "never"
    delta = max(time.time() - seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta / size:.0f}{unit} ago"
    return f"{delta:.0f}s ago"


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    response = httpx.get(f"{args.server}/api/azuld/v1/plugins", timeout=10.0)
    if response.status_code != 200:
        print(f"azuld status: {_error_text(response)}", file=sys.stderr)
        return 1
    rows = response.json()["plugins"]
    console = Console()
    if not rows:
        console.print("no plugin has fetched from this daemon yet")
        return 0
    if not console.is_terminal:
        return _status_plain(rows)
    table = Table(header_style="bold")
    columns = (
        "plugin",
        "version",
        "lanes (lag)",
        "in flight",
        "done",
        "replayed",
        "errors 1h",
        "seen",
    )
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("in flight", "done", "errors 1h") else "left"
        )
    for row in rows:
        lag = " ".join(f"{lane}:{value}" for lane, value in row["lag"].items())
        done = sum(row["finished"].values())
        errors = row["errors_last_hour"]
        table.add_row(
            row["name"] + ("" if row["active"] else f" ({row['model']}, passive)"),
            row["version"],
            lag,
            str(row["in_flight"]),
            str(done),
            f"{row['replayed']} ({row['replay_saved_seconds']:.0f} s saved)"
            if row["replayed"]
            else "0",
            f"[red]{errors}[/red]" if errors else "0",
            _ago(row["last_seen"]),
        )
    console.print(table)
    for row in rows:
        for failure in row["recent_failures"][-3:]:
            first_line = (failure["message"] or "").strip().splitlines()[-1:] or [""]
            console.print(
                f"[red]{row['name']}[/red] {failure['status']} {failure['sha256'][:16]}: "
                f"{failure['error']} {first_line[0][:120]}",
                highlight=False,
            )
    return 0


def _watch(args: argparse.Namespace) -> int:
    import secrets as _secrets

    name = f"azuld-watch-{_secrets.token_hex(4)}"
    query: list[tuple[str, str | int | float | bool | None]] = [
        ("name", name),
        ("version", "1"),
        ("r-live", "true"),
        ("count", "100"),
        ("deadline", "10"),
    ]
    print(f"following statuses on {args.server} (Ctrl-C to stop)", file=sys.stderr)
    from azuld.plugin.client import multipart_parts

    with httpx.Client(base_url=args.server, timeout=30.0) as client:
        try:
            while True:
                response = client.get("/api/v2/event/status/passive", params=query)
                if response.status_code != 200:
                    print(f"azuld watch: {_error_text(response)}", file=sys.stderr)
                    return 1
                parts = multipart_parts(response.content, response.headers["content-type"])
                for event in msgspec.json.decode(parts["events"])["events"]:
                    author = event["author"]["name"]
                    if args.plugin and author != args.plugin:
                        continue
                    entity = event["entity"]
                    sha = entity["input"]["entity"].get("sha256", "")[:16]
                    detail = entity.get("error", "") or ""
                    when = event["timestamp"][:19]
                    print(f"{when} {author:20} {entity['status']:22} {sha} {detail}")
        except KeyboardInterrupt:
            return 0


def _failed(args: argparse.Namespace) -> int:
    params = {"plugin": args.plugin, "limit": str(args.limit)}
    response = httpx.get(f"{args.server}/api/azuld/v1/failed", params=params, timeout=60.0)
    if response.status_code != 200:
        print(f"azuld failed: {_error_text(response)}", file=sys.stderr)
        return 1
    rows = response.json()["failed"]
    if not rows:
        print("no failed jobs")
        return 0
    for row in rows:
        print(
            f"{row['at'][:19]}  {row['plugin']} {row['version']}  {row['status']}  "
            f"{row['sha256'][:16]}  {row['error']}: {row['message'][:100]}\n    {row['job_id']}"
        )
    return 0


def _reoffer(args: argparse.Namespace) -> int:
    job_ids = list(args.job_ids)
    if args.failed_of:
        response = httpx.get(
            f"{args.server}/api/azuld/v1/failed",
            params={"plugin": args.failed_of, "limit": "1000"},
            timeout=60.0,
        )
        response.raise_for_status()
        job_ids += [row["job_id"] for row in response.json()["failed"]]
    if not job_ids:
        print("azuld reoffer: no job ids given", file=sys.stderr)
        return 2
    body = {"job_ids": job_ids, "by": args.by or getpass.getuser()}
    response = httpx.post(f"{args.server}/api/azuld/v1/reoffer", json=body, timeout=60.0)
    if response.status_code != 200:
        print(f"azuld reoffer: {_error_text(response)}", file=sys.stderr)
        return 1
    failures = 0
    for row in response.json()["reoffered"]:
        if row["ok"]:
            print(f"re-offered to {row['plugin_key']}: {row['job_id']}")
        else:
            failures += 1
            print(f"not re-offered: {row['job_id']}: {row['reason']}", file=sys.stderr)
    return 1 if failures else 0


def _status_plain(rows: list[dict[str, Any]]) -> int:
    """`azuld status` when piped: one line per plugin key, key=value, no table or colour."""
    for row in rows:
        lag = ",".join(f"{lane}:{value}" for lane, value in row["lag"].items())
        print(
            f"{row['name']} version={row['version']} model={row['model']} lanes={lag} "
            f"in_flight={row['in_flight']} done={sum(row['finished'].values())} "
            f"replayed={row['replayed']} saved_seconds={row['replay_saved_seconds']} "
            f"errors_last_hour={row['errors_last_hour']} "
            f"seen={_ago(row['last_seen']).replace(' ', '_')}"
        )
        for failure in row["recent_failures"][-3:]:
            last = (failure["message"] or "").strip().splitlines()[-1:] or [""]
            print(
                f"  failure {failure['status']} {failure['sha256'][:16]} {failure['error']}: "
                f"{last[0][:120]}"
            )
    return 0
