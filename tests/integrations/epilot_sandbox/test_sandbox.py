"""The gateway against the sandbox: paging, incremental reads, deletes, conflicts, workflows, faults."""
from __future__ import annotations

import json

import httpx
import pytest

from integrations.epilot import (
    EpilotClient,
    EpilotConflictError,
    EpilotNotFoundError,
    EpilotValidationError,
    ExecutionContext,
    RelationItem,
    RetryPolicy,
    ServiceURLs,
)
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id, seed_bulk


def test_demo_has_the_wuelfrath_data(epilot: EpilotClient) -> None:
    opportunities = [e for page in epilot.iter_search_entities("_schema:opportunity") for e in page.results]
    assert len(opportunities) == 8
    assert {e.data["status"] for e in opportunities} == {"ausstehend", "bearbeitung", "geschlossen", "abgebrochen"}
    assert "Glasfaser Neubaugebiet Nordstraße" in {e.title for e in opportunities}
    definition = epilot.get_definition(AUSBAU_DEFINITION_ID)
    assert definition.name == "Ausbau Glasfaser" and definition.sections == ["Planung", "Tiefbau", "Hausanschluss", "Abschluss"]
    assert definition.data["updateEntityAttributes"]


def test_paging_walks_every_entity_once_in_order(epilot: EpilotClient, sandbox_store) -> None:
    seed_bulk(sandbox_store, contacts=2500, opportunities=0, orders=0, seed=5)
    pages = list(epilot.iter_search_entities("_schema:contact", page_size=1000))
    ids = [e.id for page in pages for e in page.results]
    assert [len(page.results) for page in pages] == [1000, 1000, 508]
    assert len(ids) == len(set(ids)) == 2508 and pages[0].hits == 2508
    keys = [(e.updated_at, e.id) for page in pages for e in page.results]
    assert keys == sorted(keys)


def test_incremental_query_returns_only_newer_entities(epilot: EpilotClient) -> None:
    everything = [e for page in epilot.iter_search_entities("_schema:opportunity") for e in page.results]
    watermark = max(e.data["_updated_at"] for e in everything)
    changed = epilot.patch_entity("opportunity", everything[0].id, {"status": "bearbeitung"})
    newer = [e for page in epilot.iter_search_entities(f'_schema:opportunity AND _updated_at:{{"{watermark}" TO *]')
             for e in page.results]
    assert [e.id for e in newer] == [changed.id]
    listed = [e for page in epilot.iter_list_entities([{"term": {"_schema": "opportunity"}},
                                                         {"range": {"_updated_at": {"gt": watermark}}}]) for e in page.results]
    assert [e.id for e in listed] == [changed.id]


def test_soft_deletes_show_up_only_when_asked_and_purges_vanish(epilot: EpilotClient) -> None:
    order_id = demo_id("order:flehenberg")
    epilot.delete_entity("order", order_id)
    visible = {e.id for page in epilot.iter_search_entities("_schema:order") for e in page.results}
    with_deleted = {
        e.id: e for page in epilot.iter_search_entities("_schema:order", include_deleted="true") for e in page.results
    }
    assert order_id not in visible and with_deleted[order_id].deleted_at is not None
    with pytest.raises(EpilotNotFoundError):
        epilot.get_entity("order", order_id)
    epilot.delete_entity("order", order_id, purge=True)
    assert order_id not in {
        e.id for page in epilot.iter_search_entities("_schema:order", include_deleted="true") for e in page.results
    }


def test_stale_patch_is_refused_with_a_conflict(epilot: EpilotClient) -> None:
    entity = epilot.get_entity("opportunity", demo_id("opportunity:kalkstrasse"))
    epilot.patch_entity("opportunity", entity.id, {"status": "bearbeitung"}, updated_at=entity.data["_updated_at"])
    with pytest.raises(EpilotConflictError):
        epilot.patch_entity("opportunity", entity.id, {"status": "abgebrochen"}, updated_at=entity.data["_updated_at"])
    assert epilot.get_entity("opportunity", entity.id).data["status"] == "bearbeitung"


def test_upsert_creates_once_then_updates(epilot: EpilotClient) -> None:
    created, was_created = epilot.upsert_entity("order", ["backoffice_key"], {"backoffice_key": "conv-1", "status": "draft"})
    again, created_again = epilot.upsert_entity("order", ["backoffice_key"], {"backoffice_key": "conv-1", "status": "placed"})
    assert was_created and not created_again and again.id == created.id and again.data["status"] == "placed"


def test_relations_are_added_without_rewriting_others(epilot: EpilotClient) -> None:
    opportunity_id = demo_id("opportunity:nordstrasse")
    order = epilot.create_entity("order", {"_title": "Ausbau: Nordstraße", "status": "draft"})
    epilot.add_relations("opportunity", opportunity_id, [RelationItem(entity_id=order.id, attribute="items")])
    opportunity = epilot.get_entity("opportunity", opportunity_id)
    assert opportunity.relation_ids("items") == [order.id]
    assert opportunity.relation_ids("customer") == [demo_id("contact:meier")]
    reverse = epilot.get_relations("order", order.id, include_reverse=True)
    assert RelationItem(entity_id=opportunity_id, attribute="items", schema="opportunity", reverse=True) in reverse


