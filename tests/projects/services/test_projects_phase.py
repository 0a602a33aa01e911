"""The phase rules of an Ausbau project, on plain facts (no database): one test per rule and its edges."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from projects.models import AusbauProject
from projects.services.projects import ExecutionFacts, OpportunityFacts, OrderFacts, derive_project

Phase = AusbauProject.Phase
T0 = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)


def opportunity(status: str = "ausstehend", *, deleted: bool = False, budget: str | None = "90000.00") -> OpportunityFacts:
    return OpportunityFacts(status=status, deleted=deleted, title="Glasfaser Rohdenhaus",
                            budget=Decimal(budget) if budget else None, updated_at=T0)


def order(status: str = "placed", *, deleted: bool = False, amount: int | None = 4_500_000, hours: int = 1) -> OrderFacts:
    return OrderFacts(status=status, deleted=deleted, amount_total=amount, updated_at=T0 + dt.timedelta(hours=hours))


def execution(status: str = "STARTED", *, on_order: bool = False, section: str = "Planung", done: int = 1, total: int = 8,
              hours: int = 2) -> ExecutionFacts:
    moment = T0 + dt.timedelta(hours=hours)
    return ExecutionFacts(status=status, on_order=on_order, current_section=section, current_step="Trassenplanung erstellen",
                          first_section="Planung", completed_steps=done, total_steps=total, started_at=moment, updated_at=moment)


@pytest.mark.parametrize(("facts", "orders", "executions", "phase"), [
    (opportunity("abgebrochen"), [order("completed")], [execution()], Phase.CANCELLED),  # 1 wins over everything
    (opportunity(deleted=True), [], [], Phase.CANCELLED),
    (opportunity("geschlossen"), [order("completed")], [], Phase.COMPLETED),
    (opportunity(), [], [execution("DONE", done=8)], Phase.COMPLETED),
    (opportunity(), [], [execution("DONE", done=8), execution("STARTED", hours=5)], Phase.PLANNING),  # one still runs
    (opportunity("geschlossen"), [order()], [execution(on_order=True)], Phase.CONSTRUCTION),
    (opportunity("bearbeitung"), [], [execution(section="Tiefbau")], Phase.CONSTRUCTION),  # past its first section
    (opportunity("bearbeitung"), [], [execution(section="Planung")], Phase.PLANNING),
    (opportunity("geschlossen"), [], [], Phase.APPROVED),
    (opportunity("bearbeitung"), [order("placed")], [], Phase.APPROVED),
    (opportunity("bearbeitung"), [order("cancelled")], [], Phase.PLANNING),  # a cancelled order does not approve
    (opportunity("bearbeitung"), [order("completed", deleted=True)], [], Phase.PLANNING),  # nor does a deleted one complete
    (opportunity("ausstehend"), [], [], Phase.PLANNING),
])
def test_phase_rules_first_match_wins(facts, orders, executions, phase) -> None:
    assert derive_project(facts, orders, executions)["phase"] == phase


def test_progress_follows_the_running_execution_and_completion_is_100() -> None:
    running = derive_project(opportunity("bearbeitung"), [], [execution("DONE", done=8, hours=1), execution(done=3, hours=4)])
    assert (running["progress_percent"], running["current_section"], running["has_running_workflow"]) == (38, "Planung", True)
    completed = derive_project(opportunity("geschlossen"), [order("completed")], [execution("DONE", done=5, hours=1)])
    assert (completed["progress_percent"], completed["current_section"], completed["has_running_workflow"]) == (100, "", False)


def test_budget_is_the_live_orders_total_in_euros_else_the_opportunitys() -> None:
    assert derive_project(opportunity(), [order(amount=4_500_000), order(amount=150_050), order("cancelled", amount=99)], [])[
        "budget"] == Decimal("46500.50")
    assert derive_project(opportunity(budget="90000.00"), [order(amount=None)], [])["budget"] == Decimal("90000.00")
    assert derive_project(opportunity(budget=None), [], [])["budget"] is None


def test_updated_at_is_the_latest_change_of_any_part() -> None:
    assert derive_project(opportunity(), [order(hours=7)], [execution(hours=3)])["updated_at"] == T0 + dt.timedelta(hours=7)
