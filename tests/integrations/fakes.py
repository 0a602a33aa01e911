"""Transport-level fakes in front of the sandbox, for epilot answers the sandbox itself never gives."""
from __future__ import annotations

import json

import httpx

from integrations.epilot_sandbox import SandboxApp


class RepeatingTemplates(httpx.BaseTransport):
    """A transport-level fake in front of the sandbox: every flow-template listing answers each template twice."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path == "/v2/flows/templates":
            body = json.loads(response.read())
            body["results"] = body["results"] * 2
            return httpx.Response(200, json=body)
        return response


def repeating_flow_templates(sandbox: SandboxApp) -> httpx.BaseTransport:
    """The sandbox, but every flow-template listing answers each template twice (as a real answer may)."""
    return RepeatingTemplates(httpx.WSGITransport(app=sandbox))


class SlimExecutionList(httpx.BaseTransport):
    """The sandbox, but the V1 execution list answers slim executions: steps without status, as the spec's example."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "GET" and request.url.path == "/v1/workflows/executions":
            body = json.loads(response.read())
            for execution in body:
                for item in execution.get("flow", []):
                    for step in item.get("steps", [item]):
                        for key in ("status", "assignedTo", "dueDate", "completedTime"):
                            step.pop(key, None)
            return httpx.Response(200, json=body)
        return response


class PartlySlimExecutionList(httpx.BaseTransport):
    """The sandbox, but the V1 execution list answers each execution with its steps' state and without their
    assignees and due dates: light-weight in another way the spec allows ("steps are not loaded with all information")."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method != "GET" or request.url.path != "/v1/workflows/executions":
            return response
        listed = []
        for execution in json.loads(response.read()):
            whole = self.inner.handle_request(httpx.Request("GET", request.url.copy_with(
                path=f"/v1/workflows/executions/{execution['id']}", query=None), headers=request.headers))
            execution = json.loads(whole.read())
            for item in execution.get("flow", []):
                for step in item.get("steps", [item]):
                    step.pop("assignedTo", None)
                    step.pop("dueDate", None)
            listed.append(execution)
        return httpx.Response(200, json=listed)
