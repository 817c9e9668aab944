"""The generated Avro reader's memo of small records (`azuld.models.avro_fast.MEMOS`): the same
bytes give the struct read before, any other bytes are read, and the memo stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from azuld.core.posts import prepare_post
from azuld.models import avro, avro_fast
from azuld.models.events import Author, PluginEvent, StatusEvent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "go-avro"
STATUS_BODY = (FIXTURES / "04-request.bin").read_bytes()  # the Go entropy plugin's status


@pytest.fixture(autouse=True)
def empty_memos() -> Iterator[None]:
    for memo in avro_fast.MEMOS.values():
        memo.clear()
    yield
    for memo in avro_fast.MEMOS.values():
        memo.clear()


def go_status() -> StatusEvent:
    (status,) = avro.decode_posted("status", STATUS_BODY)
    assert isinstance(status, StatusEvent)
    return status


def with_author(author: Author) -> bytes:
    """The Go status, signed by `author` (the status's own author only)."""
    status = go_status()
    status.author = author
    return avro.encode_events("status", [status])


def test_the_same_bytes_give_the_struct_read_before() -> None:
    first = go_status()
    second = go_status()
    assert second == first
    assert second.author is first.author  # statuses of one plugin share its author
    assert second.entity.input.flags is first.entity.input.flags
    # Within one status: each result's path repeats the input's path, node for node.
    result = first.entity.results[0]
    assert result.source.path[0] is first.entity.input.source.path[0]
    assert result.source.path[1] is not result.source.path[0]


def test_bytes_that_differ_after_the_key_are_read_not_remembered() -> None:
    """The key (the record's first bytes) only finds a candidate: a record that shares it but
    differs later, even in its last byte, is read from its own bytes."""
    before = Author(name="Tampered", version="1", category="plugin", security="AB")
    after = Author(name="Tampered", version="1", category="plugin", security="AC")
    (one,) = avro.FAST.read("status", with_author(before))
    tampered = with_author(after)
    (two,) = avro.FAST.read("status", tampered)  # the fast reader alone: no careful fallback
    assert one.author == before
    assert two.author == after
    assert [two] == avro._decode_carefully("status", tampered)


def test_a_record_cut_short_by_the_end_of_the_body_is_not_remembered() -> None:
    """The reader checks bounds once, at the end: a record whose last string runs past the end
    of a truncated body reads short, and must not be kept as if those were its bytes."""
    author = Author(name="Truncated", version="1", category="plugin", security="ABCDEFGH")
    body = avro.encode_events("plugin", [_plugin(author)])
    cut = body[: body.index(b"ABCDEFGH") + 4]
    with pytest.raises(avro_fast.NotFast):
        avro.FAST.read("plugin", cut)
    remembered = [struct for _, struct in avro_fast.MEMOS.get("EventAuthor", {}).values()]
    assert all(struct.security != "ABCD" for struct in remembered)
    (event,) = avro.decode_posted("plugin", body)
    assert event.author == author


def test_the_memo_is_bounded_in_entries_and_record_size() -> None:
    for index in range(avro_fast.MEMO_MAX_ENTRIES + 50):
        author = Author(name=f"plugin-{index:05d}", version="1", category="plugin")
        avro.decode_posted("status", with_author(author))
    assert 0 < len(avro_fast.MEMOS["EventAuthor"]) <= avro_fast.MEMO_MAX_ENTRIES
    big = Author(name="big", security="x" * avro_fast.MEMO_MAX_RECORD_BYTES)
    (event,) = avro.decode_posted("status", with_author(big))
    assert event.author == big
    remembered = [struct for _, struct in avro_fast.MEMOS["EventAuthor"].values()]
    assert big not in remembered
    for memo in avro_fast.MEMOS.values():
        assert all(len(data) <= avro_fast.MEMO_MAX_RECORD_BYTES for data, _ in memo.values())


def test_what_a_post_does_with_its_events_leaves_the_remembered_structs_alone() -> None:
    """Remembered structs are shared by every event that repeats their bytes: storing a status
    (kafka keys, tracking fields, results' flags and settings) must change none of them."""
    for _ in range(2):
        prepare_post("status", STATUS_BODY, prefix="memo", max_events=10, avro=True)
    remembered = avro.decode_posted("status", STATUS_BODY)  # from the memos, where it can
    assert sum(len(memo) for memo in avro_fast.MEMOS.values()) > 0
    for memo in avro_fast.MEMOS.values():
        memo.clear()
    fresh = avro.decode_posted("status", STATUS_BODY)
    assert msgspec.json.encode(remembered) == msgspec.json.encode(fresh)
    assert remembered == avro._decode_carefully("status", STATUS_BODY)


def _plugin(author: Author) -> PluginEvent:
    (event,) = avro.decode_posted("plugin", (FIXTURES / "01-request.bin").read_bytes())
    assert isinstance(event, PluginEvent)
    event.author = author
    return event
