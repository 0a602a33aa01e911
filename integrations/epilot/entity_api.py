"""The entity API (entity.sls.epilot.io): entities, search and list, relations, schemas."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

import integrations.epilot.errors as errors
from integrations.epilot.transport import Transport, as_bool, segment
from integrations.epilot.types import (
    DocumentPage,
    Entity,
    EntitySchemaSummary,
    EntitySearchPage,
    EntityStamp,
    MalformedEntity,
    MalformedPayload,
    RelationItem,
    parse_timestamp,
)

SEARCH_PAGE_SIZE = 1000
SEARCH_PATH, LIST_PATH = "/v1/entity:search", "/v1/entity:list"
DEFAULT_SORT = ("_updated_at:asc", "_id:asc")


class EntityAPI(Transport):
    """Operations of the entity API; methods are named after the spec's operationIds."""

    def get_entity(self, slug: str, entity_id: str, *, hydrate: bool = False) -> Entity:
        """getEntity; raises EpilotNotFoundError for an unknown or deleted entity."""
        body = self._json(
            "getEntity", self._request("getEntity", "GET", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}",
                                       params={"hydrate": as_bool(hydrate)}, idempotent=True)
        )
        if not isinstance(body, Mapping) or "entity" not in body:
            raise self._invalid("getEntity", "the body has no 'entity'")
        return self._entity("getEntity", body["entity"])

    def create_entity(self, slug: str, attributes: Mapping[str, Any], *, activity_id: str | None = None) -> Entity:
        """createEntity; not retried on 5xx or timeouts (it is not idempotent)."""
        params = {"activity_id": activity_id} if activity_id else None
        response = self._request("createEntity", "POST", self.urls.entity, f"/v1/entity/{segment(slug)}",
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
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}",
                                     json_body=body, idempotent=False)
            return self._entity("patchEntity", self._json("patchEntity", response))
        try:
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}",
                                     json_body={**body, "_updated_at": updated_at}, idempotent=True)
        except errors.EpilotValidationError as exc:
            if "_updated_at" not in exc.message:
                raise
            current = self.get_entity(slug, entity_id)
            if current.updated_at and current.updated_at > parse_timestamp(updated_at, name="_updated_at"):
                raise errors.EpilotConflictError(f"patchEntity: {slug} {entity_id} changed in epilot since {updated_at}",
                                                 operation="patchEntity", status=409) from None
            response = self._request("patchEntity", "PATCH", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}",
                                     json_body=body, idempotent=False)
        return self._entity("patchEntity", self._json("patchEntity", response))

    def upsert_entity(self, slug: str, unique_key: Sequence[str], attributes: Mapping[str, Any]) -> tuple[Entity, bool]:
        """upsertEntity on `unique_key` attribute paths; returns (entity, created)."""
        response = self._request("upsertEntity", "PATCH", self.urls.entity, f"/v1/entity/{segment(slug)}:upsert",
                                 json_body={"unique_key": list(unique_key), "entity": dict(attributes)}, idempotent=True)
        return self._entity("upsertEntity", self._json("upsertEntity", response)), response.status_code == 201

    def delete_entity(self, slug: str, entity_id: str, *, purge: bool = False) -> None:
        """deleteEntity: a soft delete unless `purge`."""
        self._request("deleteEntity", "DELETE", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}",
                      params={"purge": as_bool(purge)} if purge else None, idempotent=False)

    def search_entities(self, params: Mapping[str, Any]) -> EntitySearchPage:
        """searchEntities: one page for the given `EntitySearchParams`."""
        response = self._search("searchEntities", SEARCH_PATH, params)
        return self._page_from("searchEntities", self._search_body("searchEntities", response))

    def list_entities(self, params: Mapping[str, Any]) -> EntitySearchPage:
        """listEntities: one page for the given `EntityListParams` (needs `filter`)."""
        response = self._search("listEntities", LIST_PATH, params)
        return self._page_from("listEntities", self._search_body("listEntities", response))

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
        read_ahead: bool = False,
    ) -> Iterator[EntitySearchPage]:
        """searchEntities page by page with `search_after` and `stable_query_id`.

        With `read_ahead`, the next page is requested (in a thread of its own) as soon as a page's
        cursor is known, so epilot answers while the caller works on the page: a sync then waits for
        epilot only where it is slower than the sync itself. Errors are raised in order, when the
        page that failed is asked for.
        """
        params: dict[str, Any] = {"q": q}
        return self._iter_pages("searchEntities", SEARCH_PATH, params, sort, include_deleted, page_size, search_after,
                                stable_for, fields, read_ahead)

    def iter_search_documents(self, q: str, *, include_deleted: str = "false", read_ahead: bool = False
                              ) -> Iterator[DocumentPage]:
        """searchEntities page by page, as `iter_search_entities`, with each page's results as epilot sent them: the
        caller checks each document itself (`types.system_attributes`), once, instead of through an `Entity` copy."""
        params: dict[str, Any] = {"q": q}
        return self._iter_pages("searchEntities", SEARCH_PATH, params, DEFAULT_SORT, include_deleted, SEARCH_PAGE_SIZE,
                                None, 30, None, read_ahead, page_from=self._documents_from)

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
        return self._iter_pages("listEntities", LIST_PATH, params, sort, include_deleted, page_size, search_after, stable_for,
                                fields, False)

    def add_relations(self, slug: str, entity_id: str, relations: Iterable[RelationItem]) -> None:
        """addRelations: link entities without rewriting the whole relation attribute."""
        body = []
        for relation in relations:
            item: dict[str, Any] = {"attribute": relation.attribute, "entity_id": relation.entity_id}
            if relation.tags:
                item["_tags"] = list(relation.tags)
            body.append(item)
        self._request("addRelations", "POST", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}/relations",
                      json_body=body, idempotent=True)

    def get_relations(self, slug: str, entity_id: str, *, include_reverse: bool = False) -> list[RelationItem]:
        """getRelations, all pages; hydrated items are reduced to their reference."""
        relations: list[RelationItem] = []
        page_size = 1000
        offset = 0
        while True:
            body = self._json("getRelations", self._request(
                "getRelations", "GET", self.urls.entity, f"/v1/entity/{segment(slug)}/{segment(entity_id)}/relations",
                params={"include_reverse": as_bool(include_reverse), "from": offset, "size": page_size}, idempotent=True,
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
        body = self._json(
            "listSchemas", self._request("listSchemas", "GET", self.urls.entity, "/v1/entity/schemas", idempotent=True)
        )
        results = body.get("results") if isinstance(body, Mapping) else None
        if not isinstance(results, list):
            raise self._invalid("listSchemas", "the body has no 'results' list")
        schemas = []
        for item in results:
            if not isinstance(item, Mapping) or not isinstance(item.get("slug"), str):
                raise self._invalid("listSchemas", "a schema has no slug")
            schemas.append(EntitySchemaSummary(slug=item["slug"], name=str(item.get("name") or item["slug"]), data=dict(item)))
        return schemas

    def iter_entity_stamps(self, schema: str, *, include_deleted: str = "true") -> Iterator[list[EntityStamp]]:
        """searchEntities of one schema asking for `_id`, `_updated_at` and `_deleted_at` only, page by page: what a
        reconciliation compares. A result without a string `_id` is left out; a bad `_updated_at` reads as None."""
        params: dict[str, Any] = {"q": f"_schema:{schema}"}
        return self._iter_pages("searchEntities", SEARCH_PATH, params, DEFAULT_SORT, include_deleted, SEARCH_PAGE_SIZE, None,
                                30, ["_id", "_updated_at", "_deleted_at"], False, page_from=self._stamps_from)

    def _stamps_from(self, operation: str, body: Mapping[str, Any]) -> list[EntityStamp]:
        results = body.get("results", [])
        if not isinstance(results, list):
            raise self._invalid(operation, "'results' is not a list")
        stamps = []
        for item in results:
            if isinstance(item, Mapping) and isinstance(item.get("_id"), str) and item["_id"]:
                try:
                    updated_at = parse_timestamp(item.get("_updated_at"), name="_updated_at")
                except MalformedPayload:
                    updated_at = None
                stamps.append(EntityStamp(item["_id"], updated_at, item.get("_deleted_at") is not None))
        return stamps

    def _iter_pages(self, operation: str, path: str, params: dict[str, Any], sort: Sequence[str], include_deleted: str,
                    page_size: int, search_after: Sequence[Any] | None, stable_for: int, fields: Sequence[str] | None,
                    read_ahead: bool, page_from: Callable[[str, Mapping[str, Any]], Any] | None = None) -> Iterator[Any]:
        size = max(1, min(page_size, SEARCH_PAGE_SIZE))
        params.update({"sort": list(sort), "size": size, "include_deleted": include_deleted})
        if stable_for:
            params["stable_for"] = stable_for
        if fields:
            params["fields"] = list(fields)
        if search_after:
            params["search_after"] = list(search_after)
        ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epilot-read-ahead") if read_ahead else None
        try:
            # What is read ahead waits as the response's bytes, not as parsed documents (a third of the memory).
            pending: Future[httpx.Response] | None = None
            while True:
                body = self._search_body(operation, pending.result() if pending else self._search(operation, path, params))
                results, sort_end, stable_query_id = body.get("results"), body.get("sort_end"), body.get("stable_query_id")
                more = isinstance(results, list) and len(results) >= size and isinstance(sort_end, list) and bool(sort_end)
                if more:
                    params["search_after"] = list(sort_end)
                    if isinstance(stable_query_id, str) and stable_query_id:
                        params["stable_query_id"] = stable_query_id
                    if ahead:
                        pending = ahead.submit(self._search, operation, path, dict(params))
                yield (page_from or self._page_from)(operation, body)
                if not more:
                    return
        finally:
            if ahead:
                ahead.shutdown(wait=False, cancel_futures=True)

    def _search(self, operation: str, path: str, params: Mapping[str, Any]) -> httpx.Response:
        return self._request(operation, "POST", self.urls.entity, path, json_body=dict(params), idempotent=True)

    def _search_body(self, operation: str, response: httpx.Response) -> Mapping[str, Any]:
        body = self._json(operation, response)
        if not isinstance(body, Mapping):
            raise self._invalid(operation, "the body is not an object")
        return body

    def _documents_from(self, operation: str, body: Mapping[str, Any]) -> DocumentPage:
        documents = body.get("results", [])
        if not isinstance(documents, list):
            raise self._invalid(operation, "'results' is not a list")
        hits = body.get("hits")
        return DocumentPage(hits=int(hits) if isinstance(hits, (int, float)) else len(documents), documents=documents)

    def _page_from(self, operation: str, body: Mapping[str, Any]) -> EntitySearchPage:
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

