"""Derive Ausbau projects from mirrored opportunities, orders and workflow executions.

Phase rules, first match wins:
1. cancelled    the opportunity is deleted in epilot or its status is `abgebrochen`;
2. completed    an order is `completed`, or a workflow on the opportunity or its orders is DONE
                and none still runs;
3. construction a workflow runs on one of its orders, or a workflow on the opportunity has moved
                past its first section;
4. approved     the opportunity is `geschlossen` (approved) or has an order that is not cancelled;
5. planning     everything else (`ausstehend`, `bearbeitung` without orders).
Progress is the completed share of steps of the most recently started execution; the budget is
the sum of the orders' totals, else the opportunity's own budget.
"""
from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.conf import settings
from django.db.models import Prefetch
from django.utils import timezone

from projects.models import AusbauProject, Opportunity, Order, WorkflowExecution

CANCELLED_STATUSES = {"abgebrochen"}
APPROVED_STATUSES = {"geschlossen"}


def _in_scope(opportunity: Opportunity) -> bool:
    wanted = set(settings.AUSBAU_PROJECT_TAGS)
    return not wanted or bool(wanted & set(opportunity.tags or []))


def derive_project(opportunity: Opportunity, orders: list[Order], executions: list[WorkflowExecution]) -> dict:
    """The project fields for one opportunity, following the rules in the module docstring."""
    live_orders = [order for order in orders if not order.is_deleted and order.status != "cancelled"]
    order_executions = [e for e in executions if e.order_id]
    running = [e for e in executions if e.status == "STARTED"]
    first_sections = {e.epilot_id: _first_section(e.flow) for e in executions}
    if opportunity.is_deleted or opportunity.status in CANCELLED_STATUSES:
        phase = AusbauProject.Phase.CANCELLED
    elif any(o.status == "completed" for o in live_orders) or (any(e.status == "DONE" for e in executions) and not running):
        phase = AusbauProject.Phase.COMPLETED
    elif any(e.status == "STARTED" for e in order_executions) or any(
        e.status == "STARTED" and e.current_section and e.current_section != first_sections.get(e.epilot_id) for e in executions
    ):
        phase = AusbauProject.Phase.CONSTRUCTION
    elif opportunity.status in APPROVED_STATUSES or live_orders:
        phase = AusbauProject.Phase.APPROVED
    else:
        phase = AusbauProject.Phase.PLANNING
    latest = max(executions, key=lambda e: (e.status == "STARTED", e.started_at or timezone.now()), default=None)
    totals = [o.amount_total for o in live_orders if o.amount_total is not None]
    budget = Decimal(sum(totals)) / 100 if totals else opportunity.budget
    stamps = [opportunity.epilot_updated_at, *(o.epilot_updated_at for o in orders), *(e.epilot_updated_at for e in executions)]
    return {
        "title": opportunity.title,
        "phase": phase,
        "progress_percent": 100 if phase == AusbauProject.Phase.COMPLETED else (latest.progress_percent if latest else 0),
        "current_section": latest.current_section if latest and latest.status == "STARTED" else "",
        "current_step": latest.current_step if latest and latest.status == "STARTED" else "",
        "budget": budget,
        "has_running_workflow": bool(running),
        "updated_at": max((s for s in stamps if s), default=timezone.now()),
    }


def _first_section(flow: dict) -> str | None:
    """Name of the first section (V1) or phase (V2) of a raw execution."""
    items = flow.get("flow") or flow.get("phases") or [] if isinstance(flow, dict) else []
    return items[0].get("name") if items and isinstance(items[0], dict) else None


def projects_refresh(*, opportunity_ids: Iterable[int] | None = None) -> int:
    """Recompute the projects of the given opportunities (all when None); returns how many were written."""
    opportunities = Opportunity.objects.prefetch_related(
        Prefetch("orders", queryset=Order.objects.prefetch_related("executions")),
        "executions",
    )
    if opportunity_ids is not None:
        opportunities = opportunities.filter(id__in=list(opportunity_ids))
    projects = []
    out_of_scope = []
    for opportunity in opportunities.iterator(chunk_size=1000):
        if not _in_scope(opportunity):
            out_of_scope.append(opportunity.id)
            continue
        orders = list(opportunity.orders.all())
        executions = list(opportunity.executions.all()) + [e for order in orders for e in order.executions.all()]
        projects.append(AusbauProject(opportunity=opportunity, **derive_project(opportunity, orders, executions)))
    if out_of_scope:
        AusbauProject.objects.filter(opportunity_id__in=out_of_scope).delete()
    AusbauProject.objects.bulk_create(
        projects, batch_size=1000, update_conflicts=True, unique_fields=["opportunity"],
        update_fields=["title", "phase", "progress_percent", "current_section", "current_step", "budget",
                       "has_running_workflow", "updated_at"],
    )
    return len(projects)
