"""Convert an approved opportunity into an order: a saga whose steps are recorded and resumable.

1. create the order by upsert on `backoffice_conversion_key` (a lost answer or a retry finds it again);
2. link it through the opportunity's `items` relation;
3. start the chosen workflow on the order (adopting one that already runs from an earlier attempt);
4. set the opportunity's status (default `geschlossen`) with `_updated_at`, re-reading it once on a 409.
No transaction or row lock is held while epilot is called: a conversion is claimed with a
conditional UPDATE, each step is saved as it completes.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotConflictError, EpilotError, RelationItem
from projects.formatting import format_amount
from projects.mirror.intake import mirror_after_write
from projects.models import Conversion, EpilotWrite, Opportunity, WorkflowDefinition, WorkflowStart
from projects.services.audit import audited_write, record_refused_write, stored_user
from projects.services.errors import Conflict, InProgress, NotAllowed, RemoteFailure, ServiceError
from projects.services.rules import rules_evaluate_safely
from projects.services.workflows import running_executions, workflow_start

CLAIM_SECONDS = 300
CONVERSION_KEY_ATTRIBUTE = "backoffice_conversion_key"
ORDER_TAGS = ["ausbau", "glasfaser"]


@dataclass(frozen=True)
class OrderPreview:
    """What the confirmation page shows before anything is written."""

    title: str
    customer: str
    address: str
    amount_total: int | None
    currency: str
    tags: list[str]

    @property
    def amount_display(self) -> str:
        return format_amount(self.amount_total, self.currency)


def conversion_preview(opportunity: Opportunity, *, amount_total: int | None = None) -> OrderPreview:
    """The order a conversion would create; the amount defaults to the opportunity's budget."""
    if amount_total is None and opportunity.budget is not None:
        amount_total = int(opportunity.budget * 100)
    return OrderPreview(title=f"Ausbau: {opportunity.title}"[:500],
                        customer=str(opportunity.customer) if opportunity.customer else "–", address=opportunity.address or "–",
                        amount_total=amount_total, currency=(opportunity.payload.get("currency") or "EUR")[:3],
                        tags=list(dict.fromkeys([*ORDER_TAGS, *(opportunity.tags or [])])))


def opportunity_convert(*, opportunity: Opportunity, definition: WorkflowDefinition | None, amount_total: int | None = None,
                        target_status: str | None = None, user: Any = None, actor: str = "admin",
                        client: EpilotClient | None = None) -> Conversion:
    """Convert (or resume converting) an opportunity; returns the finished Conversion.

    Raises NotAllowed (deleted, cancelled), InProgress (someone else is converting it right now)
    or RemoteFailure (a step failed; the conversion is saved as failed and can be resumed).
    """
    client = client or get_epilot_client()
    if opportunity.is_deleted:
        raise NotAllowed(_("The opportunity is deleted in epilot and cannot be converted."))
    if opportunity.status == "abgebrochen":
        raise NotAllowed(_("The opportunity is cancelled (abgebrochen) and cannot be converted."))
    existing = Conversion.objects.filter(opportunity=opportunity).select_related("definition").first()
    if existing is not None and existing.status == Conversion.Status.DONE:
        return existing
    workflow_pending = existing is None or existing.step in (Conversion.Step.REQUESTED, Conversion.Step.ORDER_CREATED,
                                                             Conversion.Step.LINKED)
    chosen = definition if definition is not None or existing is None else existing.definition
    if workflow_pending and chosen is not None and (chosen.removed_in_epilot or not chosen.enabled):
        # Checked before the first write: a saga must not stop halfway on a workflow it cannot start.
        raise NotAllowed(_("The workflow '%(name)s' is not available in epilot (disabled or removed); please choose another one.")
                         % {"name": chosen.name})
    conversion = _get_or_create(opportunity, definition, amount_total, target_status or settings.CONVERSION_TARGET_STATUS, user)
    if conversion.status == Conversion.Status.DONE:
        return conversion
    if not _claim(conversion):
        raise InProgress(_("Someone else is converting this opportunity right now."))
    if workflow_pending and definition is not None and conversion.definition_id != definition.pk:
        _save(conversion, definition=definition)  # a resume may choose another workflow until it has started
    try:
        _run_steps(client, conversion, user=user, actor=actor)
    except EpilotError as exc:
        _save(conversion, status=Conversion.Status.FAILED, error=exc.message)
        raise RemoteFailure(_("The conversion stopped at step '%(step)s': %(error)s. It can be resumed.")
                            % {"step": conversion.get_step_display(), "error": exc.message}) from None
    except ServiceError as exc:
        _save(conversion, status=Conversion.Status.FAILED, error=exc.message)
        raise
    _save(conversion, status=Conversion.Status.DONE, step=Conversion.Step.DONE, error="")
    _mirror(client, conversion)
    return conversion


