"""The rollout funnel: its configuration (milestone rules, when a building counts as stuck), and what it shows.

Stages in the build's order: in_scope, signed, passed, connected, activated. A stage counts every
building that reached it, whatever came after. A building is stuck when it stands at a stage longer
than the settings allow: signed but not passed, passed but not connected, connected but not
activated; its age counts from the date it reached that stage. Buildings are kept current by the
mirror's change event (services/areas.py); a rule change recomputes every building.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from projects.mirror.bulk import column_in
from projects.models import (
    AreaAddress,
    FunnelSettings,
    Milestone,
    MilestoneRule,
    MirroredStep,
    Opportunity,
    Order,
    Stage,
    WorkflowExecution,
)
from projects.services.areas import areas_refresh, funnel_stages
from projects.services.errors import NotAllowed
from projects.services.milestones import Rule, milestone_rules

# A building stuck at a stage: its stage, the date column it counts from, and the setting that says how long is too long.
STUCK = {
    "signed_not_passed": (Stage.SIGNED, "signed_at", "signed_not_passed_days"),
    "passed_not_connected": (Stage.PASSED, "passed_at", "passed_not_connected_days"),
    "connected_not_activated": (Stage.CONNECTED, "connected_at", "connected_not_activated_days"),
}
SINCE = {Stage.SIGNED: "signed_at", Stage.PASSED: "passed_at", Stage.CONNECTED: "connected_at",
         Stage.ACTIVATED: "activated_at"}
MAX_RULES = 200
logger = logging.getLogger(__name__)


class RulesRejected(NotAllowed):
    """The milestone configuration is not valid; `errors` names each problem. Nothing changed."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def funnel_settings() -> FunnelSettings:
    return FunnelSettings.objects.order_by("pk").first() or FunnelSettings()


def stuck_after_days() -> dict[str, int]:
    settings = funnel_settings()
    return {name: getattr(settings, setting) for name, (_stage, _since, setting) in STUCK.items()}


def milestone_rules_replace(milestones: Iterable[Mapping[str, Any]], *, stuck_days: Mapping[str, Any] | None = None,
                            actor: str) -> list[Rule]:
    """Replace every milestone rule (and, when given, the stuck thresholds), then recompute every building.

    Raises RulesRejected naming each bad rule; then nothing changes.
    """
    errors: list[str] = []
    rules: dict[tuple[str, str, str], Rule] = {}
    for number, item in enumerate(milestones, start=1):
        if not isinstance(item, Mapping):
            errors.append(_("rule %(n)d: not an object") % {"n": number})
            continue
        milestone, definition, step = item.get("key"), item.get("definition") or "", item.get("step")
        problems = []
        if milestone not in Milestone.values:
            problems.append(_("key must be one of %(keys)s") % {"keys": ", ".join(Milestone.values)})
        if not isinstance(definition, str) or len(definition) > 64 or "\x00" in definition:
            problems.append(_("definition must be an epilot id of at most 64 characters"))
        if not isinstance(step, str) or not step.strip() or len(step) > 300 or "\x00" in step:
            problems.append(_("step must be a step's name of 1 to 300 characters"))
        if problems:
            errors.append(_("rule %(n)d: %(problems)s") % {"n": number, "problems": ", ".join(problems)})
            continue
        rule = Rule(milestone, definition.strip(), step.strip())
        rules[(rule.milestone, rule.definition, rule.step)] = rule
    if len(rules) > MAX_RULES:
        errors.append(_("at most %(max)d rules") % {"max": MAX_RULES})
    settings = funnel_settings()
    for name, days in (stuck_days or {}).items():
        if name not in STUCK:
            errors.append(_("stuck_after_days: unknown %(name)s; use %(names)s") % {"name": name, "names": ", ".join(STUCK)})
        elif isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
            errors.append(_("stuck_after_days.%(name)s must be a whole number of days from 1 to 3650") % {"name": name})
        else:
            setattr(settings, STUCK[name][2], days)
    if errors:
        raise RulesRejected(errors)
    with transaction.atomic():
        before = milestone_rules()
        MilestoneRule.objects.all().delete()
        MilestoneRule.objects.bulk_create(MilestoneRule(milestone=r.milestone, definition=r.definition, step=r.step)
                                          for r in rules.values())
        settings.save()
    logger.info("Funnel milestones replaced by %s", actor, extra={
        "actor": actor, "rules_before": [vars(r) for r in before], "rules_after": [vars(r) for r in rules.values()],
        "stuck_after_days": stuck_after_days()})
    funnel_recompute()
    return milestone_rules()


def funnel_recompute() -> int:
    """Recompute every building and area (after a rule change); returns how many areas."""
    return areas_refresh()


