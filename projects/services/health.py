"""Health of the installation: database, broker and the freshness of the mirror."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import connection

from config.celery import app
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

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks) and all(schema.healthy for schema in self.schemas)

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
    """Probe the database and the broker; add each schema's last successful sync against its threshold."""
    report = HealthReport(checks=[_timed("database", _database), _timed("broker", _broker)])
    if include_sync and report.checks[0].ok:
        report.schemas = sync_health()
    return report
