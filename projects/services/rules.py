"""Local rules: when a mirrored entity of a schema has attribute = value, start a definition on it, once."""
from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import IntegrityError, transaction

from integrations.epilot import EpilotClient
from projects.mirror.bulk import column_in
from projects.mirror.schemas import model_for
from projects.models import AutomationRule, RuleFiring
from projects.selectors import automation_owning_trigger
from projects.services.errors import RemoteFailure, ServiceError
from projects.services.workflows import workflow_start

logger = logging.getLogger("projects.rules")


def rules_evaluate(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None) -> list[RuleFiring]:
    """Fire every enabled rule that matches one of the (schema, epilot id) entities; each rule fires once per entity.

    Called by the top-level use cases (a sync run, a status change, a conversion) once, after they
    refreshed the mirror; the workflow starts it makes refresh the mirror but evaluate no rules.
    """
    refs = list(refs)
    fired: list[RuleFiring] = []
    for rule in AutomationRule.objects.filter(enabled=True).select_related("definition"):
        ids = [epilot_id for schema, epilot_id in refs if schema == rule.schema]
        if not ids or automation_owning_trigger(schema=rule.schema, attribute=rule.attribute, value=rule.value,
                                                  definition_epilot_id=rule.definition.epilot_id):
            continue
        # The ids go as one parameter each time: a full sync names more entities than a statement takes parameters.
        already = set(RuleFiring.objects.filter(column_in(RuleFiring, "entity_epilot_id", ids), rule=rule)
                      .values_list("entity_epilot_id", flat=True))
        model = model_for(rule.schema)
        candidates = model.objects.filter(column_in(model, "epilot_id", [i for i in ids if i not in already]),
                                          epilot_deleted_at__isnull=True)
        for entity in candidates.only("epilot_id", "title", "payload"):
            if str(entity.payload.get(rule.attribute)) != rule.value:
                continue
            try:
                with transaction.atomic():
                    firing = RuleFiring.objects.create(rule=rule, entity_epilot_id=entity.epilot_id)
            except IntegrityError:
                continue  # fired by a concurrent evaluation
            try:
                firing.workflow_start = workflow_start(definition=rule.definition, schema=rule.schema, entity_id=entity.epilot_id,
                                                       entity_title=entity.title, actor=f"rule:{rule.pk}", client=client)
                firing.save(update_fields=["workflow_start"])
            except RemoteFailure as exc:
                # epilot failed: the firing is withdrawn so the next change of the entity tries again. The failed
                # start stays in the workflow starts and, where a write was sent, in the audit trail.
                firing.delete()
                logger.warning("rule %s on %s: workflow start failed, will retry on the next change: %s", rule.pk,
                               entity.epilot_id, exc.message)
                continue
            except ServiceError as exc:
                logger.info("rule %s on %s: %s", rule.pk, entity.epilot_id, exc.message)
            fired.append(firing)
    return fired


def rules_evaluate_safely(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None) -> None:
    """rules_evaluate for use cases whose own work is done: a failing rule is logged, never raised."""
    if not refs:
        return
    try:
        rules_evaluate(refs=refs, client=client)
    except Exception:  # a rule must never undo or fail the write that triggered it; the log and the audit trail show it
        logger.exception("local rules could not be evaluated")
