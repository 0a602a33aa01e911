"""The back-office through the admin, as staff use it (Django test client, embedded sandbox)."""
from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id
from projects.models import (
    Conversion,
    EpilotWrite,
    Opportunity,
    PendingExecutionRead,
    StepJob,
    WebhookEvent,
    WorkflowDefinition,
    WorkflowStartJob,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def mirror() -> None:
    call_command("sync_epilot", stdout=StringIO())


@pytest.fixture
def ausbau() -> WorkflowDefinition:
    return WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID)


def staff(group: str) -> User:
    user = User.objects.create_user(f"{group.lower()}-user", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def opportunity(key: str) -> Opportunity:
    return Opportunity.objects.get(epilot_id=demo_id(f"opportunity:{key}"))


def running_ausbau(schema: str, entity_id: str) -> list:
    return [e for e in get_epilot_client().get_executions(context=entity_id, schema=schema)
            if e.definition_id == AUSBAU_DEFINITION_ID and e.status == "STARTED"]


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_start_workflow_from_the_list_with_a_confirmation_page(client, ausbau) -> None:
    client.force_login(staff("Backoffice"))
    nord = opportunity("nordstrasse")
    changelist = reverse("admin:projects_opportunity_changelist")
    response = client.post(changelist, {"action": "start_workflow_action", "_selected_action": [nord.pk]})
    assert response.status_code == 302 and "start-workflow" in response.url
    page = client.get(response.url)
    assert "Glasfaser Neubaugebiet Nordstraße" in page.content.decode() and "Ausbau Glasfaser" in page.content.decode()
    done = client.post(response.url, {"ids": str(nord.pk), "definition": ausbau.pk}, follow=True)
    assert any("gestartet" in m for m in messages_of(done))
    assert len(running_ausbau("opportunity", nord.epilot_id)) == 1
    assert "Planung" in done.content.decode()  # the execution shows on the opportunity page

    again = client.post(response.url, {"ids": str(nord.pk), "definition": ausbau.pk}, follow=True)
    assert any("bereits" in m for m in messages_of(again))
    assert len(running_ausbau("opportunity", nord.epilot_id)) == 1
    client.post(response.url, {"ids": str(nord.pk), "definition": ausbau.pk, "allow_duplicate": "on"})
    assert len(running_ausbau("opportunity", nord.epilot_id)) == 2


def test_starting_on_many_entities_shows_a_progress_page(client, ausbau, django_capture_on_commit_callbacks) -> None:
    client.force_login(staff("Backoffice"))
    ids = ",".join(str(pk) for pk in Opportunity.objects.values_list("pk", flat=True)[:3])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("admin:projects_opportunity_start_workflow"), {"ids": ids, "definition": ausbau.pk})
    job = WorkflowStartJob.objects.get()
    assert response.url == reverse("admin:projects_workflowstartjob_change", args=[job.pk]) and len(callbacks) == 1
    page = client.get(response.url).content.decode()
    assert "0 von 3 bearbeitet" in page and 'http-equiv="refresh"' in page
    from projects.tasks import workflow_start_job_task

    workflow_start_job_task(job_id=job.pk)
    page = client.get(response.url).content.decode()
    assert "3 von 3 bearbeitet" in page and 'http-equiv="refresh"' not in page


def test_start_workflow_on_orders_and_contacts(client, ausbau) -> None:
    client.force_login(staff("Backoffice"))
    order_pk = Opportunity.objects.get(epilot_id=demo_id("opportunity:schulzentrum")).orders.get().pk
    response = client.post(reverse("admin:projects_order_start_workflow"), {"ids": str(order_pk), "definition": ausbau.pk})
    assert response.status_code == 302
    assert len(running_ausbau("order", demo_id("order:schulzentrum"))) == 1


