"""The task inbox names entities by title, address and customer (linked to the building) and assignees by name."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse

from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id
from projects.admin.search import building_file_url
from projects.models import AreaAddress, StaffProfile, WorkflowDefinition, WorkflowExecution
from projects.services.areas import area_addresses_import
from projects.services.steps import ASSIGN, StepChange, step_change
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_the_inbox_shows_street_customer_and_colleague_not_ids(client) -> None:
    call_command("migrate", verbosity=0, stdout=StringIO())
    call_command("sync_epilot", stdout=StringIO())
    area_addresses_import([(2, {"area": "Nord", "postal_code": "42489", "street": "Nordstraße", "house_number": "12",
                                "units": "2"})])
    definition = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID, engine="v1")
    started = workflow_start(definition=definition, schema="opportunity", entity_id=demo_id("opportunity:nordstrasse"),
                             actor="test")
    execution = WorkflowExecution.objects.get(epilot_id=started.execution_epilot_id)
    step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=execution.steps.order_by("position")[0].epilot_id,
                change=StepChange(ASSIGN, assignees=("u-tiefbau",)), actor="test")
    colleague = User.objects.create_user("tina", first_name="Tina", last_name="Tiefbau")
    StaffProfile.objects.create(user=colleague, epilot_user_id="u-tiefbau")
    viewer = User.objects.create_user("leser", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewer"))
    client.force_login(viewer)

    page = client.get(reverse("admin:projects_mirroredstep_changelist") + "?state=all").content.decode()
    rows = page[page.index('id="result_list"'):page.index("</table>", page.index('id="result_list"'))]
    building = AreaAddress.objects.get()
    assert "Glasfaser Neubaugebiet Nordstraße" in rows and "Nordstraße 12, 42489 Wülfrath" in rows and "Anna Meier" in rows
    assert building_file_url(building.key).replace("&", "&amp;") in rows
    assert "Tina Tiefbau" in rows and "u-tiefbau" not in rows
    assert not UUID.search(re.sub(r'href="[^"]*"', "", rows))  # links may carry ids; the text does not
