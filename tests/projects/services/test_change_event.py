"""The mirror in proportion to the change: one event per committed change set, listeners that recompute only what it
touches, relations kept as rows, and a cost per change that does not grow with the tables."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations.epilot import EpilotClient, ExecutionContext
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id, seed_bulk
from projects.mirror.addresses import address_key
from projects.mirror.changes import EntitiesChanged, entities_changed
from projects.mirror.intake import mirror_entities, mirror_executions
from projects.models import (
    AreaAddress,
    AusbauProject,
    Contact,
    Opportunity,
    OpportunityItem,
    Order,
    RolloutArea,
    SyncRun,
    WorkflowExecution,
)
from projects.services.projects import projects_refresh
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db

# Tables whose size grows with the organisation: no statement on the path of one change may read one of them whole.
LARGE_TABLES = ("projects_contact", "projects_opportunity", "projects_order", "projects_genericentity",
                "projects_workflowexecution", "projects_mirroredstep", "projects_ausbauproject", "projects_areaaddress",
                "projects_opportunityitem", "projects_pendingexecutionread")


@pytest.fixture
def events() -> Iterator[list[EntitiesChanged]]:
    received: list[EntitiesChanged] = []

    def listen(sender, change: EntitiesChanged, **kwargs) -> None:
        received.append(change)

    entities_changed.connect(listen, dispatch_uid="test-listener")
    yield received
    entities_changed.disconnect(dispatch_uid="test-listener")


def run(epilot: EpilotClient, **kwargs) -> SyncRun:
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, **kwargs)


def test_one_change_event_per_committed_change_set_with_its_refs(epilot: EpilotClient, events) -> None:
    run(epilot)
    events.clear()
    nord = demo_id("opportunity:nordstrasse")
    epilot.patch_entity("opportunity", nord, {"status": "bearbeitung"})
    mirror_entities(refs=[("opportunity", nord)], client=epilot)
    assert [(e.refs, dict(e.kinds), e.full) for e in events] == [
        ((("opportunity", nord),), {("opportunity", nord): "updated"}, False)]
    events.clear()
    mirror_entities(refs=[("opportunity", nord)], client=epilot)  # nothing changed in epilot: nothing to announce
    assert events == []
    order = epilot.create_entity("order", {"_title": "Neuer Auftrag", "status": "placed"})
    epilot.patch_entity("opportunity", nord, {"status": "geschlossen"})
    run(epilot)
    assert len(events) == 1 and dict(events[0].kinds) == {("opportunity", nord): "updated", ("order", order.id): "created"}
    run(epilot, full=True)
    assert len(events) == 2 and events[1].full


def test_listeners_recompute_the_touched_project_and_area_only(epilot: EpilotClient) -> None:
    run(epilot)
    nord, rohdenhaus = (Opportunity.objects.get(epilot_id=demo_id(f"opportunity:{name}")) for name in ("nordstrasse",
                                                                                                      "rohdenhaus"))
    north, south = RolloutArea.objects.create(name="Nord"), RolloutArea.objects.create(name="Süd")
    AreaAddress.objects.create(area=north, postal_code="42489", street="x", house_number="1", units=3, key=nord.address_key)
    AreaAddress.objects.create(area=south, postal_code="42489", street="y", house_number="2", units=5,
                               key=rohdenhaus.address_key)
    untouched = AusbauProject.objects.get(opportunity=rohdenhaus).updated_at
    order = epilot.create_entity("order", {"_title": "Hausanschluss", "status": "placed",
                                           "opportunity": {"$relation": [{"entity_id": nord.epilot_id}]}})
    mirror_entities(refs=[("order", order.id)], client=epilot)
    north.refresh_from_db()
    south.refresh_from_db()
    assert (north.units_signed, north.figures_at is not None) == (3, True)
    assert south.figures_at is None  # its addresses were not touched
    assert AusbauProject.objects.get(opportunity=nord).phase == AusbauProject.Phase.APPROVED
    assert AusbauProject.objects.get(opportunity=rohdenhaus).updated_at == untouched


def test_an_opportunity_that_names_an_order_mirrored_earlier_links_it_and_unlinks_it_again(epilot: EpilotClient) -> None:
    run(epilot)
    order = epilot.create_entity("order", {"_title": "Früher Auftrag", "status": "placed"})
    mirror_entities(refs=[("order", order.id)], client=epilot)
    assert Order.objects.get(epilot_id=order.id).opportunity is None
    nord = demo_id("opportunity:nordstrasse")
    epilot.patch_entity("opportunity", nord, {"items": {"$relation": [{"entity_id": order.id}]}})
    mirror_entities(refs=[("opportunity", nord)], client=epilot)
    mirrored = Order.objects.get(epilot_id=order.id)
    assert (mirrored.opportunity_epilot_id, mirrored.opportunity.epilot_id) == (nord, nord)
    assert list(OpportunityItem.objects.filter(order_epilot_id=order.id).values_list("opportunity_epilot_id", flat=True)) == [
        nord]
    assert AusbauProject.objects.get(opportunity__epilot_id=nord).phase == AusbauProject.Phase.APPROVED  # a live order
    epilot.patch_entity("opportunity", nord, {"items": None})
    mirror_entities(refs=[("opportunity", nord)], client=epilot)
    mirrored.refresh_from_db()
    assert (mirrored.opportunity_epilot_id, mirrored.opportunity) == ("", None)
    assert not OpportunityItem.objects.filter(order_epilot_id=order.id).exists()
    assert AusbauProject.objects.get(opportunity__epilot_id=nord).phase == AusbauProject.Phase.PLANNING


def test_an_order_of_its_own_relation_keeps_it_when_another_opportunity_names_it(epilot: EpilotClient) -> None:
    run(epilot)
    nord, rohdenhaus = demo_id("opportunity:nordstrasse"), demo_id("opportunity:rohdenhaus")
    order = epilot.create_entity("order", {"_title": "Eigener Bezug", "status": "placed",
                                           "opportunity": {"$relation": [{"entity_id": nord}]}})
    mirror_entities(refs=[("order", order.id)], client=epilot)
    epilot.patch_entity("opportunity", rohdenhaus, {"items": {"$relation": [{"entity_id": order.id}]}})
    mirror_entities(refs=[("opportunity", rohdenhaus)], client=epilot)
    assert Order.objects.get(epilot_id=order.id).opportunity.epilot_id == nord


def test_an_order_no_opportunity_names_is_never_searched_for_in_payloads(epilot: EpilotClient) -> None:
    run(epilot)
    order = epilot.create_entity("order", {"_title": "Shop-Bestellung", "status": "placed"})
    with CaptureQueriesContext(connection) as queries:
        mirror_entities(refs=[("order", order.id)], client=epilot)
    assert Order.objects.get(epilot_id=order.id).opportunity is None
    statements = [query["sql"] for query in queries.captured_queries]
    assert statements and not [sql for sql in statements if re.search(r"\bLIKE\b|CAST\(.*payload", sql, re.IGNORECASE)]


def one_change(epilot: EpilotClient, order_id: str, status: str) -> list[str]:
    """The statements one webhook-like refresh of an order (and its project, its area) runs."""
    epilot.patch_entity("order", order_id, {"status": status})
    with CaptureQueriesContext(connection) as queries:
        changes = mirror_entities(refs=[("order", order_id)], client=epilot)
    assert changes.updated == 1
    return [query["sql"] for query in queries.captured_queries]


def full_scans(statements: list[str]) -> list[str]:
    """SQLite's plan lines that read one of the large tables whole."""
    found = []
    with connection.cursor() as cursor:
        for sql in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
                continue
            cursor.execute("EXPLAIN QUERY PLAN " + sql.replace("%s", "?").replace("%%", "%"), [None] * sql.count("%s"))
            found += [f"{line[-1]} in {sql[:120]}" for line in cursor.fetchall()
                      if re.match(r"SCAN (\w+)(?! USING (COVERING )?INDEX)", line[-1])
                      and line[-1].split()[1] in LARGE_TABLES]
    return found


