"""The phase rules of an Ausbau project, one test per rule and its edges, derived by the database from mirrored rows."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.utils import timezone

from projects.models import AusbauProject, Opportunity, Order, WorkflowExecution
from projects.services.projects import CHUNK, projects_refresh
from tests.database_sessions import database_sessions, database_sessions_once_settled

pytestmark = pytest.mark.django_db

Phase = AusbauProject.Phase
T0 = dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC)
_ids = itertools.count()


def opportunity(status: str = "ausstehend", *, deleted: bool = False, budget: str | None = "90000.00",
                tags: list | None = None, title: str = "Glasfaser Rohdenhaus") -> dict:
    return {"status": status, "epilot_deleted_at": T0 if deleted else None, "budget": Decimal(budget) if budget else None,
            "tags": ["glasfaser"] if tags is None else tags, "title": title, "epilot_updated_at": T0}


def order(status: str = "placed", *, deleted: bool = False, amount: int | None = 4_500_000, hours: int = 1) -> dict:
    return {"status": status, "epilot_deleted_at": T0 if deleted else None, "amount_total": amount,
            "epilot_updated_at": T0 + dt.timedelta(hours=hours)}


def execution(status: str = "STARTED", *, on_order: bool = False, section: str = "Planung", done: int = 1, total: int = 8,
              hours: int = 2, flow: dict | None = None) -> dict:
    moment = T0 + dt.timedelta(hours=hours)
    return {"status": status, "on_order": on_order, "current_section": section, "current_step": "Trassenplanung erstellen",
            "completed_steps": done, "total_steps": total, "started_at": moment, "epilot_updated_at": moment,
            "flow": {"flow": [{"name": "Planung"}, {"name": "Tiefbau"}]} if flow is None else flow}


def derived(facts: dict, orders: list[dict], executions: list[dict]) -> AusbauProject:
    """Mirror the opportunity with its orders and executions, refresh its project and return it."""
    now = timezone.now()
    mirrored = Opportunity.objects.create(epilot_id=f"opp-{next(_ids)}", synced_at=now, **facts)
    mirrored_orders = [Order.objects.create(epilot_id=f"order-{next(_ids)}", opportunity=mirrored, synced_at=now, **o)
                       for o in orders]
    for facts_of_execution in executions:
        values = dict(facts_of_execution)
        on_order = values.pop("on_order")
        owner = {"order": mirrored_orders[0]} if on_order else {"opportunity": mirrored}
        WorkflowExecution.objects.create(epilot_id=f"ex-{next(_ids)}", engine="v1", entity_schema="opportunity",
                                         entity_epilot_id=mirrored.epilot_id, synced_at=now, **owner, **values)
    projects_refresh(opportunity_ids=[mirrored.pk])
    return AusbauProject.objects.get(opportunity=mirrored)


@pytest.mark.parametrize(("facts", "orders", "executions", "phase"), [
    (opportunity("abgebrochen"), [order("completed")], [execution()], Phase.CANCELLED),  # 1 wins over everything
    (opportunity(deleted=True), [], [], Phase.CANCELLED),
    (opportunity("geschlossen"), [order("completed")], [], Phase.COMPLETED),
    (opportunity(), [], [execution("DONE", done=8)], Phase.COMPLETED),
    (opportunity(), [], [execution("DONE", done=8), execution("STARTED", hours=5)], Phase.PLANNING),  # one still runs
    (opportunity("geschlossen"), [order()], [execution(on_order=True)], Phase.CONSTRUCTION),
    (opportunity("bearbeitung"), [], [execution(section="Tiefbau")], Phase.CONSTRUCTION),  # past its first section
    (opportunity("bearbeitung"), [], [execution(section="Planung")], Phase.PLANNING),
    (opportunity("bearbeitung"), [], [execution(section="Planung", flow={"phases": [{"name": "Planung"}]})], Phase.PLANNING),
    (opportunity("bearbeitung"), [], [execution(section="Planung", flow={})], Phase.CONSTRUCTION),  # no first section known
    (opportunity("bearbeitung"), [], [execution("DONE", section="Tiefbau")], Phase.COMPLETED),
    (opportunity("geschlossen"), [], [], Phase.APPROVED),
    (opportunity("bearbeitung"), [order("placed")], [], Phase.APPROVED),
    (opportunity("bearbeitung"), [order("cancelled")], [], Phase.PLANNING),  # a cancelled order does not approve
    (opportunity("bearbeitung"), [order("completed", deleted=True)], [], Phase.PLANNING),  # nor does a deleted one complete
    (opportunity("ausstehend"), [], [], Phase.PLANNING),
])
def test_phase_rules_first_match_wins(facts, orders, executions, phase) -> None:
    assert derived(facts, orders, executions).phase == phase


def test_progress_follows_the_running_execution_and_completion_is_100() -> None:
    running = derived(opportunity("bearbeitung"), [], [execution("DONE", done=8, hours=1), execution(done=3, hours=4)])
    assert (running.progress_percent, running.current_section, running.current_step, running.has_running_workflow) == (
        38, "Planung", "Trassenplanung erstellen", True)
    completed = derived(opportunity("geschlossen"), [order("completed")], [execution("DONE", done=5, hours=1)])
    assert (completed.progress_percent, completed.current_section, completed.has_running_workflow) == (100, "", False)
    latest_started = derived(opportunity(), [], [execution(done=1, hours=1), execution(done=6, hours=3, section="Tiefbau")])
    assert (latest_started.progress_percent, latest_started.current_section) == (75, "Tiefbau")


@pytest.mark.parametrize(("done", "total", "percent"), [(1, 8, 12), (3, 8, 38), (5, 8, 62), (1, 40, 2), (3, 40, 8),
                                                         (1, 3, 33), (2, 3, 67), (0, 0, 0)])
def test_progress_rounds_half_to_even(done: int, total: int, percent: int) -> None:
    assert derived(opportunity(), [], [execution(done=done, total=total)]).progress_percent == percent


def test_budget_is_the_live_orders_total_in_euros_else_the_opportunitys() -> None:
    assert derived(opportunity(), [order(amount=4_500_000), order(amount=150_050), order("cancelled", amount=99)], []
                   ).budget == Decimal("46500.50")
    assert derived(opportunity(budget="90000.00"), [order(amount=None)], []).budget == Decimal("90000.00")
    assert derived(opportunity(budget=None), [], []).budget is None
    assert derived(opportunity(), [order(amount=0)], []).budget == Decimal("0.00")


def test_updated_at_is_the_latest_change_of_any_part() -> None:
    assert derived(opportunity(), [order(hours=7)], [execution(hours=3)]).updated_at == T0 + dt.timedelta(hours=7)
    assert derived(opportunity(), [order(hours=1, deleted=True)], [execution(hours=9)]).updated_at == T0 + dt.timedelta(hours=9)


def test_title_and_tags_are_kept_for_filtering() -> None:
    project = derived(opportunity(tags=["glasfaser", "a,b", "Vorvermarktung"], title="x" * 500), [], [])
    assert (project.tags, project.title) == (",glasfaser,a b,Vorvermarktung,", "x" * 500)
    assert derived(opportunity(tags=[]), [], []).tags == ""


def test_a_second_refresh_updates_the_project_in_place() -> None:
    project = derived(opportunity("bearbeitung"), [], [])
    Opportunity.objects.filter(pk=project.opportunity_id).update(status="geschlossen", title="Glasfaser Düssel")
    assert projects_refresh(opportunity_ids=[project.opportunity_id]) == 1
    again = AusbauProject.objects.get(pk=project.pk)
    assert (again.phase, again.title) == (Phase.APPROVED, "Glasfaser Düssel")


@pytest.mark.django_db(transaction=True)
def test_a_refresh_of_many_chunks_reads_the_next_chunk_beside_the_writes_and_closes_its_connection() -> None:
    """Outside a transaction the next chunk's facts are read by a thread with a connection of its own."""
    now = timezone.now()
    count = 2 * CHUNK + 1
    opportunities = Opportunity.objects.bulk_create([
        Opportunity(epilot_id=f"many-{index}", synced_at=now, **opportunity("abgebrochen" if index % 3 == 0 else "ausstehend"))
        for index in range(count)])
    Order.objects.bulk_create([Order(epilot_id=f"many-order-{index}", opportunity=mirrored, synced_at=now, **order())
                               for index, mirrored in enumerate(opportunities) if index % 3 == 1])
    sessions_before = database_sessions()

    assert projects_refresh() == count

    phases = dict(AusbauProject.objects.values_list("opportunity__epilot_id", "phase"))
    assert phases == {f"many-{index}": (Phase.CANCELLED, Phase.APPROVED, Phase.PLANNING)[index % 3] for index in range(count)}
    assert database_sessions_once_settled(sessions_before) == sessions_before
