"""The replay cache's pure half: keys, the entries a post keeps, bounded LRU."""

from __future__ import annotations

from azuld.core.replay import CacheEntry, ReplayCache, cache_entries
from azuld.models.events import Author, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary, sha


def status(name: str, value: str, *, runtime: float = 5.0, message: str = "") -> StatusEvent:
    return StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=Author(name="P", version="1", category="plugin"),
        entity=StatusEntity(
            input=make_binary(name),
            status=value,  # type: ignore[arg-type]
            runtime=runtime,
            message=message,
        ),
    )


def test_replay_keys_are_their_prefix_and_the_sha256() -> None:
    prefix = ReplayCache.key_prefix("P", "1.0", "abc")
    assert (
        ReplayCache.key("P", "1.0", "abc", sha("a")) == prefix + sha("a") == f"P|1.0|abc|{sha('a')}"
    )


def test_only_completed_runs_long_enough_and_not_replayed_are_kept() -> None:
    statuses = [
        status("kept", "completed"),
        status("empty", "completed-empty"),
        status("short", "completed", runtime=0.5),
        status("failed", "error-exception"),
        status("again", "completed", message="replayed from the result cache: ..."),
    ]
    entries = cache_entries(statuses, {("P", "1"): "d"}, min_runtime_seconds=1.0)
    assert [entry.sha256 for entry in entries] == [sha("kept"), sha("empty")]
    assert entries[0].key == ReplayCache.key("P", "1", "d", sha("kept"))


def test_the_cache_holds_at_most_its_bytes_least_recently_used_out_first() -> None:
    def entry(name: str) -> bytes:
        return ReplayCache.encode(
            CacheEntry(
                key=name,
                plugin="P",
                version="1",
                sha256=sha(name),
                status="completed",
                runtime=1.0,
                input_depth=1,
                input_source="s",
                job_id="j",
                results=[],
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
