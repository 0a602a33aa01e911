"""Pre-marketing (Nachfragebündelung): the forecast of an area's take-up, its frozen threshold with four-eyes
changes, where to knock next, late sign-ups flagged in epilot, and the public gauge.

Forecast: the signed units per day over the last FORECAST_DAYS days of daily snapshots (their mean
and spread); the rate needed to reach the quota by the deadline; the day the quota is reached at the
mean rate, earliest and latest at the mean plus and minus one spread. Its error is measured on
areas that reached their quota: the forecast made halfway to that day against the day itself.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
import secrets
import statistics
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.epilot import EpilotClient, EpilotError
from projects.models import AreaAddress, LateSignup, Opportunity, Order, QuotaChange, RolloutArea
from projects.selectors import SIGNED_ORDER_STATUSES, area_figures, unsigned_addresses
from projects.services.audit import audited_write
from projects.services.errors import NotAllowed, NotFound

FORECAST_DAYS = 14
MIN_HISTORY_DAYS = 14  # of a past campaign before its quota was reached, to measure the forecast's error on it


class ThresholdFrozen(NotAllowed):
    """The campaign started: its quota and deadline change only through a proposal another person approves."""


@dataclass(frozen=True)
class Forecast:
    rate_per_day: float | None  # signed units per day, mean of the last days
    spread_per_day: float | None  # their standard deviation
    needed_per_day: float | None  # to reach the quota by the deadline
    reached_on: dt.date | None  # when the quota is reached at the mean rate (today if it is)
    earliest: dt.date | None
    latest: dt.date | None
    days_observed: int


def signed_series(area: RolloutArea) -> list[tuple[dt.date, int]]:
    return list(area.snapshots.order_by("day").values_list("day", "units_signed"))


def forecast_from(series: list[tuple[dt.date, int]], *, needed_units: int, today: dt.date,
                  deadline: dt.date | None) -> Forecast:
    """The forecast from a series of (day, units signed) for `needed_units` in total (see the module)."""
    recent = [point for point in series if point[0] > today - dt.timedelta(days=FORECAST_DAYS)]
    rates = []
    for (day_a, units_a), (day_b, units_b) in itertools.pairwise(recent):
        rates.extend([(units_b - units_a) / (day_b - day_a).days] * (day_b - day_a).days)
    signed = series[-1][1] if series else 0
    missing = max(needed_units - signed, 0)
    days_left = (deadline - today).days if deadline else None
    needed = (round(missing / days_left, 2) if days_left and days_left > 0 else None) if missing else 0.0
    if not missing:
        return Forecast(round(statistics.fmean(rates), 2) if rates else None,
                        round(statistics.pstdev(rates), 2) if rates else None, needed, today, today, today, len(rates))
    if not rates:
        return Forecast(None, None, needed, None, None, None, 0)
    mean, spread = statistics.fmean(rates), statistics.pstdev(rates)

    def day_at(rate: float) -> dt.date | None:
        return today + dt.timedelta(days=math.ceil(missing / rate)) if rate > 0 else None

    return Forecast(round(mean, 2), round(spread, 2), needed, day_at(mean),
                    day_at(mean + spread), day_at(mean - spread), len(rates))


def area_forecast(area: RolloutArea, *, today: dt.date | None = None) -> Forecast:
    today = today or timezone.localdate()
    figures = area_figures(area, today=today)
    return forecast_from(signed_series(area), needed_units=figures["units_missing_for_quota"] + figures["units_signed"],
                         today=today, deadline=area.deadline)


def forecast_error_days(areas: list[RolloutArea] | None = None) -> list[tuple[RolloutArea, int]]:
    """For each area that reached its quota: the forecast made halfway to that day minus the day it was reached."""
    errors = []
    for area in areas if areas is not None else RolloutArea.objects.all():
        series = signed_series(area)
        needed = math.ceil(area.quota_percent * area.units_in_scope / 100) if area.units_in_scope else 0
        reached = next((day for day, units in series if needed and units >= needed), None)
        if reached is None or (reached - series[0][0]).days < MIN_HISTORY_DAYS:
            continue  # reached before there was a history to forecast from
        halfway = series[0][0] + (reached - series[0][0]) / 2
        past = [point for point in series if point[0] <= halfway]
        guess = forecast_from(past, needed_units=needed, today=halfway, deadline=area.deadline).reached_on if past else None
        if guess is not None:
            errors.append((area, (guess - reached).days))
    return errors


# --- the frozen threshold ------------------------------------------------------------------------------------------

def area_terms_change(area: RolloutArea, *, quota_percent: Decimal | None = None, deadline: dt.date | None = None,
                      campaign_start: dt.date | None = None) -> RolloutArea:
    """Set an area's campaign start, quota or deadline. Raises ThresholdFrozen for a change of quota or deadline once
    the campaign started (propose it instead), and NotAllowed for moving a start that passed."""
    with transaction.atomic():
        area = RolloutArea.objects.select_for_update().get(pk=area.pk)
        started = area.campaign_started
        if started and area.changes_terms(quota_percent, deadline):
            raise ThresholdFrozen(_("The campaign of %(area)s started on %(day)s: its quota and deadline are fixed. "
                                    "Propose the change with a reason (POST /api/v1/areas/%(id)d/quota-changes/ or "
                                    "the admin's “Propose a change”); another person approves it.")
                                  % {"area": area.name, "day": area.campaign_start.isoformat(), "id": area.pk})
        if campaign_start is not None and started and campaign_start != area.campaign_start:
            raise NotAllowed(_("The campaign started on %(day)s; its start cannot move.")
                             % {"day": area.campaign_start.isoformat()})
        if quota_percent is not None:
            area.quota_percent = quota_percent
        if deadline is not None:
            area.deadline = deadline
        if campaign_start is not None:
            area.campaign_start = campaign_start
        area.save(update_fields=["quota_percent", "deadline", "campaign_start"])
    return area


def quota_change_propose(area: RolloutArea, *, quota_percent: Decimal | None, deadline: dt.date | None, reason: str,
                         user: Any = None, actor: str) -> QuotaChange:
    """Record a proposal to change a started campaign's quota or deadline. Raises NotAllowed without a reason or a
    change."""
    if not reason.strip():
        raise NotAllowed(_("A change of a started campaign needs a reason."))
    if quota_percent is None and deadline is None:
        raise NotAllowed(_("Propose a new quota, a new deadline or both."))
    area = RolloutArea.objects.get(pk=area.pk)  # the terms as they stand, not as the caller read them
    return QuotaChange.objects.create(
        area=area, quota_percent=quota_percent, deadline=deadline, previous_quota_percent=area.quota_percent,
        previous_deadline=area.deadline, reason=reason.strip(), proposed_by=user if getattr(user, "pk", None) else None,
        proposed_by_name=actor)


def quota_change_decide(change: QuotaChange, *, approve: bool, user: Any) -> QuotaChange:
    """Approve (and apply) or refuse a proposal. Raises NotAllowed when it was decided already or when the person
    deciding proposed it."""
    with transaction.atomic():
        change = QuotaChange.objects.select_for_update().get(pk=change.pk)
        if change.status != QuotaChange.Status.PROPOSED:
            raise NotAllowed(_("This change was decided already."))
        if change.proposed_by_id is not None and change.proposed_by_id == getattr(user, "pk", None):
            raise NotAllowed(_("Another person must decide on a change you proposed."))
        change.status = QuotaChange.Status.APPROVED if approve else QuotaChange.Status.REFUSED
        change.decided_by, change.decided_at = user, timezone.now()
        change.save(update_fields=["status", "decided_by", "decided_at"])
        if approve:
            fields = {"quota_percent": change.quota_percent, "deadline": change.deadline}
            RolloutArea.objects.filter(pk=change.area_id).update(**{k: v for k, v in fields.items() if v is not None})
    return change


# --- where to knock next -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Street:
    name: str
    postal_code: str
    units_in_scope: int
    units_signed: int
    addresses: list[AreaAddress]  # without a contract, by house number

    @property
    def signed_percent(self) -> float:
        return round(100 * self.units_signed / self.units_in_scope, 1) if self.units_in_scope else 0.0


def walk_list(area: RolloutArea) -> list[Street]:
    """Per street: the households in scope without a contract (by house number), units, and the share signed."""
    unsigned = set(unsigned_addresses(area).values_list("pk", flat=True))
    streets: dict[tuple[str, str], list[AreaAddress]] = defaultdict(list)
    for address in area.addresses.order_by("street", "house_number"):
        streets[(address.street, address.postal_code)].append(address)
    result = []
    for (name, postal_code), addresses in sorted(streets.items()):
        open_ones = sorted((a for a in addresses if a.pk in unsigned), key=lambda a: _house_number_order(a.house_number))
        result.append(Street(name, postal_code, sum(a.units for a in addresses),
                             sum(a.units for a in addresses if a.pk not in unsigned), open_ones))
    return result


def _house_number_order(number: str) -> tuple[int, str]:
    digits = "".join(ch for ch in number if ch.isdigit())
    return (int(digits) if digits else 0, number)


# --- late sign-ups -------------------------------------------------------------------------------------------------

def late_signups_find() -> int:
    """Record the signed orders at an area's addresses created after its deadline; returns how many were new."""
    new = 0
    for area in RolloutArea.objects.filter(deadline__isnull=False):
        after = timezone.make_aware(dt.datetime.combine(area.deadline + dt.timedelta(days=1), dt.time()))
        keys = area.addresses.values("key")
        opportunities = Opportunity.objects.filter(address_key__in=keys, epilot_deleted_at__isnull=True)
        orders = Order.objects.filter(opportunity__in=opportunities, epilot_deleted_at__isnull=True,
                                      status__in=SIGNED_ORDER_STATUSES, epilot_created_at__gte=after)
        known = set(LateSignup.objects.filter(area=area).values_list("order_epilot_id", flat=True))
        for order in orders.exclude(epilot_id__in=known):
            LateSignup.objects.get_or_create(order_epilot_id=order.epilot_id, defaults={
                "area": area, "order_title": order.title[:500], "signed_at": order.epilot_created_at})
            new += 1
    return new


