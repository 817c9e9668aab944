"""The admin commands: `azuld plugins`, `status`, `show`, `failed` and `reoffer`. Each asks the
daemon through `AzuldClient` and prints; tables and colour on a terminal, plain text when piped."""

from __future__ import annotations

import argparse
import getpass
import sys
import time

from azuld.cli.client import AzuldClient
from azuld.cli.errors import UsageError
from azuld.cli.replies import KeySummary, SourceNode
from azuld.core.keys import NAME_PATTERN

__all__ = ["failed", "plugins", "reoffer", "show", "status", "valid_source"]


def valid_source(name: str) -> str:
    """`name` if it can be a source (checked before anything is sent), else `UsageError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"invalid source {name!r}: use 1-100 letters, digits, '_' or '-'")
    return name


def plugins(args: argparse.Namespace) -> int:
    with AzuldClient(args.server, wait_seconds=args.wait, timeout_seconds=10.0) as client:
        rows = client.plugins()
    if not rows:
        print("no plugin has fetched from this daemon yet")
        return 0
    print(f"{'plugin key':60} {'queued':>7} {'leased':>7} {'fetched':>8} {'finished':>8}")
    for row in rows:
        print(
            f"{row.key:60} {row.queued:>7} {row.in_flight:>7} "
            f"{row.fetched:>8} {sum(row.finished.values()):>8}"
        )
    return 0


def show(args: argparse.Namespace) -> int:
    source = valid_source(args.source)
    with AzuldClient(args.server, wait_seconds=args.wait, timeout_seconds=30.0) as client:
        binaries = client.source(source)
    if not binaries:
        print(f"source {source!r} has no binaries yet")
        return 0
    for root in binaries:
        _print_node(root, "", args.all_values)
    return 0


def _print_node(node: SourceNode, indent: str, all_values: bool) -> None:
    """One binary, its features, then its children one level deeper."""
    name = node.filename or node.sha256[:16]
    branch = f"{indent[:-4]}└── " if indent else ""
    print(f"{branch}{name}  {node.file_format}  {node.size} bytes  {node.sha256}")
    for plugin, found in sorted(node.features.items()):
        shown = []
        for feature, values in sorted(found.items()):
            if all_values or len(values) == 1:
                shown.append(f"{feature}={', '.join(values)}")
            else:
                shown.append(f"{feature}=[{len(values)} values]")
        print(f"{indent}    {plugin}: {'; '.join(shown)}")
    for child in node.children:
        _print_node(child, indent + "    ", all_values)


def _ago(seconds: float) -> str:
    if seconds <= 0:
        return "never"
    delta = max(time.time() - seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{delta / size:.0f}{unit} ago"
    return f"{delta:.0f}s ago"


def _last_line(message: str | None) -> str:
    return ((message or "").strip().splitlines()[-1:] or [""])[0]


def status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    with AzuldClient(args.server, wait_seconds=args.wait, timeout_seconds=10.0) as client:
        rows = client.plugins()
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
        lag = " ".join(f"{lane}:{value}" for lane, value in row.lag.items())
        errors = row.errors_last_hour
        table.add_row(
            row.name + _kind(row),
            row.version,
            lag,
            str(row.in_flight),
            str(sum(row.finished.values())),
            f"{row.replayed} ({row.replay_saved_seconds:.0f} s saved)" if row.replayed else "0",
            f"[red]{errors}[/red]" if errors else "0",
            _ago(row.last_seen),
        )
    console.print(table)
    for row in rows:
        for failure in row.recent_failures[-3:]:
            console.print(
                f"[red]{row.name}[/red] {failure.status} {failure.sha256[:16]}: "
                f"{failure.error} {_last_line(failure.message)[:120]}",
                highlight=False,
            )
    return 0


def _kind(row: KeySummary) -> str:
    """What a key is, when it is not a plugin's job queue."""
    if row.ephemeral:
        return " (watcher)"
    return "" if row.active else f" ({row.model}, passive)"


def _status_plain(rows: list[KeySummary]) -> int:
    """`azuld status` when piped: one line per plugin key, key=value, no table or colour."""
    for row in rows:
        lag = ",".join(f"{lane}:{value}" for lane, value in row.lag.items())
        print(
            f"{row.name} version={row.version} model={row.model} lanes={lag} "
            f"{'ephemeral=true ' if row.ephemeral else ''}"
            f"in_flight={row.in_flight} done={sum(row.finished.values())} "
            f"replayed={row.replayed} saved_seconds={row.replay_saved_seconds} "
            f"errors_last_hour={row.errors_last_hour} "
            f"seen={_ago(row.last_seen).replace(' ', '_')}"
        )
        for failure in row.recent_failures[-3:]:
            print(
                f"  failure {failure.status} {failure.sha256[:16]} {failure.error}: "
                f"{_last_line(failure.message)[:120]}"
            )
    return 0


def failed(args: argparse.Namespace) -> int:
    with AzuldClient(args.server, wait_seconds=args.wait) as client:
        rows = client.failed(args.plugin, args.limit)
    if not rows:
        print("no failed jobs")
        return 0
    for row in rows:
        print(
            f"{row.at[:19]}  {row.plugin} {row.version}  {row.status}  "
            f"{row.sha256[:16]}  {row.error}: {row.message[:100]}\n    {row.job_id}"
        )
    return 0


def reoffer(args: argparse.Namespace) -> int:
    job_ids = list(args.job_ids)
    with AzuldClient(args.server, wait_seconds=args.wait) as client:
        if args.failed_of:
            job_ids += [row.job_id for row in client.failed(args.failed_of, 1000)]
        if not job_ids:
            print("azuld reoffer: no job ids given", file=sys.stderr)
            return 2
        outcomes = client.reoffer(job_ids, args.by or getpass.getuser())
    failures = 0
    for outcome in outcomes:
        if outcome.ok:
            print(f"re-offered to {outcome.plugin_key}: {outcome.job_id}")
        else:
            failures += 1
            print(f"not re-offered: {outcome.job_id}: {outcome.reason}", file=sys.stderr)
    return 1 if failures else 0
