"""Health of the installation.

Three probes, for three askers: `live` (the process answers: restart it when not), `ready` (the
database and the broker answer: route requests to it), and the detailed report for monitoring (the
mirror's freshness, webhooks and jobs left waiting, quarantine), which fails while epilot is
unreachable and must therefore never decide routing.
"""
from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from config.celery import app
from projects.models import QuarantinedEntity, StepJob, WebhookEvent, WorkflowStartJob
from projects.selectors import SchemaHealth, sync_health


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    milliseconds: float = 0.0


@dataclass
class HealthReport:
    checks: list[Check] = field(default_factory=list)
    schemas: list[SchemaHealth] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)  # webhook events and jobs no worker took in time
    quarantined: int | None = None  # informational: staff deal with it in the admin

    @property
    def ok(self) -> bool:
        return (all(check.ok for check in self.checks) and all(schema.healthy for schema in self.schemas)
                and not any(self.waiting.values()))

    def as_dict(self, *, details: bool = True) -> dict:
        """The report as JSON; without `details` a failed check says only that it failed (no driver or host text)."""
        return {
            "status": "ok" if self.ok else "fail",
            "checks": {
                check.name: {
                    "ok": check.ok,
                    "detail": check.detail if details or check.ok else "unavailable",
                    "ms": round(check.milliseconds, 1),
                }
                for check in self.checks
            },
            "sync": {
                schema.schema: {
                    "ok": schema.healthy,
                    "last_success_at": schema.last_success_at.isoformat() if schema.last_success_at else None,
                    "age_minutes": schema.age_minutes,
                }
                for schema in self.schemas
            },
            **({"waiting": self.waiting, "quarantined": self.quarantined} if self.waiting else {}),
        }


def _timed(name: str, probe) -> Check:
    started = time.monotonic()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # a health check reports every failure instead of raising it
        detail, ok = f"{type(exc).__name__}: {exc}"[:200], False
    return Check(name, ok, detail, (time.monotonic() - started) * 1000)


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _broker() -> str:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return conn.transport.driver_type


def health_report(*, include_sync: bool = True) -> HealthReport:
    """Probe the database and the broker; with `include_sync`, add each schema's last successful sync against its
    threshold, the webhook events and jobs left waiting, and the size of the quarantine."""
    report = HealthReport(checks=[_timed("database", _database), _timed("broker", _broker)])
    if include_sync and report.checks[0].ok:
        report.schemas = sync_health()
        report.waiting = waiting_work()
        report.quarantined = QuarantinedEntity.objects.count()
    return report


JOB_WAITING_MINUTES = 10
STUCK_AFTER_SECONDS = 180  # for webhook events: the sweep runs every minute, and a claim lapses after two


def waiting_work() -> dict[str, int]:
    """Webhook events and step and start jobs that no worker took in time (the broker lost them, or no worker runs)."""
    now = timezone.now()
    jobs_before = now - dt.timedelta(minutes=JOB_WAITING_MINUTES)
    return {
        "webhook_events": WebhookEvent.objects.filter(
            outcome=WebhookEvent.Outcome.RECEIVED, received_at__lt=now - dt.timedelta(seconds=STUCK_AFTER_SECONDS)).count(),
        "step_jobs": StepJob.objects.filter(status=StepJob.Status.QUEUED, created_at__lt=jobs_before).count(),
        "workflow_start_jobs": WorkflowStartJob.objects.filter(status=WorkflowStartJob.Status.QUEUED,
                                                               created_at__lt=jobs_before).count(),
    }


class MirrorCollector(Collector):
    """Figures read from the database at scrape time: mirror lag per schema, work waiting, jobs by state, quarantine,
    and the depth of each Celery queue."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = timezone.now()
        lag = GaugeMetricFamily("ausbau_mirror_lag_seconds", "Seconds since the last successful sync of each schema "
                                "(absent before the first)", labels=["schema"])
        for schema in sync_health():
            if schema.last_success_at:
                lag.add_metric([schema.schema], (now - schema.last_success_at).total_seconds())
        yield lag
        waiting = GaugeMetricFamily("ausbau_waiting_work", "Webhook events and jobs no worker took in time", labels=["kind"])
        for kind, count in waiting_work().items():
            waiting.add_metric([kind], count)
        yield waiting
        jobs = GaugeMetricFamily("ausbau_jobs", "Step and workflow-start jobs by state", labels=["kind", "state"])
        for kind, model in (("step_job", StepJob), ("workflow_start_job", WorkflowStartJob)):
            counts = dict(model.objects.order_by().values_list("status").annotate(count=Count("pk")))
            for state in model.Status.values:
                jobs.add_metric([kind, state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("ausbau_quarantined_entities", "Entities the sync could not mirror",
                                value=QuarantinedEntity.objects.count())
        depth = GaugeMetricFamily("ausbau_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
        for name, messages in queue_depths().items():
            depth.add_metric([name], messages)
        yield depth


def queue_depths() -> dict[str, int]:
    """Messages waiting per declared Celery queue that the broker knows; {} when the broker does not answer."""
    depths: dict[str, int] = {}
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            for declared in app.conf.task_queues or ():
                try:
                    depths[declared.name] = channel.queue_declare(queue=declared.name, passive=True).message_count
                except Exception:  # no worker declared it yet: nothing is waiting in it
                    depths[declared.name] = 0
    except Exception:  # a scrape reports what it can; the readiness probe reports the broker
        return {}
    return depths


def metrics_allowed(authorization: str, remote_address: str) -> bool:
    """Whether a scrape may read the metrics: the bearer of METRICS_TOKEN, or a client address in
    METRICS_ALLOWED_NETWORKS (behind a proxy that is the proxy's address)."""
    token = settings.METRICS_TOKEN
    if token and authorization.startswith("Bearer ") and hmac.compare_digest(authorization[7:].encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(remote_address)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)
