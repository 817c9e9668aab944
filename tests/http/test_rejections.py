"""Rejected requests leave a trace: one log line each (route, status, reason, client, user agent,
request id), at most so many a second, the rest summed up (`azuld.http.rejections`)."""

from __future__ import annotations

import hashlib
import logging

import msgspec
import pytest
from quart.typing import TestClientProtocol as Client

from azuld.http.rejections import REJECTIONS, Rejection, RejectionLog, printable

LOGGER = "azuld.http.rejected"


@pytest.fixture(autouse=True)
def fresh_rejections(caplog: pytest.LogCaptureFixture) -> None:
    """The process's log of rejections, with its bucket full (other tests used it)."""
    REJECTIONS.__init__()  # type: ignore[misc]
    caplog.set_level(logging.INFO, logger=LOGGER)


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


def rejection(index: int = 0, status: int = 422, route: str = "/api/v2/event") -> Rejection:
    return Rejection("POST", route, status, f"reason {index}", "10.0.0.1", "runner/1", f"id{index}")


# -- the limit ----------------------------------------------------------------------------------


def test_at_most_so_many_lines_a_second_then_a_summary(caplog: pytest.LogCaptureFixture) -> None:
    limited = RejectionLog(5, summary_every_seconds=10, logger=logging.getLogger(LOGGER))
    for index in range(100):
        limited.record(rejection(index), now=100.0)
    for index in range(20):
        limited.record(rejection(index, status=404, route="unmatched"), now=100.5)
    written = [r.getMessage().split(": ")[-1] for r in lines(caplog)]
    # 5 at once; half a second later the bucket holds two and a half lines again.
    assert written == [f"reason {i}" for i in (0, 1, 2, 3, 4, 0, 1)]
    limited.record(rejection(7), now=101.0)
    limited.flush(now=109.9)  # not yet ten seconds since the first suppressed line
    assert len(lines(caplog)) == 8
    limited.flush(now=110.0)
    summary = lines(caplog)[-1]
    assert summary.levelno == logging.WARNING
    assert summary.getMessage() == (
        "suppressed 113 similar lines of rejected requests in the last 10 s "
        "(most: 95 x 422 POST /api/v2/event, 18 x 404 POST unmatched)"
    )
    limited.flush(now=130.0)  # nothing more suppressed: no summary
    assert len(lines(caplog)) == 9


def test_the_summary_also_comes_with_the_next_rejection(caplog: pytest.LogCaptureFixture) -> None:
    limited = RejectionLog(1, summary_every_seconds=10, logger=logging.getLogger(LOGGER))
    for index in range(3):
        limited.record(rejection(index), now=0.0)
    limited.record(rejection(9), now=30.0)
    messages = [r.getMessage() for r in lines(caplog)]
    assert messages[1].startswith(
        "suppressed 2 similar lines of rejected requests in the last 30 s"
    )
    assert messages[2].endswith("reason 9")


def test_no_lines_at_zero_a_second_only_summaries(caplog: pytest.LogCaptureFixture) -> None:
    limited = RejectionLog(0, summary_every_seconds=10, logger=logging.getLogger(LOGGER))
    for index in range(4):
        limited.record(rejection(index), now=float(index))
    limited.flush(now=20.0)
    assert [r.getMessage()[:22] for r in lines(caplog)] == ["suppressed 4 similar l"]


def test_the_line_and_its_level(caplog: pytest.LogCaptureFixture) -> None:
    limited = RejectionLog(10, logger=logging.getLogger(LOGGER))
    limited.record(
        Rejection(
            "GET", "/a\nforged line", 404, "no such route", "10.1.2.3", 'ua "x"\x1b[31m', "r-1"
        ),
        now=0.0,
    )
    limited.record(rejection(status=401), now=0.0)
    limited.record(Rejection("-", "-", 400, "bare LF", "10.1.2.3", before_the_app=True), now=0.0)
    first, second, third = lines(caplog)
    assert first.levelno == logging.INFO
    assert first.getMessage() == (
        'rejected GET /a\\nforged line 404 from 10.1.2.3 ua="ua "x"\\x1b[31m" '
        "request_id=r-1: no such route"
    )
    assert (second.levelno, third.levelno) == (logging.WARNING, logging.WARNING)


def test_printable() -> None:
    assert printable("plain") == "plain"
    assert printable("a\r\nb\x00") == "a\\r\\nb\\x00"
    assert printable("x" * 300) == "x" * 200 + "..."


# -- what is recorded ---------------------------------------------------------------------------


async def test_a_rejected_publish_is_logged_with_what_identifies_it(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post(
        "/api/v2/event?model=binary",
        data=b"[]",
        headers={"User-Agent": "azul-runner/9", "X-Request-Id": "req-42"},
    )
    assert response.status_code == 422
    (line,) = lines(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        'rejected POST /api/v2/event 422 from <local> ua="azul-runner/9" request_id=req-42: '
        "ensure events were in json format: event message too small"
    )


@pytest.mark.parametrize(
    ("method", "target", "status", "route", "reason"),
    [
        ("GET", "/api/azuld/v1/failed?limit=x", 400, "/api/azuld/v1/failed", "limit='x'"),
        ("GET", "/no/such/thing", 404, "unmatched", "no such route"),
        ("PUT", "/api/v2/event", 405, "unmatched", "not allowed"),
        ("GET", "/api/v2/event/binary/active?name=P", 422, "/api/v2/event/<model>/<mode>", "r-"),
        (
            "POST",
            "/api/v3/stream/a/b?expected-sha256=x",
            400,
            "/api/v3/stream/<source>/<label>",
            "",
        ),
    ],
)
async def test_rejections_on_every_path_are_logged(
    client: Client,
    caplog: pytest.LogCaptureFixture,
    method: str,
    target: str,
    status: int,
    route: str,
    reason: str,
) -> None:
    response = await client.open(target, method=method, data=b"x")
    assert response.status_code == status
    (line,) = lines(caplog)
    message = line.getMessage()
    assert message.startswith(f"rejected {method} {route} {status} from ")
    assert reason in message.split(": ", 1)[1]


async def test_a_head_for_a_missing_blob_is_an_answer_not_a_rejection(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    sha = hashlib.sha256(b"nothing").hexdigest()
    response = await client.head(f"/api/v3/stream/samples/content/{sha}")
    assert response.status_code == 404
    assert not lines(caplog)


async def test_accepted_requests_are_not_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await client.get("/healthz")).status_code == 200
    response = await client.post("/api/v2/event?model=binary", data=msgspec.json.encode([]))
    assert response.status_code == 422  # one rejection, the only line
    assert len(lines(caplog)) == 1
