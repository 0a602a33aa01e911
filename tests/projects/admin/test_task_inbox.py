"""The task inbox ("Aufgaben") and closing workflows in the admin, as staff use them."""
from __future__ import annotations

import datetime as dt
import re
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id
from projects.models import MirroredStep, StaffProfile, StepJob, WorkflowDefinition, WorkflowExecution
from projects.services.steps import SET_DUE, StepChange, step_change, step_job_run
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db
INBOX = "/admin/projects/mirroredstep/"


@pytest.fixture
def running() -> list[WorkflowExecution]:
    call_command("sync_epilot", stdout=StringIO())
    definition = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID)
    ids = [workflow_start(definition=definition, schema="opportunity", entity_id=demo_id(f"opportunity:{key}"),
                          entity_title=key).execution_epilot_id for key in ("rohdenhaus", "duessel", "nordstrasse")]
    return list(WorkflowExecution.objects.filter(epilot_id__in=ids).order_by("id"))


def staff(group: str, epilot_user_id: str = "") -> User:
    user = User.objects.create_user(f"{group.lower()}-user", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    if epilot_user_id:
        StaffProfile.objects.create(user=user, epilot_user_id=epilot_user_id)
    return user


def first_steps(executions: list[WorkflowExecution]) -> list[MirroredStep]:
    return [execution.steps.order_by("position").first() for execution in executions]


def apply_form(confirm, **fields: str) -> dict[str, object]:
    """What the confirmation page posts: its hidden fields (the selection kept on the server) and the operation's."""
    page = confirm.content.decode()
    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
    hidden.pop("csrfmiddlewaretoken", None)
    return {**hidden, "apply": "1", **fields}


def test_a_bulk_operation_over_more_steps_than_a_form_may_carry_fields(client, running, settings) -> None:
    client.force_login(staff("Backoffice"))
    execution = running[0]
    now = timezone.now()
    MirroredStep.objects.bulk_create([MirroredStep(execution=execution, epilot_id=f"bulk-{n}", position=100 + n,
                                                   name=f"Hausanschluss {n}", status="PENDING", synced_at=now)
                                      for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 100)])
    # "Select all" across the inbox's pages: the browser sends only the visible page's boxes and select_across.
    confirm = client.post(INBOX + "?q=Hausanschluss", {"action": "complete_steps", "select_across": "1", "index": "0",
                                                       "_selected_action": [MirroredStep.objects.first().pk]})
    everything = len(confirm.context["steps"])
    assert confirm.status_code == 200 and everything > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    form = apply_form(confirm, operation="complete")
    assert len(form) < 20  # not a field per step
    done = client.post(INBOX + "?q=Hausanschluss", form)
    assert done.status_code == 302 and done.url == reverse("admin:projects_stepjob_change", args=[StepJob.objects.get().pk])
    assert StepJob.objects.get().items.count() == everything

    again = client.post(INBOX, form, follow=True)  # the selection was used up: nothing twice
    assert StepJob.objects.count() == 1 and "abgelaufen" in again.content.decode()


def test_the_inbox_shows_open_steps_overdue_first_and_mine(client, running) -> None:
    overdue = first_steps(running)[1]
    step_change(execution_epilot_id=running[1].epilot_id, step_epilot_id=overdue.epilot_id,
                change=StepChange(SET_DUE, due_date=timezone.now() - dt.timedelta(days=3)))
    client.force_login(staff("Backoffice", epilot_user_id="u-anna"))

    page = client.get(INBOX)
    rows = page.context["cl"].result_list
    assert page.status_code == 200 and len(rows) == 24
    assert rows[0].pk == overdue.pk and "overdue" in page.content.decode()
    assert len(client.get(INBOX + "?due=overdue").context["cl"].result_list) == 1
    assert len(client.get(INBOX + "?assignee=mine").context["cl"].result_list) == 0
    assert len(client.get(INBOX + "?section=Tiefbau").context["cl"].result_list) == 6
    dashboard = client.get("/admin/").content.decode()
    assert 'id="task-counts"' in dashboard


