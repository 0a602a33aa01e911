"""The phase rules of an Ausbau project as code: one test per rule, on facts, without a database."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from projects.models import AusbauProject
from projects.services.projects import (
    ExecutionFacts,
    OpportunityFacts,
    OrderFacts,
    derive_project,
    is_approved,
    is_cancelled,
    is_completed,
    is_in_construction,
    latest_execution,
    percent,
    phase_of,
    tags_text,
)

Phase = AusbauProject.Phase
T0 = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)


def opportunity(status: str = "bearbeitung", *, deleted: bool = False, tags=("glasfaser",)) -> OpportunityFacts:
    return OpportunityFacts(1, "Glasfaser Kastanienallee 4", status, deleted, Decimal("900.00"), list(tags), T0)


def order(status: str = "placed", *, deleted: bool = False, amount: int | None = 100_000) -> OrderFacts:
    return OrderFacts(status, deleted, amount, T0)


def execution(status: str = "STARTED", *, on_order: bool = False, section: str = "Planung", pk: int = 1, hours: int = 1,
              done: int = 1, total: int = 8) -> ExecutionFacts:
    return ExecutionFacts(pk, status, on_order, section, "Planung", "Trasse planen", done, total,
                          T0 + dt.timedelta(hours=hours), T0 + dt.timedelta(hours=hours))


def test_rule_1_a_deleted_or_abgebrochen_opportunity_is_cancelled_whatever_else_holds() -> None:
    assert is_cancelled(opportunity("abgebrochen")) and is_cancelled(opportunity(deleted=True))
    assert phase_of(opportunity("abgebrochen"), [order("completed")], [execution("DONE")]) == Phase.CANCELLED


def test_rule_2_a_completed_order_or_a_done_workflow_with_none_running_completes() -> None:
    assert is_completed([order("completed")], [])
    assert is_completed([], [execution("DONE")])
    assert not is_completed([], [execution("DONE"), execution("STARTED", pk=2)])
    assert not is_completed([order("completed", deleted=True)], [])  # a deleted order does not count
    assert phase_of(opportunity(), [], [execution("DONE")]) == Phase.COMPLETED


def test_rule_3_a_workflow_running_on_an_order_or_past_its_first_section_is_construction() -> None:
    assert is_in_construction([execution(on_order=True)])
    assert is_in_construction([execution(section="Tiefbau")])
    assert not is_in_construction([execution(section="Planung")])
    assert not is_in_construction([execution("CLOSED", section="Tiefbau")])
    assert phase_of(opportunity(), [], [execution(section="Tiefbau")]) == Phase.CONSTRUCTION


def test_rule_4_geschlossen_or_an_order_that_is_not_cancelled_is_approved() -> None:
    assert is_approved(opportunity("geschlossen"), [])
    assert is_approved(opportunity(), [order("draft")])
    assert not is_approved(opportunity(), [order("cancelled")])
    assert phase_of(opportunity(), [order("placed")], []) == Phase.APPROVED


def test_rule_5_everything_else_is_planning() -> None:
    assert phase_of(opportunity("ausstehend"), [order("cancelled")], [execution()]) == Phase.PLANNING


def test_the_latest_execution_is_a_running_one_then_the_most_recently_started() -> None:
    older_running, newer_closed = execution(pk=1, hours=1), execution("CLOSED", pk=2, hours=5)
    assert latest_execution([newer_closed, older_running]) is older_running
    assert latest_execution([execution("CLOSED", pk=3, hours=1), newer_closed]) is newer_closed
    assert latest_execution([]) is None


def test_progress_rounds_half_to_even_and_budget_sums_live_orders_in_euros() -> None:
    assert [percent(1, 8), percent(1, 200), percent(3, 200), percent(2, 3)] == [12, 0, 2, 67]  # 12.5, 0.5, 1.5, 66.7
    row = derive_project(opportunity(), [order(amount=150_000), order(amount=99), order("cancelled", amount=5)],
                         [execution(done=1, total=8)], T0)
    assert (row["budget"], row["progress_percent"], row["phase"]) == (Decimal("1500.99"), 12, Phase.APPROVED)
    assert derive_project(opportunity(), [], [], T0)["budget"] == Decimal("900.00")  # no order totals: its own budget


def test_tags_become_a_comma_framed_text_any_database_can_filter() -> None:
    assert tags_text(["glasfaser", "neu,bau"]) == ",glasfaser,neu bau,"
    assert tags_text([]) == tags_text(None) == tags_text("glasfaser") == ""
