"""The workflow APIs: V1 definitions and V2 flow templates (workflows-definition), V1 and V2 executions (workflows-execution)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import integrations.epilot.errors as errors
from integrations.epilot.transport import Transport, segment
from integrations.epilot.types import ExecutionContext, WorkflowDefinition, WorkflowExecution


class WorkflowsAPI(Transport):
    """Operations of the two workflow services; methods are named after the spec's operationIds."""

    def get_definitions(self) -> list[WorkflowDefinition]:
        """getDefinitions (V1)."""
        body = self._json("getDefinitions", self._request(
            "getDefinitions", "GET", self.urls.workflows_definition, "/v1/workflows/definitions", idempotent=True))
        if not isinstance(body, list):
            raise self._invalid("getDefinitions", "the body is not a list")
        return [self._parse("getDefinitions", WorkflowDefinition.from_v1, item) for item in body]

    def get_definition(self, definition_id: str) -> WorkflowDefinition:
        """getDefinition (V1); raises EpilotNotFoundError."""
        body = self._json(
            "getDefinition",
            self._request("getDefinition", "GET", self.urls.workflows_definition,
                          f"/v1/workflows/definitions/{segment(definition_id)}", idempotent=True),
        )
        return self._parse("getDefinition", WorkflowDefinition.from_v1, body)

    def list_flow_templates(
        self, *, trigger_type: str | None = None, trigger_schema: str | None = None
    ) -> list[WorkflowDefinition]:
        """listFlowTemplates (V2)."""
        params = {key: value for key, value in (("trigger_type", trigger_type), ("trigger_schema", trigger_schema)) if value}
        body = self._json(
            "listFlowTemplates",
            self._request("listFlowTemplates", "GET", self.urls.workflows_definition, "/v2/flows/templates",
                          params=params or None, idempotent=True),
        )
        results = body.get("results") if isinstance(body, Mapping) else None
        if not isinstance(results, list):
            raise self._invalid("listFlowTemplates", "the body has no 'results' list")
        return [self._parse("listFlowTemplates", WorkflowDefinition.from_v2, item) for item in results]

    # ------------------------------------------------------------------ workflow executions

    def create_execution(
        self, workflow_id: str, contexts: Sequence[ExecutionContext], *, trigger: str = "MANUAL"
    ) -> WorkflowExecution:
        """createExecution (V1): start a definition on entities. Not retried on 5xx or timeouts."""
        body = {
            "workflowId": workflow_id,
            "trigger": trigger,
            "contexts": [{"id": ctx.entity_id, "schema": ctx.schema, "title": ctx.title or ctx.entity_id} for ctx in contexts],
        }
        response = self._request("createExecution", "POST", self.urls.workflows_execution, "/v1/workflows/executions",
                                 json_body=body, idempotent=False)
        return self._parse("createExecution", WorkflowExecution.from_v1, self._json("createExecution", response))

    def get_executions(self, *, context: str | None = None, schema: str | None = None) -> list[WorkflowExecution]:
        """getExecutions (V1) of one entity: `context` is its id, `schema` its slug."""
        params = {key: value for key, value in (("context", context), ("schema", schema)) if value}
        body = self._json(
            "getExecutions",
            self._request("getExecutions", "GET", self.urls.workflows_execution, "/v1/workflows/executions",
                          params=params or None, idempotent=True),
        )
        if not isinstance(body, list):
            raise self._invalid("getExecutions", "the body is not a list")
        return [self._parse("getExecutions", WorkflowExecution.from_v1, item) for item in body]

    def get_execution(self, execution_id: str) -> WorkflowExecution:
        """getExecution (V1); the spec answers an unknown id with an empty 200, reported as EpilotNotFoundError."""
        response = self._request("getExecution", "GET", self.urls.workflows_execution,
                                 f"/v1/workflows/executions/{segment(execution_id)}", idempotent=True)
        body = self._json("getExecution", response, allow_empty=True)
        if not body:
            raise errors.EpilotNotFoundError(f"getExecution: no execution {execution_id}", operation="getExecution", status=200)
        return self._parse("getExecution", WorkflowExecution.from_v1, body)

    def update_execution(self, execution_id: str, changes: Mapping[str, Any]) -> None:
        """updateExecution (V1), answered with 204."""
        self._request("updateExecution", "PATCH", self.urls.workflows_execution,
                      f"/v1/workflows/executions/{segment(execution_id)}", json_body=dict(changes), idempotent=True)

    def close_execution(self, execution_id: str, *, reasons: Sequence[Mapping[str, str]] = (), description: str = "") -> None:
        """Close (cancel) a V1 execution through updateExecution."""
        changes: dict[str, Any] = {"status": "CLOSED"}
        if reasons:
            changes["selectedClosingReasons"] = [dict(reason) for reason in reasons]
        if description:
            changes["closingReasonDescription"] = description
        self.update_execution(execution_id, changes)

    def start_flow_execution(
        self, flow_template_id: str, contexts: Sequence[ExecutionContext], *, trigger: str = "MANUAL"
    ) -> WorkflowExecution:
        """startFlowExecution (V2); the first context is primary unless one says otherwise."""
        if not contexts:
            raise errors.EpilotValidationError("startFlowExecution needs at least one context", operation="startFlowExecution")
        has_primary = any(ctx.is_primary for ctx in contexts)
        body = {
            "flow_template_id": flow_template_id,
            "trigger": {"type": trigger},
            "contexts": [
                {
                    "entity_id": ctx.entity_id,
                    "entity_schema": ctx.schema,
                    "is_primary": ctx.is_primary or (not has_primary and i == 0),
                }
                for i, ctx in enumerate(contexts)
            ],
        }
        response = self._request("startFlowExecution", "POST", self.urls.workflows_execution, "/v2/flows/executions",
                                 json_body=body, idempotent=False)
        return self._parse("startFlowExecution", WorkflowExecution.from_v2, self._json("startFlowExecution", response))

    def get_flow_execution(self, execution_id: str) -> WorkflowExecution:
        """getFlowExecution (V2); raises EpilotNotFoundError."""
        body = self._json(
            "getFlowExecution",
            self._request("getFlowExecution", "GET", self.urls.workflows_execution,
                          f"/v2/flows/executions/{segment(execution_id)}", idempotent=True),
        )
        return self._parse("getFlowExecution", WorkflowExecution.from_v2, body)

    def search_flow_executions(self, *, entity_id: str, entity_schema: str) -> list[WorkflowExecution]:
        """searchFlowExecutions (V2) of one entity."""
        body = self._json("searchFlowExecutions", self._request(
            "searchFlowExecutions", "POST", self.urls.workflows_execution, "/v2/flows/executions:search",
            json_body={"entity_id": entity_id, "entity_schema": entity_schema}, idempotent=True))
        results = body.get("results") if isinstance(body, Mapping) else None
        if not isinstance(results, list):
            raise self._invalid("searchFlowExecutions", "the body has no 'results' list")
        return [self._parse("searchFlowExecutions", WorkflowExecution.from_v2, item) for item in results]


    # ------------------------------------------------------------------ working the steps

    def update_step(self, execution_id: str, step_id: str, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        """updateStep (V1): `status`, `assignedTo`, `dueDate`...; returns epilot's step. Setting values is safe to retry."""
        body = self._json("updateStep", self._request(
            "updateStep", "PATCH", self.urls.workflows_execution,
            f"/v1/workflows/executions/{segment(execution_id)}/steps/{segment(step_id)}", json_body=dict(changes),
            idempotent=True))
        if not isinstance(body, Mapping):
            raise self._invalid("updateStep", "the body is not an object")
        return body

    def patch_task(self, execution_id: str, task_id: str, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        """patchTask (V2): `status`, `assigned_to`, `due_date`...; an invalid transition raises EpilotValidationError."""
        body = self._json("patchTask", self._request(
            "patchTask", "PATCH", self.urls.workflows_execution,
            f"/v2/flows/executions/{segment(execution_id)}/tasks/{segment(task_id)}", json_body=dict(changes),
            idempotent=True))
        if not isinstance(body, Mapping):
            raise self._invalid("patchTask", "the body is not an object")
        return body

    def patch_flow_execution(self, execution_id: str, changes: Mapping[str, Any]) -> WorkflowExecution:
        """patchFlowExecution (V2): `status`, `closing_reason`, `due_date`...; returns the execution."""
        body = self._json("patchFlowExecution", self._request(
            "patchFlowExecution", "PATCH", self.urls.workflows_execution,
            f"/v2/flows/executions/{segment(execution_id)}", json_body=dict(changes), idempotent=True))
        return self._parse("patchFlowExecution", WorkflowExecution.from_v2, body)

    def get_closing_reasons(self, execution_id: str) -> list[dict[str, str]]:
        """getClosingReasonExecution (V1): the reasons ({id, title}) offered when closing this execution."""
        body = self._json("getClosingReasonExecution", self._request(
            "getClosingReasonExecution", "GET", self.urls.workflows_execution,
            f"/v1/workflows/executions/{segment(execution_id)}/closing-reasons", idempotent=True))
        reasons = body.get("reasons") if isinstance(body, Mapping) else None
        if not isinstance(reasons, list):
            raise self._invalid("getClosingReasonExecution", "the body has no 'reasons' list")
        return [{"id": str(r["id"]), "title": str(r.get("title") or r["id"])}
                for r in reasons if isinstance(r, Mapping) and r.get("id")]
