"""Promise dates: per order the date promised for `connected` and `activated`, whether it holds, and a task when
it slips.

A promise comes from the order's epilot attribute (PROMISE_ATTRIBUTES; a date or a date-time), which
staff may also set here (written to epilot with the version they saw, audited), else from its area's
rule (contract date + N weeks). Its state: *kept* when the milestone was reached on or before the
date (epilot's completion time of the step that marks it); *breached* when the date passed without
it (or it came later); *at risk* when the P50 forecast lies after the date; else *open*. A promise
that becomes at risk or breached gets one alert per state, and with a configured workflow one
workflow on the order in epilot (the responsible staff's task).

Kept current by the mirror's change event: an order's change re-reads its promises, a building's
change (projects_changed) recomputes the promises at its address; nightly everything, with the
forecasts.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotConflictError, EpilotError, EpilotNotFoundError
from integrations.epilot.types import MalformedPayload, parse_timestamp
from projects.mirror.bulk import bulk_update_by_pk, column_in, json_key, values_read_at_once
from projects.mirror.changes import EntitiesChanged
from projects.mirror.intake import mirror_after_write
from projects.models import (
    AreaAddress,
    EpilotWrite,
    FunnelSettings,
    Order,
    Promise,
    PromiseAlert,
    PromisedMilestone,
    RolloutArea,
    WorkflowDefinition,
)
from projects.services.audit import audited_write, version_seen
from projects.services.errors import Conflict, NotAllowed, RemoteFailure, ServiceError
from projects.services.forecasts import Curves, curves_by_span, forecast, forecast_curves_recompute
from projects.services.milestones import building_milestones, order_milestones

logger = logging.getLogger(__name__)
MILESTONES = list(PromisedMilestone.values)
ALERT_STATES = (Promise.State.AT_RISK, Promise.State.BREACHED)
ACTOR = "promises"


def promise_attributes() -> dict[str, str]:
    """milestone → the order attribute in epilot that holds its promised date."""
    return {"connected": settings.PROMISE_ATTRIBUTE_CONNECTED, "activated": settings.PROMISE_ATTRIBUTE_ACTIVATED}


def promised_date_of(value: Any) -> dt.date | None:
    """A date from an attribute value: 'YYYY-MM-DD' or an ISO date-time (its local date); None when it is neither."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else timezone.localdate(parse_timestamp(text, name="date"))
    except (ValueError, MalformedPayload):
        return None