def late_signups_flag(client: EpilotClient) -> int:
    """Write the late sign-up attribute (LATE_SIGNUP_ATTRIBUTE) to each recorded order in epilot once; returns how
    many were written. A failed write is kept with its error and tried again next time."""
    attribute = settings.LATE_SIGNUP_ATTRIBUTE
    written = 0
    for late in LateSignup.objects.filter(flagged_at__isnull=True).order_by("pk"):
        # Setting a value is safe to repeat: a retried write never changes more than once.
        try:
            with audited_write(action="late_signup.flag", target_schema="order", target_epilot_id=late.order_epilot_id,
                               summary={attribute: True}, actor="late-signups"):
                client.patch_entity("order", late.order_epilot_id, {attribute: True})
        except EpilotError as exc:
            LateSignup.objects.filter(pk=late.pk).update(error=str(exc)[:500])
            continue
        LateSignup.objects.filter(pk=late.pk).update(flagged_at=timezone.now(), error="")
        written += 1
    return written


# --- the public gauge ----------------------------------------------------------------------------------------------

def public_gauge_enable(area: RolloutArea) -> str:
    """Give the area a new unguessable token for its public gauge (an earlier one stops working); returns it."""
    token = secrets.token_urlsafe(24)
    RolloutArea.objects.filter(pk=area.pk).update(public_token=token)
    return token


def public_gauge_revoke(area: RolloutArea) -> None:
    RolloutArea.objects.filter(pk=area.pk).update(public_token="")


def public_gauge_area(token: str) -> RolloutArea:
    """The area whose public gauge this token opens. Raises NotFound."""
    area = RolloutArea.objects.filter(public_token=token).first() if token and len(token) >= 24 else None
    if area is None:
        raise NotFound(_("No such gauge."))
    return area


def public_gauge_figures(area: RolloutArea) -> dict[str, Any]:
    """What the public may see of an area: no address, no person, no id."""
    figures = area_figures(area)
    return {"area": area.name, "take_up_percent": figures["take_up_percent"], "quota_percent": figures["quota_percent"],
            "units_signed": figures["units_signed"], "units_in_scope": figures["units_in_scope"],
            "units_missing_for_quota": figures["units_missing_for_quota"],
            "deadline": figures["deadline"].isoformat() if figures["deadline"] else None,
            "days_left": figures["days_left"], "quota_reached": figures["units_missing_for_quota"] == 0,
            "as_of": area.figures_at.isoformat() if area.figures_at else None}
