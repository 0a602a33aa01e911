"""Derive Ausbau projects from mirrored opportunities, orders and workflow executions.

Phase rules, first match wins (one function each below, with a test each):
1. cancelled    the opportunity is deleted in epilot or its status is `abgebrochen`;
2. completed    an order is `completed`, or a workflow on the opportunity or its orders is DONE
                and none still runs;
3. construction a workflow runs on one of its orders, or a workflow on the opportunity has moved
                past its first section;
4. approved     the opportunity is `geschlossen` (approved) or has an order that is not cancelled;
5. planning     everything else (`ausstehend`, `bearbeitung` without orders).
Progress is the completed share of steps of the most recently started execution (a running one
first); the budget is the sum of the orders' totals, else the opportunity's own budget.

A refresh reads the facts of a chunk of opportunities (three indexed queries), derives each project
in Python and upserts them; it listens to the mirror's change event and recomputes only the
projects the changed entities touch.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.utils import timezone

from projects.mirror.bulk import bulk_upsert, column_in, values_read_at_once
from projects.mirror.changes import EntitiesChanged, projects_changed
from projects.mirror.prefetch import read_ahead
from projects.models import AusbauProject, Opportunity, Order, WorkflowExecution

CANCELLED_STATUSES = ("abgebrochen",)
APPROVED_STATUSES = ("geschlossen",)
CHUNK = 2000
Phase = AusbauProject.Phase
PROJECT_FIELDS = ["title", "phase", "progress_percent", "current_section", "current_step", "budget", "has_running_workflow",
                  "tags", "updated_at"]


@dataclass(frozen=True, slots=True)
class OpportunityFacts:
    pk: int
    title: str
    status: str
    deleted: bool
    budget: Decimal | None
    tags: Any
    updated_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class OrderFacts:
    status: str
    deleted: bool
    amount_total: int | None
    updated_at: dt.datetime | None

    @property
    def live(self) -> bool:
        return not self.deleted and self.status != "cancelled"


@dataclass(frozen=True, slots=True)
class ExecutionFacts:
    pk: int
    status: str
    on_order: bool
    current_section: str
    first_section: str | None
    current_step: str
    completed_steps: int
    total_steps: int
    started_at: dt.datetime | None
    updated_at: dt.datetime | None

    @property
    def running(self) -> bool:
        return self.status == "STARTED"


def is_cancelled(opportunity: OpportunityFacts) -> bool:
    return opportunity.deleted or opportunity.status in CANCELLED_STATUSES


def is_completed(orders: Sequence[OrderFacts], executions: Sequence[ExecutionFacts]) -> bool:
    if any(order.live and order.status == "completed" for order in orders):
        return True
    return any(e.status == "DONE" for e in executions) and not any(e.running for e in executions)


def is_in_construction(executions: Sequence[ExecutionFacts]) -> bool:
    return any(e.running and (e.on_order or has_moved_past_first_section(e)) for e in executions)


def has_moved_past_first_section(execution: ExecutionFacts) -> bool:
    return bool(execution.current_section) and execution.current_section != execution.first_section


def is_approved(opportunity: OpportunityFacts, orders: Sequence[OrderFacts]) -> bool:
    return opportunity.status in APPROVED_STATUSES or any(order.live for order in orders)


def phase_of(opportunity: OpportunityFacts, orders: Sequence[OrderFacts], executions: Sequence[ExecutionFacts]) -> str:
    """The first rule of the module docstring that matches."""
    if is_cancelled(opportunity):
        return Phase.CANCELLED
    if is_completed(orders, executions):
        return Phase.COMPLETED
    if is_in_construction(executions):
        return Phase.CONSTRUCTION
    if is_approved(opportunity, orders):
        return Phase.APPROVED
    return Phase.PLANNING


def latest_execution(executions: Sequence[ExecutionFacts]) -> ExecutionFacts | None:
    """A running execution before others, then the most recently started (never started last), then the first made."""
    def rank(e: ExecutionFacts) -> tuple[bool, bool, float, int]:
        return (not e.running, e.started_at is None, -e.started_at.timestamp() if e.started_at else 0.0, e.pk)

    return min(executions, key=rank, default=None)


def percent(done: int, total: int) -> int:
    """100 · done / total rounded half to even, as Python's round() does, in integers."""
    whole, rest = divmod(100 * done, total)
    return whole + (1 if 2 * rest > total else whole % 2 if 2 * rest == total else 0)


