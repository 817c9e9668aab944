"""The `max-security` checkers (azuld.security_check): the label model's, and an external
`can-access` command's, run for real (a small Python script stands in for `azul-security`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from azuld.errors import ConfigError, UnreadableLabel
from azuld.ports import SecurityCheck
from azuld.security_check import CommandCheck, ModelCheck, open_security_check
from azuld.settings import load_settings

# A stand-in for `azul-security can-access <clearance> <label>` (sh: starts in a moment, even on a
# loaded machine): classifications A < B < C; a label names how to misbehave. Every run appends its
# label to the file in $CAN_ACCESS_LOG.
SCRIPT = """
echo "$2" >> "$CAN_ACCESS_LOG"
rank() { case "$1" in A) echo 1;; B) echo 2;; C) echo 3;; *) echo 9;; esac; }
case "$2" in
  SLOW) echo $$ > "$CAN_ACCESS_LOG.pid"; exec sleep 600;;
  CRASH) echo crashed >&2; exit 1;;
  CHATTY) echo maybe;;
  ODD) echo "BadSecurity: invalid groups: ODD";;
  *) if [ "$(rank "$2")" -le "$(rank "$1")" ]; then echo TRUE; else echo false; fi;;
esac
"""


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    path = tmp_path / "can-access.sh"
    path.write_text(SCRIPT)
    monkeypatch.setenv("CAN_ACCESS_LOG", str(tmp_path / "runs"))
    return ["/bin/sh", str(path)]


def runs(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs"
    return log.read_text().split() if log.exists() else []


def command_check(command: list[str], **options: float) -> CommandCheck:
    options.setdefault("timeout_seconds", 60.0)  # generous: only the timeout tests time out
    return CommandCheck(command, **options)  # type: ignore[arg-type]


async def test_answers_are_cached_per_pair(script: list[str], tmp_path: Path) -> None:
    check: SecurityCheck = command_check(script)
    assert check.decided("B", ("A",)) is None
    assert await check.can_access("B", ("A",)) is True  # "true" in any case
    assert await check.can_access("B", ("C",)) is False
    assert check.decided("B", ("A",)) is True
    assert check.decided("B", ("C",)) is False
    assert check.decided("B", ("A", "C")) is False  # one part denied decides
    assert check.decided("B", ("A", "B")) is None  # one part not asked yet
    assert await check.can_access("B", ("A", "B")) is True
    assert await check.can_access("B", ("C",)) is False
    assert runs(tmp_path) == ["A", "C", "B"]  # each pair ran once


async def test_no_clearance_or_no_label_is_not_checked(script: list[str], tmp_path: Path) -> None:
    check = command_check(script)
    assert check.decided("", ("C",)) is True
    assert await check.can_access("", ("C",)) is True
    assert check.decided("A", ()) is True
    assert await check.can_access("A", ()) is True
    assert runs(tmp_path) == []


@pytest.mark.parametrize("label", ["CRASH", "CHATTY"])
async def test_a_failed_check_denies_and_waits_to_retry(
    script: list[str], tmp_path: Path, label: str
) -> None:
    waiting = command_check(script, retry_seconds=3600)
    assert await waiting.can_access("Z", (label,)) is False
    assert waiting.decided("Z", (label,)) is False  # not asked again for an hour
    assert await waiting.can_access("Z", (label,)) is False
    assert runs(tmp_path) == [label]

    eager = command_check(script, retry_seconds=0)
    assert await eager.can_access("Z", (label,)) is False
    assert eager.decided("Z", (label,)) is None  # may be asked again at once
    assert await eager.can_access("Z", (label,)) is False
    assert runs(tmp_path) == [label] * 3


async def test_an_unreadable_label_is_a_cached_denial(script: list[str], tmp_path: Path) -> None:
    check = command_check(script, retry_seconds=0)
    assert await check.can_access("Z", ("ODD",)) is False
    assert await check.can_access("Z", ("ODD",)) is False
    assert runs(tmp_path) == ["ODD"]


async def test_a_missing_command_denies(tmp_path: Path) -> None:
    check = command_check([str(tmp_path / "no-such-command")])
    assert await check.can_access("A", ("A",)) is False


@pytest.mark.slow
async def test_a_slow_check_is_killed_at_its_timeout(script: list[str], tmp_path: Path) -> None:
    check = command_check(script, timeout_seconds=1.0)
    assert await check.can_access("Z", ("SLOW",)) is False
    pid = int((tmp_path / "runs.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


async def test_a_slow_check_holds_back_only_its_own_pair(script: list[str], tmp_path: Path) -> None:
    check = command_check(script, timeout_seconds=600.0, concurrency=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(check.can_access, "Z", ("SLOW",))
        while not (tmp_path / "runs.pid").exists():
            await trio.sleep(0.01)
        assert await check.can_access("B", ("A",)) is True
        assert check.decided("Z", ("SLOW",)) is None
        nursery.cancel_scope.cancel()
    pid = int((tmp_path / "runs.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # cancelled with its caller: killed


async def test_concurrent_asks_for_one_pair_share_a_run(script: list[str], tmp_path: Path) -> None:
    check = command_check(script)
    answers: list[bool] = []

    async def ask() -> None:
        answers.append(await check.can_access("B", ("A",)))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(ask)
    assert answers == [True] * 5
    assert runs(tmp_path) == ["A"]
    assert check.runs == 1


async def test_the_answer_cache_is_bounded(script: list[str], tmp_path: Path) -> None:
    check = command_check(script, max_entries=2)
    for label in ["A", "B", "C"]:
        await check.can_access("C", (label,))
    assert check.decided("C", ("A",)) is None  # the oldest answer was dropped
    assert check.decided("C", ("C",)) is True
    await check.can_access("C", ("A",))
    assert runs(tmp_path) == ["A", "B", "C", "A"]


async def test_the_model_check_always_decides() -> None:
    check: SecurityCheck = open_security_check(load_settings(environ={}).security)
    assert isinstance(check, ModelCheck)
    assert check.decided("OFFICIAL", ("OFFICIAL",)) is True
    assert check.decided("OFFICIAL", ("PROTECTED",)) is False
    assert check.decided("OFFICIAL", ("OFFICIAL TLP:RED",)) is False
    assert check.decided("OFFICIAL TLP:RED", ("OFFICIAL TLP:RED",)) is True
    assert check.decided("OFFICIAL", ("Random",)) is False
    assert await check.can_access("PROTECTED", ("OFFICIAL:SENSITIVE",)) is True
    check.check_clearance("")
    check.check_clearance("secret TLP:RED")
    with pytest.raises(UnreadableLabel, match="max-security 'SECRET//NOFORN': unknown marking"):
        check.check_clearance("SECRET//NOFORN")


async def test_the_command_check_cannot_tell_an_unreadable_clearance(
    script: list[str], tmp_path: Path
) -> None:
    check = command_check(script)
    check.check_clearance("Random")  # no error: the command will answer for each label
    assert await check.can_access("Random", ("ODD",)) is False


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "azuld.toml"
    path.write_text(text)
    return path


def test_the_security_section_builds_either_checker(tmp_path: Path) -> None:
    model = load_settings(
        write(
            tmp_path,
            '[security]\nclassifications = ["LOW", "HIGH"]\ncaveats = ["X"]\n'
            'default_label = "low x"\n',
        ),
        environ={},
    )
    check = open_security_check(model.security)
    assert check.decided("HIGH X", ("LOW X",)) is True
    assert check.decided("HIGH", ("LOW X",)) is False

    command = load_settings(
        write(tmp_path, '[security]\nchecker = "command"\ncommand = ["/bin/can-access", "-q"]\n'),
        environ={"AZULD_SECURITY__COMMAND_TIMEOUT_SECONDS": "2.5"},
    )
    check = open_security_check(command.security)
    assert isinstance(check, CommandCheck)
    assert check.command == ("/bin/can-access", "-q")
    assert check.timeout_seconds == 2.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('checker = "opa"', "key 'security.checker': expected one of 'model', 'command'"),
        ('classifications = "LOW"', "key 'security.classifications': expected a non-empty list"),
        ('caveats = ["OFFICIAL"]', "security.caveats: 'OFFICIAL' is already defined"),
        ('default_label = "LOW"', "security.default_label: security label 'LOW': unknown"),
        ("cache_entries = 0", "key 'security.cache_entries': expected an integer >= 1"),
        ('checker = "command"\ncommand = []', "key 'security.command': expected not empty"),
        (
            'checker = "command"\ncommand_timeout_seconds = 0',
            "key 'security.command_timeout_seconds': expected a number > 0",
        ),
        (
            'checker = "command"\ncommand_concurrency = 0',
            "key 'security.command_concurrency': expected an integer >= 1",
        ),
    ],
)
def test_a_bad_security_section_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, f"[security]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        open_security_check(load_settings(path, environ={}).security)
    assert message in str(caught.value)
