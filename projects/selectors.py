"""Read-side queries for the dashboard and health."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from projects.mirror.schemas import configured_schemas, mirrored_rows
from projects.models import (
    AreaAddress,
    AusbauProject,
    AutomationRecipe,
    AutomationRule,
    EpilotWrite,
    MirroredStep,
    Opportunity,
    Order,
    PendingExecutionRead,
    Promise,
    QuarantinedEntity,
    Reconciliation,
    RolloutArea,
    SchemaAttribute,
    StaffProfile,
    SyncRun,
    SyncState,
    WebhookEvent,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowStart,
    WorkflowStartJob,
)


@dataclass(frozen=True)
class SchemaHealth:
    schema: str
    last_success_at: dt.datetime | None
    healthy: bool

    @property
    def age_minutes(self) -> int | None:
        return int((timezone.now() - self.last_success_at).total_seconds() // 60) if self.last_success_at else None


def sync_health() -> list[SchemaHealth]:
    """Per configured schema: when it last synced successfully, and whether that is recent enough."""
    threshold = dt.timedelta(minutes=settings.SYNC_HEALTH_MAX_AGE_MINUTES)
    states = {state.schema: state for state in SyncState.objects.all()}
    now = timezone.now()
    result = []
    for schema in configured_schemas():
        last = states[schema].last_success_at if schema in states else None
        result.append(SchemaHealth(schema=schema, last_success_at=last, healthy=bool(last and now - last <= threshold)))
    return result


def dashboard_stats() -> dict:
    """Everything the admin index shows, in a handful of aggregate queries."""
    live_opportunities = Opportunity.objects.filter(epilot_deleted_at__isnull=True)
    pipeline = list(live_opportunities.values("status").annotate(count=Count("id")).order_by("-count"))
    phases = dict(AusbauProject.objects.values_list("phase").annotate(count=Count("id")))
    converted = live_opportunities.filter(orders__isnull=False, orders__epilot_deleted_at__isnull=True).distinct().count()
    total = live_opportunities.count()
    running = list(WorkflowExecution.objects.filter(status="STARTED").values("current_section").annotate(count=Count("id"))
                   .order_by("-count"))
    week_ago = timezone.now() - dt.timedelta(days=7)
    failed_writes = EpilotWrite.objects.filter(
        result__in=[EpilotWrite.Result.FAILED, EpilotWrite.Result.CONFLICT], started_at__gte=week_ago
    )
    return {
        "pipeline": pipeline,
        "phases": [(label, phases.get(value, 0), value) for value, label in AusbauProject.Phase.choices],
        "opportunities": total,
        "converted": converted,
        "conversion_rate": round(100 * converted / total) if total else 0,
        "orders": Order.objects.filter(epilot_deleted_at__isnull=True).count(),
        "running_by_section": running,
        "last_run": SyncRun.objects.exclude(status=SyncRun.Status.QUEUED).first(),
        "health": sync_health(),
        "failed_writes": failed_writes.count(),
        "recent_failed_writes": list(failed_writes[:5]),
        "executions_waiting": executions_waiting(),
        "promises": {**dict.fromkeys(Promise.State.values, 0),
                     **dict(Promise.objects.order_by().values_list("state").annotate(n=Count("id")))},
    }


@dataclass
class ExecutionsWaiting:
    """Entities whose changed workflows are mirrored while their executions are not read yet."""

    count: int
    oldest: dt.datetime | None

    @property
    def overdue(self) -> bool:
        """Waiting longer than a sync may be late (SYNC_HEALTH_MAX_AGE_MINUTES): reads keep failing."""
        threshold = dt.timedelta(minutes=settings.SYNC_HEALTH_MAX_AGE_MINUTES)
        return self.oldest is not None and timezone.now() - self.oldest > threshold


def executions_waiting() -> ExecutionsWaiting:
    """How many entities wait for their executions to be read, and since when the oldest does."""
    found = PendingExecutionRead.objects.aggregate(count=Count("id"), oldest=Min("since"))
    return ExecutionsWaiting(count=found["count"], oldest=found["oldest"])


def definition_by_epilot_id(epilot_id: str) -> WorkflowDefinition | None:
    """The definition staff mean by an epilot id; where an id is both a V1 definition and a V2 flow
    template (epilot lists V1 definitions as templates too), the V1 definition, its native engine."""
    return WorkflowDefinition.objects.filter(epilot_id=epilot_id).order_by("engine").first()


def automation_owning_trigger(
    *, schema: str, attribute: str, value: str, definition_epilot_id: str
) -> AutomationRecipe | None:
    """The enabled status-change recipe provisioned in epilot that starts this definition on this trigger, if any.

    A local rule must not start it too; a recipe not provisioned yet owns nothing in epilot.
    """
    return AutomationRecipe.objects.filter(enabled=True, pattern=AutomationRecipe.Pattern.STATUS_CHANGE, schema=schema,
                                           attribute=attribute, value=value, definition_epilot_id=definition_epilot_id
                                           ).exclude(flow_id="").first()


def recipe_owning_trigger(recipe: AutomationRecipe) -> AutomationRecipe | None:
    """Another enabled recipe that owns the same trigger (and would start a workflow on the same event), if any.

    The owner is the one provisioned in epilot; of two not provisioned yet, the older one.
    """
    others = AutomationRecipe.objects.filter(enabled=True, pattern=recipe.pattern).exclude(pk=recipe.pk)
    if recipe.pattern == AutomationRecipe.Pattern.JOURNEY_SUBMISSION:
        same = others.filter(journey_id=recipe.journey_id)
    elif recipe.pattern == AutomationRecipe.Pattern.MANUAL:
        same = others.filter(schema=recipe.schema, definition_epilot_id=recipe.definition_epilot_id)
    else:
        same = others.filter(schema=recipe.schema, attribute=recipe.attribute, value=recipe.value)
    provisioned = same.exclude(flow_id="").order_by("pk").first()
    if provisioned or recipe.flow_id:
        return provisioned
    return same.filter(pk__lt=recipe.pk).order_by("pk").first() if recipe.pk else same.order_by("pk").first()


def rule_owning_trigger(*, schema: str, attribute: str, value: str, definition_epilot_id: str) -> AutomationRule | None:
    """The enabled local rule that starts this definition on this trigger, if any (an epilot automation must not too)."""
    return AutomationRule.objects.filter(enabled=True, schema=schema, attribute=attribute, value=value,
                                         definition__epilot_id=definition_epilot_id).first()


def running_workflows_by_entity(entity_epilot_ids: list[str]) -> dict[str, list[str]]:
    """Names of the workflows running on each of the entities, as the mirror knows them."""
    running: dict[str, list[str]] = {}
    for epilot_id, name, definition_id in WorkflowExecution.objects.filter(
        entity_epilot_id__in=entity_epilot_ids, status="STARTED"
    ).values_list("entity_epilot_id", "name", "definition_epilot_id"):
        running.setdefault(epilot_id, []).append(name or definition_id)
    return running


@dataclass(frozen=True)
class JobProgress:
    counts: dict[str, int]
    total: int
    done: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def job_progress(job: WorkflowStartJob) -> JobProgress:
    """How many starts of a job are in each status, in one query."""
    counts = {status: 0 for status, _ in WorkflowStart.Status.choices}
    counts.update(dict(job.items.values_list("status").annotate(count=Count("id"))))
    total = sum(counts.values())
    return JobProgress(counts=counts, total=total, done=total - counts[WorkflowStart.Status.PENDING])


def open_steps() -> QuerySet[MirroredStep]:
    """Steps still to be worked: not completed or skipped, enabled, in an execution that runs."""
    return MirroredStep.objects.filter(execution__status="STARTED", enabled=True).exclude(
        status__in=MirroredStep.DONE_STATUSES)


@dataclass(frozen=True)
class TaskCounts:
    open: int
    overdue: int
    due_this_week: int
    unassigned: int
    mine: int | None


def task_counts(*, epilot_user_id: str = "") -> TaskCounts:
    """Counts of open steps for the dashboard; `mine` only when the user is linked to an epilot user."""
    now = timezone.now()
    week_end = end_of_week(now)
    steps = open_steps()
    totals = steps.aggregate(
        open=Count("id"), overdue=Count("id", filter=Q(due_date__lt=now)),
        due_this_week=Count("id", filter=Q(due_date__gte=now, due_date__lt=week_end)),
        unassigned=Count("id", filter=Q(assignees="")))
    mine = steps.filter(assignees__contains=f",{epilot_user_id},").count() if epilot_user_id else None
    return TaskCounts(mine=mine, **totals)


def end_of_week(now: dt.datetime) -> dt.datetime:
    """Monday 00:00 after `now`, in the local time zone."""
    local = timezone.localtime(now)
    monday = (local + dt.timedelta(days=7 - local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return monday


def epilot_user_id_of(user: object) -> str:
    """The epilot user id linked to a staff user, or ''."""
    profile = getattr(user, "staff_profile", None) if getattr(user, "pk", None) else None
    try:
        return profile.epilot_user_id if profile else ""
    except StaffProfile.DoesNotExist:
        return ""


def tasks_with_project() -> QuerySet[MirroredStep]:
    """Step rows with their execution and `project_id`: the project of the execution's opportunity or order."""
    on_opportunity = AusbauProject.objects.filter(opportunity_id=OuterRef("execution__opportunity_id")).values("id")[:1]
    on_order = AusbauProject.objects.filter(opportunity_id=OuterRef("execution__order__opportunity_id")).values("id")[:1]
    return MirroredStep.objects.select_related("execution").annotate(
        project_id=Coalesce(Subquery(on_opportunity), Subquery(on_order)))


