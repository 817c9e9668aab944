"""Wire models: decoded events are trees the cycle collector need not track."""

from __future__ import annotations

import gc

import msgspec

from azuld.models.events import BinaryEvent, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary


def test_decoded_events_are_not_tracked_by_the_cycle_collector() -> None:
    job = make_binary("a", depth=2)
    status = StatusEvent(
        model_version=6,
        timestamp=NOW,
        author=job.author,
        entity=StatusEntity(input=job, status="completed", results=[make_binary("b")]),
    )
    decoded = msgspec.json.decode(msgspec.json.encode(status), type=StatusEvent)
    assert decoded == status
    structs = [decoded, decoded.entity, decoded.entity.input, decoded.entity.input.source]
    structs += [*decoded.entity.input.source.path, decoded.entity.results[0].entity]
    assert not any(gc.is_tracked(s) for s in structs)
    # Still ordinary mutable structs.
    decoded.entity.input.dequeued = "job"
    assert msgspec.json.decode(msgspec.json.encode(decoded.entity.input), type=BinaryEvent).dequeued
