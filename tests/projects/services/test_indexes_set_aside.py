"""A full pass into empty tables loads them without their secondary indexes, builds these after, and never loses one."""
from __future__ import annotations

import logging
import threading

import pytest
from django.db import connection, connections

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import FaultConfig, SandboxApp, demo_id
from projects.mirror.indexes_set_aside import secondary_indexes
from projects.models import Contact, Opportunity, Order, SyncRun, SyncState
from projects.services.search import search
from projects.services.sync import Progress, sync_run

TABLES = {"contact": Contact, "opportunity": Opportunity, "order": Order}


def indexes() -> dict[str, str]:
    """name -> definition of the secondary indexes of the three tables."""
    return {entry["name"]: entry["sql"] for model in TABLES.values() for entry in secondary_indexes(model)}


def identities() -> dict[str, int]:
    """name -> what tells a rebuilt index from the one before (PostgreSQL's oid)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, oid FROM pg_class WHERE relname = ANY(%s)", [list(indexes())])
        return dict(cursor.fetchall())


def full(epilot: EpilotClient, seen_during_pages: dict[str, set[str]] | None = None) -> SyncRun:
    """A full sync; `seen_during_pages` collects, per schema, the secondary indexes its table had while its pages
    were written."""
    def watch(progress: Progress) -> None:
        if seen_during_pages is not None:
            seen_during_pages.setdefault(progress.schema, set()).update(
                entry["name"] for entry in secondary_indexes(TABLES[progress.schema]))

    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True, on_progress=watch)


def nothing_recorded() -> bool:
    return not any(SyncState.objects.values_list("indexes_set_aside", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_first_full_sync_writes_each_table_without_its_secondary_indexes_and_builds_them_after(
        epilot: EpilotClient) -> None:
    before = indexes()
    assert any(name.startswith("projects_opportunity_") for name in before)
    seen: dict[str, set[str]] = {}
    assert full(epilot, seen).status == SyncRun.Status.SUCCEEDED
    assert seen == {"contact": set(), "opportunity": set(), "order": set()}
    assert indexes() == before  # every one again, as it was defined
    assert nothing_recorded()
    if connection.vendor == "postgresql":  # the header search uses the rebuilt trigram index's table
        opportunity = Opportunity.objects.get(epilot_id=demo_id("opportunity:nordstrasse"))
        assert opportunity.pk in {hit.pk for hit in search(opportunity.title).opportunities}


@pytest.mark.django_db(transaction=True)
def test_a_full_sync_into_tables_with_rows_keeps_their_indexes(epilot: EpilotClient) -> None:
    full(epilot)
    before = indexes()
    oids = identities() if connection.vendor == "postgresql" else None
    seen: dict[str, set[str]] = {}
    assert full(epilot, seen).status == SyncRun.Status.SUCCEEDED
    assert all(seen[schema] == {entry["name"] for entry in secondary_indexes(model)} for schema, model in TABLES.items())
    assert indexes() == before
    if oids is not None:
        assert identities() == oids


@pytest.mark.django_db(transaction=True)
def test_a_full_sync_that_fails_still_builds_the_indexes_it_set_aside(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    before = indexes()
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("searchEntities",)))
    assert full(epilot).status == SyncRun.Status.FAILED
    assert indexes() == before
    assert nothing_recorded()


def crash_after_setting_aside(name: str, schema: str) -> None:
    """Leave the database as a process killed between a set-aside and the build would: the index dropped, and
    recorded on its schema's state."""
    sql = indexes()[name]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {connection.ops.quote_name(name)}")
    SyncState.objects.filter(schema=schema).update(indexes_set_aside=[{"name": name, "sql": sql}])


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_builds_the_indexes_a_dead_run_left_set_aside(epilot: EpilotClient, caplog) -> None:
    full(epilot)
    before = indexes()
    name = next(name for name in before if name.startswith("projects_order_"))
    crash_after_setting_aside(name, "order")
    # A run of other schemas leaves it alone: a run holding the orders' lease might have it set aside.
    assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, schemas=["contact"]).status == SyncRun.Status.SUCCEEDED
    assert name not in indexes()
    with caplog.at_level(logging.WARNING, logger="projects.sync"):
        assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot).status == SyncRun.Status.SUCCEEDED
    assert indexes() == before
    assert nothing_recorded()
    assert f"building {name}" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_index_that_cannot_be_built_stays_recorded_and_the_sync_still_succeeds(epilot: EpilotClient, caplog) -> None:
    full(epilot)
    broken = {"name": "projects_order_broken", "sql": "CREATE INDEX projects_order_broken ON projects_order (no_such_column)"}
    SyncState.objects.filter(schema="order").update(indexes_set_aside=[broken])
    with caplog.at_level(logging.ERROR, logger="projects.sync"):
        assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot).status == SyncRun.Status.SUCCEEDED
    assert SyncState.objects.get(schema="order").indexes_set_aside == [broken]
    assert "index projects_order_broken was not built again" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="a reader blocks no DROP INDEX in SQLite's WAL mode")
def test_a_table_another_transaction_uses_keeps_its_indexes_during_a_full_sync(epilot: EpilotClient) -> None:
    contact_indexes = {entry["name"] for entry in secondary_indexes(Contact)}
    holding, release = threading.Event(), threading.Event()

    def hold_contacts() -> None:
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SELECT count(*) FROM projects_contact")
                holding.set()
                release.wait(30)
                cursor.execute("ROLLBACK")
        finally:
            other.close()

    holder = threading.Thread(target=hold_contacts)
    holder.start()
    seen: dict[str, set[str]] = {}
    try:
        assert holding.wait(10)
        assert full(epilot, seen).status == SyncRun.Status.SUCCEEDED
    finally:
        release.set()
        holder.join()
    assert seen["contact"] == contact_indexes  # kept, not set aside
    assert seen["opportunity"] == set()
    assert nothing_recorded()

