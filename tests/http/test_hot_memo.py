"""`azuld.http.hot`'s memos of parsed queries and fetch parameters: shared, correct, bounded."""

from __future__ import annotations

import pytest

from azuld.errors import Unprocessable
from azuld.http import Services, create_app
from azuld.http.hot import _MEMO_ENTRIES, _MEMO_MAX_QUERY_BYTES, HotRoutes, _Memo

QUERY = b"name=P&version=1&count=2&r-live=true&r-action=sourced&r-source=a"


def hot_routes(services: Services) -> HotRoutes:
    hot = create_app(services).asgi_app
    assert isinstance(hot, HotRoutes)
    return hot


def test_memo_forgets_its_oldest_entry_past_its_limit() -> None:
    memo: _Memo[int, str] = _Memo(3)
    for key in range(5):
        memo.put(key, str(key))
    assert len(memo) == 3
    assert [memo.get(key) for key in range(5)] == [None, None, "2", "3", "4"]


async def test_a_repeated_query_is_parsed_once(services: Services) -> None:
    hot = hot_routes(services)
    first = hot.query(QUERY)
    assert hot.query(QUERY) is first
    assert first.get("count") == "2"
    assert list(first.getlist("r-source")) == ["a"]
    params = hot.consume_params("binary", True, first)
    assert hot.consume_params("binary", True, first) is params
    assert (params.name, params.count, params.r_source) == ("P", 2, ("a",))
    # The model and mode are part of what is remembered.
    passive = hot.consume_params("binary", False, first)
    assert passive is not params
    assert not passive.active


async def test_invalid_fetch_params_are_refused_every_time(services: Services) -> None:
    hot = hot_routes(services)
    query = hot.query(b"name=P&r-live=maybe")
    for _ in range(2):
        with pytest.raises(Unprocessable):
            hot.consume_params("binary", True, query)
    assert len(hot._consume_params) == 0


async def test_memos_are_bounded(services: Services) -> None:
    hot = hot_routes(services)
    for index in range(_MEMO_ENTRIES + 50):
        query = hot.query(b"name=P%d&r-live=true" % index)
        hot.consume_params("binary", True, query)
    assert len(hot._queries) == _MEMO_ENTRIES
    assert len(hot._consume_params) == _MEMO_ENTRIES
    # A query longer than the limit is parsed, and not kept.
    long_query = b"name=P&r-live=true&pad=" + b"x" * _MEMO_MAX_QUERY_BYTES
    assert hot.query(long_query) is not hot.query(long_query)
    assert hot.query(long_query).get("name") == "P"