def test_one_change_costs_the_same_statements_in_a_small_and_a_large_mirror(epilot: EpilotClient, sandbox: SandboxApp,
                                                                             ) -> None:
    run(epilot)
    nord = Opportunity.objects.get(epilot_id=demo_id("opportunity:nordstrasse"))
    area = RolloutArea.objects.create(name="Nord")
    AreaAddress.objects.create(area=area, postal_code="42489", street="Nordstraße", house_number="12", units=2,
                               key=nord.address_key)
    order = epilot.create_entity("order", {"_title": "Hausanschluss", "status": "draft",
                                           "opportunity": {"$relation": [{"entity_id": nord.epilot_id}]}})
    mirror_entities(refs=[("order", order.id)], client=epilot)
    small = one_change(epilot, order.id, "placed")

    seed_bulk(sandbox.store, contacts=600, opportunities=1200, orders=600)
    run(epilot)
    AreaAddress.objects.bulk_create([AreaAddress(area=RolloutArea.objects.get_or_create(name=f"Gebiet {n % 10}")[0],
                                                 postal_code="42489", street=f"Weg {n}", house_number=str(n), units=1,
                                                 key=address_key("42489", f"Weg {n}", str(n))) for n in range(3000)])
    assert Opportunity.objects.count() > 1200 and AreaAddress.objects.count() > 3000
    large = one_change(epilot, order.id, "completed")

    assert len(large) == len(small)
    assert AusbauProject.objects.get(opportunity=nord).phase == AusbauProject.Phase.COMPLETED
    area.refresh_from_db()
    assert area.units_connected == 2
    if connection.vendor == "sqlite":
        assert full_scans(large) == []
        assert full_scans(["SELECT COUNT(*) FROM projects_order WHERE amount_total > 0"])  # the check can see a scan