def test_completing_steps_in_bulk_from_the_inbox(client, running) -> None:
    client.force_login(staff("Backoffice"))
    steps = first_steps(running)

    confirm = client.post(INBOX, {"action": "complete_steps", "_selected_action": [s.pk for s in steps]})
    assert confirm.status_code == 200 and "step-preview" in confirm.content.decode()
    done = client.post(INBOX, apply_form(confirm, operation="complete"))

    job = StepJob.objects.get()
    assert done.status_code == 302 and done.url == reverse("admin:projects_stepjob_change", args=[job.pk])
    step_job_run(job)  # what the worker does with the queued task
    progress = client.get(done.url).content.decode()
    assert "job-progress" in progress
    epilot = get_epilot_client()
    for execution, step in zip(running, steps, strict=True):
        remote = epilot.get_execution(execution.epilot_id)
        assert next(s for s in remote.steps if s.id == step.epilot_id).status == "COMPLETED"
    assert len(client.get(INBOX).context["cl"].result_list) == 21


def test_assigning_needs_an_assignee(client, running) -> None:
    client.force_login(staff("Backoffice"))
    step = first_steps(running)[0]
    confirm = client.post(INBOX, {"action": "assign_steps", "_selected_action": [step.pk]})
    page = client.post(INBOX, apply_form(confirm, operation="assign", assignees=" , "))
    assert page.status_code == 200 and page.context["form"].errors["assignees"]
    assert not StepJob.objects.exists()


def test_closing_a_workflow_from_its_page(client, running) -> None:
    client.force_login(staff("Backoffice"))
    execution = running[0]
    change = client.get(reverse("admin:projects_workflowexecution_change", args=[execution.pk])).content.decode()
    assert 'id="close-execution"' in change
    url = reverse("admin:projects_workflowexecution_close", args=[execution.pk])
    form = client.get(url).content.decode()
    assert "Technisch nicht realisierbar" in form

    client.post(url, {"reasons": ["crTechnisch"], "description": "Fels"})

    assert get_epilot_client().get_execution(execution.epilot_id).status == "CLOSED"
    execution.refresh_from_db()
    assert execution.status == "CLOSED"


def test_a_viewer_can_look_but_not_work_steps(client, running) -> None:
    client.force_login(staff("Viewer"))
    step = first_steps(running)[0]
    assert client.get(INBOX).status_code == 200
    refused = client.post(INBOX, {"action": "complete_steps", "select_across": "1", "index": "0", "apply": "1",
                                  "selection": "guessed", "operation": "complete", "_selected_action": [step.pk]})
    assert refused.status_code in (200, 302) and not StepJob.objects.exists()
    assert client.get(reverse("admin:projects_workflowexecution_close", args=[running[0].pk])).status_code == 403
    assert client.post(reverse("admin:projects_workflowexecution_close", args=[running[0].pk]),
                       {"reasons": ["crTechnisch"]}).status_code == 403
    assert get_epilot_client().get_execution(running[0].epilot_id).status == "STARTED"


def test_staff_change_their_own_profile_only_and_superusers_anyones(client) -> None:
    anna = staff("Backoffice", epilot_user_id="u-anna")
    bob = User.objects.create_user("bob", password="pw-123456", is_staff=True)
    bob.groups.add(Group.objects.get(name="Backoffice"))
    StaffProfile.objects.create(user=bob, epilot_user_id="u-bob")
    mine, theirs = StaffProfile.objects.get(user=anna), StaffProfile.objects.get(user=bob)
    client.force_login(anna)

    def change(profile: StaffProfile, **fields) -> int:
        data = {"user": profile.user_id, "epilot_user_id": profile.epilot_user_id, "task_digest": "on", **fields}
        return client.post(reverse("admin:projects_staffprofile_change", args=[profile.pk]), data).status_code

    assert change(mine, epilot_user_id="u-anna-2") == 302
    assert change(theirs, epilot_user_id="u-anna", task_digest="") == 403
    theirs.refresh_from_db()
    assert (theirs.epilot_user_id, theirs.task_digest) == ("u-bob", True)
    assert client.get(reverse("admin:projects_staffprofile_change", args=[theirs.pk])).status_code == 200  # may look
    assert client.post(reverse("admin:projects_staffprofile_delete", args=[theirs.pk]), {"post": "yes"}).status_code == 403
    other = User.objects.create_user("carl", is_staff=True)
    added = client.post(reverse("admin:projects_staffprofile_add"), {"user": other.pk, "epilot_user_id": "u-carl"})
    assert added.status_code == 200 and not StaffProfile.objects.filter(user=other).exists()  # not one's own: refused

    client.force_login(User.objects.create_superuser("admin", password="x" * 12))
    assert change(theirs, epilot_user_id="u-bob-2") == 302
