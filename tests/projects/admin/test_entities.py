"""The mirror in the admin: every list renders, quarantine is visible, 'Sync now' queues a run."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import SandboxApp
from integrations.epilot_sandbox.store import now_ms
from projects.models import QuarantinedEntity, SyncRun
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db

MODELS = ["contact", "opportunity", "order", "genericentity", "workflowdefinition", "workflowexecution", "ausbauproject",
          "quarantinedentity", "syncstate", "syncrun"]


@pytest.fixture
def synced(epilot: EpilotClient, sandbox: SandboxApp) -> SyncRun:
    stamp = now_ms()
    sandbox.store.bulk_insert_entities([{"_id": "broken-order", "_schema": "order", "_org": "1", "_title": "Kaputt",
                                         "_created_at": stamp, "_updated_at": stamp, "amount_total": "zu viel"}])
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)


def test_every_mirror_list_renders_with_data(admin_client, synced: SyncRun) -> None:
    for model in MODELS:
        response = admin_client.get(reverse(f"admin:projects_{model}_changelist"))
        assert response.status_code == 200, model
    projects = admin_client.get(reverse("admin:projects_ausbauproject_changelist")).content.decode()
    assert "Glasfaser Neubaugebiet Nordstraße" in projects
    opportunities = admin_client.get(reverse("admin:projects_opportunity_changelist")).content.decode()
    assert "https://portal.epilot.cloud/app/opportunities/" in opportunities


def test_quarantined_records_show_reason_and_payload(admin_client, synced: SyncRun) -> None:
    entry = QuarantinedEntity.objects.get(epilot_id="broken-order")
    page = admin_client.get(reverse("admin:projects_quarantinedentity_change", args=[entry.pk])).content.decode()
    assert "amount_total is str, not a number" in page and "zu viel" in page


def test_mirrored_rows_cannot_be_edited_in_the_admin(admin_client, synced: SyncRun) -> None:
    response = admin_client.get(reverse("admin:projects_opportunity_add"))
    assert response.status_code == 403


def test_sync_now_queues_a_run_and_shows_it(admin_client, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(reverse("admin:projects_syncrun_sync_now"))
    run = SyncRun.objects.get()
    assert run.status == SyncRun.Status.QUEUED and run.trigger == SyncRun.Trigger.ADMIN and len(callbacks) == 1
    assert response.status_code == 302 and response.url == reverse("admin:projects_syncrun_change", args=[run.pk])


def test_sync_now_needs_the_permission(client) -> None:
    clerk = User.objects.create_user("clerk", password="pw-123456", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_syncrun"))
    client.force_login(clerk)
    client.post(reverse("admin:projects_syncrun_sync_now"))
    assert not SyncRun.objects.exists()
    clerk.user_permissions.add(Permission.objects.get(codename="run_sync"))
    client.post(reverse("admin:projects_syncrun_sync_now"))
    assert SyncRun.objects.filter(status=SyncRun.Status.QUEUED).count() == 1
