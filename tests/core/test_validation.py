"""Per-event checks (`core.validation`): each rule, and that a hash repeated along a path is held
to the same rule wherever it appears."""

from __future__ import annotations

import pytest

from azuld.core.validation import check_binary, check_event
from azuld.models.events import Author, Datastream, PathNode, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary, sha

BAD = "A" * 64  # uppercase: not a valid sha256 here


def test_a_valid_event_passes() -> None:
    assert check_binary(make_binary("ok", depth=3)) is None


@pytest.mark.parametrize("bad", ["", BAD, sha("x")[:-1], sha("x") + "\n"])
def test_every_place_of_a_sha256_is_checked(bad: str) -> None:
    first = make_binary("p", depth=2)
    first.source.path[0].sha256 = bad
    assert check_binary(first) == "'source.path[0].sha256' must be 64 lowercase hex characters"
    last = make_binary("p", depth=2)
    last.source.path[1].sha256 = bad
    assert check_binary(last) == "'source.path[1].sha256' must be 64 lowercase hex characters"
    entity = make_binary("p", depth=2)
    entity.entity.sha256 = bad
    assert check_binary(entity) == "'entity.sha256' must be 64 lowercase hex characters"
    stream = make_binary("p", streams=[Datastream(label="content", sha256=bad)])
    assert check_binary(stream) == (
        "'entity.datastreams[0].sha256' must be 64 lowercase hex characters"
    )


def test_a_repeated_sha256_is_still_valid() -> None:
    # An enriched result: its last node and its entity name the same binary as its parent.
    event = make_binary("r", depth=2, action="enriched", streams=[])
    digest = event.entity.sha256
    event.source.path[0].sha256 = digest
    event.source.path[1] = PathNode(
        author=Author(name="P"), action="enriched", sha256=digest, timestamp=NOW
    )
    assert check_binary(event) is None


def test_label_rules_with_and_without_datastreams() -> None:
    assert check_binary(make_binary("e", action="enriched", streams=[])) is None
    assert check_binary(make_binary("s", streams=[])) == (
        "a 'sourced' event must have a 'content' datastream"
    )
    assert check_binary(make_binary("e", action="enriched")) == (
        "an 'enriched' event must not have datastreams"
    )
    assert check_binary(make_binary("m", action="mapped")) == (
        "a 'mapped' event must not have a 'content' datastream"
    )
    assert check_binary(make_binary("a", action="augmented")) == (
        "an 'augmented' event needs a datastream besides 'content'"
    )
    assert check_binary(make_binary("m", action="mapped", streams=[])) is None


def test_a_status_names_its_invalid_result() -> None:
    result = make_binary("r")
    result.entity.sha256 = BAD
    job = make_binary("in")
    job.dequeued = "j"
    event = StatusEvent(
        timestamp=NOW,
        author=Author(name="P"),
        entity=StatusEntity(
            input=job,
            status="completed",
            results=[make_binary("fine"), result],
        ),
    )
    assert check_event(event) == (
        "entity.results[1]: 'entity.sha256' must be 64 lowercase hex characters"
    )