def test_v1_execution_runs_on_any_entity_and_is_mirrored_on_it(epilot: EpilotClient) -> None:
    order_id = demo_id("order:schulzentrum")
    execution = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(order_id, "order", "Schulzentrum")])
    assert execution.status == "STARTED" and execution.definition_id == AUSBAU_DEFINITION_ID
    assert (execution.completed_steps, len(execution.steps)) == (0, 8)
    assert execution.current_step.section == "Planung"
    order = epilot.get_entity("order", order_id)
    assert order.data["workflows"][AUSBAU_DEFINITION_ID][0]["id"] == execution.id
    assert order.data["ausbau_phase"] == "Planung"
    listed = epilot.get_executions(context=order_id, schema="order")
    assert [e.id for e in listed] == [execution.id]
    # listed slim, as the spec's WorkflowExecutionSlim: the steps' names, not their state
    assert [s.name for s in listed[0].steps] == [s.name for s in execution.steps]
    assert {s.status for s in listed[0].steps} == {None}
    assert None not in {s.status for s in epilot.get_execution(execution.id).steps}
    epilot.close_execution(execution.id)
    assert epilot.get_execution(execution.id).status == "CLOSED"


def test_unknown_definition_and_deleted_entity_are_refused(epilot: EpilotClient) -> None:
    with pytest.raises(EpilotValidationError):
        epilot.create_execution("nope1234", [ExecutionContext(demo_id("opportunity:nordstrasse"), "opportunity", "x")])
    epilot.delete_entity("opportunity", demo_id("opportunity:angerbach"))
    with pytest.raises(EpilotValidationError):
        epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(demo_id("opportunity:angerbach"), "opportunity", "x")])


def test_v2_flow_execution(epilot: EpilotClient) -> None:
    template = epilot.list_flow_templates()[0]
    started = epilot.start_flow_execution(template.id, [ExecutionContext(demo_id("contact:meier"), "contact")])
    assert started.engine == "v2" and started.current_step.section == "Terminierung"
    assert [e.id for e in epilot.search_flow_executions(entity_id=demo_id("contact:meier"), entity_schema="contact")] == [
        started.id
    ]


def test_automation_flows_create_replace_search(epilot: EpilotClient) -> None:
    body = {"flow_name": "Ausbau", "triggers": [{"type": "entity_manual", "configuration": {"schema": "opportunity"}}],
            "actions": [{"type": "trigger-workflow", "name": "start", "config": {"target_workflow": AUSBAU_DEFINITION_ID}}]}
    flow = epilot.create_flow(body)
    replaced = epilot.put_flow(flow.id, {**body, "enabled": False})
    assert replaced.id == flow.id and replaced.enabled is False
    assert [f.id for f in epilot.iter_flows()] == [flow.id]
    with pytest.raises(EpilotValidationError):
        epilot.create_flow({"flow_name": "missing actions", "triggers": []})


def test_loopback_server_with_injected_faults_still_delivers_everything(sandbox: SandboxApp, sandbox_server: str, clock) -> None:
    seed_bulk(sandbox.store, contacts=1200, opportunities=0, orders=0, seed=9)
    sandbox.set_faults(FaultConfig(rate_429=0.2, rate_5xx=0.2, retry_after_seconds=1, seed=4))
    client = EpilotClient(token="anything", urls=ServiceURLs.single_origin(sandbox_server), sleep=clock.sleep, clock=clock,
                          seed=2, retry=RetryPolicy(max_attempts=10, max_elapsed_seconds=300))
    ids = [e.id for page in client.iter_search_entities("_schema:contact", page_size=500) for e in page.results]
    assert len(ids) == len(set(ids)) == 1208
    assert sandbox.stats["injected_429"] > 0 and sandbox.stats["injected_5xx"] > 0
    assert 1.0 in clock.sleeps  # a Retry-After of one second was honoured


def test_injected_latency_delays_only_the_operations_named(sandbox: SandboxApp, epilot: EpilotClient) -> None:
    sandbox.set_faults(FaultConfig(latency_ms=1, operations=("getExecutions",)))
    epilot.search_entities({"q": "_schema:contact"})
    assert sandbox.stats["injected_latency"] == 0
    epilot.get_executions(context=demo_id("opportunity:nordstrasse"), schema="opportunity")
    assert sandbox.stats["injected_latency"] == 1


def test_sandbox_requires_a_bearer_token(sandbox: SandboxApp) -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=sandbox), base_url="http://sandbox.invalid") as http:
        assert http.post("/v1/entity:search", json={"q": "*"}).status_code == 401
        answer = http.post("/v1/entity:search", json={"q": "*", "limit": 1}, headers={"Authorization": "Bearer x"})
        assert answer.status_code == 400 and "limit" in answer.json()["error"]


def test_loopback_server_keeps_a_connection_open_between_requests(sandbox_server: str) -> None:
    """One connection carries a search with a body, an error and a read, as it would to epilot's gateway."""
    import http.client
    from urllib.parse import urlsplit

    origin = urlsplit(sandbox_server)
    connection = http.client.HTTPConnection(origin.hostname, origin.port, timeout=10)
    headers = {"Authorization": "Bearer x", "Content-Type": "application/json"}
    try:
        connection.request("POST", "/v1/entity:search", body=b'{"q": "_schema:contact", "size": 2}', headers=headers)
        first = connection.getresponse()
        assert first.status == 200 and len(json.loads(first.read())["results"]) == 2
        assert first.version == 11 and not first.will_close
        socket_used = connection.sock
        connection.request("GET", "/v1/no-such-route", headers=headers)
        missing = connection.getresponse()
        assert missing.status == 404 and missing.read()
        connection.request("GET", f"/v1/workflows/executions?context={demo_id('opportunity:nordstrasse')}", headers=headers)
        executions = connection.getresponse()
        assert executions.status == 200 and isinstance(json.loads(executions.read()), list)
        assert connection.sock is socket_used  # http.client reconnects silently once a server closed the connection
    finally:
        connection.close()
