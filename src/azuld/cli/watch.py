"""`azuld watch`: follow job statuses as they are stored, through a passive status feed."""

from __future__ import annotations

import argparse
import secrets
import sys

from azuld.cli.client import AzuldClient

__all__ = ["watch"]


def watch(args: argparse.Namespace) -> int:
    """Print statuses until Ctrl-C (exit 0)."""
    query = [
        ("name", f"azuld-watch-{secrets.token_hex(4)}"),
        ("version", "1"),
        ("r-live", "true"),
        ("count", "100"),
        ("deadline", "10"),
    ]
    print(f"following statuses on {args.server} (Ctrl-C to stop)", file=sys.stderr)
    with AzuldClient(args.server, wait_seconds=args.wait, timeout_seconds=30.0) as client:
        try:
            while True:
                for event in client.statuses(query):
                    author = event.author.name
                    if args.plugin and author != args.plugin:
                        continue
                    entity = event.entity
                    sha = entity.input.entity.sha256[:16]
                    when = event.timestamp[:19]
                    print(f"{when} {author:20} {entity.status:22} {sha} {entity.error or ''}")
        except KeyboardInterrupt:
            return 0
