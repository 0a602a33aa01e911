"""The automation API of the sandbox: automation flows."""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from integrations.epilot_sandbox.http import HTTPError, Request, Response, json_object
from integrations.epilot_sandbox.store import SandboxStore, now_ms


class AutomationHandlers:
    """Handlers of the automation API, named after its operationIds."""

    store: SandboxStore


    def searchFlows(self, request: Request) -> Response:
        flows = self.store.list_documents("automation_flow")
        schema = request.arg("schema")
        if schema:
            flows = [flow for flow in flows if flow.get("entity_schema") == schema]
        target = request.arg("target_workflow")
        if target:
            flows = [
                f for f in flows if any((a.get("config") or {}).get("target_workflow") == target for a in f.get("actions", []))
            ]
        source = request.arg("trigger_source_id")
        if source:
            flows = [f for f in flows if any((t.get("configuration") or {}).get("source_id") == source
                                             for t in f.get("triggers", []) if isinstance(t, Mapping))]
        size, offset = int(request.arg("size", "25") or 25), int(request.arg("from", "0") or 0)
        return 200, {"total": len(flows), "results": flows[offset: offset + size]}

    def createFlow(self, request: Request) -> Response:
        data = _automation_flow(request.json())
        stamp = now_ms()
        flow = {**data, "id": str(uuid.uuid4()), "org_id": self.store.org_id, "created_at": stamp, "updated_at": stamp, "runs": 0}
        flow.setdefault("enabled", True)
        with self.store.write() as conn:
            self.store.put_document(conn, "automation_flow", flow["id"], flow)
        return 201, flow

    def getFlow(self, request: Request, flow_id: str) -> Response:
        flow = self.store.get_document("automation_flow", flow_id)
        if flow is None:
            raise HTTPError(404, "Automation flow not found")
        return 200, flow

    def putFlow(self, request: Request, flow_id: str) -> Response:
        data = _automation_flow(request.json())
        with self.store.write() as conn:
            existing = self.store.get_document("automation_flow", flow_id)
            if existing is None:
                raise HTTPError(404, "Automation flow not found")
            flow = {**data, "id": flow_id, "org_id": existing["org_id"], "created_at": existing["created_at"],
                    "updated_at": now_ms(), "runs": existing.get("runs", 0)}
            self.store.put_document(conn, "automation_flow", flow_id, flow)
        return 200, flow

    def deleteFlow(self, request: Request, flow_id: str) -> Response:
        with self.store.write() as conn:
            if self.store.get_document("automation_flow", flow_id) is None:
                raise HTTPError(404, "Automation flow not found")
            self.store.delete_document(conn, "automation_flow", flow_id)
        return 200, {"id": flow_id}


def _automation_flow(value: Any) -> dict[str, Any]:
    data = json_object(value)
    missing = [key for key in ("flow_name", "triggers", "actions") if key not in data]
    if missing:
        raise HTTPError(400, f"missing required fields: {', '.join(missing)}")
    if not isinstance(data["triggers"], list) or not isinstance(data["actions"], list):
        raise HTTPError(400, "triggers and actions must be arrays")
    for trigger in data["triggers"]:
        if not isinstance(trigger, Mapping) or "type" not in trigger or "configuration" not in trigger:
            raise HTTPError(400, "each trigger needs type and configuration")
    for action in data["actions"]:
        if not isinstance(action, Mapping) or "type" not in action:
            raise HTTPError(400, "each action needs a type")
    return {key: value for key, value in data.items() if key not in ("id", "org_id", "created_at", "updated_at", "runs")}