def _get_or_create(opportunity: Opportunity, definition: WorkflowDefinition | None, amount_total: int | None, target_status: str,
                   user: Any) -> Conversion:
    existing = Conversion.objects.filter(opportunity=opportunity).first()
    if existing:
        return existing
    preview = conversion_preview(opportunity, amount_total=amount_total)
    try:
        with transaction.atomic():
            return Conversion.objects.create(
                opportunity=opportunity, key=uuid.uuid4().hex, definition=definition, target_status=target_status,
                source_status=opportunity.status,
                order_title=preview.title, amount_total=preview.amount_total, currency=preview.currency,
                requested_by=stored_user(user))
    except IntegrityError:  # two requests at once: the other one created it
        return Conversion.objects.get(opportunity=opportunity)


def _claim(conversion: Conversion) -> bool:
    now = timezone.now()
    claimed = Conversion.objects.filter(pk=conversion.pk).exclude(status=Conversion.Status.DONE).filter(
        ~Q(status=Conversion.Status.RUNNING) | Q(claimed_until__lt=now)
    ).update(status=Conversion.Status.RUNNING, claimed_until=now + dt.timedelta(seconds=CLAIM_SECONDS))
    conversion.refresh_from_db()
    return claimed == 1


def _save(conversion: Conversion, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(conversion, name, value)
    if changes.get("status") in (Conversion.Status.FAILED, Conversion.Status.DONE):
        conversion.claimed_until = None
        changes["claimed_until"] = None
    conversion.save(update_fields=[*changes, "updated_at"])


def _run_steps(client: EpilotClient, conversion: Conversion, *, user: Any, actor: str) -> None:
    opportunity = conversion.opportunity
    if conversion.step == Conversion.Step.REQUESTED:
        order_id = _create_order(client, conversion, user=user, actor=actor)
        _save(conversion, order_epilot_id=order_id, step=Conversion.Step.ORDER_CREATED)
    if conversion.step == Conversion.Step.ORDER_CREATED:
        summary = {"attribute": "items", "order": conversion.order_epilot_id}
        with audited_write(action=EpilotWrite.Action.LINK_ORDER, target_schema="opportunity",
                           target_epilot_id=opportunity.epilot_id, summary=summary, user=user, actor=actor,
                           conversion=conversion):
            client.add_relations(
                "opportunity", opportunity.epilot_id, [RelationItem(entity_id=conversion.order_epilot_id, attribute="items")]
            )
        _save(conversion, step=Conversion.Step.LINKED)
    if conversion.step == Conversion.Step.LINKED:
        execution_id = _start_workflow(client, conversion, user=user, actor=actor) if conversion.definition else ""
        _save(conversion, execution_epilot_id=execution_id, step=Conversion.Step.WORKFLOW_STARTED)
    if conversion.step == Conversion.Step.WORKFLOW_STARTED:
        _close_opportunity(client, conversion, user=user, actor=actor)


def _create_order(client: EpilotClient, conversion: Conversion, *, user: Any, actor: str) -> str:
    opportunity = conversion.opportunity
    attributes: dict[str, Any] = {
        CONVERSION_KEY_ATTRIBUTE: conversion.key,
        "_title": conversion.order_title,
        "status": "placed",
        "currency": conversion.currency,
        "opportunity": {"$relation": [{"entity_id": opportunity.epilot_id}]},
        "_tags": conversion_preview(opportunity).tags,
    }
    if conversion.amount_total is not None:
        attributes["amount_total"] = conversion.amount_total
    if opportunity.customer_epilot_id:
        attributes["customer"] = {"$relation": [{"entity_id": opportunity.customer_epilot_id}]}
    address = opportunity.payload.get("address")
    if isinstance(address, dict):
        attributes["billing_address"] = [address]
    summary = {"unique_key": [CONVERSION_KEY_ATTRIBUTE], "key": conversion.key, "title": conversion.order_title,
               "amount_total": conversion.amount_total, "opportunity": opportunity.epilot_id}
    with audited_write(action=EpilotWrite.Action.CREATE_ORDER, target_schema="order", summary=summary, user=user, actor=actor,
                       conversion=conversion) as outcome:
        order, _created = client.upsert_entity("order", [CONVERSION_KEY_ATTRIBUTE], attributes)
        outcome.epilot_ids = [order.id]
    EpilotWrite.objects.filter(pk=outcome.record.pk).update(target_epilot_id=order.id)
    return order.id


def _start_workflow(client: EpilotClient, conversion: Conversion, *, user: Any, actor: str) -> str:
    definition = conversion.definition
    already = running_executions(client, definition, "order", conversion.order_epilot_id)
    if already:  # started by an earlier attempt whose answer was lost
        return already[0].id
    start = workflow_start(definition=definition, schema="order", entity_id=conversion.order_epilot_id,
                           entity_title=conversion.order_title, user=user, actor=actor, client=client)
    if start.status != WorkflowStart.Status.STARTED:
        raise RemoteFailure(start.error or _("The workflow start failed."))
    return start.execution_epilot_id


def _close_opportunity(client: EpilotClient, conversion: Conversion, *, user: Any, actor: str) -> None:
    """Set the target status, but only over the status the opportunity had when the conversion was asked for.

    Someone may have changed it in the meantime (to `abgebrochen`, say); then nothing is written
    and the conversion stops as a conflict for staff to decide.
    """
    opportunity = conversion.opportunity
    for attempt in (1, 2):
        current = client.get_entity("opportunity", opportunity.epilot_id)
        status = current.data.get("status")
        if status == conversion.target_status:
            return
        if not conversion.source_status:  # recorded before this field existed: the first read is the reference
            _save(conversion, source_status=str(status or ""))
        if (status or "") != conversion.source_status:
            reason = _(
                "The opportunity's status was changed to '%(status)s' meanwhile (before: '%(before)s'); '%(target)s' "
                "was not set."
            ) % {"status": status, "before": conversion.source_status, "target": conversion.target_status}
            record_refused_write(
                action=EpilotWrite.Action.CLOSE_OPPORTUNITY,
                target_schema="opportunity",
                target_epilot_id=opportunity.epilot_id,
                reason=reason,
                user=user,
                actor=actor,
                conversion=conversion,
                summary={"status": conversion.target_status, "expected": conversion.source_status, "found": status},
            )
            raise Conflict(reason)
        summary = {"status": conversion.target_status, "_updated_at": current.data.get("_updated_at")}
        try:
            with audited_write(action=EpilotWrite.Action.CLOSE_OPPORTUNITY, target_schema="opportunity",
                               target_epilot_id=opportunity.epilot_id, summary=summary, user=user, actor=actor,
                               conversion=conversion):
                client.patch_entity("opportunity", opportunity.epilot_id, {"status": conversion.target_status},
                                    updated_at=current.data.get("_updated_at"))
            return
        except EpilotConflictError:
            if attempt == 2:
                raise


def _mirror(client: EpilotClient, conversion: Conversion) -> None:
    refs = [("opportunity", conversion.opportunity.epilot_id)]
    if conversion.order_epilot_id:
        refs.append(("order", conversion.order_epilot_id))
    changes = mirror_after_write(refs=refs, client=client)
    rules_evaluate_safely(refs=changes.changed_refs, client=client)
