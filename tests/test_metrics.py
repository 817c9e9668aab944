"""`/metrics` stays bounded whatever names clients send: label values a client chooses (authors,
plugin names, plugin keys, methods, models) are kept for the first `server.metrics_max_label_values`
distinct ones and folded into `other` after that."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import trio
from quart.typing import TestClientProtocol as Client

from azuld.http import Services, create_app
from azuld.metrics import OTHER, Metrics
from azuld.service import open_services
from azuld.settings import Settings, load_settings
from tests.conftest import make_binary

LIMIT = 10


@pytest.fixture
def small_limit_settings(tmp_path: Path) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "data_dir": tmp_path / "data",
            "server.listen": "127.0.0.1:0",
            "server.metrics_max_label_values": LIMIT,
            "dispatch.default_deadline_seconds": 0.05,
        },
    )


@pytest.fixture
async def services_with_a_small_limit(
    small_limit_settings: Settings, nursery: trio.Nursery
) -> AsyncIterator[Services]:
    async with open_services(small_limit_settings) as svc:
        await nursery.start(svc.dispatcher.run)
        yield svc


@pytest.fixture
async def client(services_with_a_small_limit: Services) -> AsyncIterator[Client]:
    app = create_app(services_with_a_small_limit)
    async with app.test_app() as test_app:
        yield test_app.test_client()


def sample(svc: Services, name: str, **labels: str) -> float | None:
    return svc.metrics.registry.get_sample_value(name, labels)


async def test_5000_authors_do_not_grow_the_metrics(services: Services) -> None:
    """The issue's measure: 5,000 distinct authors took /metrics from 31 KB to 1.5 MB."""
    app = create_app(services)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        before = len(await (await client.get("/metrics")).get_data())
        for start in range(0, 5000, 1000):
            events = [
                make_binary(f"b{i}", author=f"author-{i}") for i in range(start, start + 1000)
            ]
            response = await client.post(
                "/api/v2/event?model=binary", data=msgspec.json.encode(events)
            )
            assert response.status_code == 200
        after = len(await (await client.get("/metrics")).get_data())
    limit = services.settings.server.metrics_max_label_values
    published = "azuld_events_published_total"
    assert sample(services, published, model="binary", author="author-0") == 1
    assert sample(services, published, model="binary", author=f"author-{limit - 1}") == 1
    assert sample(services, published, model="binary", author=f"author-{limit}") is None
    assert sample(services, published, model="binary", author=OTHER) == 5000 - limit
    # Bounded by the limit, not by the number of authors: about a line per kept author.
    assert after - before < limit * 200


async def test_plugin_names_and_keys_past_the_limit(
    client: Client, services_with_a_small_limit: Services
) -> None:
    svc = services_with_a_small_limit
    await client.post("/api/v2/event?model=binary", data=msgspec.json.encode([make_binary("x")]))
    names = [f"P{i}" for i in range(3 * LIMIT)]
    for name in names:
        response = await client.get(
            f"/api/v2/event/binary/active?name={name}&r-historic=true&deadline=0.05"
        )
        assert response.status_code == 200
    await client.get("/metrics")  # refreshes the per-key gauges
    fetched = "azuld_events_fetched_total"

    def key(name: str) -> str:
        return f"{name}--binary-allsrc-alltype-H"

    assert sample(svc, fetched, plugin="P0", plugin_key=key("P0"), model="binary") == 1
    assert (
        sample(svc, fetched, plugin=f"P{LIMIT}", plugin_key=key(f"P{LIMIT}"), model="binary")
        is None
    )
    assert sample(svc, fetched, plugin=OTHER, plugin_key=OTHER, model="binary") == 2 * LIMIT
    # Gauges of keys past the limit are not exported (a sum of them under `other` would be
    # a last-writer-wins mix); /api/azuld/v1/plugins has every key.
    gauges = [m for m in svc.metrics.registry.collect() if m.name == "azuld_leases_in_flight"]
    keys = {s.labels["plugin_key"] for s in gauges[0].samples}
    assert len(keys) == LIMIT
    assert OTHER not in keys
    folded = "azuld_metric_labels_folded_total"
    assert (sample(svc, folded, label="plugin") or 0) >= 2 * LIMIT
    assert (sample(svc, folded, label="plugin_key") or 0) >= 2 * LIMIT


@pytest.mark.parametrize("method", ["FOO", "BAR-1", "M-SEARCH"])
async def test_methods_a_client_invents_are_other(
    client: Client, services_with_a_small_limit: Services, method: str
) -> None:
    response = await client.open("/no/such/route", method=method)
    assert response.status_code in (404, 405)
    requests = "azuld_http_requests_total"
    labels = {"route": "unmatched", "code": str(response.status_code)}
    assert sample(services_with_a_small_limit, requests, method=OTHER, **labels) == 1
    assert sample(services_with_a_small_limit, requests, method=method, **labels) is None


def test_label_budgets_are_shared_per_label_and_fixed_sets_are_kept_to() -> None:
    metrics = Metrics(max_label_values=2)
    for name in ("a", "b", "c"):
        metrics.child(metrics.fetched, name, f"{name}-1", "binary").inc()
    metrics.finished.labels("b", "b-1", "completed").inc()  # `b` was kept: kept everywhere
    metrics.finished.labels("d", "d-1", "completed").inc()
    metrics.child(metrics.fetched, "a", "a-1", "no-such-model").inc()
    text = metrics.render().decode()
    assert 'azuld_events_fetched_total{model="binary",plugin="a",plugin_key="a-1"} 1.0' in text
    assert (
        'azuld_events_fetched_total{model="binary",plugin="other",plugin_key="other"} 1.0' in text
    )
    assert 'azuld_jobs_finished_total{plugin="b",plugin_key="b-1",state="completed"} 1.0' in text
    assert (
        'azuld_jobs_finished_total{plugin="other",plugin_key="other",state="completed"} 1.0' in text
    )
    assert 'azuld_events_fetched_total{model="other",plugin="a",plugin_key="a-1"} 1.0' in text
    assert 'plugin="c"' not in text


def test_the_child_cache_does_not_grow_with_folded_values() -> None:
    metrics = Metrics(max_label_values=2)
    for index in range(1000):
        metrics.child(metrics.published, "binary", f"author-{index}").inc()
    assert len(metrics._children) <= 4
