"""The epilot sandbox as a WSGI app: the operations the back-office uses, shaped as the official specs say.

Every epilot service answers from this one origin (their paths do not overlap). Control
endpoints for tests and demos live under `/__sandbox__/`.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import random
import re
import secrets
import string
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import parse_qs

from integrations.epilot_sandbox.query import (
    COLUMNS,
    BadQuery,
    filter_mentions_schema,
    filter_to_sql,
    iso_ms,
    lucene_to_sql,
    parse_sort,
    search_after_sql,
    sort_values,
)
from integrations.epilot_sandbox.store import SYSTEM_READ_ONLY, SandboxStore, later_than, now_ms

MAX_PAGE = 1000
SEARCH_KEYS = frozenset({"q", "include_scores", "sort", "from", "size", "hydrate", "anonymize", "fields", "aggs",
                         "include_deleted", "highlight", "stable_for", "stable_query_id", "search_after"})
LIST_KEYS = (SEARCH_KEYS - {"q"}) | {"query", "filter", "allow_targeting_all_schemas"}
STEP_DONE = {"COMPLETED", "SKIPPED"}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, *, style: str = "entity", headers: Iterable[tuple[str, str]] = (),
                 details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.style = style
        self.headers = list(headers)
        self.details = details or []


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


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        return (self.arg(name) or "false").lower() == "true"

    def json(self) -> Any:
        if not self.raw_body:
            raise HTTPError(400, "request body is required")
        try:
            return json.loads(self.raw_body)
        except ValueError:
            raise HTTPError(400, "request body is not valid JSON") from None


Response = tuple[int, Any]
Handler = Callable[..., Response]


def _short_id(length: int = 10) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class SandboxApp:
    """WSGI application. `token=None` accepts any bearer token; a string requires exactly that one."""

    def __init__(self, store: SandboxStore, *, token: str | None = None, faults: FaultConfig | None = None) -> None:
        self.store = store
        self.token = token
        self.faults = faults or FaultConfig()
        self.stats: Counter[str] = Counter()
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
        payload = b"" if body is None else _dumps(body).encode()
        reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                  405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
                  500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Status")
        response_headers = [("Content-Type", "application/json")] if payload else []
        response_headers += headers + [("Content-Length", str(len(payload)))]
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
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        self.stats["requests"] += 1
        self.stats[f"op:{operation}"] += 1
        try:
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
            return exc.status, _error_body(exc), exc.headers
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
        r("POST", "/v2/flows/executions:search", self.searchFlowExecutions, "workflow")
        r("POST", "/v2/flows/executions", self.startFlowExecution, "workflow")
        r("GET", "/v2/flows/executions/{execution_id}", self.getFlowExecution, "workflow")
        r("PATCH", "/v2/flows/executions/{execution_id}", self.patchFlowExecution, "workflow")
        r("PATCH", "/v2/flows/executions/{execution_id}/tasks/{task_id}", self.patchTask, "workflow")
        r("GET", "/v1/automation/flows", self.searchFlows)
        r("POST", "/v1/automation/flows", self.createFlow)
        r("GET", "/v1/automation/flows/{flow_id}", self.getFlow)
        r("PUT", "/v1/automation/flows/{flow_id}", self.putFlow)
        r("DELETE", "/v1/automation/flows/{flow_id}", self.deleteFlow)

    def _control(self, request: Request) -> Response:
        action = request.path.removeprefix("/__sandbox__/")
        if action == "health" and request.method == "GET":
            return 200, {"ok": True, "entities": self.store.count_entities()}
        if action == "stats" and request.method == "GET":
            return 200, dict(self.stats)
        if action == "faults" and request.method == "GET":
            return 200, asdict(self.faults)
        if action == "faults" and request.method in ("POST", "PUT"):
            self.set_faults(FaultConfig.from_mapping(request.json()))
            return 200, asdict(self.faults)
        if action == "reset" and request.method == "POST":
            from integrations.epilot_sandbox.seed import seed_demo

            self.store.reset()
            seed_demo(self.store)
            self.stats.clear()
            return 200, {"ok": True}
        return 404, {"message": "unknown sandbox control endpoint"}

    # ------------------------------------------------------------------ entity API

    def searchEntities(self, request: Request) -> Response:
        params = _object(request.json())
        unknown = set(params) - SEARCH_KEYS
        if unknown:
            raise HTTPError(400, f"unknown search parameters: {', '.join(sorted(unknown))}")
        q = params.get("q")
        if not isinstance(q, str):
            raise HTTPError(400, "q is required")
        where, where_params = lucene_to_sql(q)
        return 200, self._search(where, where_params, params)

    def listEntities(self, request: Request) -> Response:
        params = _object(request.json())
        unknown = set(params) - LIST_KEYS
        if unknown:
            raise HTTPError(400, f"unknown list parameters: {', '.join(sorted(unknown))}")
        if "filter" not in params:
            raise HTTPError(400, "filter is required")
        if not params.get("allow_targeting_all_schemas") and not filter_mentions_schema(params["filter"]):
            raise HTTPError(400, "filter must restrict _schema unless allow_targeting_all_schemas is true")
        where_params: list[Any] = []
        where = filter_to_sql(params["filter"], where_params)
        query = params.get("query")
        if isinstance(query, Mapping) and isinstance(query.get("query_string"), Mapping):
            extra, extra_params = lucene_to_sql(str(query["query_string"].get("query", "*")))
            where = f"({where}) AND ({extra})"
            where_params += extra_params
        return 200, self._search(where, where_params, params)

    def _search(self, where: str, where_params: list[Any], params: Mapping[str, Any]) -> dict[str, Any]:
        include_deleted = str(params.get("include_deleted", "false")).lower()
        if include_deleted == "false":
            where = f"({where}) AND deleted_at IS NULL"
        elif include_deleted == "only":
            where = f"({where}) AND deleted_at IS NOT NULL"
        elif include_deleted != "true":
            raise HTTPError(400, "include_deleted must be 'true', 'false' or 'only'")
        size = params.get("size", 10)
        offset = params.get("from", 0)
        if not isinstance(size, int) or size < 0 or not isinstance(offset, int) or offset < 0:
            raise HTTPError(400, "size and from must be non-negative integers")
        size = min(size, MAX_PAGE)
        keys = parse_sort(params.get("sort"))
        after, after_params = None, []
        search_after = params.get("search_after")
        if search_after is not None:
            if not isinstance(search_after, list):
                raise HTTPError(400, "search_after must be an array")
            after = search_after_sql(keys, search_after, after_params)
            offset = 0
        stable_for = params.get("stable_for")
        if stable_for is not None and (not isinstance(stable_for, int) or not 0 <= stable_for <= 60):
            raise HTTPError(400, "stable_for must be an integer from 0 to 60")
        order_by = ", ".join(f"{COLUMNS[name]} {direction}" for name, direction in keys)
        hits, rows = self.store.search(where, where_params, order_by=order_by, after=after, after_params=after_params,
                                       limit=size, offset=offset)
        field_filter = params.get("fields")
        if field_filter:
            results: Any = [_project(json.loads(row["body"]), field_filter) for row in rows]
        else:
            results = RawJSONList(row["body"] for row in rows)
        body: dict[str, Any] = {"hits": hits, "results": results}
        if rows:
            body["sort_end"] = sort_values(keys, rows[-1])
        if stable_for or params.get("stable_query_id"):
            body["stable_query_id"] = params.get("stable_query_id") or uuid.uuid4().hex
        return body

    def listSchemas(self, request: Request) -> Response:
        return 200, {"results": self.store.list_schemas()}

    def getEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        return 200, {"entity": self._live_entity(slug, entity_id), "relations": []}

    def getEntityV2(self, request: Request, slug: str, entity_id: str) -> Response:
        return 200, self._live_entity(slug, entity_id)

    def createEntity(self, request: Request, slug: str) -> Response:
        _slug(slug)
        data = _object(request.json())
        if data.get("_schema") not in (None, slug):
            raise HTTPError(400, f"_schema {data.get('_schema')!r} does not match the path {slug!r}")
        body = self._new_entity(slug, data)
        if request.flag("validate"):
            self._validate(body)
        with self.store.write() as conn:
            self.store.put_entity(conn, body)
        return 201, body

    def patchEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        changes = _object(request.json())
        dry_run = request.flag("dry_run")
        with self.store.write() as conn:
            current = self._live_entity(slug, entity_id)
            expected = changes.get("_updated_at")
            if expected is not None and _stamp(expected) < current["_updated_at"]:
                raise HTTPError(409, "Conflict: newer version exists")
            body = self._merge(current, changes)
            if request.flag("validate"):
                self._validate(body)
            if not dry_run:
                self.store.put_entity(conn, body)
        return 200, body

    def updateEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        data = _object(request.json())
        with self.store.write() as conn:
            current = self._live_entity(slug, entity_id)
            kept = {key: current[key] for key in SYSTEM_READ_ONLY if key in current}
            body = self._merge(kept, {key: value for key, value in data.items() if key not in SYSTEM_READ_ONLY})
            body["_title"] = _title(slug, body)
            self.store.put_entity(conn, body)
        return 200, body

    def upsertEntity(self, request: Request, slug: str) -> Response:
        _slug(slug)
        data = _object(request.json())
        if set(data) - {"unique_key", "entity"} or not isinstance(data.get("unique_key"), list) or not isinstance(data.get("entity"), Mapping):
            raise HTTPError(400, "body must be {unique_key: [...], entity: {...}}")
        entity = dict(data["entity"])
        conditions, params = ["schema = ?"], [slug]
        for path in data["unique_key"]:
            value = _dig(entity, str(path))
            if value is None:
                raise HTTPError(400, f"entity has no value at unique_key {path!r}")
            if path == "_id":
                conditions.append("id = ?")
                params.append(str(value))
            else:
                conditions.append("json_extract(body, ?) = ?")
                params += ["$." + ".".join(f"[{p}]" if p.isdigit() else f'"{p}"' for p in str(path).split(".")).replace(".[", "["), value]
        with self.store.write() as conn:
            rows = conn.execute(f"SELECT body FROM entities WHERE {' AND '.join(conditions)} ORDER BY created_at", params).fetchall()  # noqa: S608
            matches = [json.loads(row["body"]) for row in rows]
            if len(matches) > 1 and request.flag("strict"):
                raise HTTPError(409, "Conflict: multiple entities were matched with unique_key")
            if matches and matches[0].get("_deleted_at"):
                raise HTTPError(405, "Deleted entities cannot be updated. You'll need to recover the entity first before updating.")
            if matches:
                body = self._merge(matches[0], entity)
                status = 200
            else:
                body = self._new_entity(slug, entity)
                status = 201
            if not request.flag("dry_run"):
                self.store.put_entity(conn, body)
        return status, body

    def deleteEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        with self.store.write() as conn:
            current = self.store.get_entity(entity_id)
            if current is None or current["_schema"] != slug:
                raise HTTPError(404, "Not Found")
            if request.flag("purge"):
                self.store.purge_entity(conn, entity_id)
            elif not current.get("_deleted_at"):
                current["_updated_at"] = later_than(current["_updated_at"])
                current["_deleted_at"] = current["_updated_at"]
                self.store.put_entity(conn, current)
        return 200, None

    def restoreEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        with self.store.write() as conn:
            current = self.store.get_entity(entity_id)
            if current is None or current["_schema"] != slug:
                raise HTTPError(404, "Not Found")
            if not current.get("_deleted_at"):
                raise HTTPError(400, "Entity is not deleted")
            current.pop("_deleted_at")
            current["_updated_at"] = later_than(current["_updated_at"])
            self.store.put_entity(conn, current)
        return 200, current

    def getRelations(self, request: Request, slug: str, entity_id: str) -> Response:
        self._live_entity(slug, entity_id)
        size = int(request.arg("size", "100") or 100)
        offset = int(request.arg("from", "0") or 0)
        if not 1 <= size <= 1000:
            raise HTTPError(400, "size must be between 1 and 1000")
        items = self.store.relations_of(entity_id, include_reverse=request.flag("include_reverse"))
        return 200, items[offset: offset + size]

    def addRelations(self, request: Request, slug: str, entity_id: str) -> Response:
        items = request.json()
        if not isinstance(items, list) or not all(isinstance(i, Mapping) and i.get("entity_id") and i.get("attribute") for i in items):
            raise HTTPError(400, "body must be an array of {attribute, entity_id}")
        with self.store.write() as conn:
            body = self._live_entity(slug, entity_id)
            for item in items:
                attribute = str(item["attribute"])
                value = body.get(attribute)
                if not isinstance(value, Mapping) or not isinstance(value.get("$relation"), list):
                    value = {"$relation": []}
                refs = [ref for ref in value["$relation"] if ref.get("entity_id") != item["entity_id"]]
                ref: dict[str, Any] = {"entity_id": item["entity_id"]}
                if item.get("_tags"):
                    ref["_tags"] = list(item["_tags"])
                body[attribute] = {"$relation": [*refs, ref]}
            body["_updated_at"] = later_than(body["_updated_at"])
            self.store.put_entity(conn, body)
        first = items[0] if items else {}
        return 200, {"entity_id": first.get("entity_id", entity_id), "attribute": first.get("attribute", ""), "_tags": first.get("_tags", [])}

    def _live_entity(self, slug: str, entity_id: str) -> dict[str, Any]:
        body = self.store.get_entity(entity_id)
        if body is None or body["_schema"] != slug or body.get("_deleted_at"):
            raise HTTPError(404, "Not Found")
        return body

    def _new_entity(self, slug: str, data: Mapping[str, Any]) -> dict[str, Any]:
        stamp = now_ms()
        body = {key: value for key, value in data.items() if key not in SYSTEM_READ_ONLY}
        body.update({"_id": str(uuid.uuid4()), "_schema": slug, "_org": self.store.org_id, "_created_at": stamp, "_updated_at": stamp,
                     "_owners": [{"org_id": self.store.org_id}], "_acl": {"view": [f"org:{self.store.org_id}"],
                     "edit": [f"org:{self.store.org_id}"], "delete": [f"org:{self.store.org_id}"]}})
        body["_title"] = _title(slug, body)
        body.setdefault("_tags", [])
        return body

    @staticmethod
    def _merge(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        body = dict(current)
        body.update({key: value for key, value in changes.items() if key not in SYSTEM_READ_ONLY})
        body["_updated_at"] = later_than(current.get("_updated_at"))
        if "_title" not in changes:
            body["_title"] = _title(body["_schema"], body)
        return body

    @staticmethod
    def _validate(body: Mapping[str, Any]) -> None:
        problems = []
        if body["_schema"] == "order" and "amount_total" in body and not isinstance(body["amount_total"], (int, float)):
            problems.append({"attribute": "amount_total", "message": "must be a number"})
        if body.get("_tags") is not None and not isinstance(body.get("_tags"), list):
            problems.append({"attribute": "_tags", "message": "must be an array"})
        if problems:
            raise HTTPError(422, "validation failed", style="validation", details=problems)

    # ------------------------------------------------------------------ workflow definitions

    def getDefinitions(self, request: Request) -> Response:
        return 200, self.store.list_documents("definition")

    def getDefinition(self, request: Request, definition_id: str) -> Response:
        definition = self.store.get_document("definition", definition_id)
        if definition is None:
            raise HTTPError(404, f"Definition with id '{definition_id}' not found", style="workflow")
        return 200, definition

    def listFlowTemplates(self, request: Request) -> Response:
        templates = self.store.list_documents("flow_template")
        schema = request.arg("trigger_schema")
        if schema:
            templates = [t for t in templates if (t.get("trigger") or {}).get("entity_schema") in (None, schema)]
        return 200, {"results": templates}

    def getFlowTemplate(self, request: Request, flow_id: str) -> Response:
        template = self.store.get_document("flow_template", flow_id)
        if template is None:
            raise HTTPError(404, f"Flow template '{flow_id}' not found", style="workflow")
        return 200, template

    # ------------------------------------------------------------------ workflow executions (V1)

    def getExecutions(self, request: Request) -> Response:
        return 200, self.store.list_documents("execution", entity_id=request.arg("context"), schema=request.arg("schema"))

    def createExecution(self, request: Request) -> Response:
        data = _object(request.json(), style="workflow")
        workflow_id = data.get("workflowId")
        if not isinstance(workflow_id, str) or not workflow_id:
            raise HTTPError(400, "workflowId is required", style="workflow")
        definition = self.store.get_document("definition", workflow_id)
        if definition is None:
            raise HTTPError(400, f"Invalid workflowId: definition {workflow_id} not found", style="workflow")
        contexts = data.get("contexts") or []
        if not isinstance(contexts, list) or not all(isinstance(c, Mapping) and c.get("id") and c.get("schema") and "title" in c for c in contexts):
            raise HTTPError(400, "each context needs id, schema and title", style="workflow")
        trigger = data.get("trigger", "MANUAL")
        if trigger not in ("MANUAL", "AUTOMATIC"):
            raise HTTPError(400, "trigger must be MANUAL or AUTOMATIC", style="workflow")
        for ctx in contexts:
            entity = self.store.get_entity(str(ctx["id"]))
            if entity is None or entity.get("_deleted_at") or entity["_schema"] != ctx["schema"]:
                raise HTTPError(400, f"Invalid context: {ctx['schema']} {ctx['id']} not found", style="workflow")
        execution = _execution_from_definition(definition, contexts, trigger, self.store.org_id)
        with self.store.write() as conn:
            self.store.put_document(conn, "execution", execution["id"], execution,
                                    links=[(str(c["id"]), str(c["schema"])) for c in contexts])
            self._reflect_execution(conn, execution, contexts)
        return 201, execution

    def getExecution(self, request: Request, execution_id: str) -> Response:
        execution = self.store.get_document("execution", execution_id)
        return 200, execution  # the spec answers an unknown id with an empty 200

    def updateExecution(self, request: Request, execution_id: str) -> Response:
        changes = _object(request.json(), style="workflow")
        allowed = {"status", "assignedTo", "selectedClosingReasons", "closingReasonDescription", "dueDate",
                   "dynamicDueDate", "closedBy", "contexts", "completedTime"}
        if set(changes) - allowed:
            raise HTTPError(400, f"unknown fields: {', '.join(sorted(set(changes) - allowed))}", style="workflow")
        if "status" in changes and changes["status"] not in ("STARTED", "DONE", "CLOSED"):
            raise HTTPError(400, "status must be STARTED, DONE or CLOSED", style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            execution.update(changes)
            execution["lastUpdateTime"] = now_ms()
            if changes.get("status") in ("DONE", "CLOSED"):
                execution.setdefault("completedTime", execution["lastUpdateTime"])
            self.store.put_document(conn, "execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 204, None

    def deleteExecution(self, request: Request, execution_id: str) -> Response:
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            self.store.delete_document(conn, "execution", execution_id)
            execution["status"] = "CLOSED"
            self._reflect_execution(conn, execution, execution.get("contexts") or [], removed=True)
        return 204, None

    def updateStep(self, request: Request, execution_id: str, step_id: str) -> Response:
        changes = _object(request.json(), style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("execution", execution_id)
            if execution is None:
                raise HTTPError(404, f"Execution {execution_id} not found", style="workflow")
            step = next((s for s in _v1_steps(execution) if s["id"] == step_id), None)
            if step is None:
                raise HTTPError(404, f"Step {step_id} not found", style="workflow")
            stamp = now_ms()
            step.update({key: value for key, value in changes.items() if key in ("status", "assignedTo", "dueDate", "name")})
            step["lastUpdated"] = stamp
            if changes.get("status") in STEP_DONE:
                step["completedTime"] = stamp
            _advance_v1(execution, stamp)
            self.store.put_document(conn, "execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, step

    def _reflect_execution(self, conn: Any, execution: Mapping[str, Any], contexts: Iterable[Mapping[str, Any]],
                           *, removed: bool = False) -> None:
        """Mirror the execution into each context entity's `workflows` attribute, and apply updateEntityAttributes."""
        v2 = "flow_template_id" in execution
        definition_id = execution.get("flow_template_id") if v2 else execution.get("definitionId")
        current = _current_v2(execution) if v2 else _current_v1(execution)
        summary = {
            "id": execution["id"], "definition_id": definition_id, "name": execution.get("name"), "status": execution.get("status"),
            "task_id": current[1]["id"] if current[1] else None, "task_name": current[1]["name"] if current[1] else None,
            "phase_id": current[0]["id"] if current[0] else None, "phase_name": current[0]["name"] if current[0] else None,
        }
        for ctx in contexts:
            entity_id = str(ctx.get("id") or ctx.get("entity_id"))
            entity = self.store.get_entity(entity_id)
            if entity is None:
                continue
            workflows = entity.get("workflows") if isinstance(entity.get("workflows"), dict) else {}
            runs = [run for run in workflows.get(definition_id, []) if isinstance(run, Mapping) and run.get("id") != execution["id"]]
            if not removed:
                runs.append(summary)
            workflows = {key: value for key, value in workflows.items() if key != "primary"}
            if runs:
                workflows[definition_id] = runs
            else:
                workflows.pop(definition_id, None)
            primary = next((run for runs_ in workflows.values() for run in runs_ if run.get("status") == "STARTED"), None)
            if primary:
                workflows["primary"] = primary
            entity["workflows"] = workflows
            for mapping in execution.get("updateEntityAttributes") or []:
                target = mapping.get("target") or {}
                if target.get("entitySchema") != entity["_schema"] or not target.get("entityAttribute"):
                    continue
                value = {"workflow_status": execution.get("status"),
                         "current_section": current[0]["name"] if current[0] else None,
                         "current_step": current[1]["name"] if current[1] else None}.get(mapping.get("source"))
                entity[target["entityAttribute"]] = value
            entity["_updated_at"] = later_than(entity["_updated_at"])
            self.store.put_entity(conn, entity)

    # ------------------------------------------------------------------ flow executions (V2)

    def startFlowExecution(self, request: Request) -> Response:
        data = _object(request.json(), style="workflow")
        template_id = data.get("flow_template_id")
        if not isinstance(template_id, str) or not template_id:
            raise HTTPError(400, "flow_template_id is required", style="workflow")
        contexts = data.get("contexts")
        if not isinstance(contexts, list) or not contexts:
            raise HTTPError(400, "contexts must hold at least one entity", style="workflow")
        template = self.store.get_document("flow_template", template_id)
        if template is None:
            raise HTTPError(400, f"Invalid flow_template_id: template {template_id} not found", style="workflow")
        for ctx in contexts:
            if not isinstance(ctx, Mapping) or not ctx.get("entity_id") or not ctx.get("entity_schema"):
                raise HTTPError(400, "each context needs entity_id and entity_schema", style="workflow")
            entity = self.store.get_entity(str(ctx["entity_id"]))
            if entity is None or entity.get("_deleted_at"):
                raise HTTPError(400, f"Invalid entity context: {ctx['entity_id']} not found", style="workflow")
        trigger = data.get("trigger") if isinstance(data.get("trigger"), Mapping) else {"type": "MANUAL"}
        execution = _flow_execution_from_template(template, contexts, trigger, self.store.org_id)
        with self.store.write() as conn:
            self.store.put_document(conn, "flow_execution", execution["id"], execution,
                                    links=[(str(c["entity_id"]), str(c["entity_schema"])) for c in contexts])
            self._reflect_execution(conn, execution, contexts)
        return 201, execution

    def getFlowExecution(self, request: Request, execution_id: str) -> Response:
        execution = self.store.get_document("flow_execution", execution_id)
        if execution is None:
            raise HTTPError(404, "Not Found", style="workflow")
        return 200, execution

    def patchFlowExecution(self, request: Request, execution_id: str) -> Response:
        changes = _object(request.json(), style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("flow_execution", execution_id)
            if execution is None:
                raise HTTPError(404, "Not Found", style="workflow")
            execution.update({k: v for k, v in changes.items() if k in ("status", "assigned_to", "closing_reason", "due_date", "contexts")})
            execution["updated_at"] = now_ms()
            if changes.get("status") == "CLOSED":
                execution.setdefault("analytics", {})["closed_at"] = execution["updated_at"]
            self.store.put_document(conn, "flow_execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, execution

    def patchTask(self, request: Request, execution_id: str, task_id: str) -> Response:
        changes = _object(request.json(), style="workflow")
        with self.store.write() as conn:
            execution = self.store.get_document("flow_execution", execution_id)
            if execution is None:
                raise HTTPError(404, "Not Found", style="workflow")
            task = next((t for t in execution.get("tasks", []) if t["id"] == task_id), None)
            if task is None:
                raise HTTPError(404, "Not Found", style="workflow")
            stamp = now_ms()
            if "status" in changes:
                task["status"] = changes["status"]
                if changes["status"] in STEP_DONE:
                    task.setdefault("analytics", {})["completed_at"] = stamp
            remaining = [t for t in execution["tasks"] if t.get("status") not in STEP_DONE]
            execution["crt_tasks"] = [{"id": remaining[0]["id"], "crt_since": stamp}] if remaining else []
            if not remaining:
                execution["status"] = "DONE"
                execution.setdefault("analytics", {})["completed_at"] = stamp
            execution["updated_at"] = stamp
            self.store.put_document(conn, "flow_execution", execution_id, execution)
            self._reflect_execution(conn, execution, execution.get("contexts") or [])
        return 200, task

    def searchFlowExecutions(self, request: Request) -> Response:
        data = _object(request.json(), style="workflow")
        if not data.get("entity_id") or not data.get("entity_schema"):
            raise HTTPError(400, "entity_id and entity_schema are required", style="workflow")
        return 200, {"results": self.store.list_documents("flow_execution", entity_id=str(data["entity_id"]),
                                                          schema=str(data["entity_schema"]))}

    # ------------------------------------------------------------------ automation

    def searchFlows(self, request: Request) -> Response:
        flows = self.store.list_documents("automation_flow")
        schema = request.arg("schema")
        if schema:
            flows = [flow for flow in flows if flow.get("entity_schema") == schema]
        target = request.arg("target_workflow")
        if target:
            flows = [f for f in flows if any((a.get("config") or {}).get("target_workflow") == target for a in f.get("actions", []))]
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


class RawJSONList(list):
    """Entity bodies already serialised in the store; spliced into the answer without parsing them."""


def _dumps(value: Any) -> str:
    if isinstance(value, RawJSONList):
        return "[" + ",".join(value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_body(exc: HTTPError) -> dict[str, Any]:
    if exc.style in ("workflow", "gateway"):
        return {"message": exc.message}
    if exc.style == "validation":
        return {"status": "error", "errors": exc.details}
    return {"status": exc.status, "error": exc.message}


def _object(value: Any, *, style: str = "entity") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HTTPError(400, "request body must be a JSON object", style=style)
    return value


def _slug(slug: str) -> None:
    if not re.fullmatch(r"[a-zA-Z0-9_-]+", slug):
        raise HTTPError(400, f"invalid schema slug {slug!r}")


def _stamp(value: Any) -> str:
    try:
        return iso_ms(value)
    except BadQuery:
        raise HTTPError(400, "_updated_at is not a valid date-time") from None


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, Mapping):
            data = data.get(part)
        else:
            return None
    return data


def _title(slug: str, body: Mapping[str, Any]) -> str:
    if slug == "contact":
        name = " ".join(str(body[key]) for key in ("first_name", "last_name") if body.get(key))
        if name:
            return name
    if slug == "order" and body.get("order_number") and not body.get("_title"):
        return str(body["order_number"])
    for key in ("_title", "title", "name", "opportunity_title"):
        if isinstance(body.get(key), str) and body[key]:
            return body[key]
    return ""


def _project(body: Mapping[str, Any], patterns: Iterable[str]) -> dict[str, Any]:
    patterns = list(patterns)
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    keys = [k for k in body if not includes or any(fnmatch.fnmatchcase(k, p.split(".")[0]) for p in includes)]
    return {k: body[k] for k in keys if not any(fnmatch.fnmatchcase(k, p) for p in excludes)}


def _automation_flow(value: Any) -> dict[str, Any]:
    data = _object(value)
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


def _v1_steps(execution: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for item in execution.get("flow", []):
        if item.get("type") == "SECTION":
            steps.extend(item.get("steps", []))
        else:
            steps.append(item)
    return steps


def _current_v1(execution: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    for item in execution.get("flow", []):
        if item.get("type") == "SECTION":
            for step in item.get("steps", []):
                if step.get("status") not in STEP_DONE:
                    return item, step
        elif item.get("status") not in STEP_DONE:
            return None, item
    return None, None


def _current_v2(execution: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    task = next((t for t in execution.get("tasks", []) if t.get("status") not in STEP_DONE), None)
    if task is None:
        return None, None
    phase = next((p for p in execution.get("phases", []) if p.get("id") == task.get("phase_id")), None)
    return phase, task


def _advance_v1(execution: dict[str, Any], stamp: str) -> None:
    """Recompute section states and the execution status after a step changed."""
    for item in execution.get("flow", []):
        if item.get("type") != "SECTION":
            continue
        statuses = [step.get("status") for step in item.get("steps", [])]
        if statuses and all(status in STEP_DONE for status in statuses):
            item["status"] = "COMPLETED"
            item.setdefault("completedTime", stamp)
        elif any(status in STEP_DONE or status == "IN_PROGRESS" for status in statuses):
            item["status"] = "IN_PROGRESS"
            item.setdefault("startedTime", stamp)
    section, step = _current_v1(execution)
    if step is not None:
        execution["nextOpenStep"] = {"id": step["id"]}
    if step is None:
        execution.pop("nextOpenStep", None)
        execution["status"] = "DONE"
        execution["completedTime"] = stamp
    execution["lastUpdateTime"] = stamp


def _execution_from_definition(definition: Mapping[str, Any], contexts: list[Any], trigger: str, org_id: str) -> dict[str, Any]:
    stamp = now_ms()
    execution_id = _short_id(11)
    flow = []
    for item in copy.deepcopy(definition.get("flow", [])):
        if item.get("type") == "SECTION":
            section_id = _short_id(8)
            steps = [
                {**{k: v for k, v in step.items() if k not in ("order",)}, "id": _short_id(8), "definitionId": step.get("id", ""),
                 "type": "STEP", "status": "PENDING", "sectionId": section_id, "executionId": execution_id, "enabled": True,
                 "created": stamp, "lastUpdated": stamp, "executionType": step.get("executionType", "MANUAL")}
                for step in item.get("steps", [])
            ]
            flow.append({"id": section_id, "definitionId": item.get("id", ""), "name": item.get("name", ""), "type": "SECTION",
                         "status": "OPEN", "steps": steps})
        else:
            flow.append({**item, "id": _short_id(8), "definitionId": item.get("id", ""), "type": "STEP", "status": "PENDING",
                         "executionId": execution_id, "enabled": True, "created": stamp, "lastUpdated": stamp})
    if flow and flow[0]["type"] == "SECTION":
        flow[0]["status"] = "IN_PROGRESS"
        flow[0]["startedTime"] = stamp
    execution = {
        "id": execution_id, "definitionId": definition["id"], "orgId": org_id, "name": definition.get("name", ""),
        "status": "STARTED", "trigger": trigger, "creationTime": stamp, "lastUpdateTime": stamp,
        "assignedTo": list(definition.get("assignedTo", [])),
        "contexts": [{"id": str(c["id"]), "schema": str(c["schema"]), "title": str(c.get("title", ""))} for c in contexts],
        "flow": flow, "updateEntityAttributes": copy.deepcopy(definition.get("updateEntityAttributes", [])),
        "enableECPWorkflow": bool(definition.get("enableECPWorkflow", False)),
    }
    _, step = _current_v1(execution)
    if step:
        execution["nextOpenStep"] = {"id": step["id"]}
    return execution


def _flow_execution_from_template(template: Mapping[str, Any], contexts: list[Any], trigger: Mapping[str, Any], org_id: str) -> dict[str, Any]:
    stamp = now_ms()
    phase_ids = {phase["id"]: _short_id(8) for phase in template.get("phases", [])}
    task_ids = {task["id"]: _short_id(8) for task in template.get("tasks", [])}
    phases = [{"id": phase_ids[p["id"]], "template_id": p["id"], "name": p.get("name", ""), "status": "OPEN", "updated_at": stamp}
              for p in template.get("phases", [])]
    tasks = [{"id": task_ids[t["id"]], "template_id": t["id"], "name": t.get("name", ""), "task_type": t.get("task_type", "MANUAL"),
              "status": "PENDING", "analytics": {}, "enabled": True, "created_at": stamp, "updated_at": stamp,
              **({"phase_id": phase_ids[t["phase_id"]]} if t.get("phase_id") in phase_ids else {})}
             for t in template.get("tasks", [])]
    edges = [{"id": e["id"], "from_id": task_ids.get(e["from_id"], e["from_id"]), "to_id": task_ids.get(e.get("to_id"), e.get("to_id"))}
             for e in template.get("edges", []) if e.get("to_id")]
    return {
        "id": _short_id(12), "flow_template_id": template["id"], "org_id": org_id, "name": template.get("name", ""),
        "created_at": stamp, "updated_at": stamp, "status": "STARTED", "trigger": {"type": trigger.get("type", "MANUAL")},
        "analytics": {"started_at": stamp}, "contexts": [
            {"entity_id": str(c["entity_id"]), "entity_schema": str(c["entity_schema"]), "is_primary": bool(c.get("is_primary", False))}
            for c in contexts],
        "crt_tasks": [{"id": tasks[0]["id"], "crt_since": stamp}] if tasks else [],
        "phases": phases, "tasks": tasks, "edges": edges,
    }