def rule_preview(rule: Rule) -> int:
    """How many buildings in any area a rule alone would mark (its completed steps at their addresses)."""
    steps = MirroredStep.objects.filter(status="COMPLETED", name=rule.step)
    if rule.definition:
        steps = steps.filter(execution__definition_epilot_id=rule.definition)
    executions = WorkflowExecution.objects.filter(pk__in=steps.values("execution"))
    keys = set(executions.exclude(opportunity__address_key="").filter(opportunity__isnull=False)
               .values_list("opportunity__address_key", flat=True).distinct())
    keys |= set(executions.filter(order__opportunity__isnull=False).values_list("order__opportunity__address_key",
                                                                              flat=True).distinct())
    return AreaAddress.objects.filter(key__in=keys).count() if keys else 0


@dataclass(frozen=True)
class Funnel:
    stages: list[dict[str, Any]]  # key, buildings, units, conversion_percent (from the stage before)
    stuck: dict[str, int]
    stuck_after_days: dict[str, int]


def area_funnel(area_id: int | None, *, now: dt.datetime | None = None) -> Funnel:
    """The funnel of one area (all areas when None): each stage's buildings and units, the conversion from the stage
    before, and how many buildings are stuck at each stage."""
    stages = funnel_stages(None if area_id is None else [area_id])[None]  # None: the sum over the areas asked for
    previous = None
    with_conversion = []
    for stage in stages:
        conversion = round(100 * stage["buildings"] / previous, 1) if previous else None
        with_conversion.append({**stage, "conversion_percent": conversion})
        previous = stage["buildings"]
    addresses = AreaAddress.objects.all() if area_id is None else AreaAddress.objects.filter(area_id=area_id)
    days = stuck_after_days()
    stuck = {name: stuck_buildings(addresses, name, now=now, days=days).count() for name in STUCK}
    return Funnel(with_conversion, stuck, days)


def stuck_filter(name: str, *, now: dt.datetime | None = None, days: Mapping[str, int] | None = None) -> Q:
    """Buildings at the stage of `name` since longer than its threshold."""
    stage, since, _setting = STUCK[name]
    limit = (now or timezone.now()) - dt.timedelta(days=(days or stuck_after_days())[name])
    return Q(stage=stage, **{f"{since}__lt": limit})


def stuck_buildings(addresses: QuerySet, name: str, *, now: dt.datetime | None = None,
                    days: Mapping[str, int] | None = None) -> QuerySet:
    return addresses.filter(stuck_filter(name, now=now, days=days))


def any_stuck(*, now: dt.datetime | None = None) -> Q:
    days = stuck_after_days()
    condition = Q(pk__in=[])
    for name in STUCK:
        condition |= stuck_filter(name, now=now, days=days)
    return condition


def building_age_days(building: AreaAddress, *, now: dt.datetime | None = None) -> int | None:
    """Days since the building reached its stage (None in scope, or without a date)."""
    field = SINCE.get(building.stage)
    since = getattr(building, field) if field else None
    return None if since is None else max(((now or timezone.now()) - since).days, 0)


def is_stuck(building: AreaAddress, *, now: dt.datetime | None = None, days: Mapping[str, int] | None = None) -> bool:
    """Whether the building stands at its stage longer than the settings allow (as stuck_filter selects)."""
    name = next((name for name, (stage, _since, _setting) in STUCK.items() if stage == building.stage), None)
    if name is None:
        return False
    since = getattr(building, STUCK[name][1])
    return since is not None and since < (now or timezone.now()) - dt.timedelta(days=(days or stuck_after_days())[name])


def buildings_of(area_id: int | None, *, stage: str | None = None, stuck: bool | None = None,
                 now: dt.datetime | None = None) -> QuerySet:
    """The buildings of an area (all areas when None) at a stage, stuck or not; ordered by id."""
    buildings = AreaAddress.objects.order_by("id")
    if area_id is not None:
        buildings = buildings.filter(area_id=area_id)
    if stage:
        buildings = buildings.filter(stage=stage)
    if stuck is not None:
        condition = any_stuck(now=now)
        buildings = buildings.filter(condition) if stuck else buildings.exclude(condition)
    return buildings


def building_entities(building: AreaAddress) -> tuple[list[Any], list[Any]]:
    """The opportunities at a building's address and their orders (the building page)."""
    opportunities = list(Opportunity.objects.filter(address_key=building.key).order_by("id"))
    ids = [o.pk for o in opportunities]
    orders = list(Order.objects.filter(column_in(Order, "opportunity", ids)).order_by("id")) if ids else []
    return opportunities, orders


def buildings_stage_counts(area_id: int) -> dict[str, int]:
    """Buildings per current stage of an area (the map's legend)."""
    counts = dict.fromkeys(Stage.values, 0)
    counts.update(AreaAddress.objects.filter(area_id=area_id).order_by().values_list("stage").annotate(n=Count("id")))
    return counts


