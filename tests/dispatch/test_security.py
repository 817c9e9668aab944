"""`max-security` in the dispatcher (dispatch/security.py, and the judge in dispatch/fetch.py):
events above a fetch's clearance are skips counted like other filters, an unreadable clearance
is refused, the plugin key does not change, and a slow `can-access` command holds back only the
events it decides (a real command: a small sh script stands in for `azul-security`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from azuld.backends.embedded import EmbeddedLog
from azuld.core.cursor import TopicPartition
from azuld.core.delivery import Lane
from azuld.core.security import SECURITY_FILTER, EventLabel
from azuld.dispatch import Dispatcher
from azuld.errors import UnreadableLabel
from azuld.models.events import Author, BinaryEvent, StatusEvent
from azuld.security_check import CommandCheck
from azuld.settings import DispatchSettings
from tests.conftest import make_binary, sha
from tests.dispatch.conftest import LEASE, decode, params, status, submit

SETTINGS = DispatchSettings(lease_seconds=LEASE, max_attempts=3, read_ahead=8)


def labelled(name: str, security: str, *, author_security: str = "") -> BinaryEvent:
    event = make_binary(name)
    event.source.security = security
    event.source.path[-1].author = Author(name="bob", category="user", security=author_security)
    return event


def shas(events: list[BinaryEvent]) -> list[str]:
    return [event.entity.sha256 for event in events]


async def test_events_above_the_clearance_are_filtered(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(
        dispatcher,
        labelled("official", "OFFICIAL"),
        labelled("secret", "SECRET"),
        make_binary("unlabelled"),
        # The label is every security string on the event: here its path's author's too.
        labelled("secret-author", "OFFICIAL", author_security="SECRET"),
    )
    low = await dispatcher.fetch(params("Low", count="10", max_security="OFFICIAL"))
    assert shas(decode(low)) == [sha("official"), sha("unlabelled")]
    assert (low.info.filtered, low.info.filters) == (2, {SECURITY_FILTER: 2})
    high = await dispatcher.fetch(params("High", count="10", max_security="secret"))
    assert len(decode(high)) == 4
    assert high.info.filtered == 0
    anyone = await dispatcher.fetch(params("Anyone", count="10"))  # no max-security: no check
    assert len(decode(anyone)) == 4
    low_key = "Low-1-binary-allsrc-alltype-LH"
    filtered = dispatcher.metrics.filtered.labels("Low", low_key, "binary", SECURITY_FILTER)
    assert filtered._value.get() == 2


async def test_an_unreadable_clearance_is_refused(dispatcher: Dispatcher) -> None:
    with pytest.raises(UnreadableLabel, match="max-security 'SECRET NOFORN': unknown marking") as e:
        await dispatcher.fetch(params(max_security="SECRET NOFORN"))
    assert e.value.http_status == 422
    assert dispatcher.keys() == []  # refused before the key was made


async def test_max_security_is_not_part_of_the_plugin_key(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    assert params(max_security="SECRET").key == params().key
    await submit(dispatcher, labelled("official", "OFFICIAL"), labelled("secret", "SECRET"))
    first = await dispatcher.fetch(params(count="1", max_security="SECRET"))
    second = await dispatcher.fetch(params(count="5", max_security="OFFICIAL"))
    keys = dispatcher.keys()
    assert [ks.params.key for ks in keys] == [params().key]
    # One key, one set of lanes: each event went to one of the two workers, or was filtered.
    assert shas(decode(first)) == [sha("official")]
    assert (decode(second), second.info.filters) == ([], {SECURITY_FILTER: 1})


async def test_passive_status_fetches_check_the_event_the_status_is_about(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    assert decode(await dispatcher.fetch(params("Feed", "status", active=False)), StatusEvent) == []
    await submit(dispatcher, labelled("official", "OFFICIAL"), labelled("secret", "SECRET"))
    jobs = decode(await dispatcher.fetch(params(count="2")))
    for job in jobs:
        await dispatcher.publish("status", status(job, "completed"))
    feed = await dispatcher.fetch(
        params("Feed", "status", active=False, count="10", max_security="OFFICIAL")
    )
    about = [event.entity.input.entity.sha256 for event in decode(feed, StatusEvent)]
    assert (about, feed.info.filters) == ([sha("official")], {SECURITY_FILTER: 1})


async def test_reoffered_jobs_are_checked_too(
    dispatcher: Dispatcher, autojump_clock: trio.testing.MockClock
) -> None:
    await submit(dispatcher, labelled("secret", "SECRET"))
    (job,) = decode(await dispatcher.fetch(params(max_security="SECRET")))
    await dispatcher.publish("status", status(job, "error-exception"))
    (outcome,) = await dispatcher.reoffer([job.dequeued], by="admin")
    assert outcome.ok
    lower = await dispatcher.fetch(params(max_security="OFFICIAL", deadline="5"))
    assert (decode(lower), lower.info.filters) == ([], {SECURITY_FILTER: 1})


# -- the can-access command ----------------------------------------------------------------------

# Classifications A < B < C; the label SLOW answers (true) only once $RELEASE exists. Every run
# appends its label to $RUNS.
SCRIPT = """
echo "$2" >> "$RUNS"
rank() { case "$1" in A) echo 1;; B) echo 2;; C) echo 3;; SLOW) echo 1;; *) echo 9;; esac; }
if [ "$2" = SLOW ]; then
  while [ ! -e "$RELEASE" ]; do sleep 0.02; done
