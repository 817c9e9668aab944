"""Prometheus metrics, one registry per running daemon (so tests can run several in a process)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric azuld exports. Label values are plugin names, models, routes: bounded sets."""

    def __init__(self) -> None:
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        self.fetched = Counter(
            "azuld_events_fetched_total",
            "Events handed to plugins",
            ["plugin", "model"],
            registry=r,
        )
        self.filtered = Counter(
            "azuld_events_filtered_total",
            "Events skipped for a plugin, by filter",
            ["plugin", "model", "filter"],
            registry=r,
        )
        self.published = Counter(
            "azuld_events_published_total",
            "Events stored, by model and author",
            ["model", "author"],
            registry=r,
        )
        self.finished = Counter(
            "azuld_jobs_finished_total",
            "Jobs ended, by plugin and job state",
            ["plugin", "state"],
            registry=r,
        )
        self.not_stored = Counter(
            "azuld_statuses_not_stored_total",
            "Final statuses acknowledged but not stored: their job's was already (a plugin that "
            "posted again, or a job offered again after its dispatcher died)",
            ["plugin"],
            registry=r,
        )
        self.multiplugin_statuses = Counter(
            "azuld_multiplugin_statuses_total",
            "Final statuses of a runner plugin's multiplugins (they do not end the job), by the "
            "plugin key's plugin and state",
            ["plugin", "state"],
            registry=r,
        )
        self.handed_over = Counter(
            "azuld_leases_handed_over_total",
            "Leases handed over with their partitions to another instance (given) or taken over "
            "from one (taken)",
            ["direction"],
            registry=r,
        )
        self.leases_expired = Counter(
            "azuld_leases_expired_total",
            "Leases that ran out without a heartbeat or status",
            ["plugin"],
            registry=r,
        )
        self.in_flight = Gauge(
            "azuld_leases_in_flight",
            "Jobs leased to plugins right now",
            ["plugin_key"],
            registry=r,
        )
        self.lag = Gauge(
            "azuld_lag_events",
            "Events not yet finished, per plugin key and lane",
            ["plugin_key", "lane"],
            registry=r,
        )
        self.replay_hits = Counter(
            "azuld_replay_cache_hits_total",
            "Jobs answered from the result replay cache instead of running the plugin",
            ["plugin"],
            registry=r,
        )
        self.replay_saved_seconds = Counter(
            "azuld_replay_cache_saved_seconds_total",
            "Plugin run time the replay cache saved (the first run's runtime)",
            ["plugin"],
            registry=r,
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
        """`metric.labels(*labels)`, looked up once: `labels()` costs more than the update."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def http_children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """(`http_requests` child, `http_latency` child) of a request: one lookup per request
        instead of two `child` calls (routes, methods and statuses are bounded sets)."""
        key = (route, method, status)
        found = self._http_children.get(key)
        if found is None:
            found = self._http_children[key] = (
                self.child(self.http_requests, route, method, str(status)),
                self.child(self.http_latency, route),
            )
        return found
