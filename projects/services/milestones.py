"""How far each building came: the milestones its workflows' completed steps mark, read from the mirror.

A milestone (passed, connected, activated) is reached when a step named by one of its rules is
COMPLETED on a workflow running on an opportunity at the building's address, or on an order of such
an opportunity (its own `opportunity` relation or the opportunity's `items`, as the mirror resolves
them). Its date is the step's completion as epilot reports it (`completedTime` / `completed_at`);
the earliest of several counts. Deleted opportunities and orders do not count.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from projects.mirror.bulk import column_in, values_read_at_once
from projects.models import Milestone, MilestoneRule, MirroredStep, Opportunity, Order, WorkflowExecution

MILESTONES = list(Milestone.values)  # in the order of the build


@dataclass(frozen=True)
class Rule:
    milestone: str
    definition: str  # "" for any workflow
    step: str

    def matches(self, definition: str, step_name: str) -> bool:
        return (not self.definition or self.definition == definition) and self.step == step_name


@dataclass
class BuildingMilestones:
    """What the workflows at one address say: the date each milestone was reached, the step it waits on next, and
    where epilot places it."""

    reached: dict[str, dt.datetime] = field(default_factory=dict)
    waiting_on: str = ""
    waits_on_next: bool = False  # waiting_on is a step of a workflow that marks the next milestone
    latitude: float | None = None
    longitude: float | None = None


def milestone_rules() -> list[Rule]:
    return [Rule(*row) for row in MilestoneRule.objects.order_by("milestone", "definition", "step")
            .values_list("milestone", "definition", "step")]


def building_milestones(keys: list[str] | None, rules: list[Rule] | None = None) -> dict[str, BuildingMilestones]:
    """address key → its milestones for these address keys (every address with an opportunity when None), by these
    rules (the configured ones when None).

    By a change: opportunities by address key, their orders, the executions of both and their completed
    steps, each by an indexed column. After a rule change: the same four reads over whole tables.
    """
    opportunities = Opportunity.objects.filter(epilot_deleted_at__isnull=True).exclude(address_key="").order_by()
    if keys is not None:
        opportunities = opportunities.filter(column_in(Opportunity, "address_key", keys))
    located = values_read_at_once(opportunities, "id", "address_key", "latitude", "longitude")
    if not located:
        return {}
    orders = Order.objects.filter(epilot_deleted_at__isnull=True, opportunity__isnull=False).order_by()
    if keys is not None:
        orders = orders.filter(column_in(Order, "opportunity", [row[0] for row in located]))
    return milestones_of(keys, located, values_read_at_once(orders, "id", "opportunity"), rules)


def milestones_of(keys: list[str] | None, opportunities: Iterable[tuple[int, str, float | None, float | None]],
                  orders: Iterable[tuple[int, int]], rules: list[Rule] | None = None) -> dict[str, BuildingMilestones]:
    """`building_milestones` from the opportunities (pk, address key, latitude, longitude) and their orders (pk,
    opportunity pk) the caller read: none deleted, every one at these address keys (at any address when None)."""
    rules = milestone_rules() if rules is None else rules
    facts: dict[str, BuildingMilestones] = defaultdict(BuildingMilestones)
    key_of_opportunity: dict[int, str] = {}
    for pk, key, latitude, longitude in sorted(opportunities):
        key_of_opportunity[pk] = key
        building = facts[key]
        if building.latitude is None and latitude is not None and longitude is not None:
            building.latitude, building.longitude = latitude, longitude
    if not key_of_opportunity:
        return dict(facts)
    key_of_order = {pk: key_of_opportunity[owner] for pk, owner in orders if owner in key_of_opportunity}
    executions = _executions(keys, key_of_opportunity, key_of_order)
    if rules:
        _reached(rules, executions, facts, every_step=keys is None)
    _waiting(rules, executions, facts)
    return dict(facts)


@dataclass(frozen=True)
class _Execution:
    key: str
    definition: str
    running: bool
    current_step: str
    updated_at: dt.datetime | None


def _executions(keys: list[str] | None, key_of_opportunity: dict[int, str],
                key_of_order: dict[int, str]) -> dict[int, _Execution]:
    columns = ("id", "opportunity", "order", "definition_epilot_id", "status", "current_step", "epilot_updated_at")
    rows: Iterable[tuple] = []
    if keys is None:
        queryset = WorkflowExecution.objects.filter(opportunity__isnull=False) | WorkflowExecution.objects.filter(
            order__isnull=False)
        rows = values_read_at_once(queryset.order_by(), *columns)
    else:
        by_opportunity = WorkflowExecution.objects.filter(column_in(WorkflowExecution, "opportunity", list(key_of_opportunity)))
        rows = list(values_read_at_once(by_opportunity.order_by(), *columns))
        if key_of_order:
            by_order = WorkflowExecution.objects.filter(column_in(WorkflowExecution, "order", list(key_of_order)))
            rows += values_read_at_once(by_order.order_by(), *columns)
    executions = {}
    for pk, opportunity, order, definition, status, current_step, updated_at in rows:
        key = key_of_opportunity.get(opportunity) or key_of_order.get(order)
        if key:
            executions[pk] = _Execution(key, definition or "", status == "STARTED", current_step or "", updated_at)
    return executions


def _reached(rules: list[Rule], executions: dict[int, _Execution], facts: dict[str, BuildingMilestones], *,
             every_step: bool) -> None:
    """Record for each building the earliest completion of a step a rule names."""
    names = {rule.step for rule in rules}
    if every_step:
        steps = MirroredStep.objects.filter(column_in(MirroredStep, "name", sorted(names)), status="COMPLETED")
    else:
        # By a change: only the executions' own steps, by the indexed execution column (the database would
        # otherwise read every completed step of that name), then picked here.
        steps = MirroredStep.objects.filter(column_in(MirroredStep, "execution", sorted(executions)))
    for execution_pk, name, status, completed_at, synced_at in values_read_at_once(
            steps.order_by(), "execution", "name", "status", "completed_at", "synced_at"):
        if status != "COMPLETED" or name not in names:
            continue
        execution = executions.get(execution_pk)
        if execution is None:
            continue
        for rule in rules:
            if rule.matches(execution.definition, name):
                # epilot's completion time; a step completed without one counts from its workflow's last change.
                when = completed_at or execution.updated_at or synced_at
                reached = facts[execution.key].reached
                if rule.milestone not in reached or when < reached[rule.milestone]:
                    reached[rule.milestone] = when


def _waiting(rules: list[Rule], executions: dict[int, _Execution], facts: dict[str, BuildingMilestones]) -> None:
    """The current step of a running workflow at each building, preferring one whose definition marks the next
    milestone the building has not reached."""
    definitions_of = defaultdict(set)
    for rule in rules:
        definitions_of[rule.milestone].add(rule.definition)
    for _pk, execution in sorted(executions.items()):
        if not execution.running or not execution.current_step:
            continue
        building = facts[execution.key]
        following = [m for m in MILESTONES if m not in building.reached]
        marks_next = bool(following) and bool(definitions_of[following[0]] & {execution.definition, ""})
        if not building.waiting_on or (marks_next and not building.waits_on_next):
            building.waiting_on = execution.current_step[:300]
            building.waits_on_next = marks_next


def order_milestones(order_ids: list[int], rules: list[Rule] | None = None) -> dict[int, dict[str, dt.datetime]]:
    """order pk → the milestones its own workflows reached, for orders that belong to no building (no opportunity
    with an address): by the executions on the order, read by their indexed order column."""
    rules = milestone_rules() if rules is None else rules
    if not order_ids or not rules:
        return {}
    key_of_order = {pk: f"order:{pk}" for pk in order_ids}
    facts: dict[str, BuildingMilestones] = defaultdict(BuildingMilestones)
    executions = _executions([], {}, key_of_order)
    if executions:
        _reached(rules, executions, facts, every_step=False)
    return {pk: facts[key].reached for pk, key in key_of_order.items() if key in facts}