def project_orders(project: AusbauProject) -> list[Order]:
    """The live orders of a project's opportunity, oldest first."""
    return list(project.opportunity.orders.filter(epilot_deleted_at__isnull=True).order_by("id"))


def project_executions(project: AusbauProject) -> list[WorkflowExecution]:
    """The workflow executions on a project's opportunity and on its orders, newest first."""
    return list(WorkflowExecution.objects.filter(
        Q(opportunity_id=project.opportunity_id) | Q(order__opportunity_id=project.opportunity_id)).order_by("-started_at"))


def areas_overview() -> list[tuple[RolloutArea, dict]]:
    """Every rollout area with its figures, for the dashboard's one row per area."""
    return [(area, area_figures(area)) for area in RolloutArea.objects.order_by("name")]


SIGNED_ORDER_STATUSES = ("placed", "completed")  # a draft or a quote is not a contract


def area_figures(area: RolloutArea, *, today: dt.date | None = None) -> dict[str, Any]:
    """The figures of an area as the API and the admin show them (from the last recompute)."""
    today = today or timezone.localdate()
    in_scope, signed = area.units_in_scope, area.units_signed
    needed = math.ceil(area.quota_percent * in_scope / 100) if in_scope else 0
    return {
        "units_in_scope": in_scope,
        "addresses_in_scope": area.addresses_in_scope,
        "units_signed": signed,
        "take_up_percent": round(100 * signed / in_scope, 1) if in_scope else 0.0,
        "quota_percent": float(area.quota_percent),
        "units_missing_for_quota": max(needed - signed, 0),
        "deadline": area.deadline,
        "days_left": (area.deadline - today).days if area.deadline else None,
        "units_connected": area.units_connected,
        "projects_by_phase": dict(area.projects_by_phase),
    }


