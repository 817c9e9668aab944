"""Fetch query parsing: defaults, caps, the plugin key and every 422."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import JobRef, Lane
from azuld.core.jobids import JobIds
from azuld.core.params import ConsumeParams, parse_bool, parse_consume_params
from azuld.errors import Unprocessable
from azuld.models.events import BINARY_ACTIONS, MODELS
from tests.conftest import query


def parse(model: str = "binary", active: bool = True, **params: Any) -> ConsumeParams:
    params.setdefault("name", "Entropy")
    params.setdefault("version", "2024.01.01")
    return parse_consume_params(
        model,
        active,
        query(**params),
        default_deadline_seconds=5,
        max_deadline_seconds=60,
        max_count=1000,
    )


def test_runner_default_key() -> None:
    params = parse(r_expedite=True, r_live=True, r_historic=True, r_action=["sourced", "extracted"])
    assert params.key == "Entropy-2024.01.01-binary-allsrc-sourced.extracted-ELH"
    assert params.lanes == ("expedite", "live", "historic")
    assert params.count == 1
    assert params.deadline_seconds == 5


def test_key_includes_sources_and_debug() -> None:
    params = parse(r_live=True, r_source=["a", "b"], debug=True)
    assert params.key == "Entropy-2024.01.01-binary-a.b-alltype-LD"


def test_non_binary_key_has_no_source_part() -> None:
    assert parse("status", active=False, r_live=True).key == "Entropy-2024.01.01-status-L"


def test_an_ephemeral_watcher_has_a_key_of_its_own_and_a_start() -> None:
    watcher = parse("status", active=False, r_live=True, ephemeral=True, since="1765000000.5")
    assert watcher.key == "Entropy-2024.01.01-status-LW"
    assert (watcher.ephemeral, watcher.since, watcher.last) == (True, 1765000000.5, None)
    back = parse("status", active=False, r_live=True, ephemeral=True, last="20")
    assert (back.since, back.last) == (None, 20)
    durable = parse("status", active=False, r_live=True)
    assert (durable.ephemeral, durable.since, durable.last) == (False, None, None)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ephemeral": True}, "only for passive fetches"),
        ({"active": False, "since": "10"}, "since and last need ephemeral=true"),
        ({"active": False, "last": "10"}, "since and last need ephemeral=true"),
        ({"active": False, "ephemeral": True, "since": "yesterday"}, "since='yesterday'"),
        ({"active": False, "ephemeral": True, "since": "nan"}, "since='nan'"),
        ({"active": False, "ephemeral": True, "since": "-1"}, "since='-1'"),
        ({"active": False, "ephemeral": True, "last": "-1"}, "last=-1 must not be negative"),
        ({"active": False, "ephemeral": True, "last": "x"}, "last='x' is not an integer"),
        ({"active": False, "ephemeral": True, "last": "1", "since": "1"}, "not both"),
    ],
)
def test_bad_watch_parameters(params: dict[str, Any], message: str) -> None:
    active = params.pop("active", True)
    with pytest.raises(Unprocessable) as info:
        parse("status", active=active, r_live=True, **params)
    assert message in info.value.detail


@pytest.mark.parametrize(("raw", "expected"), [("0", 1), ("-4", 1), ("7", 7), ("5000", 1000)])
def test_count_is_clamped(raw: str, expected: int) -> None:
    assert parse(r_live=True, count=raw).count == expected


@pytest.mark.parametrize(("raw", "expected"), [("0", 60.0), ("10", 10.0), ("600", 60.0)])
def test_deadline_zero_means_the_cap(raw: str, expected: float) -> None:
    assert parse(r_live=True, deadline=raw).deadline_seconds == expected


def test_r_content_implies_actions() -> None:
    assert parse(r_live=True, r_content=True).r_action == ("sourced", "extracted")


def test_r_streams_parsing() -> None:
    params = parse(r_live=True, r_streams=["content,executable/,document/", "text,", "*"])
    assert params.stream_map == {
        "content": ("executable/", "document/"),
        "text": (),
        "*": (),
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "requires at least one of r-expedite, r-live or r-historic"),
        ({"r_live": "maybe"}, "r-live='maybe' is not a boolean"),
        ({"r_live": True, "count": "x"}, "count='x' is not an integer"),
        ({"r_live": True, "deadline": "-1"}, "must not be negative"),
        ({"r_live": True, "r_action": ["bogus"]}, "r-action='bogus' is not a binary action"),
        ({"r_live": True, "d_action": ["bogus"]}, "d-action='bogus' is not a binary action"),
        ({"r_live": True, "r_content": True, "r_action": ["sourced"]}, "cannot be combined"),
        (
            {"r_live": True, "r_under_content_size": "10", "r_over_content_size": "20"},
            "larger than r-under-content-size",
        ),
        ({"r_live": True, "r_source": ["a.b"]}, "not a valid source name"),
        ({"r_live": True, "name": ""}, "name='' is required"),
        ({"r_live": True, "name": "../x"}, "name='../x'"),
        ({"r_live": True, "avro_format": "yes"}, "avro-format='yes' is not a boolean"),
        ({"r_live": True, "r_streams": [",text/"]}, "needs a label"),
    ],
)
def test_bad_parameters(params: dict[str, Any], message: str) -> None:
    with pytest.raises(Unprocessable) as info:
        parse(**params)
    assert message in info.value.detail
    assert info.value.http_status == 422


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_avro_format_is_a_go_bool_and_not_part_of_the_key(value: str) -> None:
    plain = parse(r_live=True)
    avro = parse(r_live=True, avro_format=value)
    assert (plain.avro, avro.avro) == (False, True)
    assert avro.key == plain.key
    assert parse(r_live=True, avro_format="false").avro is False


@pytest.mark.parametrize("model", ["delete", "download", "insert", "retrohunt"])
def test_avro_format_for_a_model_without_schemas_is_a_422(model: str) -> None:
    assert parse(model, r_live=True).avro is False
    with pytest.raises(Unprocessable) as info:
        parse(model, r_live=True, avro_format=True)
    assert f"no Avro schema for model {model!r}" in info.value.detail
    assert "avro-format=false" in info.value.detail


def test_expedite_only_for_binary() -> None:
    with pytest.raises(Unprocessable, match="only valid for model binary"):
        parse("status", r_expedite=True)


def test_unknown_model() -> None:
    with pytest.raises(Unprocessable, match="unknown model"):
        parse("nonsense", r_live=True)


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_parse_bool_true(value: str) -> None:
    assert parse_bool("x", value) is True


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False"])
def test_parse_bool_false(value: str) -> None:
    assert parse_bool("x", value) is False


# -- properties (Hypothesis) -----------------------------------------------------------------------

# No example database: keep runs free of files in the working tree. A failure prints its minimal
# example (and a `@reproduce_failure` blob) all the same.
PLAIN = settings(max_examples=100, database=None)

IDS = JobIds(b"property tests")
SRC = "azul.t.s.binary.sourced"
PLUGIN_PART = st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20)

PARAM_NAMES = [
    "name",
    "version",
    "count",
    "deadline",
    "avro-format",
    "r-expedite",
    "r-live",
    "r-historic",
    "r-source",
    "r-action",
    "d-action",
    "r-content",
    "r-under-content-size",
    "r-over-content-size",
    "r-streams",
    "d-self",
    "max-security",
    "reset",
    "debug",
    "deployment_key",
    "historic-share",
]
PARAM_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["true", "false", "1", "0", "t", "", "-1", ".", "Entropy", "1.0"]),
    st.sampled_from(["0.5", "nan", "inf", "-0", "1e-300", "1e400", "0x10", " 7 ", "1_0"]),
    st.sampled_from(BINARY_ACTIONS),
    st.integers(-(2**70), 2**70).map(str),
    st.text(st.sampled_from("0123456789"), min_size=300, max_size=400),  # past float's range
)
NUMBERS = st.integers(0, 10**6).map(str)
FLAGS = st.sampled_from(["true", "false", "1", "0", "T", "F"])
# Mostly plausible values, so that many queries get through to the checks on the result.
PLAUSIBLE = {
    "name": PLUGIN_PART,
    "version": PLUGIN_PART,
    "count": NUMBERS,
    "deadline": NUMBERS,
    "r-action": st.sampled_from(BINARY_ACTIONS),
    "d-action": st.sampled_from(BINARY_ACTIONS),
    "r-under-content-size": NUMBERS,
    "r-over-content-size": NUMBERS,
    "r-streams": st.text(max_size=12),
    "max-security": st.text(max_size=8),
    "deployment_key": st.text(max_size=8),
    "historic-share": st.sampled_from(["0", "0.25", "1"]),
}
PLAUSIBLE_PAIRS = st.sampled_from(PARAM_NAMES).flatmap(
    lambda name: st.tuples(st.just(name), PLAUSIBLE.get(name, FLAGS))
)
ANY_PAIRS = st.tuples(st.sampled_from(PARAM_NAMES) | st.text(max_size=8), PARAM_VALUES)
QUERY_PAIRS = st.one_of(PLAUSIBLE_PAIRS, PLAUSIBLE_PAIRS, ANY_PAIRS)  # 2:1 plausible
QUERIES = st.lists(QUERY_PAIRS, max_size=10)
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "._+-")
LANE_FLAGS = st.lists(
    st.tuples(st.sampled_from(["r-live", "r-historic", "r-expedite"]), st.just("true")),
    min_size=1,
    max_size=3,
)


def parse_query(model: str, active: bool, pairs: list[tuple[str, str]]) -> ConsumeParams:
    return parse_consume_params(
        model,
        active,
        pairs,
        default_deadline_seconds=5,
        max_deadline_seconds=60,
        max_count=1000,
    )


@PLAIN
@given(
    model=st.one_of(st.just("binary"), st.sampled_from(MODELS), st.text(max_size=8)),
    active=st.booleans(),
    lane_flags=LANE_FLAGS,
    sources=st.lists(st.text(min_size=1, max_size=6), max_size=3),
    query=QUERIES,
)
def test_parse_consume_params_fails_only_with_unprocessable(
    model: str,
    active: bool,
    lane_flags: list[tuple[str, str]],
    sources: list[str],
    query: list[tuple[str, str]],
) -> None:
    pairs = [("name", "Entropy"), *lane_flags, *(("r-source", s) for s in sources), *query]
    try:
        params = parse_query(model, active, pairs)
    except Unprocessable:
        return
    assert 1 <= params.count <= 1000
    assert 0 < params.deadline_seconds <= 60
    assert params.lanes
    assert params.lanes == tuple(lane for lane in Lane.ORDER if lane in params.lanes)
    share = params.historic_share
    assert share is None or 0 <= share <= 1
    # The key names consumer groups and travels inside job ids: only the safe characters.
    assert set(params.key) <= KEY_CHARS, params.key
    ref = JobRef(params.key, params.lanes[0], TopicPartition(SRC, 0), 0)
    assert IDS.parse(IDS.make(ref, 0)) == (ref, 0)


@pytest.mark.parametrize("sources", [["|"], ["samples", "x|y"]])
def test_r_source_cannot_break_job_ids(sources: list[str]) -> None:
    """A source with '|' in the plugin key would give every job id of the key an extra field
    (`JobIds.parse` would say `None`): such r-source values are refused."""
    pairs = [("name", "a"), ("r-live", "true"), *(("r-source", s) for s in sources)]
    try:
        params = parse_query("binary", True, pairs)
    except Unprocessable:
        return  # rejected: fixed
    ref = JobRef(params.key, Lane.LIVE, TopicPartition(SRC, 0), 0)
    assert IDS.parse(IDS.make(ref, 0)) == (ref, 0)
