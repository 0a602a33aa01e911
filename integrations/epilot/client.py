"""The epilot gateway: one shared httpx.Client, typed results, typed errors, bounded retries.

Methods are named after the operationIds of the official specs (shared/epilot-openapi).
"""
from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from integrations.epilot import errors
from integrations.epilot.throttle import RetryPolicy, WriteBudget
from integrations.epilot.types import (
    AutomationFlow,
    Entity,
    EntitySchemaSummary,
    EntitySearchPage,
    ExecutionContext,
    MalformedEntity,
    MalformedPayload,
    RelationItem,
    WorkflowDefinition,
    WorkflowExecution,
    parse_timestamp,
)

logger = logging.getLogger("integrations.epilot")

SEARCH_PAGE_SIZE = 1000
DEFAULT_SORT = ("_updated_at:asc", "_id:asc")


@dataclass(frozen=True)
class ServiceURLs:
    """Base URL of each epilot service (real hosts by default; one origin for a sandbox or proxy)."""

    entity: str = "https://entity.sls.epilot.io"
    workflows_execution: str = "https://workflows-execution.sls.epilot.io"
    workflows_definition: str = "https://workflows-definition.sls.epilot.io"
    automation: str = "https://automation.sls.epilot.io"

    @classmethod
    def single_origin(cls, origin: str) -> ServiceURLs:
        return cls(entity=origin, workflows_execution=origin, workflows_definition=origin, automation=origin)

    def items(self) -> list[tuple[str, str]]:
        return [
            ("entity", self.entity),
            ("workflows_execution", self.workflows_execution),
            ("workflows_definition", self.workflows_definition),
            ("automation", self.automation),
        ]