def unsigned_addresses(area: RolloutArea):
    """The area's addresses in scope without a contract yet, for the door-to-door campaign (a queryset)."""
    signed = Opportunity.objects.filter(
        epilot_deleted_at__isnull=True, orders__epilot_deleted_at__isnull=True, orders__status__in=SIGNED_ORDER_STATUSES,
    ).exclude(status="abgebrochen").values("address_key")
    return area.addresses.exclude(key__in=signed).order_by("street", "house_number")


def area_sections(area: RolloutArea) -> list[tuple[str, int]]:
    """How many of the area's projects with a running workflow stand in each workflow section."""
    keys = area.addresses.values("key")
    rows = (AusbauProject.objects.filter(opportunity__address_key__in=keys, has_running_workflow=True)
            .exclude(current_section="").values_list("current_section").annotate(count=Count("id")).order_by("current_section"))
    return list(rows)


def steps_in_area(area_id: int) -> Q:
    """A filter for steps of executions on an opportunity, or an order of one, whose address lies in the area."""
    keys = AreaAddress.objects.filter(area_id=area_id).values("key")
    return Q(execution__opportunity__address_key__in=keys) | Q(execution__order__opportunity__address_key__in=keys)


def sync_status() -> list[dict]:
    """Per mirrored schema, how whole the mirror is: epilot's count at the last reconciliation, the live entities
    mirrored now, what the last reconciliation found, the newest full sync and webhook, the quarantine, executions
    waiting to be read, attributes announced as drift, and whether something looks wrong (`alert`)."""
    full_runs = list(SyncRun.objects.filter(full=True, status=SyncRun.Status.SUCCEEDED).order_by("-started_at")
                     .values_list("schemas", "finished_at")[:20])
    result = []
    for schema in configured_schemas():
        live = mirrored_rows(schema).filter(epilot_deleted_at__isnull=True)
        mirror_count = live.count()
        reconciled = list(Reconciliation.objects.filter(schema=schema, status=Reconciliation.Status.SUCCEEDED)
                          .order_by("-started_at")[:2])
        latest = reconciled[0] if reconciled else None
        announced = [attribute for attribute in SchemaAttribute.objects.filter(schema=schema, acknowledged_at__isnull=True)
                     if attribute.announced]
        quarantined = QuarantinedEntity.objects.filter(schema=schema).count()
        result.append({
            "schema": schema,
            "epilot_count": latest.epilot_count if latest else None,
            "mirror_count": mirror_count,
            "last_reconciled_at": latest.finished_at if latest else None,
            "deleted_found": latest.deleted_found if latest else 0,
            "missing_found": latest.missing_found if latest else 0,
            "newer_found": latest.newer_found if latest else 0,
            "webhook_gaps": latest.webhook_gaps if latest else 0,
            "last_full_sync_at": next((finished for schemas, finished in full_runs if schema in (schemas or [])), None),
            "last_webhook_at": WebhookEvent.objects.filter(schema=schema).order_by("-received_at")
            .values_list("received_at", flat=True).first(),
            "quarantined": quarantined,
            "executions_waiting": PendingExecutionRead.objects.filter(schema=schema).count(),
            "new_attributes": [{"name": a.name, "first_seen": a.first_seen,
                                "entities": live.filter(payload__has_key=a.name).count()}
                               for a in announced if not a.baseline],
            "changed_attributes": [{"name": a.name, "kind": a.kind, "previous_kind": a.previous_kind,
                                    "changed_at": a.kind_changed_at} for a in announced if a.kind_changed_at],
            # Counts that differ after a reconciliation (beyond what sits in quarantine, shown on its own), or one that
            # found nothing where the one before found thousands.
            "alert": bool(latest and (latest.epilot_count > latest.mirror_count + quarantined or (
                latest.epilot_count == 0 and len(reconciled) > 1 and reconciled[1].epilot_count >= 1000))),
        })
    return result


STAFF_NAMES_CACHE_KEY = "staff-names-by-epilot-id"


def staff_names() -> dict[str, str]:
    """epilot user id → the linked colleague's name (full name, else username), cached for a minute."""
    names = cache.get(STAFF_NAMES_CACHE_KEY)
    if names is None:
        names = {}
        for epilot_id, first, last, username in StaffProfile.objects.exclude(epilot_user_id="").values_list(
                "epilot_user_id", "user__first_name", "user__last_name", "user__username"):
            names[epilot_id] = f"{first} {last}".strip() or username
        cache.set(STAFF_NAMES_CACHE_KEY, names, 60)
    return names


def forget_staff_names(**kwargs: Any) -> None:
    cache.delete(STAFF_NAMES_CACHE_KEY)
