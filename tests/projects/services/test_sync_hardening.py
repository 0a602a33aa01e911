"""The sync against odd data: one id in two engines, values that do not fit, NUL characters, schema names, stale executions."""
from __future__ import annotations

import pytest
from django.db import DataError, connection

from integrations.epilot import EpilotClient, EpilotError, ExecutionContext, RetryPolicy, ServiceURLs
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id
from integrations.epilot_sandbox.seed import AUSBAU_DEFINITION, HAUSANSCHLUSS_TEMPLATE
from integrations.epilot_sandbox.store import now_ms
from projects.mirror.intake import mirror_entities, mirror_executions
from projects.mirror.pages import write_isolating_failures
from projects.mirror.schemas import UnknownSchema
from projects.models import Opportunity, Order, QuarantinedEntity, SyncRun, WorkflowDefinition, WorkflowExecution
from projects.services.sync import sync_enqueue, sync_run
from tests.integrations.fakes import repeating_flow_templates

pytestmark = pytest.mark.django_db


def run(epilot: EpilotClient, **kwargs) -> SyncRun:
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, **kwargs)


def test_a_v1_definition_listed_as_v2_template_too_and_twice_in_one_answer_is_mirrored_once_per_engine(
        sandbox: SandboxApp, clock) -> None:
    with sandbox.store.write() as conn:  # epilot lists V1 definitions as flow templates as well: same id
        sandbox.store.put_document(conn, "flow_template", AUSBAU_DEFINITION_ID,
                                   {**HAUSANSCHLUSS_TEMPLATE, "id": AUSBAU_DEFINITION_ID, "name": AUSBAU_DEFINITION["name"],
                                    "org_id": sandbox.store.org_id})
    client = EpilotClient(token="t", urls=ServiceURLs.single_origin("http://sandbox.invalid"),
                          transport=repeating_flow_templates(sandbox), sleep=clock.sleep, clock=clock)
    assert run(client).status == SyncRun.Status.SUCCEEDED
    assert run(client).status == SyncRun.Status.SUCCEEDED  # and again, now updating
    engines = sorted(WorkflowDefinition.objects.filter(epilot_id=AUSBAU_DEFINITION_ID).values_list("engine", flat=True))
    assert engines == ["v1", "v2"]
    assert WorkflowDefinition.objects.filter(removed_in_epilot=False).count() == WorkflowDefinition.objects.count()


def test_values_longer_than_their_column_are_quarantined_whole_and_the_rest_is_written(epilot: EpilotClient,
                                                                                      sandbox: SandboxApp) -> None:
    stamp = now_ms()
    base = {"_schema": "opportunity", "_org": "1", "_created_at": stamp, "_updated_at": stamp, "_title": "odd"}
    sandbox.store.bulk_insert_entities([
        {**base, "_id": "long-status", "status": "s" * 101},
        {**base, "_id": "long-city", "address": [{"street": "Goethestraße", "city": "W" * 101}]},
        {**base, "_id": "x" * 80, "status": "ausstehend"},  # an id longer than the mirror's column
        {**base, "_id": "fine", "status": "ausstehend", "address": [{"city": "W" * 100}]},
    ])
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED and result.quarantined == 3
    reasons = dict(QuarantinedEntity.objects.values_list("epilot_id", "reason"))
    assert "status is 101 characters long" in reasons["long-status"]
    assert "city" in reasons["long-city"]
    assert "_id is 80 characters long" in reasons["x" * 80]
    assert Opportunity.objects.get(epilot_id="fine").city == "W" * 100  # whole, not cut
    assert not Opportunity.objects.filter(epilot_id__in=["long-status", "long-city"]).exists()
    # The next schema and the next run go on as usual.
    assert Order.objects.filter(epilot_id=demo_id("order:flehenberg")).exists()
    assert run(epilot).status == SyncRun.Status.SUCCEEDED


