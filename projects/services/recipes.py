"""Automation recipes: the guide's three ways epilot starts a workflow by itself, provisioned as epilot automation flows.

A recipe is one flow, identified by a stable key carried in the flow's name ("… [recipe:<key>]"),
so provisioning is idempotent: it finds its flow by the stored id, else by the key, and replaces it;
otherwise it creates one. What was sent is kept, so a flow changed or deleted in the portal shows as
drift on its recipe (read with the definitions on every sync) and can be restored.
"""
from __future__ import annotations

import difflib
import json
import logging
import re
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import AutomationFlow, EpilotClient, EpilotError, EpilotNotFoundError
from projects.models import AutomationRecipe, EpilotWrite
from projects.selectors import recipe_owning_trigger, rule_owning_trigger
from projects.services.audit import audited_write
from projects.services.errors import NotAllowed, RemoteFailure

logger = logging.getLogger("projects.recipes")
KEY_PATTERN = re.compile(r"\[recipe:([a-z0-9-]+)\]\s*$")
# The parts of a flow the recipe decides; epilot adds ids, timestamps and execution state to the rest.
# Stored as the drift of a recipe whose flow is gone; the admin shows it in the reader's language.
FLOW_DELETED = "deleted"
# The order attribute the back-office writes when a promise slips, and the values a customer notice is sent for.
PROMISE_STATE_ATTRIBUTE = "promise_state"
NOTICE_STATES = ("at_risk", "breached")
COMPARED = ("flow_name", "enabled", "entity_schema", "triggers", "trigger_conditions", "actions")


def flow_name(recipe: AutomationRecipe) -> str:
    return f"{recipe.name} [recipe:{recipe.key}]"


def flow_body(recipe: AutomationRecipe) -> dict[str, Any]:
    """The exact automation flow (createFlow/putFlow body) the recipe stands for."""
    workflow: dict[str, Any] = {"target_workflow": recipe.definition_epilot_id}
    if recipe.assignees:
        workflow["assignees"] = [str(user) for user in recipe.assignees]
    if recipe.assign_steps:
        workflow["assign_steps"] = [
            {"step_id": str(item.get("step_id", "")), "step_name": str(item.get("step_name", "")),
             "user_ids": [int(user) for user in item.get("user_ids", [])]}
            for item in recipe.assign_steps
        ]
    actions: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []
    if recipe.pattern == AutomationRecipe.Pattern.JOURNEY_SUBMISSION:
        schema = "opportunity"
        triggers = [{"type": "journey_submission", "configuration": {"source_id": recipe.journey_id}}]
        actions.append({"type": "map-entity", "name": _name("Create opportunity from the submission"), "config": {
            "target_schema": "opportunity",
            "mapping_attributes": [{"mode": "copy_if_exists", "target": str(item["target"]), "source": str(item["source"])}
                                   for item in recipe.field_mapping],
            "relation_attributes": [{"target": "customer", "mode": "append", "source_filter": {"schema": "contact"}}],
        }})
    elif recipe.pattern == AutomationRecipe.Pattern.PROMISE_NOTICE:
        # The back-office writes the order's promise_state when a promise slips (services/promises.py); epilot mails
        # the customer. No workflow: the staff's task comes from the promise alert.
        schema = "order"
        triggers = [{"type": "entity_operation", "configuration": {
            "schema": "order", "operations": ["updateEntity"],
            "filter_config": {"operation": {"diff": {"updated": {PROMISE_STATE_ATTRIBUTE: list(NOTICE_STATES)}}}}}}]
        return {"flow_name": flow_name(recipe), "enabled": recipe.enabled, "entity_schema": schema, "triggers": triggers,
                "actions": [{"type": "send-email", "name": _name("Tell the customer"),
                             "config": {"email_template_id": recipe.email_template_id,
                                        "language_code": recipe.email_language}}]}
    elif recipe.pattern == AutomationRecipe.Pattern.MANUAL:
        schema = recipe.schema
        triggers = [{"type": "entity_manual", "configuration": {"schema": recipe.schema}}]
    else:
        schema = recipe.schema
        triggers = [{"type": "entity_operation", "configuration": {
            "schema": recipe.schema, "operations": ["updateEntity"],
            "filter_config": {"operation": {"diff": {"updated": {recipe.attribute: [recipe.value]}}}}}}]
        conditions = [{"source": recipe.attribute, "comparison": "equals", "value": recipe.value}]
    actions.append({"type": "trigger-workflow", "name": _name("Start the workflow"), "config": workflow})
    if recipe.email_template_id:
        actions.append({"type": "send-email", "name": _name("Notify the team"),
                        "config": {"email_template_id": recipe.email_template_id, "language_code": recipe.email_language}})
    body: dict[str, Any] = {"flow_name": flow_name(recipe), "enabled": recipe.enabled, "entity_schema": schema,
                            "triggers": triggers, "actions": actions}
    if conditions:
        body["trigger_conditions"] = conditions
    return body


def _name(text: str) -> str:
    return text  # action names are shown in epilot's portal; kept in English like the flow keys


def recipe_check_owner(recipe: AutomationRecipe) -> None:
    """Raise NotAllowed when a local rule or another enabled recipe already starts this workflow on the same trigger."""
    if recipe.pattern == AutomationRecipe.Pattern.STATUS_CHANGE:
        rule = rule_owning_trigger(schema=recipe.schema, attribute=recipe.attribute, value=recipe.value,
                                   definition_epilot_id=recipe.definition_epilot_id)
        if rule:
            raise NotAllowed(_("The local rule '%(rule)s' starts this workflow on the same change already. Switch the "
                               "rule off first, or the workflow starts twice.") % {"rule": rule.name})
    other = recipe_owning_trigger(recipe)
    if other:
        raise NotAllowed(_("The recipe '%(recipe)s' owns the same trigger already; the workflow would start twice.")
                         % {"recipe": other.name})