def funnels_by_area(*, now: dt.datetime | None = None) -> dict[int, tuple[list[dict[str, Any]], int]]:
    """area pk → (its stages, buildings stuck at any stage), for the dashboard's row per area."""
    stages = funnel_stages(None)
    stuck = dict(AreaAddress.objects.filter(any_stuck(now=now)).order_by().values_list("area").annotate(n=Count("id")))
    return {area: (rows, stuck.get(area, 0)) for area, rows in stages.items() if area is not None}


def buildings_geojson(area_id: int, *, link: Any) -> dict[str, Any]:
    """The area's buildings as GeoJSON points with their stage (`link(building)` gives each one's page), the area's
    outline (imported, else the convex hull of its buildings) and the buildings without coordinates."""
    from projects.models import RolloutArea

    features, unlocated, points = [], [], []
    for building in AreaAddress.objects.filter(area_id=area_id).order_by("street", "house_number"):
        properties = {"stage": building.stage, "units": building.units, "url": link(building),
                      "label": f"{building.street} {building.house_number} · {Stage(building.stage).label}"}
        if building.latitude is None or building.longitude is None:
            unlocated.append(properties)
            continue
        points.append((building.longitude, building.latitude))
        features.append({"type": "Feature", "properties": properties,
                         "geometry": {"type": "Point", "coordinates": [building.longitude, building.latitude]}})
    outline = RolloutArea.objects.filter(pk=area_id).values_list("outline", flat=True).first()
    if not outline and len(points) >= 3:
        outline = {"type": "Polygon", "coordinates": [[list(p) for p in convex_hull(points)]]}
    return {"type": "FeatureCollection", "features": features, "outline": outline or None, "unlocated": unlocated}


def convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The convex hull of points (Andrew's monotone chain), as a closed ring."""
    unique = sorted(set(points))
    if len(unique) < 3:
        return unique

    def cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    for point in unique:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], point) <= 0:
            lower.pop()
        lower.append(point)
    upper: list[tuple[float, float]] = []
    for point in reversed(unique):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], point) <= 0:
            upper.pop()
        upper.append(point)
    ring = lower[:-1] + upper[:-1]
    return [*ring, ring[0]]


def stuck_rows(area_id: int, *, now: dt.datetime | None = None) -> list[list[Any]]:
    """Every stuck building of an area as a row: which list, address, units, stage, since, days, the step it waits on."""
    now = now or timezone.now()
    days = stuck_after_days()
    rows = []
    for name, (_stage, since, _setting) in STUCK.items():
        for building in stuck_buildings(AreaAddress.objects.filter(area_id=area_id), name, now=now, days=days).order_by(since):
            reached = getattr(building, since)
            rows.append([name, building.postal_code, building.street, building.house_number, building.units, building.stage,
                         timezone.localdate(reached).isoformat(), (now - reached).days, building.waiting_on])
    return rows


STUCK_COLUMNS = ["stuck", "postal_code", "street", "house_number", "units", "stage", "since", "days", "waiting_on"]


MILESTONE_DATES = {"signed": "signed_at", "passed": "passed_at", "connected": "connected_at", "activated": "activated_at"}


def snapshots_backfill(days: int, *, now: dt.datetime | None = None) -> int:
    """Write the snapshots of the last `days` days that no area has yet, from its buildings' milestone dates (a building
    counts at a stage from the day it reached it), so a new installation's charts show the way so far; days with a
    snapshot stay as they are. Returns how many snapshots were written."""
    from projects.models import AreaSnapshot

    today = timezone.localdate(now)
    first = today - dt.timedelta(days=days)
    have = set(AreaSnapshot.objects.filter(day__gte=first).values_list("area", "day"))
    buildings: dict[int, list[tuple[int, dict[str, dt.date | None]]]] = {}
    for row in AreaAddress.objects.order_by().values("area", "units", *MILESTONE_DATES.values()):
        reached = {stage: timezone.localdate(row[column]) if row[column] else None for stage, column in MILESTONE_DATES.items()}
        buildings.setdefault(row["area"], []).append((row["units"], reached))
    written = []
    for area, rows in buildings.items():
        for offset in range(days, 0, -1):
            day = today - dt.timedelta(days=offset)
            if (area, day) in have:
                continue
            funnel = {"in_scope": [len(rows), sum(units for units, _ in rows)]}
            for stage in MILESTONE_DATES:
                there = [units for units, reached in rows if reached[stage] and reached[stage] <= day]
                funnel[stage] = [len(there), sum(there)]
            written.append(AreaSnapshot(area_id=area, day=day, units_signed=funnel["signed"][1], funnel=funnel))
    AreaSnapshot.objects.bulk_create(written, batch_size=1000, ignore_conflicts=True)
    return len(written)
