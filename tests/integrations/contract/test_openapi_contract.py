"""Every request the gateway builds and every answer the sandbox gives is checked against epilot's specs."""
from __future__ import annotations

import pytest

from integrations.epilot import (
    EpilotClient,
    EpilotConflictError,
    EpilotNotFoundError,
    EpilotRateLimitedError,
    ExecutionContext,
    RelationItem,
)
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id
from tests.integrations.contract.openapi import ContractRecorder

ORIGIN = "http://epilot-sandbox.invalid"


def test_every_operation_matches_the_specs(checked_client: EpilotClient, recorder: ContractRecorder) -> None:
    client = checked_client
    opportunity_id = demo_id("opportunity:nordstrasse")
    contact_id = demo_id("contact:meier")

    pages = list(client.iter_search_entities("_schema:opportunity", include_deleted="true", page_size=3))
    assert sum(len(page.results) for page in pages) == 8
    list(
        client.iter_list_entities(
            [{"term": {"_schema": "order"}}, {"range": {"_updated_at": {"gte": "2025-01-01T00:00:00.000Z"}}}]
        )
    )
    client.list_schemas()
    entity = client.get_entity("opportunity", opportunity_id)
    client.patch_entity("opportunity", opportunity_id, {"status": "bearbeitung"}, updated_at=entity.data["_updated_at"])
    order = client.create_entity(
        "order", {"_title": "Ausbau: Nordstraße", "status": "draft", "amount_total": 4500000, "currency": "EUR"}
    )
    client.upsert_entity("order", ["backoffice_key"], {"backoffice_key": "k-1", "status": "draft"})
    client.add_relations("opportunity", opportunity_id, [RelationItem(entity_id=order.id, attribute="items")])
    client.get_relations("opportunity", opportunity_id, include_reverse=True)
    client.delete_entity("order", order.id)

    client.get_definitions()
    client.get_definition(AUSBAU_DEFINITION_ID)
    with pytest.raises(EpilotNotFoundError):
        client.get_definition("nope1234")
    templates = client.list_flow_templates()

    execution = client.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(opportunity_id, "opportunity", "Nordstraße"),
                                                               ExecutionContext(contact_id, "contact", "Anna Meier")])
    client.get_executions(context=opportunity_id, schema="opportunity")
    client.get_execution(execution.id)
    client.close_execution(execution.id, description="Test")
    flow_execution = client.start_flow_execution(templates[0].id, [ExecutionContext(opportunity_id, "opportunity")])
    client.get_flow_execution(flow_execution.id)
    client.search_flow_executions(entity_id=opportunity_id, entity_schema="opportunity")

    flow = client.create_flow(
        {
            "flow_name": "Ausbau: Opportunity in Bearbeitung",
            "enabled": True,
            "entity_schema": "opportunity",
            "triggers": [
                {"type": "entity_operation", "configuration": {"schema": "opportunity", "operations": ["updateEntity"]}}
            ],
            "actions": [
                {
                    "type": "trigger-workflow",
                    "name": "Ausbau Glasfaser starten",
                    "config": {"target_workflow": AUSBAU_DEFINITION_ID},
                }
            ],
        }
    )
    client.put_flow(flow.id, {**flow.data, "enabled": False})
    client.search_flows(schema="opportunity")
    client.get_flow(flow.id)

    assert recorder.violations == [], '\n'.join(v[:700] for v in recorder.violations)
    operations = {(method, path.split("/")[2] if path.startswith("/v") else path) for method, path, _ in recorder.exchanges}
    assert len(recorder.exchanges) >= 25, operations


def test_error_answers_match_the_specs(checked_client: EpilotClient, recorder: ContractRecorder, sandbox: SandboxApp) -> None:
    entity = checked_client.get_entity("opportunity", demo_id("opportunity:kalkstrasse"))
    checked_client.patch_entity("opportunity", entity.id, {"status": "bearbeitung"})
    with pytest.raises(EpilotConflictError):
        checked_client.patch_entity("opportunity", entity.id, {"status": "geschlossen"}, updated_at=entity.data["_updated_at"])
    with pytest.raises(EpilotNotFoundError):
        checked_client.get_entity("opportunity", "00000000-0000-4000-8000-000000000000")
    sandbox.set_faults(FaultConfig(rate_429=1.0, retry_after_seconds=1))
    with pytest.raises(EpilotRateLimitedError):
        checked_client.search_entities({"q": "_schema:contact", "size": 1})

    assert [status for _, _, status in recorder.exchanges][-1] == 429
    assert recorder.violations == [], '\n'.join(v[:700] for v in recorder.violations)