fi
if [ "$(rank "$2")" -le "$(rank "$1")" ]; then echo true; else echo false; fi
"""


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("RELEASE", str(tmp_path / "release"))
    return tmp_path / "release"


@pytest.fixture
async def command_dispatcher(
    event_log: EmbeddedLog, tmp_path: Path, release: Path
) -> AsyncIterator[Dispatcher]:
    script = tmp_path / "can-access.sh"
    script.write_text(SCRIPT)
    check = CommandCheck(["/bin/sh", str(script)], timeout_seconds=600.0, concurrency=2)
    dispatcher = Dispatcher(event_log, SETTINGS, "test", security=check)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher
        nursery.cancel_scope.cancel()


async def test_a_slow_check_holds_back_only_the_events_it_decides(
    command_dispatcher: Dispatcher, release: Path, tmp_path: Path
) -> None:
    dispatcher = command_dispatcher
    await submit(
        dispatcher,
        labelled("slow-1", "SLOW"),
        labelled("a-1", "A"),
        labelled("c-1", "C"),
        labelled("slow-2", "SLOW"),
        labelled("b-1", "B"),
    )
    # Every pair is undecided at first: the fetch defers all five, checks each label once in
    # the background, and takes the jobs whose checks answered; SLOW's does not answer yet.
    first = await dispatcher.fetch(params(count="2", max_security="B", deadline="60"))
    assert sorted(shas(decode(first))) == sorted([sha("a-1"), sha("b-1")])
    assert first.info.filters in ({}, {SECURITY_FILTER: 1})  # C: denied, if decided by then
    (ks,) = dispatcher.keys()
    slow_offset = 0  # the first event in the log: parked, it holds the commit
    assert ks.lanes.deferred in (2, 3)  # both SLOW jobs, and C's if not decided yet
    tp = TopicPartition("azul.test.samples.binary.sourced", 0)
    assert ks.lanes.cursors[Lane.HISTORIC][tp].committed == slow_offset
    await trio.Path(release).touch()
    second = await dispatcher.fetch(params(count="2", max_security="B", deadline="60"))
    assert sorted(shas(decode(second))) == sorted([sha("slow-1"), sha("slow-2")])
    assert ks.lanes.deferred == 0
    runs = sorted((await trio.Path(tmp_path / "runs").read_text()).split())
    assert runs == ["A", "B", "C", "SLOW"]  # one run per (clearance, label) pair
    # Decided pairs are cached: a second key with the same clearance runs nothing.
    other = await dispatcher.fetch(params("Other", count="4", max_security="B", deadline="60"))
    assert len(decode(other)) == 4
    assert sorted((await trio.Path(tmp_path / "runs").read_text()).split()) == runs


class Raising:
    """A checker that raises (a bug: checkers deny what they cannot decide) until told not to."""

    def __init__(self) -> None:
        self.fixed = False
        self.asked = 0

    def check_clearance(self, clearance: str) -> None:
        pass

    def decided(self, clearance: str, label: EventLabel) -> bool | None:
        return True if self.fixed else None

    async def can_access(self, clearance: str, label: EventLabel) -> bool:
        self.asked += 1
        await trio.lowlevel.checkpoint()
        if not self.fixed:
            raise RuntimeError("checker bug")
        return True


async def test_a_failing_checker_is_asked_again_later_not_at_once(
    event_log: EmbeddedLog, autojump_clock: trio.testing.MockClock
) -> None:
    check = Raising()
    dispatcher = Dispatcher(event_log, SETTINGS, "test", security=check)
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        await submit(dispatcher, labelled("x", "OFFICIAL"))
        got = await dispatcher.fetch(params(max_security="OFFICIAL", deadline="5"))
        assert decode(got) == []
        # At 0, 1, 2, 3 and 4 s of the 5 s poll (RETRY_SECONDS apart), not in a hot loop.
        assert check.asked == 5
        check.fixed = True
        (job,) = decode(await dispatcher.fetch(params(max_security="OFFICIAL", deadline="5")))
        assert job.entity.sha256 == sha("x")
        nursery.cancel_scope.cancel()


async def test_an_unlabelled_event_gets_the_default_label(
    event_log: EmbeddedLog, autojump_clock: trio.testing.MockClock
) -> None:
    dispatcher = Dispatcher(event_log, SETTINGS, "test", default_label="SECRET")
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        await submit(dispatcher, make_binary("unlabelled"), labelled("official", "OFFICIAL"))
        low = await dispatcher.fetch(params(count="5", max_security="OFFICIAL"))
        assert (shas(decode(low)), low.info.filters) == ([sha("official")], {SECURITY_FILTER: 1})
        nursery.cancel_scope.cancel()
