"""Local rules: when a mirrored entity of a schema has attribute = value, start a definition on it, once."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from django.db import IntegrityError, transaction

from integrations.epilot import EpilotClient
from projects.mirror.bulk import column_in
from projects.mirror.schemas import mirrored_rows, model_for
from projects.models import AutomationRule, MirroredEntity, RuleFiring
from projects.selectors import automation_owning_trigger
from projects.services.errors import RemoteFailure, ServiceError
from projects.services.workflows import workflow_start

logger = logging.getLogger("projects.rules")


def rules_evaluate(*, refs: Iterable[tuple[str, str]] | None, client: EpilotClient | None = None) -> list[RuleFiring]:
    """Fire every enabled rule that matches one of the (schema, epilot id) entities, or any live mirrored entity when
    `refs` is None (after a full sync, which lists no refs); each rule fires once per entity.

    Called by the top-level use cases (a sync run, a status change, a conversion) once, after they
    refreshed the mirror; the workflow starts it makes refresh the mirror but evaluate no rules.
    """
    refs = None if refs is None else list(refs)
    fired: list[RuleFiring] = []
    for rule in AutomationRule.objects.filter(enabled=True).select_related("definition"):
        ids = None if refs is None else [epilot_id for schema, epilot_id in refs if schema == rule.schema]
        if ids == [] or automation_owning_trigger(schema=rule.schema, attribute=rule.attribute, value=rule.value,
                                                  definition_epilot_id=rule.definition.epilot_id):
            continue
        for entity in _candidates(rule, ids):
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


def rules_evaluate_safely(*, refs: Iterable[tuple[str, str]] | None, client: EpilotClient | None = None) -> None:
    """rules_evaluate for use cases whose own work is done: a failing rule is logged, never raised."""
    if refs is not None and not refs:
        return
    try:
        rules_evaluate(refs=refs, client=client)
    except Exception:  # a rule must never undo or fail the write that triggered it; the log and the audit trail show it
        logger.exception("local rules could not be evaluated")


def _candidates(rule: AutomationRule, ids: list[str] | None) -> Iterator[MirroredEntity]:
    """The live entities of the rule's schema among `ids` (all when None) that the rule has not fired on.

    Read a chunk at a time, each chunk whole, so no cursor stays open while a firing calls epilot.
    """
    fired = RuleFiring.objects.filter(rule=rule)
    rows = mirrored_rows(rule.schema).filter(epilot_deleted_at__isnull=True)
    model = model_for(rule.schema)
    if ids is None:
        wanted = list(rows.exclude(epilot_id__in=fired.values("entity_epilot_id")).values_list("epilot_id", flat=True))
    else:
        # The ids go as one parameter each time: a sync may name more entities than a statement takes parameters.
        already = set(fired.filter(column_in(RuleFiring, "entity_epilot_id", ids)).values_list("entity_epilot_id",
                                                                                                flat=True))
        wanted = [epilot_id for epilot_id in ids if epilot_id not in already]
    for start in range(0, len(wanted), RULE_CHUNK):
        yield from rows.filter(column_in(model, "epilot_id", wanted[start:start + RULE_CHUNK])).only(
            "epilot_id", "title", "payload")


RULE_CHUNK = 500
