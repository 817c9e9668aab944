"""The replay cache's pure half: keys, what a post's statuses add (pending multiplugin statuses,
entries of whole jobs), the statuses of a cached answer, and the bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from azuld.core.replay import (
    CachedStatus,
    CacheEntry,
    CacheRules,
    PendingStatuses,
    ReplayCache,
    cache_updates,
    replay_statuses,
    settings_digest,
)
from azuld.models.events import Author, BinaryEvent, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary, sha

JOB_ID = "azd1|P-1|live|t|0|5|0"


def job(name: str = "archive", **settings: str) -> BinaryEvent:
    event = make_binary(name)
    event.dequeued = JOB_ID
    event.source.settings = settings
    return event


def status(
    author: str,
    value: str,
    *,
    input: BinaryEvent | None = None,
    runtime: float = 5.0,
    message: str = "",
    results: list[BinaryEvent] | None = None,
) -> StatusEvent:
    return StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name=author, version="1", category="plugin"),
        entity=StatusEntity(
            input=input or job(),
            status=value,  # type: ignore[arg-type]
            runtime=runtime,
            message=message,
            results=results or [],
        ),
    )


def member(name: str) -> BinaryEvent:
    """A child the job found: the job's path (depth 1) and one node more."""
    return make_binary(name, action="extracted", depth=2)


@dataclass
class Jobs:
    """`JobStatuses` as a test sets it up: `P` is the plugin key's plugin, and what was stored
    earlier comes from a `PendingStatuses`, unless the job is `unknown`."""

    pending: PendingStatuses = field(default_factory=lambda: PendingStatuses(1 << 20))
    unknown: set[str] = field(default_factory=set)

    def is_main(self, status: StatusEvent) -> bool:
        return status.author.name == "P"

    def earlier(self, status: StatusEvent) -> list[bytes] | None:
        job_id = status.entity.input.dequeued
        kept = self.pending.earlier(job_id)
        if job_id in self.unknown or kept is None:
            return None
        return list(kept.values())


def rules(jobs: Jobs, *, min_runtime_seconds: float = 1.0) -> CacheRules:
    return CacheRules(
        jobs=jobs, configs={("P", "1"): "cfg"}, min_runtime_seconds=min_runtime_seconds
    )


def stored(jobs: Jobs, *statuses: StatusEvent) -> list[CacheEntry]:
    """Post `statuses` (each alone, as a runner does) and keep what the post keeps; the
    entries they made."""
    entries = []
    for one in statuses:
        updates = cache_updates([one], rules(jobs))
        for job_id, author, value in updates.pending:
            jobs.pending.add(job_id, author, value)
        for job_id in updates.ended:
            jobs.pending.forget(job_id)
        entries += [msgspec.json.decode(value, type=CacheEntry) for _, value in updates.entries]
    return entries


def outcome(entry: CacheEntry) -> list[tuple[str, str, list[str]]]:
    return [(s.author.name, s.status, [r.entity.sha256 for r in s.results]) for s in entry.statuses]


def test_a_key_is_the_plugin_its_config_the_job_settings_and_the_binary() -> None:
    prefix = ReplayCache.key_prefix("P", "1.0", "abc")
    key = ReplayCache.key("P", "1.0", "abc", "", sha("a"))
    assert key == prefix + ReplayCache.job_key("", sha("a")) == f"P|1.0|abc||{sha('a')}"
    # Settings count whatever their order; none is the empty digest (most events, cheap).
    assert settings_digest({"a": "1", "b": "2"}) == settings_digest({"b": "2", "a": "1"})
    assert settings_digest({"passwords": "x"}) != settings_digest({"passwords": "y"})
    assert settings_digest({}) == ""
    assert len(settings_digest({"passwords": "x"})) == 16


def test_an_entry_holds_every_status_of_the_job_the_plugins_own_last() -> None:
    jobs = Jobs()
    entries = stored(
        jobs,
        status("P-sevenzip", "completed", results=[member("m1"), member("m2")]),
        status("P-rar", "opt-out"),
        status("P-heartbeats", "heartbeat"),  # in progress: not a status of the outcome
        status("P", "completed-empty", runtime=3.0),
    )
    (entry,) = entries
    assert outcome(entry) == [
        ("P-sevenzip", "completed", [sha("m1"), sha("m2")]),
        ("P-rar", "opt-out", []),
        ("P", "completed-empty", []),
    ]
    assert entry.key == ReplayCache.key("P", "1", "cfg", "", sha("archive"))
    assert (entry.plugin, entry.runtime, entry.job_id, entry.input_depth) == ("P", 3.0, JOB_ID, 1)
    assert len(jobs.pending) == 0  # the job ended: what was kept for it is gone


def test_statuses_in_one_post_make_one_entry() -> None:
    updates = cache_updates(
        [status("P-sevenzip", "completed", results=[member("m1")]), status("P", "completed")],
        rules(Jobs()),
    )
    ((_key, value),) = updates.entries
    entry = msgspec.json.decode(value, type=CacheEntry)
    assert [s.author.name for s in entry.statuses] == ["P-sevenzip", "P"]
    assert [job_id for job_id, _, _ in updates.pending] == [JOB_ID]
    assert updates.ended == [JOB_ID]


def test_the_job_settings_are_part_of_the_key() -> None:
    (entry,) = stored(Jobs(), status("P", "completed", input=job(passwords="infected")))
    digest = settings_digest({"passwords": "infected"})
    assert entry.key == ReplayCache.key("P", "1", "cfg", digest, sha("archive"))
    assert entry.key != ReplayCache.key("P", "1", "cfg", "", sha("archive"))


