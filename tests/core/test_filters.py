"""Every consumer rule of reference section 6, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from azuld.core.filters import skip_reason
from azuld.core.params import parse_consume_params
from azuld.models.events import Author, Datastream, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary, query, sha

R = "FilterConsumerRules-"


def params(active: bool = True, **extra: Any) -> Any:
    return parse_consume_params(
        "binary",
        active,
        query(name="P", version="1", r_live=True, **extra),
        default_deadline_seconds=5,
        max_deadline_seconds=60,
        max_count=1000,
    )


def streams(*specs: tuple[str, int, str]) -> list[Datastream]:
    return [
        Datastream(label=label, sha256=sha(f"{label}{i}"), size=size, file_format=fmt)  # type: ignore[arg-type]
        for i, (label, size, fmt) in enumerate(specs)
    ]


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = [
    # (case, event overrides, query, expected reason)
    ("no filters", {}, {}, None),
    ("r-source match", {"source": "a"}, {"r_source": ["a", "b"]}, None),
    ("r-source miss", {"source": "c"}, {"r_source": ["a", "b"]}, R + "reject_source"),
    ("r-action match", {"action": "extracted"}, {"r_action": ["sourced", "extracted"]}, None),
    (
        "r-action miss",
        {"action": "augmented", "streams": streams(("content", 5, "x"), ("text", 1, "t"))},
        {"r_action": ["sourced"]},
        R + "reject_event_type",
    ),
    ("d-action drop", {"action": "sourced"}, {"d_action": ["sourced"]}, R + "reject_event_type"),
    ("d-action other", {"action": "sourced"}, {"d_action": ["extracted"]}, None),
    ("r-content ok", {}, {"r_content": True}, None),
    (
        "r-content wrong action",
        {"action": "mapped", "streams": []},
        {"r_content": True},
        R + "reject_event_type",
    ),
    ("d-self drops own", {"author": "P"}, {"d_self": True}, R + "reject_self"),
    ("d-self keeps others", {"author": "Q"}, {"d_self": True}, None),
    ("under size ok", {"size": 100}, {"r_under_content_size": 100}, None),
    (
        "under size too large",
        {"size": 101},
        {"r_under_content_size": 100},
        R + "reject_content_too_large",
    ),
    ("over size ok", {"size": 100}, {"r_over_content_size": 100}, None),
    (
        "over size too small",
        {"size": 99},
        {"r_over_content_size": 100},
        R + "reject_content_too_small",
    ),
    (
        "size filter needs content",
        {"action": "mapped", "streams": streams(("text", 5, "t"))},
        {"r_under_content_size": 100},
        R + "reject_no_content",
    ),
    (
        "r-streams prefix match",
        {"file_format": "executable/windows/pe32"},
        {"r_streams": ["content,executable/,document/"]},
        None,
    ),
    (
        "r-streams prefix miss",
        {"file_format": "text/plain"},
        {"r_streams": ["content,executable/,document/"]},
        R + "reject_file_format",
    ),
    ("r-streams any format", {"file_format": "text/plain"}, {"r_streams": ["content,"]}, None),
    (
        "r-streams unknown label",
        {"streams": streams(("content", 5, "t"), ("text", 5, "t")), "action": "augmented"},
        {"r_streams": ["content,"]},
        R + "reject_stream",
    ),
    (
        "r-streams wildcard",
        {"streams": streams(("content", 5, "t"), ("text", 5, "t")), "action": "augmented"},
        {"r_streams": ["*,"]},
        None,
    ),
    (
        "r-streams all labels present",
        {"streams": streams(("content", 5, "t"), ("text", 5, "t")), "action": "augmented"},
        {"r_streams": ["content,", "text,"]},
        None,
    ),
    (
        "r-streams label missing",
        {"streams": streams(("content", 5, "t"))},
        {"r_streams": ["content,", "text,"]},
        R + "reject_stream",
    ),
    # Go counts streams here (quirk 15): two content streams must not stand in for `text`.
    (
        "r-streams counts labels not streams",
        {"streams": streams(("content", 5, "t"), ("content", 6, "t"))},
        {"r_streams": ["content,", "text,"]},
        R + "reject_stream",
    ),
    ("depth 10 ok when active", {"depth": 10}, {}, None),
    ("depth 11 too deep when active", {"depth": 11}, {}, "FilterTooDeep-too_deep"),
]


@pytest.mark.parametrize(
    ("case", "event_args", "query_args", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_binary_rules(
    case: str, event_args: dict[str, Any], query_args: dict[str, Any], expected: str | None
) -> None:
    event = make_binary(case.replace(" ", "-"), **event_args)
    assert skip_reason(event, params(**query_args)) == expected


def test_passive_depth_is_one_deeper() -> None:
    assert skip_reason(make_binary(depth=11), params(active=False)) is None
    assert skip_reason(make_binary(depth=12), params(active=False)) == "FilterTooDeep-too_deep"


def test_status_events_are_judged_on_their_input() -> None:
    status = StatusEvent(
        timestamp=NOW,
        author=Author(name="Entropy"),
        entity=StatusEntity(input=make_binary(source="c"), status="completed"),
    )
    assert skip_reason(status, params(r_source=["a"])) == R + "reject_source"
    assert skip_reason(status, params(r_source=["c"])) is None
    assert skip_reason(status, params(d_self=True)) is None
    # Stream rules do not apply to statuses.
    assert skip_reason(status, params(r_streams=["text,"])) is None


def test_other_models_always_pass() -> None:
    assert skip_reason(None, params(r_source=["a"])) is None


def test_rule_order_source_before_action() -> None:
    event = make_binary(source="c", action="extracted")
    assert skip_reason(event, params(r_source=["a"], r_action=["sourced"])) == R + "reject_source"