def test_convert_shows_the_order_then_converts_exactly_once(client, ausbau) -> None:
    client.force_login(staff("Backoffice"))
    nord = opportunity("nordstrasse")
    url = reverse("admin:projects_opportunity_convert", args=[nord.pk])
    page = client.get(url).content.decode()
    assert "Ausbau: Glasfaser Neubaugebiet Nordstraße" in page and "Anna Meier" in page and "45.000,00\u00a0€" in page
    form = {"definition": ausbau.pk, "amount": "45000.00", "target_status": "geschlossen"}
    done = client.post(url, form, follow=True)
    conversion = Conversion.objects.get()
    assert done.redirect_chain[-1][0] == reverse("admin:projects_conversion_change", args=[conversion.pk])
    assert conversion.status == "done" and "Abgeschlossen" in done.content.decode()
    client.post(url, form)  # a second click
    epilot = get_epilot_client()
    orders = [e for page in epilot.iter_search_entities("_schema:order") for e in page.results
              if e.data.get("backoffice_conversion_key") == conversion.key]
    assert len(orders) == 1
    assert epilot.get_entity("opportunity", nord.epilot_id).data["status"] == "geschlossen"


def test_status_change_and_its_conflict_page(client) -> None:
    client.force_login(staff("Backoffice"))
    kalk = opportunity("kalkstrasse")
    url = reverse("admin:projects_opportunity_status", args=[kalk.pk])
    get_epilot_client().patch_entity("opportunity", kalk.epilot_id, {"status": "abgebrochen"})  # changed in epilot meanwhile
    conflict = client.post(url, {"status": "bearbeitung", "expected_updated_at": kalk.payload["_updated_at"]})
    page = conflict.content.decode()
    assert conflict.status_code == 200 and 'id="status-conflict"' in page and "abgebrochen" in page and "bearbeitung" in page
    assert get_epilot_client().get_entity("opportunity", kalk.epilot_id).data["status"] == "abgebrochen"
    overwrite = conflict.context["form"].initial
    client.post(url, {"status": overwrite["status"], "expected_updated_at": overwrite["expected_updated_at"]})
    assert get_epilot_client().get_entity("opportunity", kalk.epilot_id).data["status"] == "bearbeitung"
    assert list(EpilotWrite.objects.order_by("started_at").values_list("result", flat=True)) == ["conflict", "succeeded"]


def test_viewers_see_no_actions_and_cannot_reach_them(client, ausbau) -> None:
    client.force_login(staff("Viewer"))
    nord = opportunity("nordstrasse")
    listing = client.get(reverse("admin:projects_opportunity_changelist"))
    assert listing.status_code == 200
    assert "start_workflow_action" not in listing.content.decode() and "convert_action" not in listing.content.decode()
    detail = client.get(reverse("admin:projects_opportunity_change", args=[nord.pk])).content.decode()
    assert "In Auftrag umwandeln" not in detail and "Workflow starten" not in detail
    assert reverse("admin:projects_contact_change", args=[nord.customer.pk]) in detail  # the customer, as a link
    for url in (reverse("admin:projects_opportunity_start_workflow") + f"?ids={nord.pk}",
                reverse("admin:projects_opportunity_convert", args=[nord.pk]),
                reverse("admin:projects_opportunity_status", args=[nord.pk])):
        assert (
            client.post(url, {"ids": str(nord.pk), "definition": ausbau.pk, "status": "x", "target_status": "x"}).status_code
            == 404
        )
    assert not EpilotWrite.objects.exists()


def test_backoffice_staff_see_every_action(client) -> None:
    client.force_login(staff("Backoffice"))
    listing = client.get(reverse("admin:projects_opportunity_changelist")).content.decode()
    assert "start_workflow_action" in listing and "convert_action" in listing
    recipes = client.get(reverse("admin:projects_automationrecipe_changelist")).content.decode()
    assert "provision_recipes" in recipes and "restore_recipes" in recipes


def test_the_dashboard_is_the_admin_index(admin_client) -> None:
    page = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="ausbau-dashboard"' in page
    assert "Pipeline" in page and "Umwandlungsquote" in page and "Synchronisation" in page
    assert "25 %" in page  # 2 of 8 demo opportunities have an order