def test_customers_and_execution_contexts_are_linked_whichever_is_mirrored_first(epilot: EpilotClient) -> None:
    run(epilot)
    contact = epilot.create_entity("contact", {"_title": "Erika Muster"})
    opportunity = epilot.create_entity("opportunity", {"_title": "Glasfaser Am Diek 9", "status": "ausstehend",
                                                       "customer": {"$relation": [{"entity_id": contact.id}]}})
    order = epilot.create_entity("order", {"_title": "Hausanschluss Am Diek 9", "status": "placed"})
    execution = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(order.id, "order", "Hausanschluss")])
    mirror_entities(refs=[("opportunity", opportunity.id)], client=epilot)  # its customer is not mirrored yet
    assert Opportunity.objects.get(epilot_id=opportunity.id).customer is None
    with CaptureQueriesContext(connection) as queries:
        mirror_entities(refs=[("contact", contact.id)], client=epilot)
    assert Opportunity.objects.get(epilot_id=opportunity.id).customer == Contact.objects.get(epilot_id=contact.id)
    # The customer is a join on the contact's epilot id: the opportunity's row is not written again.
    writes = re.compile(r'\s*(UPDATE|INSERT INTO) "projects_opportunity"')
    assert not [query["sql"] for query in queries.captured_queries if writes.match(query["sql"])]
    assert [o.title for o in Contact.objects.get(epilot_id=contact.id).opportunities.all()] == ["Glasfaser Am Diek 9"]
    mirror_executions([("order", order.id, epilot.get_execution(execution.id))])  # the order is not mirrored yet
    assert WorkflowExecution.objects.get(epilot_id=execution.id).order is None
    mirror_entities(refs=[("order", order.id)], client=epilot)
    assert WorkflowExecution.objects.get(epilot_id=execution.id).order == Order.objects.get(epilot_id=order.id)


def test_a_full_pass_announces_opportunities_and_orders_whole_before_the_contacts(epilot: EpilotClient) -> None:
    """Projects, areas and promises are worked out once opportunities and orders are whole, while the contacts'
    pages are still to come; what changes after (executions read later) is announced with its refs."""
    seen: list[tuple[bool, int, int, int]] = []

    def listen(sender, change: EntitiesChanged, **kwargs) -> None:
        seen.append((change.full, Contact.objects.count(), Opportunity.objects.count(), Order.objects.count()))

    entities_changed.connect(listen, dispatch_uid="test-order-of-events")
    try:
        run(epilot, full=True)
    finally:
        entities_changed.disconnect(dispatch_uid="test-order-of-events")
    full, contacts, opportunities, orders = seen[0]
    assert full and contacts == 0 and (opportunities, orders) == (Opportunity.objects.count(), Order.objects.count())
    assert all(not later_full for later_full, *_counts in seen[1:])
    assert Contact.objects.count() > 0


def test_the_projects_a_full_pass_leaves_equal_a_recompute_from_scratch(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    """Executions stored after the pass announced its opportunities and orders are not lost on the projects."""
    nord = demo_id("opportunity:nordstrasse")
    epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(nord, "opportunity", "Nordstraße")])
    # Read slowly, the executions are stored after the last page, so after the opportunities were announced.
    sandbox.set_faults(FaultConfig(latency_ms=300, operations=("getExecutions", "getExecution")))
    run(epilot, full=True)
    fields = ("opportunity_id", "phase", "progress_percent", "current_section", "current_step", "has_running_workflow")
    after_sync = sorted(AusbauProject.objects.values_list(*fields))
    assert WorkflowExecution.objects.exists() and any(row[5] for row in after_sync)
    AusbauProject.objects.all().delete()
    projects_refresh()
    assert sorted(AusbauProject.objects.values_list(*fields)) == after_sync
