"""A full pass into empty tables builds the header search's trigram indexes after loading, and never loses one."""
from __future__ import annotations

import logging
import threading

import pytest
from django.db import connection, connections

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import FaultConfig, SandboxApp, demo_id
from projects.models import Opportunity, SyncRun
from projects.services.search import search
from projects.services.sync import sync_run

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes are PostgreSQL's")

SEARCHED = ("projects_contact_search_trgm", "projects_opportunity_search_trgm", "projects_order_search_trgm")


def indexes() -> dict[str, tuple[int, bool, list[str]]]:
    """name -> (oid, valid, storage options) of the mirror's trigram indexes."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:
            pytest.skip("this PostgreSQL server has no pg_trgm")
        cursor.execute("SELECT c.relname, c.oid, i.indisvalid, c.reloptions FROM pg_class c "
                       "JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = ANY(%s)", [list(SEARCHED)])
        return {name: (oid, valid, options) for name, oid, valid, options in cursor.fetchall()}


def full(epilot: EpilotClient) -> SyncRun:
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True)


def assert_all_built(found: dict[str, tuple[int, bool, list[str]]]) -> None:
    assert sorted(found) == sorted(SEARCHED)
    assert all(valid and options == ["gin_pending_list_limit=65536"] for _oid, valid, options in found.values())


@pytest.mark.django_db(transaction=True)
def test_a_first_full_sync_builds_each_search_index_after_its_pages_and_the_search_finds_the_rows(
        epilot: EpilotClient) -> None:
    before = indexes()
    assert full(epilot).status == SyncRun.Status.SUCCEEDED
    after = indexes()
    assert_all_built(after)
    assert all(after[name][0] != before[name][0] for name in SEARCHED)  # dropped before the pages, built after them
    opportunity = Opportunity.objects.get(epilot_id=demo_id("opportunity:nordstrasse"))
    assert opportunity.pk in {hit.pk for hit in search(opportunity.title).opportunities}


@pytest.mark.django_db(transaction=True)
def test_a_full_sync_into_tables_with_rows_keeps_their_search_indexes(epilot: EpilotClient) -> None:
    full(epilot)
    before = indexes()
    assert full(epilot).status == SyncRun.Status.SUCCEEDED
    assert indexes() == before


@pytest.mark.django_db(transaction=True)
def test_a_full_sync_that_fails_still_builds_the_index_it_set_aside(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("searchEntities",)))
    assert full(epilot).status == SyncRun.Status.FAILED
    assert_all_built(indexes())


@pytest.mark.django_db(transaction=True)
def test_a_sync_run_builds_a_search_index_that_a_dead_run_left_missing(epilot: EpilotClient, caplog) -> None:
    full(epilot)
    with connection.cursor() as cursor:  # as a process killed between a set-aside and the build leaves it
        cursor.execute("DROP INDEX projects_order_search_trgm")
    # A run of other schemas leaves it alone: a run holding the orders' lease might have it set aside.
    assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, schemas=["contact"]).status == SyncRun.Status.SUCCEEDED
    assert "projects_order_search_trgm" not in indexes()
    with caplog.at_level(logging.WARNING, logger="projects.sync"):
        assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot).status == SyncRun.Status.SUCCEEDED
    assert_all_built(indexes())
    assert "search index projects_order_search_trgm was missing" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_table_another_transaction_uses_keeps_its_index_during_a_full_sync(epilot: EpilotClient) -> None:
    before = indexes()
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
    try:
        assert holding.wait(10)
        assert full(epilot).status == SyncRun.Status.SUCCEEDED
    finally:
        release.set()
        holder.join()
    after = indexes()
    assert_all_built(after)
    assert after["projects_contact_search_trgm"][0] == before["projects_contact_search_trgm"][0]  # kept, not set aside
    assert after["projects_opportunity_search_trgm"][0] != before["projects_opportunity_search_trgm"][0]