def promises_sync(order_ids: Iterable[int] | None, *, now: dt.datetime | None = None) -> int:
    """Bring the promises of these orders (all when None) in line with their attributes and their areas' rules, then
    recompute their states; returns how many promises the orders have."""
    now = now or timezone.now()
    attributes = promise_attributes()
    orders = Order.objects.order_by()
    if order_ids is not None:
        order_ids = sorted(set(order_ids))
        if not order_ids:
            return 0
        orders = orders.filter(column_in(Order, "id", order_ids))
    rows = list(orders.values_list("id", "epilot_deleted_at", "opportunity__address_key",
                                   *(json_key("payload", name) for name in attributes.values())))
    keys = sorted({row[2] for row in rows if row[2]})
    area_of_key = _areas_of(keys)
    rules = {area.pk: area for area in RolloutArea.objects.filter(pk__in=set(area_of_key.values()))}
    existing = {(p.order_id, p.milestone): p for p in Promise.objects.filter(
        column_in(Promise, "order", [row[0] for row in rows]))} if rows else {}
    wanted: dict[tuple[int, str], tuple[dt.date, str, str, int | None]] = {}
    by_rule: list[tuple[int, str, str, int, int]] = []  # (order, milestone, key, area, weeks) promised by a rule
    for pk, deleted, key, *values in rows:
        if deleted is not None:
            continue
        area = area_of_key.get(key or "")
        for milestone, value in zip(attributes, values, strict=True):
            promised = promised_date_of(value)
            if promised is not None:
                wanted[(pk, milestone)] = (promised, Promise.Source.ATTRIBUTE, key or "", area)
            elif area is not None and (weeks := getattr(rules[area], f"promise_{milestone}_weeks")):
                by_rule.append((pk, milestone, key, area, weeks))
    # Creation dates only for the orders a rule promises something (the others' would be read for nothing).
    created_of = dict(values_read_at_once(Order.objects.filter(column_in(Order, "id", sorted({r[0] for r in by_rule})))
                                          .order_by(), "id", "epilot_created_at")) if by_rule else {}
    for pk, milestone, key, area, weeks in by_rule:
        if (created := created_of.get(pk)) is not None:
            wanted[(pk, milestone)] = (timezone.localdate(created) + dt.timedelta(weeks=weeks), Promise.Source.RULE, key, area)
    with transaction.atomic():
        gone = [p.pk for ident, p in existing.items() if ident not in wanted]
        Promise.objects.filter(pk__in=gone).delete()
        create, update = [], []
        for (pk, milestone), (promised, source, key, area) in wanted.items():
            current = existing.get((pk, milestone))
            if current is None:
                create.append(Promise(order_id=pk, milestone=milestone, promised_on=promised, source=source,
                                      building_key=key, area_id=area, state_since=now))
            elif (current.promised_on, current.building_key, current.area_id) != (promised, key, area) or (
                    current.source != source and current.source != Promise.Source.STAFF):
                staff_kept = current.source == Promise.Source.STAFF and current.promised_on == promised
                update.append({"id": current.pk, "promised_on": promised, "building_key": key, "area": area,
                               "source": Promise.Source.STAFF if staff_kept else source})
        Promise.objects.bulk_create(create, batch_size=2000, ignore_conflicts=True)  # a concurrent sync made it
        bulk_update_by_pk(Promise, update, ["promised_on", "building_key", "area", "source"])
    new = set(Promise.objects.filter(column_in(Promise, "order", sorted({pk for pk, _m in wanted})), state_since=now)
              .values_list("id", flat=True)) if create else set()
    return promises_recompute(order_ids=None if order_ids is None else order_ids, now=now, quiet=new)


def _areas_of(keys: list[str]) -> dict[str, int]:
    """address key → the area listing it (the first by name where several do)."""
    found: dict[str, int] = {}
    if not keys:
        return found
    for key, area in AreaAddress.objects.filter(column_in(AreaAddress, "key", keys)).order_by(
            "area__name").values_list("key", "area"):
        found.setdefault(key, area)
    return found


def promises_recompute(*, order_ids: list[int] | None = None, keys: Iterable[str] | None = None,
                       now: dt.datetime | None = None, curves: Curves | None = None, quiet: set[int] = frozenset()) -> int:
    """Recompute the state and forecast of the promises of these orders or at these address keys (all when both are
    None); raise an alert for each that became at risk or breached, except the `quiet` ones (promises just made: a
    promise already slipping when first seen is listed, not alerted, so a first import starts no flood of tasks).
    Returns how many promises were looked at."""
    now = now or timezone.now()
    today = timezone.localdate(now)
    promises = Promise.objects.order_by()
    if order_ids is not None:
        promises = promises.filter(column_in(Promise, "order", list(order_ids)))
    elif keys is not None:
        keys = sorted(set(keys))
        promises = promises.filter(column_in(Promise, "building_key", keys))
    rows = list(promises.values_list("id", "order", "milestone", "promised_on", "building_key", "area", "state",
                                     "reached_at", "forecast_p50", "forecast_p90", "days_late"))
    if not rows:
        return 0
    whole = order_ids is None and keys is None
    building_keys = sorted({row[4] for row in rows if row[4]})
    by_key = building_milestones(None if whole else building_keys)
    keyless = sorted({row[1] for row in rows if not row[4]})
    by_order = order_milestones(keyless)
    signed = dict(values_read_at_once(Order.objects.filter(column_in(Order, "id", sorted({row[1] for row in rows})))
                                      .order_by(), "id", "epilot_created_at"))
    signed_at_key = dict(AreaAddress.objects.filter(column_in(AreaAddress, "key", building_keys)).exclude(
        signed_at=None).order_by().values_list("key", "signed_at")) if building_keys else {}
    curves = curves_by_span() if curves is None else curves
    changed, alerts = [], []
    for pk, order, milestone, promised, key, area, state, *stored in rows:
        reached_dates = dict(by_key[key].reached) if key and key in by_key else dict(by_order.get(order, {}))
        start = signed_at_key.get(key) or signed.get(order)
        if start is not None:
            reached_dates.setdefault("signed", start)
        reached_at = reached_dates.get(milestone)
        outlook = None if reached_at else forecast(
            curves, area=area, target=milestone, today=today,
            reached={name: timezone.localdate(when) for name, when in reached_dates.items()})
        new_state, late = _state(promised, reached_at, outlook.p50 if outlook else None, today)
        figures = [reached_at, outlook.p50 if outlook else None, outlook.p90 if outlook else None, late]
        if new_state != state or figures != stored:
            row = {"id": pk, "reached_at": reached_at, "forecast_p50": figures[1], "forecast_p90": figures[2],
                   "days_late": late, "state": new_state}
            if new_state != state:
                row["state_since"] = now
                if new_state in ALERT_STATES and pk not in quiet:
                    alerts.append(PromiseAlert(promise_id=pk, state=new_state))
            changed.append(row)
    columns = ["reached_at", "forecast_p50", "forecast_p90", "days_late", "state"]
    with transaction.atomic():
        bulk_update_by_pk(Promise, [r for r in changed if "state_since" not in r], columns)
        bulk_update_by_pk(Promise, [r for r in changed if "state_since" in r], [*columns, "state_since"])
        if alerts:
            PromiseAlert.objects.bulk_create(alerts, ignore_conflicts=True)  # once per promise and state
            transaction.on_commit(_queue_alerts, robust=True)
    return len(rows)


