"""Automation recipes against the sandbox, every flow body checked against epilot's automation spec."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID
from projects.forms import AutomationRuleForm
from projects.models import AutomationRecipe, AutomationRule, EpilotWrite, SyncRun, WorkflowDefinition
from projects.services.errors import NotAllowed
from projects.services.recipes import flow_body, recipe_provision, recipe_remove, recipes_check_drift
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db
JOURNEY = "6c2c4bd4-6b37-4bd6-9c5a-1f8f6b8a2f11"


@pytest.fixture
def client(checked_client: EpilotClient) -> EpilotClient:
    """The gateway client of these tests: its traffic is checked against the specs (`recorder`)."""
    return checked_client


def recipe(pattern: str, key: str, **fields) -> AutomationRecipe:
    defaults = {"name": key.replace("-", " ").title(), "definition_epilot_id": AUSBAU_DEFINITION_ID, "schema": "opportunity",
                "attribute": "status", "value": "bearbeitung"}
    return AutomationRecipe.objects.create(key=key, pattern=pattern, **{**defaults, **fields})


@pytest.fixture
def three(db) -> list[AutomationRecipe]:
    AutomationRecipe.objects.all().delete()  # the migration's first recipe; these tests make their own
    return [
        recipe("status_change", "bau-bei-bearbeitung", email_template_id="tpl-bauteam", assignees=["u-planung"],
               assign_steps=[{"step_id": "stTiefAuf", "step_name": "Tiefbau beauftragen", "user_ids": [10010729]}]),
        recipe("journey_submission", "journey-glasfaser", journey_id=JOURNEY, email_language="en",
               field_mapping=[{"source": "address.street", "target": "address"}, {"source": "email", "target": "email"}]),
        recipe("manual", "manuell-nachbesserung", schema="order", value=""),
    ]


def flows_named(client: EpilotClient, key: str) -> list:
    return [flow for flow in client.iter_flows() if f"[recipe:{key}]" in flow.name]


def test_each_recipe_provisions_one_spec_valid_flow_and_twice_is_once(client, recorder, three) -> None:
    for item in three:
        first, created = recipe_provision(item, actor="test", client=client)
        again, created_again = recipe_provision(first, actor="test", client=client)
        assert created and not created_again and first.flow_id == again.flow_id
        assert len(flows_named(client, item.key)) == 1
        stored = client.get_flow(first.flow_id).data
        assert stored["actions"] == flow_body(item)["actions"] and stored["triggers"] == flow_body(item)["triggers"]
    assert len(list(client.iter_flows())) == 3
    assert recorder.violations == [], "\n".join(recorder.violations)
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.PROVISION_AUTOMATION).count() == 6


def test_the_bodies_say_what_each_pattern_means(three) -> None:
    status, journey, manual = (flow_body(item) for item in three)
    assert status["triggers"][0]["configuration"]["filter_config"] == {
        "operation": {"diff": {"updated": {"status": ["bearbeitung"]}}}}
    assert status["actions"][0]["config"] == {
        "target_workflow": AUSBAU_DEFINITION_ID, "assignees": ["u-planung"],
        "assign_steps": [{"step_id": "stTiefAuf", "step_name": "Tiefbau beauftragen", "user_ids": [10010729]}]}
    assert status["actions"][1] == {"type": "send-email", "name": "Notify the team",
                                    "config": {"email_template_id": "tpl-bauteam", "language_code": "de"}}
    assert journey["triggers"] == [{"type": "journey_submission", "configuration": {"source_id": JOURNEY}}]
    assert [a["type"] for a in journey["actions"]] == ["map-entity", "trigger-workflow"]
    assert journey["actions"][0]["config"]["mapping_attributes"][0] == {
        "mode": "copy_if_exists", "target": "address", "source": "address.street"}
    assert manual["triggers"] == [{"type": "entity_manual", "configuration": {"schema": "order"}}]
    assert manual["flow_name"] == "Manuell Nachbesserung [recipe:manuell-nachbesserung]"


def test_a_trigger_owned_by_a_rule_or_another_recipe_is_refused(client, three) -> None:
    ausbau = WorkflowDefinition.objects.create(epilot_id=AUSBAU_DEFINITION_ID, engine="v1", name="Ausbau Glasfaser",
                                               synced_at="2026-11-01T00:00:00Z")
    rule = AutomationRule.objects.create(name="lokal", schema="opportunity", attribute="status", value="bearbeitung",
                                         definition=ausbau)
    with pytest.raises(NotAllowed, match="lokal"):
        recipe_provision(three[0], client=client)
    rule.delete()
    twin = recipe("status_change", "zwilling")
    with pytest.raises(NotAllowed, match="Bau Bei Bearbeitung"):
        recipe_provision(twin, client=client)
    recipe_provision(three[0], client=client)
    form = AutomationRuleForm({"name": "doppelt", "enabled": True, "schema": "opportunity", "attribute": "status",
                               "value": "bearbeitung", "definition": ausbau.pk})
    assert not form.is_valid()
    assert list(client.iter_flows()) and not flows_named(client, "zwilling")


def test_a_flow_changed_or_deleted_in_the_portal_shows_as_drift_and_is_restored(client, recorder, three) -> None:
    status, journey, _ = three
    status, _ = recipe_provision(status, client=client)
    journey, _ = recipe_provision(journey, client=client)
    edited = dict(client.get_flow(status.flow_id).data)
    edited["actions"] = [{**edited["actions"][0], "config": {"target_workflow": "wfANDERER"}}]
    client.put_flow(status.flow_id, edited)
    client.delete_flow(journey.flow_id)

    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)

    status.refresh_from_db()
    journey.refresh_from_db()
    assert "wfANDERER" in status.drift and AUSBAU_DEFINITION_ID in status.drift and status.drift.startswith("---")
    assert journey.drift == "deleted"
    recipe_provision(status, client=client)
    recipe_provision(journey, client=client)
    assert recipes_check_drift(client) == 0
    assert client.get_flow(status.flow_id).data["actions"][0]["config"]["target_workflow"] == AUSBAU_DEFINITION_ID
    assert len(flows_named(client, journey.key)) == 1
    assert recorder.violations == [], "\n".join(recorder.violations)


def test_disabling_and_removing_a_recipe(client, three) -> None:
    status, _ = recipe_provision(three[0], client=client)
    status.enabled = False
    status.save()
    recipe_provision(status, client=client)
    assert client.get_flow(status.flow_id).data["enabled"] is False
    flow_id = status.flow_id
    recipe_remove(status, client=client)
    assert status.flow_id == "" and all(flow.id != flow_id for flow in client.iter_flows())


def test_the_command_sets_up_each_recipe_and_twice_is_once(sandbox, settings) -> None:
    from integrations.connection import get_epilot_client

    AutomationRecipe.objects.all().delete()
    for _ in range(2):
        call_command("provision_automation", "--recipe", "status-change", "--definition", AUSBAU_DEFINITION_ID,
                     "--schema", "order", "--attribute", "status", "--value", "placed", stdout=StringIO())
        call_command("provision_automation", "--recipe", "journey-submission", "--definition", AUSBAU_DEFINITION_ID,
                     "--journey", JOURNEY, "--email-template", "tpl-1", stdout=StringIO())
        call_command("provision_automation", "--recipe", "manual", "--definition", AUSBAU_DEFINITION_ID, "--name",
                     "Nachbesserung", stdout=StringIO())
    call_command("provision_automation", stdout=StringIO())
    assert AutomationRecipe.objects.count() == 3
    assert len(list(get_epilot_client().iter_flows())) == 3
    with pytest.raises(CommandError, match="journey"):
        call_command("provision_automation", "--recipe", "journey-submission", "--definition", AUSBAU_DEFINITION_ID,
                     "--journey", "keine-uuid", stdout=StringIO())


def test_the_flow_provisioned_before_recipes_becomes_the_first_recipe(client) -> None:
    first = AutomationRecipe.objects.get(key="ausbau-glasfaser-bei-bearbeitung")
    legacy = client.create_flow({**flow_body(first), "flow_name": first.legacy_names[0]})
    AutomationRecipe.objects.filter(pk=first.pk).update(flow_id="")  # as if only its name were known

    provisioned, created = recipe_provision(first, client=client)

    assert not created and provisioned.flow_id == legacy.id
    assert [flow.name for flow in client.iter_flows()] == [
        "Opportunity in Bearbeitung → Ausbau Glasfaser [recipe:ausbau-glasfaser-bei-bearbeitung]"]


def test_a_customer_notice_mails_when_the_back_office_marks_a_promise_slipping(client, recorder, db) -> None:
    AutomationRecipe.objects.all().delete()
    notice = recipe("promise_notice", "zusage-kundeninfo", definition_epilot_id="", email_template_id="tpl-zusage")
    body = flow_body(notice)
    assert body["entity_schema"] == "order"
    assert body["triggers"][0]["configuration"]["filter_config"] == {
        "operation": {"diff": {"updated": {"promise_state": ["at_risk", "breached"]}}}}
    assert body["actions"] == [{"type": "send-email", "name": "Tell the customer",
                                "config": {"email_template_id": "tpl-zusage", "language_code": "de"}}]  # no workflow
    provisioned, created = recipe_provision(notice, actor="test", client=client)
    assert created and client.get_flow(provisioned.flow_id).data["actions"] == body["actions"]
    assert recorder.violations == [], "\n".join(recorder.violations)