class _Token:
    """Holds the token so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class EpilotClient:
    """Synchronous client for the epilot APIs the back-office uses.

    Raises only `integrations.epilot.errors.EpilotError` subclasses. Safe to share between
    threads; one instance per process is the intended use (see `get_epilot_client`).
    """

    def __init__(
        self,
        *,
        token: str,
        urls: ServiceURLs | None = None,
        org_id: str | None = None,
        timeout_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        writes_per_minute: int = 450,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if not token:
            raise errors.EpilotConfigurationError("No epilot API token: set EPILOT_API_TOKEN.")
        self.urls = urls or ServiceURLs()
        self.retry = retry or RetryPolicy()
        self._token = _Token(token)
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._write_budget = WriteBudget(writes_per_minute, clock=clock, sleep=sleep)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "ausbau-backoffice/1.0"}
        if org_id:
            headers["x-epilot-org-id"] = org_id
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_seconds, connect=min(10.0, timeout_seconds)),
            transport=transport,
            follow_redirects=False,
        )

    @classmethod
    def for_wsgi_app(cls, app: Callable[..., Any], *, origin: str = "http://epilot-sandbox.invalid", **kwargs: Any) -> EpilotClient:
        """A client that talks to a WSGI app in-process (the embedded sandbox) instead of the network."""
        kwargs.setdefault("token", "sandbox")
        return cls(urls=ServiceURLs.single_origin(origin), transport=httpx.WSGITransport(app=app), **kwargs)

    def __repr__(self) -> str:
        return f"EpilotClient(entity={self.urls.entity!r}, token=<redacted>)"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EpilotClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ entity API

    def get_entity(self, slug: str, entity_id: str, *, hydrate: bool = False) -> Entity:
        """getEntity; raises EpilotNotFoundError for an unknown or deleted entity."""
        body = self._json(
            "getEntity", self._request("getEntity", "GET", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}",
                                       params={"hydrate": _bool(hydrate)}, idempotent=True)
        )
        if not isinstance(body, Mapping) or "entity" not in body:
            raise self._invalid("getEntity", "the body has no 'entity'")
        return self._entity("getEntity", body["entity"])

    def create_entity(self, slug: str, attributes: Mapping[str, Any], *, activity_id: str | None = None) -> Entity:
        """createEntity; not retried on 5xx or timeouts (it is not idempotent)."""
        params = {"activity_id": activity_id} if activity_id else None
        response = self._request("createEntity", "POST", self.urls.entity, f"/v1/entity/{_segment(slug)}",
                                 params=params, json_body=dict(attributes), idempotent=False)
        return self._entity("createEntity", self._json("createEntity", response))

    def patch_entity(
        self, slug: str, entity_id: str, attributes: Mapping[str, Any], *, updated_at: str | None = None
    ) -> Entity:
        """patchEntity. With `updated_at` epilot refuses a stale write (EpilotConflictError) and the call is retried.

        The spec documents `_updated_at` in the body as the conflict guard but also marks it readOnly;
        a server that enforces readOnly answers 400/422 naming it. Then the guard is checked here
        (a read just before the write) and the patch is sent without it, once.
        """
        body = dict(attributes)
        if updated_at is None:
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}",
                                     json_body=body, idempotent=False)
            return self._entity("patchEntity", self._json("patchEntity", response))
        try:
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}",
                                     json_body={**body, "_updated_at": updated_at}, idempotent=True)
        except errors.EpilotValidationError as exc:
            if "_updated_at" not in exc.message:
                raise
            current = self.get_entity(slug, entity_id)
            if current.updated_at and current.updated_at > parse_timestamp(updated_at, name="_updated_at"):
                raise errors.EpilotConflictError(f"patchEntity: {slug} {entity_id} changed in epilot since {updated_at}",
                                                 operation="patchEntity", status=409) from None
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}",
                                     json_body=body, idempotent=False)
        return self._entity("patchEntity", self._json("patchEntity", response))

    def upsert_entity(self, slug: str, unique_key: Sequence[str], attributes: Mapping[str, Any]) -> tuple[Entity, bool]:
        """upsertEntity on `unique_key` attribute paths; returns (entity, created)."""
        response = self._request("upsertEntity", "PATCH", self.urls.entity, f"/v1/entity/{_segment(slug)}:upsert",
                                 json_body={"unique_key": list(unique_key), "entity": dict(attributes)}, idempotent=True)
        return self._entity("upsertEntity", self._json("upsertEntity", response)), response.status_code == 201

    def delete_entity(self, slug: str, entity_id: str, *, purge: bool = False) -> None:
        """deleteEntity: a soft delete unless `purge`."""
        self._request("deleteEntity", "DELETE", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}",
                      params={"purge": _bool(purge)} if purge else None, idempotent=False)

    def search_entities(self, params: Mapping[str, Any]) -> EntitySearchPage:
        """searchEntities: one page for the given `EntitySearchParams`."""
        return self._search_page("searchEntities", "/v1/entity:search", params)

    def list_entities(self, params: Mapping[str, Any]) -> EntitySearchPage:
        """listEntities: one page for the given `EntityListParams` (needs `filter`)."""
        return self._search_page("listEntities", "/v1/entity:list", params)

    def iter_search_entities(
        self,
        q: str,
        *,
        sort: Sequence[str] = DEFAULT_SORT,
        include_deleted: str = "false",
        page_size: int = SEARCH_PAGE_SIZE,
        search_after: Sequence[Any] | None = None,
        stable_for: int = 30,
        fields: Sequence[str] | None = None,
    ) -> Iterator[EntitySearchPage]:
        """searchEntities page by page with `search_after` and `stable_query_id`."""
        params: dict[str, Any] = {"q": q}
        return self._iter_pages(self.search_entities, params, sort, include_deleted, page_size, search_after, stable_for, fields)

    def iter_list_entities(
        self,
        filter: Sequence[Mapping[str, Any]],
        *,
        sort: Sequence[str] = DEFAULT_SORT,
        include_deleted: str = "false",
        page_size: int = SEARCH_PAGE_SIZE,
        search_after: Sequence[Any] | None = None,
        stable_for: int = 30,
        fields: Sequence[str] | None = None,
    ) -> Iterator[EntitySearchPage]:
        """listEntities page by page with `search_after` and `stable_query_id`."""
        params: dict[str, Any] = {"filter": [dict(clause) for clause in filter]}
        return self._iter_pages(self.list_entities, params, sort, include_deleted, page_size, search_after, stable_for, fields)

    def add_relations(self, slug: str, entity_id: str, relations: Iterable[RelationItem]) -> None:
        """addRelations: link entities without rewriting the whole relation attribute."""
        body = []
        for relation in relations:
            item: dict[str, Any] = {"attribute": relation.attribute, "entity_id": relation.entity_id}
            if relation.tags:
                item["_tags"] = list(relation.tags)
            body.append(item)
        self._request("addRelations", "POST", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}/relations",
                      json_body=body, idempotent=True)

    def get_relations(self, slug: str, entity_id: str, *, include_reverse: bool = False) -> list[RelationItem]:
        """getRelations, all pages; hydrated items are reduced to their reference."""
        relations: list[RelationItem] = []
        page_size = 1000
        offset = 0
        while True:
            body = self._json("getRelations", self._request(
                "getRelations", "GET", self.urls.entity, f"/v1/entity/{_segment(slug)}/{_segment(entity_id)}/relations",
                params={"include_reverse": _bool(include_reverse), "from": offset, "size": page_size}, idempotent=True,
            ))
            if not isinstance(body, list):
                raise self._invalid("getRelations", "the body is not a list")
            for item in body:
                if not isinstance(item, Mapping) or not item.get("entity_id") or not item.get("attribute"):
                    raise self._invalid("getRelations", "a relation lacks entity_id or attribute")
                relations.append(RelationItem(
                    entity_id=str(item["entity_id"]), attribute=str(item["attribute"]), schema=item.get("_schema"),
                    tags=tuple(item.get("_tags") or ()), reverse=bool(item.get("reverse", False)),
                ))
            if len(body) < page_size:
                return relations
            offset += page_size

    def list_schemas(self) -> list[EntitySchemaSummary]:
        """listSchemas."""
        body = self._json("listSchemas", self._request("listSchemas", "GET", self.urls.entity, "/v1/entity/schemas", idempotent=True))
        results = body.get("results") if isinstance(body, Mapping) else None
        if not isinstance(results, list):
            raise self._invalid("listSchemas", "the body has no 'results' list")
        schemas = []
        for item in results:
            if not isinstance(item, Mapping) or not isinstance(item.get("slug"), str):
                raise self._invalid("listSchemas", "a schema has no slug")
            schemas.append(EntitySchemaSummary(slug=item["slug"], name=str(item.get("name") or item["slug"]), data=dict(item)))
        return schemas

    # ------------------------------------------------------------------ workflow definitions

    def get_definitions(self) -> list[WorkflowDefinition]:
        """getDefinitions (V1)."""
        body = self._json("getDefinitions", self._request(
            "getDefinitions", "GET", self.urls.workflows_definition, "/v1/workflows/definitions", idempotent=True))
        if not isinstance(body, list):
            raise self._invalid("getDefinitions", "the body is not a list")
        return [self._parse("getDefinitions", WorkflowDefinition.from_v1, item) for item in body]

    def get_definition(self, definition_id: str) -> WorkflowDefinition:
        """getDefinition (V1); raises EpilotNotFoundError."""
        body = self._json("getDefinition", self._request(
            "getDefinition", "GET", self.urls.workflows_definition, f"/v1/workflows/definitions/{_segment(definition_id)}", idempotent=True))
        return self._parse("getDefinition", WorkflowDefinition.from_v1, body)

    def list_flow_templates(self, *, trigger_type: str | None = None, trigger_schema: str | None = None) -> list[WorkflowDefinition]:
        """listFlowTemplates (V2)."""
        params = {key: value for key, value in (("trigger_type", trigger_type), ("trigger_schema", trigger_schema)) if value}
        body = self._json("listFlowTemplates", self._request(
            "listFlowTemplates", "GET", self.urls.workflows_definition, "/v2/flows/templates", params=params or None, idempotent=True))
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
        body = self._json("getExecutions", self._request(
            "getExecutions", "GET", self.urls.workflows_execution, "/v1/workflows/executions", params=params or None, idempotent=True))
        if not isinstance(body, list):
            raise self._invalid("getExecutions", "the body is not a list")
        return [self._parse("getExecutions", WorkflowExecution.from_v1, item) for item in body]

    def get_execution(self, execution_id: str) -> WorkflowExecution:
        """getExecution (V1); the spec answers an unknown id with an empty 200, reported as EpilotNotFoundError."""
        response = self._request("getExecution", "GET", self.urls.workflows_execution,
                                 f"/v1/workflows/executions/{_segment(execution_id)}", idempotent=True)
        body = self._json("getExecution", response, allow_empty=True)
        if not body:
            raise errors.EpilotNotFoundError(f"getExecution: no execution {execution_id}", operation="getExecution", status=200)
        return self._parse("getExecution", WorkflowExecution.from_v1, body)

    def update_execution(self, execution_id: str, changes: Mapping[str, Any]) -> None:
        """updateExecution (V1), answered with 204."""
        self._request("updateExecution", "PATCH", self.urls.workflows_execution, f"/v1/workflows/executions/{_segment(execution_id)}",
                      json_body=dict(changes), idempotent=True)

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
                {"entity_id": ctx.entity_id, "entity_schema": ctx.schema, "is_primary": ctx.is_primary or (not has_primary and i == 0)}
                for i, ctx in enumerate(contexts)
            ],
        }
        response = self._request("startFlowExecution", "POST", self.urls.workflows_execution, "/v2/flows/executions",
                                 json_body=body, idempotent=False)
        return self._parse("startFlowExecution", WorkflowExecution.from_v2, self._json("startFlowExecution", response))

    def get_flow_execution(self, execution_id: str) -> WorkflowExecution:
        """getFlowExecution (V2); raises EpilotNotFoundError."""
        body = self._json("getFlowExecution", self._request(
            "getFlowExecution", "GET", self.urls.workflows_execution, f"/v2/flows/executions/{_segment(execution_id)}", idempotent=True))
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

    # ------------------------------------------------------------------ automation

    def search_flows(self, *, schema: str | None = None, size: int = 25, from_: int = 0) -> tuple[int, list[AutomationFlow]]:
        """searchFlows: one page of automation flows and the total."""
        params: dict[str, Any] = {"size": size, "from": from_}
        if schema:
            params["schema"] = schema
        body = self._json("searchFlows", self._request(
            "searchFlows", "GET", self.urls.automation, "/v1/automation/flows", params=params, idempotent=True))
        if not isinstance(body, Mapping) or not isinstance(body.get("results"), list):
            raise self._invalid("searchFlows", "the body has no 'results' list")
        flows = [self._parse("searchFlows", AutomationFlow.from_api, item) for item in body["results"]]
        total = body.get("total")
        return (int(total) if isinstance(total, (int, float)) else len(flows)), flows

    def iter_flows(self, *, schema: str | None = None, page_size: int = 100) -> Iterator[AutomationFlow]:
        """All automation flows, paging searchFlows with from/size."""
        offset = 0
        while True:
            total, flows = self.search_flows(schema=schema, size=page_size, from_=offset)
            yield from flows
            offset += len(flows)
            if not flows or offset >= total:
                return

    def get_flow(self, flow_id: str) -> AutomationFlow:
        """getFlow; raises EpilotNotFoundError."""
        body = self._json("getFlow", self._request("getFlow", "GET", self.urls.automation, f"/v1/automation/flows/{_segment(flow_id)}", idempotent=True))
        return self._parse("getFlow", AutomationFlow.from_api, body)

    def create_flow(self, flow: Mapping[str, Any]) -> AutomationFlow:
        """createFlow; the body needs flow_name, triggers and actions."""
        response = self._request("createFlow", "POST", self.urls.automation, "/v1/automation/flows", json_body=dict(flow), idempotent=False)
        return self._parse("createFlow", AutomationFlow.from_api, self._json("createFlow", response))

    def put_flow(self, flow_id: str, flow: Mapping[str, Any]) -> AutomationFlow:
        """putFlow: replace a flow as a whole."""
        response = self._request("putFlow", "PUT", self.urls.automation, f"/v1/automation/flows/{_segment(flow_id)}",
                                 json_body=dict(flow), idempotent=True)
        return self._parse("putFlow", AutomationFlow.from_api, self._json("putFlow", response))

    # ------------------------------------------------------------------ plumbing

    def _iter_pages(
        self,
        fetch: Callable[[Mapping[str, Any]], EntitySearchPage],
        params: dict[str, Any],
        sort: Sequence[str],
        include_deleted: str,
        page_size: int,
        search_after: Sequence[Any] | None,
        stable_for: int,
        fields: Sequence[str] | None,
    ) -> Iterator[EntitySearchPage]:
        size = max(1, min(page_size, SEARCH_PAGE_SIZE))
        params.update({"sort": list(sort), "size": size, "include_deleted": include_deleted})
        if stable_for:
            params["stable_for"] = stable_for
        if fields:
            params["fields"] = list(fields)
        if search_after:
            params["search_after"] = list(search_after)
        while True:
            page = fetch(params)
            yield page
            if len(page.results) < size or not page.sort_end:
                return
            params["search_after"] = list(page.sort_end)
            if page.stable_query_id:
                params["stable_query_id"] = page.stable_query_id

    def _search_page(self, operation: str, path: str, params: Mapping[str, Any]) -> EntitySearchPage:
        body = self._json(operation, self._request(operation, "POST", self.urls.entity, path, json_body=dict(params), idempotent=True))
        if not isinstance(body, Mapping):
            raise self._invalid(operation, "the body is not an object")
        raw_results = body.get("results", [])
        if not isinstance(raw_results, list):
            raise self._invalid(operation, "'results' is not a list")
        results: list[Entity | MalformedEntity] = []
        for item in raw_results:
            try:
                results.append(Entity.from_api(item))
            except MalformedPayload as exc:
                results.append(MalformedEntity(reason=str(exc), data=item))
        sort_end = body.get("sort_end")
        hits = body.get("hits")
        return EntitySearchPage(
            hits=int(hits) if isinstance(hits, (int, float)) else len(results),
            results=tuple(results),
            stable_query_id=body.get("stable_query_id") if isinstance(body.get("stable_query_id"), str) else None,
            sort_end=tuple(sort_end) if isinstance(sort_end, list) and sort_end else None,
        )

    def _request(
        self,
        operation: str,
        method: str,
        base_url: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool,
    ) -> httpx.Response:
        """Send with the retry policy; returns a 2xx response or raises a typed EpilotError.

        429 is retried for every method (the request was not processed); 5xx, timeouts and broken
        connections only where repeating the request cannot do a thing twice; a refused
        connection always, since nothing was sent.
        """
        is_write = method != "GET" and operation not in _READ_POSTS
        url = base_url.rstrip("/") + path
        content = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode() if json_body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            if is_write:
                self._write_budget.acquire()
            sent_at = self._clock()
            error: errors.EpilotError
            retryable = False
            delay: float | None = None
            try:
                response = self._http.request(method, url, params=_clean(params), content=content, headers=headers)
            except httpx.TimeoutException as exc:
                error = errors.EpilotTimeoutError(f"{operation}: epilot did not answer in time ({type(exc).__name__})", operation=operation)
                retryable = idempotent or isinstance(exc, httpx.ConnectTimeout)
            except httpx.TransportError as exc:
                error = errors.EpilotConnectionError(f"{operation}: connection to epilot failed ({type(exc).__name__})", operation=operation)
                retryable = idempotent or isinstance(exc, httpx.ConnectError)
            else:
                elapsed_ms = (self._clock() - sent_at) * 1000
                log = logger.info if is_write else logger.debug
                log("epilot %s %s %s -> %s in %.0f ms (attempt %d)", operation, method, path, response.status_code, elapsed_ms, attempt)
                if response.is_success:
                    return response
                error = _error_from_response(operation, response)
                if response.status_code == 429:
                    retryable = True
                    delay = _retry_after_seconds(response)
                else:
                    retryable = idempotent and response.status_code >= 500
            if not retryable or attempt >= self.retry.max_attempts:
                raise error
            if delay is None:
                delay = self.retry.backoff(attempt, self._rng)
            delay = min(delay, self.retry.max_retry_after_seconds)
            if self._clock() - started + delay > self.retry.max_elapsed_seconds:
                raise error
            logger.warning("epilot %s %s: %s; retry %d in %.1f s", operation, path, error.message, attempt, delay)
            self._sleep(delay)

    def _json(self, operation: str, response: httpx.Response, *, allow_empty: bool = False) -> Any:
        if not response.content:
            if allow_empty:
                return None
            raise self._invalid(operation, f"empty body with status {response.status_code}")
        try:
            return json.loads(response.content)
        except ValueError:
            raise self._invalid(operation, "the body is not JSON") from None

    def _entity(self, operation: str, data: Any) -> Entity:
        return self._parse(operation, Entity.from_api, data)

    def _parse(self, operation: str, parse: Callable[[Any], Any], data: Any) -> Any:
        try:
            return parse(data)
        except MalformedPayload as exc:
            raise self._invalid(operation, str(exc)) from None

    @staticmethod
    def _invalid(operation: str, reason: str) -> errors.EpilotInvalidResponseError:
        logger.error("epilot %s: invalid response: %s", operation, reason)
        return errors.EpilotInvalidResponseError(f"{operation}: invalid response from epilot: {reason}", operation=operation)


# POSTs that only read; they count against the search pool, not the write budget.
_READ_POSTS = frozenset({"searchEntities", "listEntities", "searchFlowExecutions"})


def _segment(value: str) -> str:
    """One URL path segment: ids come from data and must not add segments, queries or fragments."""
    return quote(str(value), safe="")


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _clean(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not params:
        return None
    return {key: value for key, value in params.items() if value is not None}


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


_STATUS_ERRORS: dict[int, type[errors.EpilotClientError]] = {
    400: errors.EpilotValidationError,
    401: errors.EpilotAuthenticationError,
    403: errors.EpilotPermissionError,
    404: errors.EpilotNotFoundError,
    405: errors.EpilotConflictError,
    409: errors.EpilotConflictError,
    422: errors.EpilotValidationError,
}


def _error_from_response(operation: str, response: httpx.Response) -> errors.EpilotError:
    status = response.status_code
    detail = _error_detail(response)
    if status == 401:
        return errors.EpilotAuthenticationError(
            f"{operation}: epilot rejected the API token (401{': ' + detail if detail else ''}); check EPILOT_API_TOKEN",
            operation=operation, status=status)
    if status == 403:
        return errors.EpilotPermissionError(
            f"{operation}: the API token lacks a permission (403{': ' + detail if detail else ''}); "
            "check the token's roles and that it is not read-only", operation=operation, status=status)
    message = f"{operation}: epilot answered {status}" + (f": {detail}" if detail else "")
    if status == 429:
        return errors.EpilotRateLimitedError(message, operation=operation, retry_after=_retry_after_seconds(response))
    if status >= 500:
        return errors.EpilotServerError(message, operation=operation, status=status)
    return _STATUS_ERRORS.get(status, errors.EpilotClientError)(message, operation=operation, status=status)


def _error_detail(response: httpx.Response) -> str:
    """The message of an `{status, error}`, `{message}` or `{errors: [...]}` body, shortened."""
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        return ""
    if not isinstance(body, Mapping):
        return ""
    for key in ("error", "message"):
        if isinstance(body.get(key), str):
            return body[key][:300]
    if isinstance(body.get("errors"), list):
        return json.dumps(body["errors"], ensure_ascii=False)[:300]
    return ""
