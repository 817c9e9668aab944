"""Prometheus metrics, one registry per running daemon (so tests can run several in a process).

Label values that clients choose are bounded, so that `/metrics` cannot be grown without end
(5,000 made-up authors once took it from 31 KB to 1.5 MB): plugin names, authors and plugin keys
are kept for the first `max_label_values` distinct values of each (`LabelBudget`, shared by every
metric with that label), and later ones are counted under `other` (gauges of later plugin keys
are not exported: a last-writer-wins mix under `other` would mislead; `/api/azuld/v1/plugins` has
every key). Models and HTTP methods outside the known sets are `other` too; routes are the route
table's rules (`unmatched` for the rest), statuses the app's own. Every value folded is counted in
`azuld_metric_labels_folded_total`.

Label names mean one thing everywhere: `plugin` is a plugin's name, `plugin_key` the whole plugin
key (name, version, model, filters and flags: what a consumer group is named after). A metric of
one plugin key carries both, so that `sum by (plugin)` adds up a plugin's versions. The process
collector adds `process_*` (RSS, CPU, open fds); counters have no `_created` twins.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from azuld.models.events import MODELS

__all__ = ["OTHER", "KnownValues", "LabelBudget", "Metrics"]

# A `_created` sample beside every counter and histogram doubles what is scraped for nothing.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# The value that stands for every value past a label's bound.
OTHER = "other"
# RFC 9110's methods; any other token a client sends is `other`.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


class _Bound(Protocol):
    name: str

    def admit(self, value: str) -> bool: ...


class LabelBudget:
    """The first `limit` distinct values of one label a client chooses, kept as they are."""

    __slots__ = ("_kept", "limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._kept: set[str] = set()

    def admit(self, value: str) -> bool:
        kept = self._kept
        if value in kept:
            return True
        if len(kept) < self.limit and value != OTHER:
            kept.add(value)
            return True
        return False


class KnownValues:
    """A label whose values are a known set (models): anything else is not kept."""

    __slots__ = ("name", "values")

    def __init__(self, name: str, values: Sequence[str]) -> None:
        self.name = name
        self.values = frozenset(values)

    def admit(self, value: str) -> bool:
        return value in self.values


class _Folding:
    """What the bounded metrics share: each label's bound (None: not bounded) and the counter
    of folded values."""

    def __init__(self, bounds: tuple[_Bound | None, ...], folded: Counter) -> None:
        self.bounds = bounds
        self.folded = folded

    def map(self, values: tuple[str, ...]) -> tuple[str, ...]:
        """`values` with every one its bound does not keep replaced by `OTHER`."""
        mapped = values
        for index, bound in enumerate(self.bounds):
            if bound is not None and not bound.admit(values[index]):
                self.folded.labels(bound.name).inc()
                mapped = (*mapped[:index], OTHER, *mapped[index + 1 :])
        return mapped


class _BoundedCounter(Counter):
    _folding: _Folding | None = None  # set on the parent metric; its children have none

    def labels(self, *values: Any, **named: Any) -> Any:
        folding = self._folding
        if folding is not None and values:
            values = folding.map(tuple(str(value) for value in values))
        return super().labels(*values, **named)


class _BoundedGauge(Gauge):
    """A gauge whose label sets past a bound are not exported (their sets go nowhere)."""

    _folding: _Folding | None = None
    _nowhere: Gauge | None = None

    def labels(self, *values: Any, **named: Any) -> Any:
        folding = self._folding
        if folding is not None and values:
            strings = tuple(str(value) for value in values)
            if folding.map(strings) != strings:
                return self._nowhere
        return super().labels(*values, **named)


class Metrics:
    """Every metric azuld exports, with the label values clients choose bounded (see above)."""

    def __init__(self, max_label_values: int = 500) -> None:
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.labels_folded = Counter(
            "azuld_metric_labels_folded_total",
            "Metric updates whose label value was past its bound (server.metrics_max_label_values"
            " for names), counted under `other` or, for gauges, not exported",
            ["label"],
            registry=r,
        )
        plugin = LabelBudget("plugin", max_label_values)
        author = LabelBudget("author", max_label_values)
        plugin_key = LabelBudget("plugin_key", max_label_values)
        model = KnownValues("model", MODELS)

        def counter(name: str, doc: str, labels: list[str], *bounds: _Bound | None) -> Any:
            metric = _BoundedCounter(name, doc, labels, registry=r)
            metric._folding = _Folding(bounds, self.labels_folded)
            return metric

        def gauge(name: str, doc: str, labels: list[str], *bounds: _Bound | None) -> Any:
            metric = _BoundedGauge(name, doc, labels, registry=r)
            metric._folding = _Folding(bounds, self.labels_folded)
            metric._nowhere = Gauge(name, doc, registry=None)  # its values go nowhere
            return metric

        ProcessCollector(registry=r)
        self.http_requests = Counter(
            "azuld_http_requests_total",
            "HTTP requests by route, method and status code",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_latency = Histogram(
            "azuld_http_request_duration_seconds",
            "HTTP request latency by route (long-polls included)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fetched = counter(
            "azuld_events_fetched_total",
            "Events handed to plugins",
            ["plugin", "plugin_key", "model"],
            plugin,
            plugin_key,
            model,
        )
        self.filtered = counter(
            "azuld_events_filtered_total",
            "Events skipped for a plugin, by filter",
            ["plugin", "plugin_key", "model", "filter"],
            plugin,
            plugin_key,
            model,
            None,
        )
        self.published = counter(
            "azuld_events_published_total",
            "Events stored, by model and author",
            ["model", "author"],
            model,
            author,
        )
        self.finished = counter(
            "azuld_jobs_finished_total",
            "Jobs ended, by plugin key and job state",
            ["plugin", "plugin_key", "state"],
            plugin,
            plugin_key,
            None,
        )
        self.not_stored = counter(
            "azuld_statuses_not_stored_total",
            "Final statuses acknowledged but not stored: their job's was already (a plugin that "
            "posted again, or a job offered again after its dispatcher died)",
            ["plugin"],
            plugin,
        )
        self.multiplugin_statuses = counter(
            "azuld_multiplugin_statuses_total",
            "Final statuses of a runner plugin's multiplugins (they do not end the job), by the "
            "plugin key and state",
            ["plugin", "plugin_key", "state"],
            plugin,
            plugin_key,
            None,
        )
        self.handed_over = Counter(
            "azuld_leases_handed_over_total",
            "Leases handed over with their partitions to another instance (given) or taken over "
            "from one (taken)",
            ["direction"],
            registry=r,
        )
        self.leases_expired = counter(
            "azuld_leases_expired_total",
            "Leases that ran out without a heartbeat or status",
            ["plugin", "plugin_key"],
            plugin,
            plugin_key,
        )
        self.in_flight = gauge(
            "azuld_leases_in_flight",
            "Jobs leased to plugins right now",
            ["plugin", "plugin_key"],
            plugin,
            plugin_key,
        )
        self.lag = gauge(
            "azuld_lag_events",
            "Events not yet finished, per plugin key and lane",
            ["plugin", "plugin_key", "lane"],
            plugin,
            plugin_key,
            None,
        )
        self.replay_hits = counter(
            "azuld_replay_cache_hits_total",
            "Jobs answered from the result replay cache instead of running the plugin",
            ["plugin"],
            plugin,
        )
        self.replay_saved_seconds = counter(
            "azuld_replay_cache_saved_seconds_total",
            "Plugin run time the replay cache saved (the first run's runtime)",
            ["plugin"],
            plugin,
        )
        self.upload_bytes = Counter(
            "azuld_upload_bytes_total", "Bytes received in blob uploads", registry=r
        )
        self.download_bytes = Counter(
            "azuld_download_bytes_total", "Bytes sent in blob downloads", registry=r
        )
        self.backend_errors = Counter(
            "azuld_backend_errors_total",
            "Backend (log, blob store) failures",
            ["backend"],
            registry=r,
        )
        # The cluster, as of the last scrape (or dashboard poll).
        self.cluster_members = Gauge(
            "azuld_cluster_members",
            "Instances sharing the event log (the members of the instances' group; 1 embedded)",
            registry=r,
        )
        self.partitions_owned = Gauge(
            "azuld_partitions_owned",
            "Partitions of the event log this instance owns (the embedded log owns all)",
            registry=r,
        )
        self.rebalances = Counter(
            "azuld_rebalances_total",
            "Rebalances of the instances' group (Kafka) this instance has been through",
            registry=r,
        )

    def identify_worker(self, worker: str) -> None:
        """Say which worker of `azuld serve --processes N` these metrics come from (each worker
        has its own; scrape each one's own port, `server.worker_port_base`)."""
        Gauge(
            "azuld_worker_info",
            "This process is one worker of azuld serve --processes N",
            ["worker", "pid"],
            registry=self.registry,
        ).labels(worker, str(os.getpid())).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once: `labels()` costs more than the update.
        Only label sets kept as they are are remembered (so the folded ones cost no memory)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*labels)
            folding: _Folding | None = getattr(metric, "_folding", None)
            if folding is None or folding.map(labels) == labels:
                self._children[key] = found
        return found

    def http_children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """(`http_requests` child, `http_latency` child) of a request: one lookup per request
        instead of two `child` calls. Routes are the table's rules (or `unmatched`), statuses
        the app's; a method outside RFC 9110's is `other`."""
        key = (route, method, status)
        found = self._http_children.get(key)
        if found is None:
            label = method if method in _METHODS else OTHER
            found = (
                self.child(self.http_requests, route, label, str(status)),
                self.child(self.http_latency, route),
            )
            if label == method:
                self._http_children[key] = found
        return found