def _state(promised: dt.date, reached_at: dt.datetime | None, p50: dt.date | None, today: dt.date) -> tuple[str, int | None]:
    if reached_at is not None:
        reached = timezone.localdate(reached_at)
        return (Promise.State.KEPT, None) if reached <= promised else (Promise.State.BREACHED, (reached - promised).days)
    if today > promised:
        return Promise.State.BREACHED, (today - promised).days
    if p50 is not None and p50 > promised:
        return Promise.State.AT_RISK, None
    return Promise.State.OPEN, None


def _queue_alerts() -> None:
    from projects.tasks import promise_alerts

    promise_alerts.delay()


def promise_alerts_send(*, client: EpilotClient | None = None) -> int:
    """For each new alert: start the configured workflow on its order (once: a running one is adopted as the task),
    and where the order's area tells customers, write the order's `promise_state` (once per alert) for the customer
    notice. Returns how many epilot writes succeeded."""
    client = client or get_epilot_client()
    return _start_tasks(client) + _write_notices(client)


def _start_tasks(client: EpilotClient) -> int:
    from projects.services.workflows import workflow_start

    workflow = (FunnelSettings.objects.values_list("promise_task_workflow", flat=True).first() or "").strip()
    definition = WorkflowDefinition.objects.filter(epilot_id=workflow, removed_in_epilot=False).first() if workflow else None
    if definition is None:
        return 0
    started = 0
    for alert in PromiseAlert.objects.filter(sent_at=None).select_related("promise__order").order_by("pk")[:200]:
        order = alert.promise.order
        try:
            start = workflow_start(definition=definition, schema="order", entity_id=order.epilot_id,
                                   entity_title=order.title, actor=ACTOR, client=client)
        except NotAllowed as exc:  # already running on the order: that workflow is the task
            PromiseAlert.objects.filter(pk=alert.pk).update(sent_at=timezone.now(), error=exc.message)
        except ServiceError as exc:  # epilot failed or another start is under way: the next sweep tries again
            PromiseAlert.objects.filter(pk=alert.pk).update(error=exc.message)
        else:
            PromiseAlert.objects.filter(pk=alert.pk).update(sent_at=timezone.now(), error="",
                                                            execution_epilot_id=start.execution_epilot_id)
            started += 1
    return started


