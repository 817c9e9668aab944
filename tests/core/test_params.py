"""Fetch query parsing: defaults, caps, the plugin key and every 422."""

from __future__ import annotations

from typing import Any

import pytest

from azuld.core.params import ConsumeParams, parse_bool, parse_consume_params
from azuld.errors import Unprocessable
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
