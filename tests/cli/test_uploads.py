"""The engine of `azuld submit` against a fake daemon on virtual time: files are published in
small batches as they are uploaded, a file is reported only once its post is acknowledged, an
outage is retried for a bounded time and said once, and whatever stops the run, every file not
published is named with a reason."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from azuld.cli.errors import ConnectionLost, Refused, Unreachable
from azuld.cli.ledger import Item, Ledger, State
from azuld.cli.uploads import Pacing, Reporter, Submission
from azuld.core.publish import sourced_event
from azuld.models.events import Author, BinaryEvent, Datastream
from azuld.models.responses import PostFailure, PostResponse

SERVER = "http://azuld.test:8111"


@dataclass
class FakeDaemon:
    """Uploads take `upload_seconds` each; `down_until` (virtual time) refuses every request."""

    upload_seconds: float = 0.01
    publish_seconds: float = 0.005
    down_until: float = 0.0
    refuse_upload: frozenset[str] = frozenset()  # file names the daemon refuses (413)
    refuse_event: frozenset[str] = frozenset()  # file names whose event it refuses
    server: str = SERVER
    posts: list[tuple[float, list[str]]] = field(default_factory=list)  # (when, filenames)
    stored: list[str] = field(default_factory=list)

    def _check_up(self) -> None:
        if trio.current_time() < self.down_until:
            raise Unreachable(self.server)

    async def check(self) -> None:
        self._check_up()

    async def upload(self, source: str, label: str, path: Path) -> Datastream:
        self._check_up()
        await trio.sleep(self.upload_seconds)
        if path.name in self.refuse_upload:
            raise Refused(413, "Payload Too Large", "the upload is over the limit")
        data = path.name.encode()
        return Datastream(
            identify_version=1,
            label="content",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            file_format="text/plain",
        )

    async def publish(self, events: Sequence[BinaryEvent]) -> PostResponse:
        self._check_up()
        await trio.sleep(self.publish_seconds)
        names = [event.source.path[-1].filename for event in events]
        self.posts.append((trio.current_time(), names))
        failures = []
        for event, name in zip(events, names, strict=True):
            if name in self.refuse_event:
                failures.append(PostFailure(event=msgspec.json.encode(event).decode(), error="no"))
            else:
                self.stored.append(name)
        return PostResponse(
            total_ok=len(events) - len(failures), total_failures=len(failures), failures=failures
        )


class Recorder(Reporter):
    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        self.reported: list[str] = []
        self.said: list[str] = []

    def published(self, item: Item, stream: Datastream, count: int) -> None:
        # Reported only once stored: the daemon holds it at this moment.
        assert item.filename in self.daemon.stored
        assert count == len(self.reported) + 1
        self.reported.append(item.filename)

    def say(self, message: str) -> None:
        self.said.append(message)


def items(count: int) -> list[Item]:
    return [Item(i, Path(f"/files/f{i:04d}"), f"f{i:04d}") for i in range(1, count + 1)]


def make_event(item: Item, stream: Datastream) -> BinaryEvent:
    author = Author(name="alice", category="user")
    return sourced_event(stream, item.filename, source="demo", author=author, now=datetime.now(UTC))


async def run(
    daemon: FakeDaemon, count: int, pacing: Pacing | None = None
) -> tuple[Submission, Recorder]:
    recorder = Recorder(daemon)
    ledger = Ledger(items(count))
    submission = Submission(daemon, "demo", ledger, make_event, recorder, pacing or Pacing())
    await submission.run()
    return submission, recorder


async def test_files_are_published_in_small_batches_as_they_upload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    daemon = FakeDaemon()
    submission, recorder = await run(daemon, 1000)
    assert sorted(recorder.reported) == [item.filename for item in items(1000)]
    assert submission.ledger.unpublished("") == []
    assert submission.stop_reason == ""
    # 8 uploads at once, 10 ms each: 800 files/s. A batch is posted at 50 files or 0.2 s.
    assert all(len(names) <= 50 for _, names in daemon.posts)
    assert len(daemon.posts) >= 1000 // 50
    # The first file is published within a flush interval (and a post) of its upload.
    first_post, _ = daemon.posts[0]
    assert first_post <= 0.01 + 0.2 + 0.005 + 1e-9


async def test_a_slow_trickle_is_flushed_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    daemon = FakeDaemon(upload_seconds=0.15)
    await run(daemon, 6, Pacing(uploads_at_once=1))
    # One file every 0.15 s: each post carries what arrived within 0.2 s of its first file.
    assert [len(names) for _, names in daemon.posts] == [2, 2, 2]
    assert [round(at, 3) for at, _ in daemon.posts] == [0.355, 0.655, 0.905]


async def test_refusals_fail_their_file_and_the_run_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    daemon = FakeDaemon(refuse_upload=frozenset({"f0003"}), refuse_event=frozenset({"f0005"}))
    submission, recorder = await run(daemon, 10)
    assert len(recorder.reported) == 8
    assert [(item.filename, why) for item, why in submission.ledger.unpublished("")] == [
        ("f0003", "upload refused: 413 Payload Too Large: the upload is over the limit"),
        ("f0005", "publish refused: no"),
    ]


async def test_an_outage_is_retried_and_said_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Flaky(FakeDaemon):
        async def upload(self, source: str, label: str, path: Path) -> Datastream:
            if path.name == "f0100" and not self.down_until:
                self.down_until = trio.current_time() + 5  # the daemon restarts for 5 s
                raise ConnectionLost(self.server, OSError("reset"))
            return await super().upload(source, label, path)

    daemon = Flaky()
    submission, recorder = await run(daemon, 300)
    assert len(recorder.reported) == 300
    assert submission.ledger.unpublished("") == []
    retrying, back = recorder.said
    assert retrying.startswith(f"lost the connection to azuld at {SERVER}: ")
    assert retrying.endswith(
        "retrying for up to 60 s (Ctrl-C stops, listing what is not published)"
    )
    assert back.startswith(f"azuld at {SERVER} answers again (")


async def test_a_long_outage_gives_up_and_names_what_is_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Dies(FakeDaemon):
        async def publish(self, events: Sequence[BinaryEvent]) -> PostResponse:
            if len(self.stored) >= 100:
                self.down_until = float("inf")
            return await super().publish(events)

    daemon = Dies()
    submission, recorder = await run(daemon, 1000, Pacing(retry_seconds=10))
    assert trio.current_time() < 12  # gave up after 10 s of outage, not later
    assert recorder.reported == daemon.stored
    left = submission.ledger.unpublished(submission.stop_reason)
    assert len(left) == 1000 - len(recorder.reported)
    assert submission.stop_reason == (
        f"azuld at {SERVER} did not answer for 10 s: cannot reach azuld at {SERVER} "
        "(is `azuld serve` running? use --server or AZULD_SERVER)"
    )
    reasons = {why.split(" (", 1)[0] for _, why in left}
    assert reasons <= {
        "not uploaded",
        "upload interrupted",
        "uploaded, not published",
        "publish interrupted",
    }
    assert "not uploaded" in reasons


async def test_a_daemon_that_never_answers_is_unreachable_before_any_upload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    daemon = FakeDaemon(down_until=float("inf"))
    with pytest.raises(Unreachable):
        await run(daemon, 10)
    assert daemon.posts == []


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (State.WAITING, "not uploaded (SIGTERM)"),
        (State.UPLOADING, "upload interrupted (SIGTERM)"),
        (State.UPLOADED, "uploaded, not published (SIGTERM)"),
        (
            State.PUBLISHING,
            "publish interrupted (SIGTERM); the daemon may have stored it: submit again to be sure",
        ),
    ],
)
def test_the_ledger_says_why_a_file_was_left(state: State, reason: str) -> None:
    first, second = items(2)
    ledger = Ledger([first, second])
    ledger.move([first], State.PUBLISHED)
    ledger.move([second], state)
    assert ledger.unpublished("SIGTERM") == [(second, reason)]
    assert ledger.published == 1


def test_published_stays_published() -> None:
    (item,) = items(1)
    ledger = Ledger([item])
    ledger.move([item], State.PUBLISHED)
    ledger.move([item], State.PUBLISHING)
    ledger.fail(item, "late")
    assert (ledger.state(item), ledger.published, ledger.unpublished("x")) == (
        State.PUBLISHED,
        1,
        [],
    )