def test_a_nul_character_anywhere_is_quarantined_on_every_database(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    stamp = now_ms()
    base = {"_schema": "contact", "_org": "1", "_created_at": stamp, "_updated_at": stamp}
    sandbox.store.bulk_insert_entities([
        {**base, "_id": "nul-title", "_title": "Anna\x00Meier"},
        {**base, "_id": "nul-deep", "_title": "Deep", "notes": [{"text": "a\x00b"}]},
        {**base, "_id": "escaped-text", "_title": "Backslash", "notes": "literally \\u0000"},
    ])
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED
    reasons = dict(QuarantinedEntity.objects.values_list("epilot_id", "reason"))
    assert set(reasons) == {"nul-title", "nul-deep"} and all("NUL" in reason for reason in reasons.values())
    assert QuarantinedEntity.objects.get(epilot_id="nul-deep").payload["json_text"].count("\\u0000") == 1


def test_rows_the_database_refuses_are_narrowed_down_and_the_rest_is_written() -> None:
    written: list[int] = []

    def write(batch: list[dict]) -> None:
        if any(row["n"] in (3, 11) for row in batch):
            raise DataError("value too long for type character varying(100)")
        written.extend(row["n"] for row in batch)

    refused = write_isolating_failures(write, [{"n": n} for n in range(16)])
    assert sorted(row["n"] for row, _ in refused) == [3, 11]
    assert all("value too long" in reason for _, reason in refused)
    assert sorted(written) == [n for n in range(16) if n not in (3, 11)]


@pytest.mark.parametrize("schemas", [["opportunity OR _schema:*"], ["Contact"], ["infrastructure_project"], ["a" * 101]])
def test_schema_names_outside_the_configured_set_are_refused_before_any_query(epilot: EpilotClient, sandbox: SandboxApp,
                                                                               schemas: list[str]) -> None:
    searches = sandbox.stats["op:searchEntities"]
    with pytest.raises(UnknownSchema):
        run(epilot, schemas=schemas)
    with pytest.raises(UnknownSchema):
        sync_enqueue(trigger=SyncRun.Trigger.ADMIN, schemas=schemas)
    with pytest.raises(UnknownSchema):
        mirror_entities(refs=[(schemas[0], "x")], client=epilot)
    assert sandbox.stats["op:searchEntities"] == searches
    assert not SyncRun.objects.exists()


def test_the_sync_task_refuses_a_schema_edited_into_its_arguments(epilot: EpilotClient) -> None:
    from projects.tasks import sync_epilot_task

    with pytest.raises(UnknownSchema):
        sync_epilot_task.run(schemas=['opportunity AND _updated_at:["2020" TO *]'])


def test_an_older_answer_never_replaces_a_newer_mirrored_execution(epilot: EpilotClient) -> None:
    run(epilot)
    nord = demo_id("opportunity:nordstrasse")
    started = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(entity_id=nord, schema="opportunity", title="Nord",
                                                                               is_primary=True)])
    old = epilot.get_execution(started.id)
    mirror_entities(refs=[("opportunity", nord)], client=epilot)
    epilot.close_execution(started.id, description="done")
    newer = epilot.get_execution(started.id)
    mirror_executions([("opportunity", nord, newer)])
    assert WorkflowExecution.objects.get(epilot_id=started.id).status == newer.status
    mirror_executions([("opportunity", nord, old)])  # a slow reader that saw the execution earlier
    assert WorkflowExecution.objects.get(epilot_id=started.id).status == newer.status != old.status


def test_a_refresh_that_could_not_read_the_executions_reads_them_when_retried(epilot: EpilotClient,
                                                                            sandbox: SandboxApp) -> None:
    """A webhook's refresh stores the entity, then fails to read its executions; its retry finds the entity unchanged."""
    run(epilot)
    order_id = demo_id("order:schulzentrum")
    execution = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(order_id, "order", "Schulzentrum")])
    epilot.retry = RetryPolicy(max_attempts=1)
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("getExecutions",)))
    with pytest.raises(EpilotError):
        mirror_entities(refs=[("order", order_id)], client=epilot)
    assert Order.objects.get(epilot_id=order_id).payload.get("workflows")
    assert not WorkflowExecution.objects.filter(epilot_id=execution.id).exists()
    sandbox.set_faults(FaultConfig())
    changes = mirror_entities(refs=[("order", order_id)], client=epilot)
    assert changes.updated == 0 and WorkflowExecution.objects.get(epilot_id=execution.id).order.epilot_id == order_id
    calls = sandbox.stats["op:getExecutions"]
    mirror_entities(refs=[("order", order_id)], client=epilot)
    assert sandbox.stats["op:getExecutions"] == calls


