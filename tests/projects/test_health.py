"""Health for load balancers and the production check."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_health_fails_until_every_schema_synced_then_passes(client, settings) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    before = client.get(reverse("health"))
    assert before.status_code == 503 and before.json()["checks"]["database"]["ok"]
    assert before.json()["sync"]["contact"]["last_success_at"] is None
    call_command("sync_epilot", stdout=StringIO())
    after = client.get(reverse("health"))
    assert after.status_code == 200 and after.json()["status"] == "ok"
    assert after.json()["waiting"] == {"webhook_events": 0, "step_jobs": 0, "workflow_start_jobs": 0}


def test_readiness_follows_the_database_and_the_broker_not_epilot_or_the_sync(client, settings,
                                                                              django_assert_num_queries) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    assert client.get(reverse("health")).status_code == 503  # nothing synced yet
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and set(ready.json()["checks"]) == {"database", "broker"} and not ready.json()["sync"]
    with django_assert_num_queries(0):
        assert client.get("/health/live").json() == {"status": "ok"}

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert client.get("/health/ready/").status_code == 503
    assert client.get("/health/live/").status_code == 200


def test_without_its_database_the_process_is_alive_but_not_ready() -> None:
    probe = ("import django; django.setup(); from django.test import Client; c = Client(SERVER_NAME=\"localhost\"); "
             "print([c.get(path).status_code for path in ('/health/live', '/health/ready', '/health/')])")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_URL", "DJANGO_"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "CRITICAL",
                "DATABASE_URL": "postgres://nobody:x@127.0.0.1:1/gone"})  # nothing listens there
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[200, 503, 503]"


def test_work_left_waiting_fails_the_detailed_health(client, settings) -> None:
    settings.CELERY_BROKER_URL = "memory://"
    call_command("sync_epilot", stdout=StringIO())
    from django.utils import timezone

    from projects.models import WebhookEvent

    WebhookEvent.objects.create(webhook_id="msg_lost", schema="opportunity", entity_epilot_id="opp-1",
                                received_at=timezone.now() - timezone.timedelta(minutes=10))  # its task was never queued
    answer = client.get(reverse("health"))
    assert answer.status_code == 503 and answer.json()["waiting"]["webhook_events"] == 1
    assert client.get(reverse("health-ready")).status_code == 200


def test_health_reports_a_stale_sync(client) -> None:
    call_command("sync_epilot", stdout=StringIO())
    from django.utils import timezone

    from projects.models import SyncState

    SyncState.objects.filter(schema="order").update(last_success_at=timezone.now() - timezone.timedelta(hours=3))
    answer = client.get(reverse("health"))
    assert answer.status_code == 503 and answer.json()["sync"]["order"]["ok"] is False and answer.json()["sync"]["contact"]["ok"]


def test_failure_details_are_shown_to_staff_only(client, admin_client, settings) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there: the broker check fails
    public = client.get(reverse("health"))
    assert public.status_code == 503
    assert public.json()["checks"]["broker"] == {
        "ok": False,
        "detail": "unavailable",
        "ms": public.json()["checks"]["broker"]["ms"],
    }
    assert "127.0.0.1" not in public.content.decode() and "Error" not in public.content.decode()
    staff = admin_client.get(reverse("health"))
    assert staff.json()["checks"]["broker"]["detail"] != "unavailable"


def test_production_settings_pass_the_deploy_check() -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("EPILOT_", "DJANGO_", "SECRET_KEY", "DATABASE_URL"))
    }
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", "SECRET_KEY": secrets.token_urlsafe(50),
                "EPILOT_API_TOKEN": "t", "ALLOWED_HOSTS": "backoffice.example.org", "LOG_LEVEL": "ERROR",
                "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"})
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
