"""The entity API of the sandbox: entities, search and list, relations, schemas."""
from __future__ import annotations

import fnmatch
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from integrations.epilot_sandbox.http import HTTPError, RawJSONList, Request, Response, json_object, stamp
from integrations.epilot_sandbox.query import (
    COLUMNS,
    filter_mentions_schema,
    filter_to_sql,
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


class EntityHandlers:
    """Handlers of the entity API, named after its operationIds."""

    store: SandboxStore
    _stable_hits: dict[str, int]

    def searchEntities(self, request: Request) -> Response:
        params = json_object(request.json())
        unknown = set(params) - SEARCH_KEYS
        if unknown:
            raise HTTPError(400, f"unknown search parameters: {', '.join(sorted(unknown))}")
        q = params.get("q")
        if not isinstance(q, str):
            raise HTTPError(400, "q is required")
        where, where_params = lucene_to_sql(q)
        return 200, self._search(where, where_params, params)

    def listEntities(self, request: Request) -> Response:
        params = json_object(request.json())
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
        # Later pages of a stable query report the first page's hits, as a point-in-time search does (and the
        # count of every matching row is not taken again for each page).
        stable_id = params.get("stable_query_id")
        known_hits = self._stable_hits.get(stable_id) if isinstance(stable_id, str) else None
        hits, rows = self.store.search(where, where_params, order_by=order_by, after=after, after_params=after_params,
                                       limit=size, offset=offset, count=known_hits is None)
        hits = known_hits if known_hits is not None else hits
        field_filter = params.get("fields")
        if field_filter and set(field_filter) <= set(COLUMN_FIELDS):
            # Only columns asked for (a reconciliation's ids): no document is parsed.
            results: Any = [{name: row[COLUMN_FIELDS[name]] for name in field_filter if row[COLUMN_FIELDS[name]] is not None}
                            for row in rows]
        elif field_filter:
            results = [_project(json.loads(row["body"]), field_filter) for row in rows]
        else:
            results = RawJSONList(row["body"] for row in rows)
        body: dict[str, Any] = {"hits": hits, "results": results}
        if rows:
            body["sort_end"] = sort_values(keys, rows[-1])
        if stable_for or params.get("stable_query_id"):
            body["stable_query_id"] = params.get("stable_query_id") or uuid.uuid4().hex
            if len(self._stable_hits) > 1000:
                self._stable_hits.clear()
            self._stable_hits[body["stable_query_id"]] = hits
        return body

    def listSchemas(self, request: Request) -> Response:
        return 200, {"results": self.store.list_schemas()}

    def getEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        return 200, {"entity": self._live_entity(slug, entity_id), "relations": []}

    def getEntityV2(self, request: Request, slug: str, entity_id: str) -> Response:
        return 200, self._live_entity(slug, entity_id)

    def createEntity(self, request: Request, slug: str) -> Response:
        _slug(slug)
        data = json_object(request.json())
        if data.get("_schema") not in (None, slug):
            raise HTTPError(400, f"_schema {data.get('_schema')!r} does not match the path {slug!r}")
        body = self._new_entity(slug, data)
        if request.flag("validate"):
            self._validate(body)
        with self.store.write() as conn:
            self.store.put_entity(conn, body)
        return 201, body

    def patchEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        changes = json_object(request.json())
        dry_run = request.flag("dry_run")
        with self.store.write() as conn:
            current = self._live_entity(slug, entity_id)
            expected = changes.get("_updated_at")
            if expected is not None and stamp(expected) < current["_updated_at"]:
                raise HTTPError(409, "Conflict: newer version exists")
            body = self._merge(current, changes)
            if request.flag("validate"):
                self._validate(body)
            if not dry_run:
                self.store.put_entity(conn, body)
        return 200, body

    def updateEntity(self, request: Request, slug: str, entity_id: str) -> Response:
        data = json_object(request.json())
        with self.store.write() as conn:
            current = self._live_entity(slug, entity_id)
            kept = {key: current[key] for key in SYSTEM_READ_ONLY if key in current}
            body = self._merge(kept, {key: value for key, value in data.items() if key not in SYSTEM_READ_ONLY})
            body["_title"] = _title(slug, body)
            self.store.put_entity(conn, body)
        return 200, body

    def upsertEntity(self, request: Request, slug: str) -> Response:
        _slug(slug)
        data = json_object(request.json())
        if (
            set(data) - {"unique_key", "entity"}
            or not isinstance(data.get("unique_key"), list)
            or not isinstance(data.get("entity"), Mapping)
        ):
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
                params += [
                    "$." + ".".join(f"[{p}]" if p.isdigit() else f'"{p}"' for p in str(path).split(".")).replace(".[", "["),
                    value,
                ]
        with self.store.write() as conn:
            rows = conn.execute(
                f"SELECT body FROM entities WHERE {' AND '.join(conditions)} ORDER BY created_at", params
            ).fetchall()
            matches = [json.loads(row["body"]) for row in rows]
            if len(matches) > 1 and request.flag("strict"):
                raise HTTPError(409, "Conflict: multiple entities were matched with unique_key")
            if matches and matches[0].get("_deleted_at"):
                raise HTTPError(
                    405, "Deleted entities cannot be updated. You'll need to recover the entity first before updating."
                )
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
        if not isinstance(items, list) or not all(
            isinstance(i, Mapping) and i.get("entity_id") and i.get("attribute") for i in items
        ):
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
        return 200, {
            "entity_id": first.get("entity_id", entity_id),
            "attribute": first.get("attribute", ""),
            "_tags": first.get("_tags", []),
        }

    def _live_entity(self, slug: str, entity_id: str) -> dict[str, Any]:
        body = self.store.get_entity(entity_id)
        if body is None or body["_schema"] != slug or body.get("_deleted_at"):
            raise HTTPError(404, "Not Found")
        return body

    def _new_entity(self, slug: str, data: Mapping[str, Any]) -> dict[str, Any]:
        stamp = now_ms()
        body = {key: value for key, value in data.items() if key not in SYSTEM_READ_ONLY}
        body.update(
            {
                "_id": str(uuid.uuid4()),
                "_schema": slug,
                "_org": self.store.org_id,
                "_created_at": stamp,
                "_updated_at": stamp,
                "_owners": [{"org_id": self.store.org_id}],
                "_acl": {
                    "view": [f"org:{self.store.org_id}"],
                    "edit": [f"org:{self.store.org_id}"],
                    "delete": [f"org:{self.store.org_id}"],
                },
            }
        )
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


def _slug(slug: str) -> None:
    if not re.fullmatch(r"[a-zA-Z0-9_-]+", slug):
        raise HTTPError(400, f"invalid schema slug {slug!r}")


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


# Fields a search can answer from the entity's columns (the stored texts, as epilot sent them).
COLUMN_FIELDS = {"_id": "id", "_schema": "schema", "_created_at": "created_at", "_updated_at": "updated_at",
                 "_deleted_at": "deleted_at"}


def _project(body: Mapping[str, Any], patterns: Iterable[str]) -> dict[str, Any]:
    patterns = list(patterns)
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    keys = [k for k in body if not includes or any(fnmatch.fnmatchcase(k, p.split(".")[0]) for p in includes)]
    return {k: body[k] for k in keys if not any(fnmatch.fnmatchcase(k, p) for p in excludes)}
