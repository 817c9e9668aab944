"""Logs an operator can read: RFC 3339 times with milliseconds and the zone in every format,
other libraries quiet at INFO (aiokafka's errors of a normal start shown as DEBUG, real errors
kept), and a last line that says the daemon stopped and why. The last tests read the real
daemon's log: on the embedded backend, and on a first start on Kafka and S3."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from azuld.cli import main
from azuld.logs import configure_logging, set_level
from tests.daemon import running_daemon, start_daemon
from tests.services import KafkaBroker, S3Server

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """`configure_logging` may be called; the logging set-up is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("aiokafka", "httpx2", "botocore")}
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def recent(stamp: str) -> bool:
    return abs(datetime.now().astimezone() - datetime.fromisoformat(stamp)) < timedelta(minutes=1)


def test_json_lines_have_an_rfc3339_time_with_milliseconds_and_zone(
    logs: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    logging.getLogger("azuld.test").info("hello %s", "azul")
    (line,) = lines(logs)
    entry = json.loads(line)
    assert RFC3339_MS.match(entry["time"]), entry["time"]
    assert recent(entry["time"])
    assert {k: entry[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "info",
        "logger": "azuld.test",
        "message": "hello azul",
        "request_id": "-",
    }


@pytest.mark.parametrize(
    ("log_format", "pattern"),
    [
        ("keyvalue", r"^time=(\S+) level=warning logger=azuld\.test request_id=- msg=\"careful\"$"),
        ("text", r"^(\S+) WARNING azuld\.test \[-\] careful$"),
    ],
)
def test_the_other_formats_start_with_the_same_time(
    logs: pytest.CaptureFixture[str], log_format: Any, pattern: str
) -> None:
    configure_logging("info", log_format)
    logging.getLogger("azuld.test").warning("careful")
    (line,) = lines(logs)
    match = re.match(pattern, line)
    assert match, line
    assert RFC3339_MS.match(match.group(1))
    assert recent(match.group(1))


def test_other_libraries_are_quiet_at_info(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "text")
    logging.getLogger("httpx2").info("HTTP Request: PUT http://s3/azul/x")  # aiobotocore's S3
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    logging.getLogger("some.library").info("chatter")
    logging.getLogger("azuld.service").info("azuld serving")
    logging.getLogger("some.library").warning("disk almost full")
    logging.getLogger("botocore").error("access denied")
    assert [line.split(" ", 1)[1] for line in lines(logs)] == [
        "INFO azuld.service [-] azuld serving",
        "WARNING some.library [-] disk almost full",
        "ERROR botocore [-] access denied",
    ]


def test_at_debug_they_say_more_but_not_everything(logs: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug", "text")
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    logging.getLogger("botocore").debug("every header of every request")
    logging.getLogger("azuld.dispatcher").debug("a lease")
    assert [line.split(" ", 1)[1] for line in lines(logs)] == [
        "INFO aiokafka.consumer.group_coordinator [-] Joined group",
        "DEBUG azuld.dispatcher [-] a lease",
    ]


class GroupCoordinatorNotAvailableError(Exception):
    """As aiokafka names it (its str is "[Error 15] GroupCoordinatorNotAvailableError")."""

    def __str__(self) -> str:
        return "[Error 15] GroupCoordinatorNotAvailableError"


class NotLeaderForPartitionError(Exception):
    def __str__(self) -> str:
        return "[Error 6] NotLeaderForPartitionError"


class GroupAuthorizationFailedError(Exception):
    def __str__(self) -> str:
        return "[Error 30] GroupAuthorizationFailedError"


def log_first_start_errors() -> None:
    """What aiokafka logs on a normal first start (recorded from a real one), and two that are
    not normal."""
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    fetcher = logging.getLogger("aiokafka.consumer.fetcher")
    coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
    fetcher.error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    coordinator.warning("Marking the coordinator dead (node %s)for group %s.", 1, "g")
    coordinator.error("Group Coordinator Request failed: %s", GroupAuthorizationFailedError())
    coordinator.error("Heartbeat session expired - marking coordinator dead")


def test_aiokafkas_errors_of_a_normal_start_are_debug_and_real_ones_kept(
    logs: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "text")
    log_first_start_errors()
    assert [line.split(" ", 1)[1] for line in lines(logs)] == [
        "ERROR aiokafka.consumer.group_coordinator [-] Group Coordinator Request failed: "
        "[Error 30] GroupAuthorizationFailedError",
        "ERROR aiokafka.consumer.group_coordinator [-] Heartbeat session expired - marking "
        "coordinator dead",
    ]
    set_level("debug")  # as a reload does
    log_first_start_errors()
    assert [line.split(" ", 2)[1] for line in lines(logs)] == ["DEBUG"] * 3 + ["ERROR"] * 2


def json_log(text: str) -> list[dict[str, Any]]:
    """Every line of a JSON log (each must parse), with its time checked."""
    entries = [json.loads(line) for line in text.splitlines()]
    for entry in entries:
        assert RFC3339_MS.match(entry["time"]), entry
    return entries


@pytest.mark.slow
async def test_the_last_line_says_the_daemon_stopped_and_why(tmp_path: Path) -> None:
    env = {"AZULD_LOG_FORMAT": "json"}
    async with running_daemon(tmp_path / "data", env=env) as daemon:
        assert await daemon.terminate() == 0
    last = json_log(daemon.log())[-1]
    assert (last["level"], last["logger"], last["message"]) == (
        "info",
        "azuld.cli.daemon",
        "azuld stopped: SIGTERM",
    )


@pytest.mark.slow
async def test_a_daemon_that_cannot_start_says_so_last(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "first") as first:
        listen = first.url.removeprefix("http://")
        second = ["--data-dir", str(tmp_path / "second")]
        done = await trio.run_process(
            [sys.executable, "-m", "azuld", "serve", "--listen", listen, *second],
            env={**os.environ, "AZULD_LOG_FORMAT": "json"},
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 1
    text = done.stderr.decode()
    *log, printed = text.splitlines()
    last = json_log("\n".join(log))[-1]
    assert last["level"] == "error"
    assert last["message"].startswith(
        f"azuld stopped: cannot start: server.listen: cannot listen on {listen}: the address is "
        "already in use"
    )
    assert printed.startswith("azuld: cannot start: server.listen: cannot listen on ")


@pytest.mark.slow
async def test_a_first_start_on_kafka_and_s3_is_quiet(
    tmp_path: Path, kafka_broker: KafkaBroker, s3_server: S3Server
) -> None:
    """A new topic prefix and bucket (a first start), 20 files submitted, SIGTERM: no ERROR or
    WARNING lines, and nothing from other libraries (S3 requests, Kafka rebalances)."""
    prefix = f"logs{secrets.token_hex(4)}"
    config = tmp_path / "azuld.toml"
    config.write_text(
        f"""
log_format = "json"
[events]
backend = "kafka"
topic_prefix = "{prefix}"
kafka_bootstrap = "{kafka_broker.bootstrap}"
kafka_connect_timeout_seconds = 60
[storage]
backend = "s3"
s3_endpoint = "{s3_server.endpoint}"
s3_bucket = "{prefix}"
s3_access_key = "{s3_server.access_key}"
s3_secret_key = "{s3_server.secret_key}"
s3_region = "{s3_server.region}"
"""
    )
    files = tmp_path / "files"
    files.mkdir()
    for i in range(20):
        (files / f"f{i}").write_text(f"file {i}\n")
    daemon = await start_daemon(tmp_path / "data", extra_args=["--config", str(config)])
    try:
        argv = ["submit", str(files), "--source", "logs", "--server", daemon.url]
        assert await trio.to_thread.run_sync(main, argv) == 0
        await trio.sleep(2)  # rebalances and metadata refreshes after the new source's topics
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await daemon.process.wait() == 0
    finally:
        if daemon.process.returncode is None:
            await daemon.kill()
    entries = json_log(daemon.log())
    loud = [e for e in entries if e["level"] in ("warning", "error", "critical")]
    assert loud == []
    assert {e["logger"].split(".")[0] for e in entries} == {"azuld"}
    assert entries[-1]["message"] == "azuld stopped: SIGTERM"