def recipe_provision(recipe: AutomationRecipe, *, user: Any = None, actor: str = "admin",
                     client: EpilotClient | None = None) -> tuple[AutomationRecipe, bool]:
    """Create the recipe's flow in epilot, or replace it; returns (recipe, created). Also restores a drifted flow.

    Raises NotAllowed (another owner of the trigger, or epilot refused the body) or RemoteFailure.
    """
    if recipe.enabled:
        recipe_check_owner(recipe)
    client = client or get_epilot_client()
    body = flow_body(recipe)
    try:
        existing = _find_flow(client, recipe)
        summary = {"recipe": recipe.key, "flow_name": body["flow_name"], "replace": existing.id if existing else None}
        with audited_write(action=EpilotWrite.Action.PROVISION_AUTOMATION, target_schema="automation_flow",
                           target_epilot_id=existing.id if existing else "", summary=summary, user=user, actor=actor) as outcome:
            flow = client.put_flow(existing.id, body) if existing else client.create_flow(body)
            outcome.epilot_ids = [flow.id]
    except EpilotError as exc:
        raise RemoteFailure(_("The automation could not be provisioned: %(error)s") % {"error": exc.message}) from None
    AutomationRecipe.objects.filter(pk=recipe.pk).update(
        flow_id=flow.id, provisioned_body=_compared(body), provisioned_at=timezone.now(), drift="", drift_checked_at=None)
    recipe.refresh_from_db()
    return recipe, existing is None


def recipe_remove(recipe: AutomationRecipe, *, user: Any = None, actor: str = "admin",
                  client: EpilotClient | None = None) -> None:
    """Delete the recipe's flow in epilot (the recipe stays, unprovisioned). Raises RemoteFailure."""
    client = client or get_epilot_client()
    try:
        existing = _find_flow(client, recipe)
        if existing is not None:
            with audited_write(action=EpilotWrite.Action.PROVISION_AUTOMATION, target_schema="automation_flow",
                               target_epilot_id=existing.id, summary={"recipe": recipe.key, "delete": existing.id},
                               user=user, actor=actor) as outcome:
                client.delete_flow(existing.id)
                outcome.epilot_ids = [existing.id]
    except EpilotError as exc:
        raise RemoteFailure(_("The automation could not be deleted: %(error)s") % {"error": exc.message}) from None
    AutomationRecipe.objects.filter(pk=recipe.pk).update(flow_id="", provisioned_body=None, provisioned_at=None, drift="",
                                                         drift_checked_at=timezone.now())
    recipe.refresh_from_db()


def recipes_provision_enabled(*, actor: str = "command",
                              client: EpilotClient | None = None) -> list[tuple[AutomationRecipe, bool]]:
    """Provision every enabled recipe; returns (recipe, created) for each. Raises like recipe_provision."""
    return [recipe_provision(recipe, actor=actor, client=client)
            for recipe in AutomationRecipe.objects.filter(enabled=True).order_by("key")]


def recipes_check_drift(client: EpilotClient) -> int:
    """Compare every provisioned recipe with its flow in epilot; returns how many drifted.

    A flow epilot cannot answer for now keeps its last finding (logged); the next sync asks again.
    """
    drifted = 0
    now = timezone.now()
    for recipe in AutomationRecipe.objects.exclude(flow_id="").exclude(provisioned_body=None):
        try:
            flow = client.get_flow(recipe.flow_id)
        except EpilotNotFoundError:
            drift = FLOW_DELETED
        except EpilotError as exc:
            logger.warning("automation recipe %s: its flow could not be read: %s", recipe.key, exc.message)
            continue
        else:
            drift = _diff(recipe.provisioned_body, _compared(dict(flow.data)))
        if drift:
            drifted += 1
            if drift != recipe.drift:
                logger.warning("automation recipe %s: its flow in epilot differs from what was provisioned", recipe.key)
        AutomationRecipe.objects.filter(pk=recipe.pk).update(drift=drift, drift_checked_at=now)
    return drifted


def _find_flow(client: EpilotClient, recipe: AutomationRecipe) -> AutomationFlow | None:
    """The recipe's flow: by the stored id, else by the key in a flow's name (or the name it had before recipes)."""
    if recipe.flow_id:
        try:
            return client.get_flow(recipe.flow_id)
        except EpilotNotFoundError:
            pass
    names = {flow_name(recipe), *recipe.legacy_names}
    for flow in client.iter_flows():
        match = KEY_PATTERN.search(flow.name)
        if (match and match.group(1) == recipe.key) or flow.name in names:
            return flow
    return None


def _compared(body: dict[str, Any]) -> dict[str, Any]:
    return {key: body.get(key) for key in COMPARED if body.get(key) not in (None, [])}


def _diff(sent: dict[str, Any], found: dict[str, Any]) -> str:
    """A readable unified diff of what was provisioned against what epilot holds now, or '' when they agree."""
    ours = json.dumps(sent, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    theirs = json.dumps(found, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    if ours == theirs:
        return ""
    return "\n".join(difflib.unified_diff(ours, theirs, fromfile="provisioned", tofile="in epilot now", lineterm=""))
