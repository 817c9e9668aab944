"""The command table: every command parses to its handler, and the commands that talk to a
daemon all take `--server` (and a config file)."""

from __future__ import annotations

import pytest

from azuld.cli.commands import COMMANDS, Command, build_parser


def test_names_are_unique_and_groups_known() -> None:
    names = [command.name for command in COMMANDS]
    assert len(names) == len(set(names))
    assert {
        "serve",
        "submit",
        "plugins",
        "config check",
        "status",
        "watch",
        "failed",
        "reoffer",
        "show",
        "plugin run",
    } == set(names)


# The least each command needs on its command line.
MINIMAL = {
    "serve": [],
    "submit": ["f.bin", "--source", "s"],
    "config check": [],
    "show": ["--source", "s"],
    "plugin run": ["entropy"],
}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_parses_to_its_handler(command: Command) -> None:
    argv = [*command.name.split(), *MINIMAL.get(command.name, [])]
    args = build_parser().parse_args(argv)
    assert args.command_spec is command
    if command.daemon:
        args = build_parser().parse_args([*argv, "--server", "http://h:1"])
        assert args.server == "http://h:1"


def test_only_the_daemon_itself_and_config_check_do_not_talk_to_a_daemon() -> None:
    assert [c.name for c in COMMANDS if not c.daemon] == ["serve", "config check"]


def test_a_config_file_for_the_url_except_where_config_means_something_else() -> None:
    args = build_parser().parse_args(["status", "--config", "azuld.toml"])
    assert str(args.config_file) == "azuld.toml"
    # `plugin run -c/--config KEY=VALUE` are the plugin's settings, as before.
    args = build_parser().parse_args(["plugin", "run", "entropy", "--config", "a=1"])
    assert args.config == ["a=1"]
    assert not hasattr(args, "config_file")