def tags_text(tags: Any) -> str:
    """The tags as ',a,b,' (commas inside a tag become spaces), so any database can filter on one; '' without tags."""
    if not isinstance(tags, list) or not tags:
        return ""
    return ("," + ",".join(str(tag).replace(",", " ") for tag in tags) + ",")[:1000]


def derive_project(opportunity: OpportunityFacts, orders: Sequence[OrderFacts], executions: Sequence[ExecutionFacts],
                   now: dt.datetime) -> dict[str, Any]:
    """The project row of one opportunity."""
    phase = phase_of(opportunity, orders, executions)
    latest = latest_execution(executions)
    running = latest is not None and latest.running
    if phase == Phase.COMPLETED:
        progress = 100
    elif latest is not None and latest.total_steps > 0:
        progress = percent(latest.completed_steps, latest.total_steps)
    else:
        progress = 0
    totals = [order.amount_total for order in orders if order.live and order.amount_total is not None]
    moments = [m for m in (opportunity.updated_at, *(o.updated_at for o in orders), *(e.updated_at for e in executions)) if m]
    return {
        # The phase as a plain str: PostgreSQL's binary COPY takes exact types only (an enum member went as text).
        "opportunity": opportunity.pk, "title": opportunity.title[:500], "phase": phase.value, "progress_percent": progress,
        "current_section": latest.current_section if running else "", "current_step": latest.current_step if running else "",
        "budget": (Decimal(sum(totals)) / 100).quantize(Decimal("0.01")) if totals else opportunity.budget,
        "has_running_workflow": any(e.running for e in executions), "tags": tags_text(opportunity.tags),
        "updated_at": max(moments, default=now),
    }


def in_scope(opportunity: OpportunityFacts, wanted: set[str]) -> bool:
    """Every opportunity is a project unless AUSBAU_PROJECT_TAGS names tags; then one of them must be on it."""
    return not wanted or (isinstance(opportunity.tags, list) and any(str(tag) in wanted for tag in opportunity.tags))


def projects_refresh(*, opportunity_ids: Iterable[int] | None = None, between_chunks: Callable[[], None] | None = None) -> int:
    """Recompute the projects of the given opportunities (pks; all when None); returns how many were written.

    Opportunities out of scope lose their project. `between_chunks` is called after each chunk's transaction.
    """
    ids = (sorted(set(opportunity_ids)) if opportunity_ids is not None
           else sorted(values_read_at_once(Opportunity.objects.order_by(), "id", flat=True)))
    chunks = [ids[start:start + CHUNK] for start in range(0, len(ids), CHUNK)]
    written = 0
    # The next chunk's facts are read and its projects derived while this one's are written.
    with contextlib.closing(read_ahead(chunks, _derived_chunk)) as derived:
        for chunk, (rows, dropped) in zip(chunks, derived, strict=True):
            written += _write_chunk(chunk, rows, dropped)
            if between_chunks:
                between_chunks()
    return written


def _derived_chunk(ids: list[int]) -> tuple[list[dict[str, Any]], list[int]]:
    """The project rows of these opportunities (pks) in scope, and the pks of those out of scope."""
    opportunities, orders, executions = _facts(ids)
    wanted = set(settings.AUSBAU_PROJECT_TAGS)
    now = timezone.now()
    rows = [derive_project(o, orders.get(o.pk, ()), executions.get(o.pk, ()), now) for o in opportunities if in_scope(o, wanted)]
    return rows, [o.pk for o in opportunities if not in_scope(o, wanted)]


def _write_chunk(ids: list[int], rows: list[dict[str, Any]], dropped: list[int]) -> int:
    with transaction.atomic():
        if dropped:
            AusbauProject.objects.filter(column_in(AusbauProject, "opportunity", dropped)).delete()
        # A first sync's projects are all new: PostgreSQL then COPies them straight into the table.
        known = AusbauProject.objects.filter(column_in(AusbauProject, "opportunity", ids)).exists()
        bulk_upsert(AusbauProject, rows, unique_field="opportunity", update_fields=PROJECT_FIELDS, believed_new=not known)
    return len(rows)


