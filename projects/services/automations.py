"""Provision the epilot automation from the guide, idempotently by name."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError
from projects.models import EpilotWrite, ProvisionedAutomation
from projects.selectors import rule_owning_trigger
from projects.services.audit import audited_write
from projects.services.errors import NotAllowed, RemoteFailure

AUSBAU_FLOW_NAME = "Ausbau Backoffice: Opportunity in Bearbeitung → Ausbau Glasfaser"
TRIGGER = {"schema": "opportunity", "attribute": "status", "value": "bearbeitung"}


def ausbau_flow_body(*, definition_epilot_id: str, email_template_id: str) -> dict[str, Any]:
    """The flow: opportunity status becomes `bearbeitung` → start the workflow, notify the construction team."""
    actions: list[dict[str, Any]] = [
        {"type": "trigger-workflow", "name": "Ausbau Glasfaser starten", "config": {"target_workflow": definition_epilot_id}},
    ]
    if email_template_id:
        actions.append({"type": "send-email", "name": "Bauteam benachrichtigen",
                        "config": {"email_template_id": email_template_id, "language_code": "de"}})
    return {
        "flow_name": AUSBAU_FLOW_NAME,
        "enabled": True,
        "entity_schema": TRIGGER["schema"],
        "triggers": [{
            "type": "entity_operation",
            "configuration": {
                "schema": TRIGGER["schema"],
                "operations": ["updateEntity"],
                "filter_config": {"operation": {"diff": {"updated": {TRIGGER["attribute"]: [TRIGGER["value"]]}}}},
            },
        }],
        "trigger_conditions": [{"source": TRIGGER["attribute"], "comparison": "equals", "value": TRIGGER["value"]}],
        "actions": actions,
    }


def automation_provision(*, user: Any = None, actor: str = "admin", definition_epilot_id: str | None = None,
                         client: EpilotClient | None = None) -> tuple[ProvisionedAutomation, bool]:
    """Create the flow, or replace the one with the same name; returns (record, created).

    Raises NotAllowed when an enabled local rule owns the same trigger, RemoteFailure on epilot failures.
    """
    client = client or get_epilot_client()
    definition_epilot_id = definition_epilot_id or settings.DEFAULT_WORKFLOW_DEFINITION
    rule = rule_owning_trigger(definition_epilot_id=definition_epilot_id, **TRIGGER)
    if rule:
        raise NotAllowed(_("The local rule '%(rule)s' starts this workflow already. Switch the rule off first, or the workflow "
                           "starts twice.") % {"rule": rule.name})
    body = ausbau_flow_body(definition_epilot_id=definition_epilot_id, email_template_id=settings.AUTOMATION_EMAIL_TEMPLATE_ID)
    try:
        existing = next((flow for flow in client.iter_flows(schema=TRIGGER["schema"]) if flow.name == AUSBAU_FLOW_NAME), None)
        summary = {
            "flow_name": AUSBAU_FLOW_NAME,
            "target_workflow": definition_epilot_id,
            "replace": existing.id if existing else None,
        }
        with audited_write(action=EpilotWrite.Action.PROVISION_AUTOMATION, target_schema="automation_flow",
                           target_epilot_id=existing.id if existing else "", summary=summary, user=user, actor=actor) as outcome:
            flow = client.put_flow(existing.id, body) if existing else client.create_flow(body)
            outcome.epilot_ids = [flow.id]
    except EpilotError as exc:
        raise RemoteFailure(_("The automation could not be provisioned: %(error)s") % {"error": exc.message}) from None
    record, _created = ProvisionedAutomation.objects.update_or_create(
        name=AUSBAU_FLOW_NAME,
        defaults={"flow_id": flow.id, "definition_epilot_id": definition_epilot_id, "enabled": flow.enabled,
                  "provisioned_at": timezone.now(), **TRIGGER})
    return record, existing is None