def test_orders_named_only_in_an_opportunitys_items_stay_linked_through_their_own_changes(epilot: EpilotClient) -> None:
    order = epilot.create_entity("order", {"_title": "Auftrag nur über items", "status": "placed", "amount_total": 120_000})
    opportunity = epilot.create_entity("opportunity", {
        "_title": "Glasfaser Kastanienallee 4", "status": "geschlossen",
        "items": {"$relation": [{"entity_id": order.id}]},
    })
    assert run(epilot).status == SyncRun.Status.SUCCEEDED
    mirrored = Order.objects.get(epilot_id=order.id)
    assert mirrored.opportunity_epilot_id == opportunity.id and mirrored.opportunity.epilot_id == opportunity.id
    epilot.patch_entity("order", order.id, {"status": "completed"})  # the order changes; its opportunity does not
    changed = run(epilot)
    assert (changed.updated, changed.created) == (1, 0)
    mirrored.refresh_from_db()
    assert mirrored.status == "completed" and mirrored.opportunity_epilot_id == opportunity.id
    assert mirrored.opportunity.project.phase == "completed"


def test_an_order_mirrored_before_the_opportunity_that_names_it_is_linked_when_it_changes(epilot: EpilotClient) -> None:
    order = epilot.create_entity("order", {"_title": "Früher Auftrag", "status": "placed"})
    assert run(epilot, schemas=["order"]).status == SyncRun.Status.SUCCEEDED  # the opportunity is not mirrored yet
    opportunity = epilot.create_entity("opportunity", {"_title": "Glasfaser Am Diek 2", "status": "geschlossen",
                                                       "items": {"$relation": [{"entity_id": order.id}]}})
    assert run(epilot, schemas=["opportunity"]).status == SyncRun.Status.SUCCEEDED
    assert Order.objects.get(epilot_id=order.id).opportunity_epilot_id == opportunity.id


@pytest.mark.skipif(connection.vendor != "postgresql", reason="compression of TOASTed columns is PostgreSQL's")
def test_mirrored_documents_are_compressed_with_lz4_where_postgresql_has_it() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        if not cursor.fetchone()[0]:
            pytest.skip("this PostgreSQL server was built without lz4")
        cursor.execute("SELECT attrelid::regclass::text, attcompression FROM pg_attribute WHERE attname IN ('payload', 'flow') "
                       "AND attrelid::regclass::text IN ('projects_contact', 'projects_opportunity', 'projects_order', "
                       "'projects_genericentity', 'projects_workflowexecution')")
        assert dict(cursor.fetchall()) == dict.fromkeys(["projects_contact", "projects_opportunity", "projects_order",
                                                         "projects_genericentity", "projects_workflowexecution"], "l")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="Django adds the pattern indexes on PostgreSQL only")
def test_tables_that_syncs_and_webhooks_write_carry_no_like_pattern_indexes() -> None:
    written = ["projects_contact", "projects_opportunity", "projects_order", "projects_genericentity",
               "projects_workflowexecution", "projects_mirroredstep", "projects_opportunityitem",
               "projects_pendingexecutionread", "projects_ausbauproject", "projects_areaaddress", "projects_promise",
               "projects_latesignup", "projects_webhookevent"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%%pattern_ops%%' AND tablename = ANY(%s)",
                       [written])
        assert cursor.fetchall() == []
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'projects_opportunity' "
                       "AND indexdef LIKE 'CREATE UNIQUE INDEX %%(epilot_id)'")
        assert cursor.fetchone()[0] == 1  # the upsert's conflict target stays


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigram indexes are PostgreSQL's")
def test_trigram_indexes_leave_a_syncs_entries_to_autovacuum() -> None:
    """A page's inserts go to the index's pending list, which autovacuum merges; 4 MB had the sync merge it itself."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname LIKE 'projects_%%_search_trgm'")
        indexes = dict(cursor.fetchall())
    if not indexes:
        pytest.skip("this PostgreSQL server has no pg_trgm")
    assert indexes == {f"projects_{table}_search_trgm": ["gin_pending_list_limit=65536"]
                       for table in ("contact", "opportunity", "order", "areaaddress")}


def test_an_execution_with_numbers_where_texts_belong_is_mirrored_as_text(epilot: EpilotClient) -> None:
    """epilot's V1 execution leaves name and definitionId untyped; a number there is stored as its text, not refused."""
    from integrations.epilot import WorkflowExecution as RemoteExecution

    run(epilot)
    nord = demo_id("opportunity:nordstrasse")
    started = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(entity_id=nord, schema="opportunity", title="Nord",
                                                                               is_primary=True)])
    odd = RemoteExecution.from_v1({**epilot.get_execution(started.id).data, "name": 4711, "definitionId": 12345})
    mirror_executions([("opportunity", nord, odd)])
    mirrored = WorkflowExecution.objects.get(epilot_id=started.id)
    assert (mirrored.name, mirrored.definition_epilot_id) == ("4711", "12345")