FIRST_SECTION = (KeyTextTransform("name", KeyTransform("0", KeyTransform("flow", "flow"))),  # V1: flow[0].name
                 KeyTextTransform("name", KeyTransform("0", KeyTransform("phases", "flow"))))  # V2: phases[0].name
EXECUTION_COLUMNS = ("pk", "status", "order", "current_section", "current_step", "completed_steps", "total_steps", "started_at",
                     "epilot_updated_at")


def _facts(ids: list[int]) -> tuple[list[OpportunityFacts], dict[int, list[OrderFacts]], dict[int, list[ExecutionFacts]]]:
    """The opportunities with these pks, their orders and the executions on them or on their orders (indexed lookups)."""
    opportunities = [OpportunityFacts(pk, title, status or "", deleted is not None, budget, tags, updated)
                     for pk, title, status, deleted, budget, tags, updated in values_read_at_once(
                         Opportunity.objects.filter(column_in(Opportunity, "id", ids)).order_by(),
                         "pk", "title", "status", "epilot_deleted_at", "budget", "tags", "epilot_updated_at")]
    orders: dict[int, list[OrderFacts]] = defaultdict(list)
    owner_of_order: dict[int, int] = {}
    for pk, owner, status, deleted, amount, updated in values_read_at_once(
            Order.objects.filter(column_in(Order, "opportunity", ids)).order_by(),
            "pk", "opportunity", "status", "epilot_deleted_at", "amount_total", "epilot_updated_at"):
        orders[owner].append(OrderFacts(status or "", deleted is not None, amount, updated))
        owner_of_order[pk] = owner
    executions: dict[int, list[ExecutionFacts]] = defaultdict(list)
    on_opportunities = WorkflowExecution.objects.filter(column_in(WorkflowExecution, "opportunity", ids))
    # By the indexed order column alone (given `opportunity IS NULL` too, SQLite read every execution without one).
    on_orders = WorkflowExecution.objects.filter(column_in(WorkflowExecution, "order", list(owner_of_order)))
    for queryset, owner_column in ((on_opportunities, "opportunity"), (on_orders, "order")):
        if owner_column == "order" and not owner_of_order:
            continue
        for values in queryset.order_by().values_list(owner_column, "opportunity", *EXECUTION_COLUMNS, *FIRST_SECTION):
            owner, on_opportunity, pk, status, order, section, step, done, total, started, updated, v1_first, v2_first = values
            if owner_column == "order" and on_opportunity is not None:
                continue  # counted with its opportunity
            facts = ExecutionFacts(pk, status or "", order is not None, section or "", v1_first or v2_first, step or "",
                                   done or 0, total or 0, started, updated)
            executions[owner if owner_column == "opportunity" else owner_of_order[owner]].append(facts)
    return opportunities, orders, executions


def projects_on_entities_changed(sender: Any, change: EntitiesChanged, **kwargs: Any) -> None:
    """Listener of `entities_changed`: recompute the projects the change touches, then announce them."""
    ids = None if change.full else touched_projects(change)
    if ids is not None and not ids:
        return
    projects_refresh(opportunity_ids=ids)
    keys = set(change.previous_address_keys)
    if ids is not None:
        keys.update(key for key in values_read_at_once(
            Opportunity.objects.filter(column_in(Opportunity, "id", sorted(ids))).order_by(), "address_key", flat=True) if key)
    projects_changed.send(sender=AusbauProject, opportunity_ids=ids, address_keys=keys)


def touched_projects(change: EntitiesChanged) -> set[int]:
    """The opportunities (pks) whose projects the change touches: changed opportunities, the owners of changed orders
    (now and before), and those whose workflows changed. Found by indexed epilot ids."""
    opportunities = Opportunity.objects.filter(column_in(Opportunity, "epilot_id", sorted(change.opportunities))).order_by()
    orders = Order.objects.filter(column_in(Order, "epilot_id", sorted(change.orders)), opportunity__isnull=False).order_by()
    return ({*values_read_at_once(opportunities, "id", flat=True), *values_read_at_once(orders, "opportunity", flat=True),
             *change.previous_owners})