def test_the_dashboard_shows_webhook_events_left_waiting(admin_client) -> None:
    def row() -> str:
        page = admin_client.get(reverse("admin:index")).content.decode()
        return page.split('id="webhooks"', 1)[1].split("</tr>", 1)[0]

    now = timezone.now()
    WebhookEvent.objects.create(webhook_id="msg_new", schema="opportunity", entity_epilot_id="opp-1", received_at=now)
    assert "wartet" not in row() and 'class="n ok"' in row()
    WebhookEvent.objects.create(webhook_id="msg_old", schema="opportunity", entity_epilot_id="opp-2",
                                received_at=now - dt.timedelta(minutes=10))  # its task was never queued
    assert "1 wartet seit mehr als 3 Minuten" in row() and 'class="n bad"' in row()


def test_the_dashboard_shows_jobs_no_worker_took(admin_client) -> None:
    def row() -> str:
        page = admin_client.get(reverse("admin:index")).content.decode()
        return page.split('id="jobs-waiting"', 1)[1].split("</tr>", 1)[0]

    assert 'class="n ok"' in row()
    job = StepJob.objects.create(operation=StepJob.Operation.COMPLETE)
    assert 'class="n ok"' in row()  # just queued
    StepJob.objects.filter(pk=job.pk).update(created_at=timezone.now() - dt.timedelta(minutes=30))
    assert "1 seit mehr als 10 Minuten eingereiht" in row() and 'class="n bad"' in row()


def test_the_dashboard_shows_entities_whose_executions_wait_to_be_read(admin_client) -> None:
    def row() -> str:
        page = admin_client.get(reverse("admin:index")).content.decode()
        return page.split('id="executions-waiting"', 1)[1].split("</tr>", 1)[0]

    assert "keine wartend" in row() and 'class="n ok"' in row()
    PendingExecutionRead.objects.create(epilot_id="opp-1", schema="opportunity", since=timezone.now())
    assert "1 Datensatz wartet seit" in row() and 'class="n ok"' in row()
    PendingExecutionRead.objects.create(epilot_id="opp-2", schema="opportunity",
                                        since=timezone.now() - dt.timedelta(hours=3))  # reads keep failing
    assert "2 Datensätze warten seit" in row() and 'class="n bad"' in row()


def test_audit_trail_is_linked_from_the_entity(admin_client, ausbau) -> None:
    nord = opportunity("nordstrasse")
    call_command("start_workflow", schema="opportunity", entity=nord.epilot_id, definition=AUSBAU_DEFINITION_ID,
                 stdout=StringIO())
    detail = admin_client.get(reverse("admin:projects_opportunity_change", args=[nord.pk])).content.decode()
    audit_url = reverse("admin:projects_epilotwrite_changelist") + f"?target_epilot_id={nord.epilot_id}"
    assert audit_url in detail
    audit = admin_client.get(audit_url).content.decode()
    assert "Workflow starten" in audit and "command" in audit


def test_commands_refuse_clearly(ausbau) -> None:
    nord = opportunity("nordstrasse")
    call_command("start_workflow", schema="opportunity", entity=nord.epilot_id, definition=AUSBAU_DEFINITION_ID,
                 stdout=StringIO())
    with pytest.raises(CommandError, match="bereits"):
        call_command("start_workflow", schema="opportunity", entity=nord.epilot_id, definition=AUSBAU_DEFINITION_ID)
    with pytest.raises(CommandError, match="Unknown workflow definition"):
        call_command("start_workflow", schema="opportunity", entity=nord.epilot_id, definition="nope")
    call_command("convert_opportunity", opportunity("kalkstrasse").epilot_id, amount="31000", stdout=StringIO())
    assert Conversion.objects.get().amount_total == 3_100_000
    with pytest.raises(CommandError, match="abgebrochen"):
        call_command("convert_opportunity", opportunity("angerbach").epilot_id)
