"""Automation recipes in the admin: set up without JSON by hand, preview, provision, drift, restore; a Viewer changes nothing."""
from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID
from projects.models import AutomationRecipe

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/projects/automationrecipe/"


def staff(group: str) -> User:
    user = User.objects.create_user(f"{group.lower()}-user", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_a_recipe_from_the_admin_to_epilot_and_back_after_a_portal_edit(client) -> None:
    client.force_login(staff("Backoffice"))
    added = client.post(reverse("admin:projects_automationrecipe_add"), {
        "key": "montage-manuell", "name": "Montage nachholen", "pattern": "manual", "enabled": "on",
        "definition_epilot_id": AUSBAU_DEFINITION_ID, "schema": "order", "attribute": "", "value": "", "journey_id": "",
        "field_mapping": "[]", "assignees": '["u-montage"]', "assign_steps": "[]", "email_template_id": "",
        "email_language": "de"})
    assert added.status_code == 302, added.content.decode()[:2000]
    recipe = AutomationRecipe.objects.get(key="montage-manuell")
    page = client.get(reverse("admin:projects_automationrecipe_change", args=[recipe.pk])).content.decode()
    assert 'id="recipe-preview"' in page and "entity_manual" in page and "u-montage" in page

    client.post(CHANGELIST, {"action": "provision_recipes", "_selected_action": [recipe.pk]})
    recipe.refresh_from_db()
    flow = get_epilot_client().get_flow(recipe.flow_id)
    get_epilot_client().put_flow(flow.id, {**flow.data, "enabled": False})
    call_command("sync_epilot", stdout=StringIO())
    recipe.refresh_from_db()
    assert '"enabled": false' in recipe.drift
    assert 'id="recipe-drift"' in client.get(reverse("admin:projects_automationrecipe_change", args=[recipe.pk])).content.decode()

    client.post(CHANGELIST, {"action": "restore_recipes", "_selected_action": [recipe.pk]})
    recipe.refresh_from_db()
    assert recipe.drift == "" and get_epilot_client().get_flow(recipe.flow_id).data["enabled"] is True


def test_a_journey_recipe_needs_its_uuid(client) -> None:
    client.force_login(staff("Backoffice"))
    answer = client.post(reverse("admin:projects_automationrecipe_add"), {
        "key": "journey", "name": "Journey", "pattern": "journey_submission", "enabled": "on",
        "definition_epilot_id": AUSBAU_DEFINITION_ID, "schema": "opportunity", "attribute": "", "value": "",
        "journey_id": "nicht-uuid", "field_mapping": '[{"source": "a"}]', "assignees": "[]", "assign_steps": "[]",
        "email_template_id": "", "email_language": "de"})
    assert answer.status_code == 200
    errors = answer.context["adminform"].form.errors
    assert "journey_id" in errors and "field_mapping" in errors


def test_a_viewer_provisions_nothing(client) -> None:
    recipe = AutomationRecipe.objects.get()
    client.force_login(staff("Viewer"))
    assert client.get(CHANGELIST).status_code == 200
    client.post(CHANGELIST, {"action": "provision_recipes", "_selected_action": [recipe.pk]})
    assert list(get_epilot_client().iter_flows()) == []
    assert client.post(reverse("admin:projects_automationrecipe_change", args=[recipe.pk]), {"name": "x"}).status_code == 403
