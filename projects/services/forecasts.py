"""Forecasts of a building's next milestones from the organisation's own history.

How long finished buildings took from one milestone to a later one (signed → connected, passed →
connected, signed → activated, passed → activated, connected → activated) is kept as a curve of
quantiles, per area where at least MIN_FINISHED buildings finished that span, and over all areas.
A building still on its way is forecast from the last milestone it reached: among the buildings that
took at least as long as it has waited so far, the median (P50) and the 90th percentile (P90).

The back-test leaves each finished building out in turn and asks whether the P90 of the others held
for it (`ForecastCurve.p90_held`).
"""
from __future__ import annotations

import bisect
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from projects.mirror.bulk import values_read_at_once
from projects.models import AreaAddress, ForecastCurve

MIN_FINISHED = 20
SPANS = [("signed", "connected"), ("passed", "connected"), ("signed", "activated"), ("passed", "activated"),
         ("connected", "activated")]
DATE_COLUMNS = {"signed": "signed_at", "passed": "passed_at", "connected": "connected_at", "activated": "activated_at"}
ORDER_OF_MILESTONES = ["signed", "passed", "connected", "activated"]


def percentile(ordered: Sequence[float], share: float) -> float:
    """The value below which `share` of the ordered values lie (linear between neighbours)."""
    position = share * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def curve_of(ordered: Sequence[float]) -> list[float]:
    """The 0th to 100th percentile of ordered durations."""
    return [round(percentile(ordered, step / 100), 3) for step in range(101)]


def share_below(curve: Sequence[float], days: float) -> float:
    """The share of durations no longer than `days`, read from a curve of percentiles."""
    if days <= curve[0]:
        return 0.0
    if days >= curve[-1]:
        return 1.0
    step = bisect.bisect_left(curve, days, 1)  # the first percentile at or above `days`
    below, above = curve[step - 1], curve[step]
    fraction = (days - below) / (above - below) if above > below else 1.0
    return (step - 1 + fraction) / 100


def value_at(curve: Sequence[float], share: float) -> float:
    position = share * 100
    low, high = math.floor(position), min(math.ceil(position), 100)
    return curve[low] + (curve[high] - curve[low]) * (position - low)


def conditional_days(curve: Sequence[float], waited: float, share: float) -> float:
    """The `share` quantile of the durations at least as long as `waited` (a building that has waited 40 days is
    compared with those that took 40 days or more)."""
    already = share_below(curve, waited)
    return max(waited, value_at(curve, already + share * (1 - already)))


def leave_one_out_p90_held(ordered: Sequence[float]) -> float | None:
    """The share of durations no longer than the P90 of all the others (None with fewer than two)."""
    count = len(ordered)
    if count < 2:
        return None
    held = 0
    position = 0.9 * (count - 2)
    low, high = math.floor(position), math.ceil(position)
    for index, value in enumerate(ordered):
        # The k-th of the others is ordered[k] before the one left out and ordered[k + 1] from it on.
        low_value = ordered[low] if low < index else ordered[low + 1]
        high_value = ordered[high] if high < index else ordered[high + 1]
        p90 = low_value + (high_value - low_value) * (position - low)
        held += value <= p90
    return held / count


def forecast_curves_recompute(*, now: dt.datetime | None = None) -> int:
    """Replace the curves from the buildings' milestone dates; returns how many curves there are."""
    now = now or timezone.now()
    durations: dict[tuple[int | None, str, str], list[float]] = defaultdict(list)
    columns = ["area", *DATE_COLUMNS.values()]
    finished = AreaAddress.objects.filter(Q(connected_at__isnull=False) | Q(activated_at__isnull=False)).order_by()
    for row in values_read_at_once(finished, *columns):
        area, dates = row[0], dict(zip(DATE_COLUMNS, row[1:], strict=True))
        for start, target in SPANS:
            if dates[start] and dates[target]:
                days = max(0.0, (dates[target] - dates[start]).total_seconds() / 86400)
                durations[(area, start, target)].append(days)
                durations[(None, start, target)].append(days)
    curves = []
    for (area, start, target), values in durations.items():
        if area is not None and len(values) < MIN_FINISHED:
            continue
        ordered = sorted(values)
        curves.append(ForecastCurve(area_id=area, start=start, target=target, finished=len(ordered),
                                    quantiles=curve_of(ordered), p90_held=leave_one_out_p90_held(ordered),
                                    computed_at=now))
    with transaction.atomic():
        ForecastCurve.objects.all().delete()
        ForecastCurve.objects.bulk_create(curves)
    return len(curves)


@dataclass(frozen=True)
class Forecast:
    p50: dt.date
    p90: dt.date
    p90_held: float | None  # the back-test of the curve from signed, where there is one
    finished: int


Curves = Mapping[tuple[int | None, str, str], ForecastCurve]


def curves_by_span() -> dict[tuple[int | None, str, str], ForecastCurve]:
    return {(curve.area_id, curve.start, curve.target): curve for curve in ForecastCurve.objects.all()}


def forecast(curves: Curves, *, area: int | None, reached: Mapping[str, dt.date], target: str,
             today: dt.date) -> Forecast | None:
    """P50 and P90 dates of `target` for a building that reached `reached` (milestone → date), from the curve of its
    area, else of all areas; None without a milestone to count from or without history."""
    earlier = ORDER_OF_MILESTONES[:ORDER_OF_MILESTONES.index(target)]
    for start in reversed(earlier):
        if start not in reached:
            continue
        curve = curves.get((area, start, target)) or curves.get((None, start, target))
        if curve is None or curve.finished < 1:
            continue
        since = reached[start]
        waited = max(0, (today - since).days)
        backtest = curves.get((curve.area_id, "signed", target))
        return Forecast(p50=since + dt.timedelta(days=math.ceil(conditional_days(curve.quantiles, waited, 0.5))),
                        p90=since + dt.timedelta(days=math.ceil(conditional_days(curve.quantiles, waited, 0.9))),
                        p90_held=backtest.p90_held if backtest else None, finished=curve.finished)
    return None