def _write_notices(client: EpilotClient) -> int:
    """`promise_state` on the orders of new alerts in areas that tell their customers; an automation recipe
    ("Customer notice when a promised date slips") in epilot sends the e-mail."""
    from projects.services.recipes import PROMISE_STATE_ATTRIBUTE

    written = 0
    for alert in PromiseAlert.objects.filter(notice_written_at=None, promise__area__promise_notice=True).select_related(
            "promise__order").order_by("pk")[:200]:
        order = alert.promise.order
        summary = {PROMISE_STATE_ATTRIBUTE: alert.state, "milestone": alert.promise.milestone}
        try:
            with audited_write(action=EpilotWrite.Action.WRITE_PROMISE_STATE, target_schema="order",
                               target_epilot_id=order.epilot_id, summary=summary, actor=ACTOR):
                client.patch_entity("order", order.epilot_id, {PROMISE_STATE_ATTRIBUTE: alert.state})
        except EpilotError as exc:  # recorded in the audit trail; the next sweep tries again
            logger.warning("promise_state of order %s not written: %s", order.epilot_id, exc.message)
            continue
        PromiseAlert.objects.filter(pk=alert.pk).update(notice_written_at=timezone.now())
        written += 1
    return written


def promises_nightly(*, now: dt.datetime | None = None) -> int:
    """The forecasts from the day's history, then every promise (a date passing breaks a promise without a change)."""
    forecast_curves_recompute(now=now)
    return promises_sync(None, now=now)


def promise_set(*, order: Order, milestone: str, promised_on: dt.date | None, user: Any = None, actor: str = "admin",
                expected_updated_at: str | None = None, client: EpilotClient | None = None) -> Promise | None:
    """Write the promised date (None: remove it) to the order's attribute in epilot with the version staff saw.

    Raises NotAllowed (unknown milestone, deleted order, unreadable version), Conflict when epilot holds a newer
    version of the order (nothing written), RemoteFailure for other epilot failures.
    """
    attribute = promise_attributes().get(milestone)
    if attribute is None:
        raise NotAllowed(_("Unknown milestone: %(milestone)s") % {"milestone": milestone})
    expected = version_seen(order, expected_updated_at)
    value = promised_on.isoformat() if promised_on else None
    client = client or get_epilot_client()
    summary = {attribute: value, "previous": order.payload.get(attribute), "_updated_at": expected}
    try:
        with audited_write(action=EpilotWrite.Action.WRITE_PROMISE, target_schema="order",
                           target_epilot_id=order.epilot_id, summary=summary, user=user, actor=actor):
            client.patch_entity("order", order.epilot_id, {attribute: value}, updated_at=expected)
    except EpilotConflictError:
        raise Conflict(_("The order was changed in epilot since you opened it; nothing was written. Reload and "
                         "set the date again.")) from None
    except EpilotNotFoundError:
        raise NotAllowed(_("The order no longer exists in epilot.")) from None
    except EpilotError as exc:
        raise RemoteFailure(_("epilot did not accept the change: %(error)s") % {"error": exc.message}) from None
    mirror_after_write(refs=[("order", order.epilot_id)], client=client)  # its listener re-reads the promises
    promise = Promise.objects.filter(order=order, milestone=milestone).first()
    if promise is not None and promised_on is not None and promise.promised_on == promised_on:
        Promise.objects.filter(pk=promise.pk).update(source=Promise.Source.STAFF, set_by=user)
        promise.refresh_from_db()
    return promise


def promises_on_entities_changed(sender: Any, change: EntitiesChanged, **kwargs: Any) -> None:
    """Listener of `entities_changed`: the promises of the changed orders (every order after a full run)."""
    if change.full:
        promises_sync(None)
        return
    if change.orders:
        ids = list(Order.objects.filter(column_in(Order, "epilot_id", sorted(change.orders))).values_list("id", flat=True))
        promises_sync(ids)


def promises_on_projects_changed(sender: Any, opportunity_ids: set[int] | None, address_keys: set[str],
                                 **kwargs: Any) -> None:
    """Listener of `projects_changed`: the promises at these addresses (their buildings' milestones may have moved)."""
    if opportunity_ids is None:
        promises_recompute()
    elif address_keys:
        promises_recompute(keys=address_keys)


def promise_rows(*, state: str | None = None, milestone: str | None = None, area: int | None = None):
    """The promises as the list and the API show them, with order and area."""
    rows = Promise.objects.select_related("order", "area").order_by("promised_on", "pk")
    if state:
        rows = rows.filter(state=state)
    if milestone:
        rows = rows.filter(milestone=milestone)
    if area:
        rows = rows.filter(area_id=area)
    return rows.filter(order__epilot_deleted_at__isnull=True)
