"""Prometheus metrics of the installation, and their exposition.

Counters and histograms are kept per process by prometheus_client. With PROMETHEUS_MULTIPROC_DIR
set (production: an empty directory shared by gunicorn and the Celery workers of a host, emptied
at each start), every process writes its values there and a scrape of any web process adds them
up; gunicorn's `child_exit` hook (`config/gunicorn.py`) marks a worker that exited as dead.
Figures that live in the database (mirror lag, waiting work, quarantine, queue depth) are read at
scrape time by collectors the caller passes to `exposition`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # prometheus_client writes each process's values there from the first metric on; the directory must exist.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.registry import Collector

from integrations.epilot.observer import CallObserver

disable_created_metrics()  # a `_created` series beside every counter doubles the series and says little

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

http_requests = Counter("ausbau_http_requests", "HTTP requests answered, by view, method and status",
                        ["view", "method", "status"])
http_duration = Histogram("ausbau_http_request_duration_seconds", "Time to answer an HTTP request, by view", ["view"],
                          buckets=LATENCY_BUCKETS)
epilot_calls = Counter("ausbau_epilot_calls", "Attempts sent to epilot, by service, operation and status (HTTP code, "
                       "timeout or connection)", ["service", "operation", "status"])
epilot_duration = Histogram("ausbau_epilot_call_duration_seconds", "Time epilot took to answer, by service and operation",
                            ["service", "operation"], buckets=LATENCY_BUCKETS)
epilot_retries = Counter("ausbau_epilot_retries", "Attempts repeated, by service, operation and reason",
                         ["service", "operation", "reason"])
epilot_rate_limited = Counter("ausbau_epilot_rate_limited", "429 answers from epilot, by service and operation",
                              ["service", "operation"])
write_budget_wait = Histogram("ausbau_epilot_write_budget_wait_seconds", "Time a write waited for the write budget",
                              buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0))
sync_runs = Counter("ausbau_sync_runs", "Sync runs ended, by schema, kind (full or incremental) and outcome",
                    ["schema", "kind", "outcome"])
sync_entities = Counter("ausbau_sync_entities", "Entities a sync run created, updated, deleted or quarantined",
                        ["change"])
sync_duration = Histogram("ausbau_sync_run_duration_seconds", "Duration of a sync run, by kind", ["kind"],
                          buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200))
webhook_events = Counter("ausbau_webhook_events", "Webhook deliveries received (accepted) and events processed or "
                         "failed", ["outcome"])
webhook_latency = Histogram("ausbau_webhook_change_to_mirror_seconds", "From a delivery's arrival to its entity in "
                            "the mirror", buckets=LATENCY_BUCKETS)


class EpilotCallMetrics(CallObserver):
    """Counts the epilot gateway's calls, retries, 429s and budget waits."""

    def answered(self, service: str, operation: str, status: str, seconds: float) -> None:
        epilot_calls.labels(service, operation, status).inc()
        epilot_duration.labels(service, operation).observe(seconds)
        if status == "429":
            epilot_rate_limited.labels(service, operation).inc()

    def retried(self, service: str, operation: str, reason: str) -> None:
        epilot_retries.labels(service, operation, reason).inc()

    def waited_for_budget(self, seconds: float) -> None:
        write_budget_wait.observe(seconds)


def exposition(collectors: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The text format of every process's metrics (one process's without PROMETHEUS_MULTIPROC_DIR), with `collectors`."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as process_registry

        registry = CollectorRegistry()
        registry.register(process_registry)  # a registry is a collector: scrape-time collectors join it per request
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