def test_no_entry_when_some_earlier_status_may_be_unknown() -> None:
    jobs = Jobs(unknown={JOB_ID})
    assert stored(jobs, status("P-sevenzip", "completed"), status("P", "completed")) == []


def test_no_entry_when_a_multiplugin_failed() -> None:
    # An error may not happen again: the job runs again rather than replay the failure.
    jobs = Jobs()
    failed = status("P-rar", "error-exception", message="Traceback ...")
    assert stored(jobs, status("P-sevenzip", "completed"), failed, status("P", "completed")) == []
    assert len(jobs.pending) == 0


@pytest.mark.parametrize(
    ("value", "runtime", "message"),
    [
        ("opt-out", 5.0, ""),
        ("error-exception", 5.0, ""),
        ("completed", 0.5, ""),  # cheaper to run again than to keep
        ("completed", 5.0, "replayed from the result cache: P 1 already finished ..."),
    ],
)
def test_only_completed_jobs_run_long_enough_and_not_replayed_are_kept(
    value: str, runtime: float, message: str
) -> None:
    jobs = Jobs()
    assert stored(jobs, status("P", value, runtime=runtime, message=message)) == []
    assert stored(jobs, status("P", "completed-with-errors"))  # and this one is


def test_replayed_statuses_are_every_cached_status_for_the_new_job() -> None:
    (entry,) = stored(
        Jobs(),
        status("P-sevenzip", "completed", results=[member("m1")], runtime=2.0),
        status("P-rar", "opt-out"),
        status("P", "completed-empty", runtime=3.0),
    )
    later = NOW.replace(year=NOW.year + 1)
    new = make_binary("archive", source="other", depth=2)
    new.source.settings = {"k": "v"}
    statuses = replay_statuses(entry, new, "azd1|P-1|live|u|1|9|0", later)
    assert [(s.author.name, s.entity.status) for s in statuses] == [
        ("P-sevenzip", "completed"),
        ("P-rar", "opt-out"),
        ("P", "completed-empty"),
    ]
    for replayed in statuses:
        assert replayed.entity.input.dequeued == "azd1|P-1|live|u|1|9|0"
        assert replayed.entity.input.source == new.source
        assert replayed.entity.message.startswith("replayed from the result cache: ")
        assert replayed.entity.runtime == 0.0
    assert f"job {JOB_ID}, 2 s" in statuses[0].entity.message
    # The member moves under the new event: its path is the new job's and the node it added.
    (moved,) = statuses[0].entity.results
    assert moved.source.name == "other"
    assert moved.source.settings == {"k": "v"}
    assert [node.sha256 for node in moved.source.path] == [
        *(node.sha256 for node in new.source.path),
        sha("m1"),
    ]
    assert moved.source.path[-1].timestamp == later == moved.timestamp


def test_pending_statuses_are_bounded_and_a_job_that_lost_some_is_unknown() -> None:
    value = b"x" * 100
    pending = PendingStatuses(max_bytes=250, max_dropped=2)
    pending.add("j1", "P-a", value)
    pending.add("j2", "P-a", value)
    pending.add("j1", "P-b", value)  # j1 was added to last: j2 goes
    assert (pending.earlier("j1"), pending.earlier("j2")) == ({"P-a": value, "P-b": value}, None)
    assert pending.size == 200
    pending.add("j2", "P-b", value)  # a job that lost statuses keeps none
    assert pending.earlier("j2") is None
    assert pending.earlier("j3") == {}  # no status kept: none stored
    pending.forget("j1")
    assert (len(pending), pending.size) == (0, 0)
    for job_id in ("j4", "j5", "j6"):  # each alone is past the bound
        pending.add(job_id, "P-a", b"y" * 300)
    assert pending.earlier("j5") is None
    assert pending.earlier("j6") is None
    # Only the last `max_dropped` jobs let go are remembered as such.
    assert pending.earlier("j2") == {} == pending.earlier("j4")


def test_the_cache_holds_at_most_its_bytes_least_recently_used_out_first() -> None:
    def entry(name: str) -> bytes:
        return ReplayCache.encode(
            CacheEntry(
                key=name,
                plugin="P",
                version="1",
                sha256=sha(name),
                runtime=1.0,
                input_depth=1,
                input_source="s",
                job_id="j",
                statuses=[CachedStatus(author=Author(name="P"), status="completed", runtime=1.0)],
            )
        )

    cache = ReplayCache.create(max_bytes=2 * len(entry("a")))
    cache.put(entry("a"))
    cache.put(entry("b"))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put(entry("c"))
    assert (cache.get("a") is not None, cache.get("b"), cache.get("c") is not None) == (
        True,
        None,
        True,
    )


def test_entries_of_the_old_format_are_not_kept() -> None:
    # Before multiplugins were kept, an entry held the plugin's own status only: replaying it
    # would lose what the multiplugins found.
    old = msgspec.json.encode(
        {
            "key": f"P|1|cfg|{sha('a')}",
            "plugin": "P",
            "version": "1",
            "sha256": sha("a"),
            "status": "completed-empty",
            "runtime": 5.0,
            "input_depth": 1,
            "input_source": "s",
            "job_id": "j",
            "results": [],
        }
    )
    cache = ReplayCache.create(max_bytes=1 << 20)
    assert cache.put(old) is None
    assert len(cache) == 0
