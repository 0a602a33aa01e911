"""The epilot sandbox as a WSGI app: the operations the back-office uses, shaped as the official specs say.

Every epilot service answers from this one origin (their paths do not overlap). Control
endpoints for tests and demos live under `/__sandbox__/`.
"""
from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import parse_qs

from integrations.epilot_sandbox.automation import AutomationHandlers
from integrations.epilot_sandbox.entity import EntityHandlers
from integrations.epilot_sandbox.http import HTTPError, Request, Response, dumps, error_body
from integrations.epilot_sandbox.query import BadQuery
from integrations.epilot_sandbox.seed import seed_demo
from integrations.epilot_sandbox.store import SandboxStore
from integrations.epilot_sandbox.webhook_outbox import WebhookDeliverer
from integrations.epilot_sandbox.webhooks import WebhookHandlers
from integrations.epilot_sandbox.workflows import WorkflowHandlers

Handler = Callable[..., Response]


@dataclass
class FaultConfig:
    """Faults injected before (429, 5xx) or after (dropped response) a request is handled."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    latency_ms: int = 0
    retry_after_seconds: int = 1
    seed: int | None = None
    operations: tuple[str, ...] = ()  # operationIds the faults apply to; empty means every operation

    def applies_to(self, operation: str) -> bool:
        return not self.operations or operation in self.operations

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "operations" in values:
            values["operations"] = tuple(values["operations"] or ())
        return cls(**values)



class SandboxApp(EntityHandlers, WorkflowHandlers, AutomationHandlers, WebhookHandlers):
    """WSGI application. `token=None` accepts any bearer token; a string requires exactly that one.

    `deliver_webhooks` starts a thread that sends queued webhook deliveries (the standalone server's job;
    `webhook_retry_scale` shortens epilot's retry delays for tests and demos).
    """

    def __init__(self, store: SandboxStore, *, token: str | None = None, faults: FaultConfig | None = None,
                 deliver_webhooks: bool = False, webhook_retry_scale: float = 1.0) -> None:
        self.store = store
        self.deliverer = WebhookDeliverer(store, retry_scale=webhook_retry_scale)
        if deliver_webhooks:
            self.deliverer.start()
        self.token = token
        self.faults = faults or FaultConfig()
        self.stats: Counter[str] = Counter()
        self._stable_hits: dict[str, int] = {}  # stable_query_id → hits of its first page
        self._writes: deque[float] = deque()  # when each write of the last 60 seconds arrived
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._retry_not_before = 0.0
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        self._register_routes()

    # ------------------------------------------------------------------ WSGI plumbing

    def set_faults(self, faults: FaultConfig) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        request = Request(
            method=environ["REQUEST_METHOD"].upper(),
            path=environ.get("PATH_INFO", "/"),
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers={key[5:].replace("_", "-").lower(): value for key, value in environ.items() if key.startswith("HTTP_")},
            raw_body=environ["wsgi.input"].read(length) if length else b"",
        )
        status, body, headers = self.handle(request)
        payload = b"" if body is None else dumps(body).encode()
        reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
                  500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Status")
        response_headers = [("Content-Type", "application/json")] if payload else []
        response_headers += [*headers, ("Content-Length", str(len(payload)))]
        start_response(f"{status} {reason}", response_headers)
        return [payload]

    def handle(self, request: Request) -> tuple[int, Any, list[tuple[str, str]]]:
        if request.path.startswith("/__sandbox__/"):
            return (*self._control(request), [])
        route = self._match(request)
        if route is None:
            return 404, {"message": f"No route for {request.method} {request.path}"}, []
        handler, params, style, operation = route
        with self._lock:
            faults = self.faults
            roll = self._rng.random() if faults.applies_to(operation) else 1.0
            if time.monotonic() < self._retry_not_before:
                self.stats["retry_after_violations"] += 1  # a client came back before the Retry-After it was given
        if faults.latency_ms and faults.applies_to(operation):
            self.stats["injected_latency"] += 1
            time.sleep(faults.latency_ms / 1000)
        self.stats["requests"] += 1
        self.stats[f"op:{operation}"] += 1
        if request.method != "GET" and not operation.startswith(("search", "list", "get")):
            self._note_write()
        try:
            if style != "public":
                self._authenticate(request, style)
            if roll < faults.rate_429:
                self.stats["injected_429"] += 1
                with self._lock:
                    self._retry_not_before = time.monotonic() + faults.retry_after_seconds * 0.95
                raise HTTPError(429, "Too many requests. Try again later.", style=style,
                                headers=[("Retry-After", str(faults.retry_after_seconds))])
            if roll < faults.rate_429 + faults.rate_5xx:
                self.stats["injected_5xx"] += 1
                raise HTTPError(503, "Service Unavailable", style=style)
            status, body = handler(request, **params)
            if roll < faults.rate_429 + faults.rate_5xx + faults.rate_drop:
                # Handled, but the answer is lost on its way back, as when a gateway times out.
                self.stats["injected_drop"] += 1
                raise HTTPError(502, "Bad Gateway", style=style)
            return status, body, []
        except HTTPError as exc:
            self.stats[f"status:{exc.status}"] += 1
            return exc.status, error_body(exc), exc.headers
        except BadQuery as exc:
            return 400, {"status": 400, "error": str(exc)}, []

    def _authenticate(self, request: Request, style: str) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPError(401, "Unauthorized", style="gateway")
        if self.token is not None and token.strip() != self.token:
            raise HTTPError(401, "Unauthorized", style="gateway")

    def _match(self, request: Request) -> tuple[Handler, dict[str, str], str, str] | None:
        for method, pattern, handler, style in self._routes:
            if method == request.method:
                match = pattern.fullmatch(request.path)
                if match:
                    return handler, match.groupdict(), style, handler.__name__.lstrip("_")
        return None

    def _route(self, method: str, path: str, handler: Handler, style: str = "entity") -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/:]+)", path)
        self._routes.append((method, re.compile(regex), handler, style))

    def _register_routes(self) -> None:
        r = self._route
        r("POST", "/v1/entity:search", self.searchEntities)
        r("POST", "/v1/entity:list", self.listEntities)
        r("GET", "/v1/entity/schemas", self.listSchemas)
        r("PATCH", "/v1/entity/{slug}:upsert", self.upsertEntity)
        r("PATCH", "/v1/entity/{slug}/{entity_id}:restore", self.restoreEntity)
        r("GET", "/v1/entity/{slug}/{entity_id}/relations", self.getRelations)
        r("POST", "/v1/entity/{slug}/{entity_id}/relations", self.addRelations)
        r("GET", "/v1/entity/{slug}/{entity_id}", self.getEntity)
        r("GET", "/v2/entity/{slug}/{entity_id}", self.getEntityV2)
        r("PATCH", "/v1/entity/{slug}/{entity_id}", self.patchEntity)
        r("PUT", "/v1/entity/{slug}/{entity_id}", self.updateEntity)
        r("DELETE", "/v1/entity/{slug}/{entity_id}", self.deleteEntity)
        r("POST", "/v1/entity/{slug}", self.createEntity)
        r("GET", "/v1/workflows/definitions", self.getDefinitions, "workflow")
        r("GET", "/v1/workflows/definitions/{definition_id}", self.getDefinition, "workflow")
        r("GET", "/v2/flows/templates", self.listFlowTemplates, "workflow")
        r("GET", "/v2/flows/templates/{flow_id}", self.getFlowTemplate, "workflow")
        r("GET", "/v1/workflows/executions", self.getExecutions, "workflow")
        r("POST", "/v1/workflows/executions", self.createExecution, "workflow")
        r("GET", "/v1/workflows/executions/{execution_id}", self.getExecution, "workflow")
        r("PATCH", "/v1/workflows/executions/{execution_id}", self.updateExecution, "workflow")
        r("DELETE", "/v1/workflows/executions/{execution_id}", self.deleteExecution, "workflow")
        r("PATCH", "/v1/workflows/executions/{execution_id}/steps/{step_id}", self.updateStep, "workflow")
        r("GET", "/v1/workflows/executions/{execution_id}/closing-reasons", self.getClosingReasonExecution, "workflow")
        r("POST", "/v2/flows/executions:search", self.searchFlowExecutions, "workflow")
        r("POST", "/v2/flows/executions", self.startFlowExecution, "workflow")
        r("GET", "/v2/flows/executions/{execution_id}", self.getFlowExecution, "workflow")
        r("PATCH", "/v2/flows/executions/{execution_id}", self.patchFlowExecution, "workflow")
        r("PATCH", "/v2/flows/executions/{execution_id}/tasks/{task_id}", self.patchTask, "workflow")
        r("PATCH", "/v2/flows/executions/{execution_id}/phases/{phase_id}", self.patchPhase, "workflow")
        r("GET", "/v1/automation/flows", self.searchFlows)
        r("POST", "/v1/automation/flows", self.createFlow)
        r("GET", "/v1/automation/flows/{flow_id}", self.getFlow)
        r("PUT", "/v1/automation/flows/{flow_id}", self.putFlow)
        r("DELETE", "/v1/automation/flows/{flow_id}", self.deleteFlow)
        r("GET", "/v1/webhooks/.well-known/public-key", self.getPublicKey, "public")
        r("GET", "/v1/webhooks/configs", self.getConfigs, "webhooks")
        r("POST", "/v1/webhooks/configs", self.createConfig, "webhooks")
        r("GET", "/v1/webhooks/configs/{config_id}", self.getConfig, "webhooks")
        r("PUT", "/v1/webhooks/configs/{config_id}", self.updateConfig, "webhooks")
        r("DELETE", "/v1/webhooks/configs/{config_id}", self.deleteConfig, "webhooks")
        r("POST", "/v2/webhooks/configs/{config_id}/events", self.getWebhookEventsV2, "webhooks")
        r("POST", "/v1/webhooks/configs/{config_id}/events/replay-batch", self.batchReplayEvents, "webhooks")

    def _note_write(self) -> None:
        """Count writes per sliding minute: `max_writes_per_60s` shows whether a client kept epilot's write budget."""
        with self._lock:
            now = time.monotonic()
            self._writes.append(now)
            while self._writes and now - self._writes[0] >= 60:
                self._writes.popleft()
            self.stats["max_writes_per_60s"] = max(self.stats["max_writes_per_60s"], len(self._writes))

    def _control(self, request: Request) -> Response:
        action = request.path.removeprefix("/__sandbox__/")
        if action == "health" and request.method == "GET":
            return 200, {"ok": True, "entities": self.store.count_entities()}
        if action == "stats" and request.method == "GET":
            return 200, dict(self.stats)
        if action == "stats" and request.method == "DELETE":
            with self._lock:
                self.stats.clear()
                self._writes.clear()
            return 200, {}
        if action == "faults" and request.method == "GET":
            return 200, asdict(self.faults)
        if action == "faults" and request.method in ("POST", "PUT"):
            self.set_faults(FaultConfig.from_mapping(request.json()))
            return 200, asdict(self.faults)
        if action == "reset" and request.method == "POST":
            self.store.reset()
            seed_demo(self.store)
            self.stats.clear()
            return 200, {"ok": True}
        return 404, {"message": "unknown sandbox control endpoint"}
