"""The gateway's failure handling, through httpx.MockTransport: typed errors, retries, budgets, secrecy."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading

import httpx
import pytest

from integrations.epilot import (
    EpilotAuthenticationError,
    EpilotClient,
    EpilotConflictError,
    EpilotConnectionError,
    EpilotInvalidResponseError,
    EpilotNotFoundError,
    EpilotPermissionError,
    EpilotRateLimitedError,
    EpilotServerError,
    EpilotTimeoutError,
    EpilotValidationError,
    MalformedEntity,
    RetryPolicy,
    ServiceURLs,
)
from integrations.epilot.types import Entity, SystemAttributes, system_attributes

TOKEN = "eyJ-very-secret-token-value"
ENTITY = {"_id": "6f1c7d8e-0000-4000-8000-000000000001", "_schema": "opportunity", "_title": "X", "_org": "1",
          "_created_at": "2025-01-01T00:00:00.000Z", "_updated_at": "2025-01-02T00:00:00.000Z"}


def make_client(handler, clock, **kwargs) -> EpilotClient:
    return EpilotClient(
        token=TOKEN,
        urls=ServiceURLs.single_origin("https://epilot.test"),
        transport=httpx.MockTransport(handler),
        sleep=clock.sleep,
        clock=clock,
        seed=7,
        **kwargs,
    )


class Script:
    """Answers requests in order from a list of responses or exceptions, recording what was asked."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, EpilotValidationError), (401, EpilotAuthenticationError), (403, EpilotPermissionError), (404, EpilotNotFoundError),
     (405, EpilotConflictError), (409, EpilotConflictError), (422, EpilotValidationError)],
)
def test_client_errors_map_to_typed_errors_without_retry(status, error, clock) -> None:
    script = Script(httpx.Response(status, json={"status": status, "error": "nope"}))
    client = make_client(script, clock)
    with pytest.raises(error) as caught:
        client.get_entity("opportunity", ENTITY["_id"])
    assert caught.value.status == status and caught.value.operation == "getEntity"
    assert len(script.requests) == 1


def test_wrong_token_names_the_setting_and_hides_the_token(clock) -> None:
    client = make_client(Script(httpx.Response(401, json={"message": "Unauthorized"})), clock)
    with pytest.raises(EpilotAuthenticationError) as caught:
        client.list_schemas()
    assert "EPILOT_API_TOKEN" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(client)


def test_429_is_retried_for_writes_honouring_retry_after(clock) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "7"}, json={"status": 429, "error": "Too many requests"}),
                    httpx.Response(201, json=ENTITY))
    client = make_client(script, clock)
    entity = client.create_entity("opportunity", {"title": "X"})
    assert entity.id == ENTITY["_id"]
    assert len(script.requests) == 2
    assert clock.sleeps == [7.0]


def test_429_gives_up_after_the_attempt_budget_with_retry_after(clock) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "2"}))
    client = make_client(script, clock, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(EpilotRateLimitedError) as caught:
        client.search_entities({"q": "_schema:contact"})
    assert caught.value.retry_after == 2.0
    assert len(script.requests) == 3


def test_5xx_is_retried_for_idempotent_reads(clock) -> None:
    script = Script(httpx.Response(503), httpx.Response(502), httpx.Response(200, json={"hits": 0, "results": []}))
    client = make_client(script, clock)
    page = client.search_entities({"q": "_schema:contact"})
    assert page.hits == 0 and len(script.requests) == 3
    assert len(clock.sleeps) == 2 and all(0 < delay <= 10 for delay in clock.sleeps)


def test_5xx_and_timeouts_are_not_retried_for_creates(clock) -> None:
    script = Script(httpx.Response(503))
    with pytest.raises(EpilotServerError):
        make_client(script, clock).create_entity("order", {"status": "draft"})
    assert len(script.requests) == 1
    timeout = Script(httpx.ReadTimeout("slow"))
    with pytest.raises(EpilotTimeoutError):
        make_client(timeout, clock).create_execution("wfQpwhJF6J", [])
    assert len(timeout.requests) == 1


def test_refused_connections_are_retried_even_for_creates_since_nothing_was_sent(clock) -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(201, json=ENTITY))
    assert make_client(script, clock).create_entity("opportunity", {}).id == ENTITY["_id"]
    assert len(script.requests) == 2


def test_broken_connections_end_in_a_typed_error_after_bounded_attempts(clock) -> None:
    script = Script(httpx.ReadError("reset"))
    with pytest.raises(EpilotConnectionError):
        make_client(script, clock, retry=RetryPolicy(max_attempts=4)).get_entity("contact", ENTITY["_id"])
    assert len(script.requests) == 4


def test_patch_with_updated_at_is_retried_and_sends_the_guard(clock) -> None:
    script = Script(httpx.Response(500), httpx.Response(200, json=ENTITY))
    make_client(script, clock).patch_entity("opportunity", ENTITY["_id"], {"status": "x"}, updated_at=ENTITY["_updated_at"])
    assert len(script.requests) == 2
    assert json.loads(script.requests[-1].content)["_updated_at"] == ENTITY["_updated_at"]
    unguarded = Script(httpx.Response(500))
    with pytest.raises(EpilotServerError):
        make_client(unguarded, clock).patch_entity("opportunity", ENTITY["_id"], {"status": "x"})
    assert len(unguarded.requests) == 1


def test_total_retry_time_is_bounded(clock) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "40"}))
    client = make_client(script, clock, retry=RetryPolicy(max_attempts=10, max_elapsed_seconds=100))
    with pytest.raises(EpilotRateLimitedError):
        client.list_schemas()
    assert sum(clock.sleeps) <= 100


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"<html>gateway</html>", "not JSON"), (b'{"hits": 1, "results": {}}', "'results' is not a list"), (b"", "empty body")],
)
def test_unparseable_answers_raise_invalid_response_naming_the_operation(body, reason, clock, caplog) -> None:
    client = make_client(Script(httpx.Response(200, content=body)), clock)
    with caplog.at_level(logging.ERROR, logger="integrations.epilot"), pytest.raises(EpilotInvalidResponseError) as caught:
        client.search_entities({"q": "_schema:contact"})
    assert caught.value.operation == "searchEntities" and reason in str(caught.value)
    assert "searchEntities" in caplog.text


def test_a_page_python_can_read_but_strict_json_cannot_is_read_whole(clock) -> None:
    """Integers beyond 64 bits, NaN and a lone surrogate are read as Python's json reads them."""
    body = (b'{"hits": 1, "results": [{"_id": "6f1c7d8e-0000-4000-8000-000000000001", "_schema": "opportunity", '
            b'"_org": "1", "_updated_at": "2025-01-02T00:00:00.000Z", "wohneinheiten": 123456789012345678901234567890, '
            b'"budget": NaN, "notes": "\\ud800"}]}')
    client = make_client(Script(httpx.Response(200, content=body)), clock)
    entity = client.search_entities({"q": "_schema:opportunity"}).results[0]
    assert entity.data["wohneinheiten"] == 123456789012345678901234567890
    assert entity.data["budget"] != entity.data["budget"] and entity.data["notes"] == "\ud800"


def test_malformed_entities_in_a_page_are_reported_not_dropped(clock) -> None:
    bad = {"_schema": "contact", "_title": "no id"}
    wrong_type = {**ENTITY, "_id": "6f1c7d8e-0000-4000-8000-000000000002", "_updated_at": 12}
    client = make_client(Script(httpx.Response(200, json={"hits": 3, "results": [ENTITY, bad, wrong_type]})), clock)
    results = client.search_entities({"q": "_schema:opportunity"}).results
    assert results[0].id == ENTITY["_id"]
    assert isinstance(results[1], MalformedEntity) and "_id" in results[1].reason and results[1].data == bad
    assert isinstance(results[2], MalformedEntity) and "_updated_at" in results[2].reason


def test_unknown_execution_answered_empty_is_not_found(clock) -> None:
    client = make_client(Script(httpx.Response(200, content=b"")), clock)
    with pytest.raises(EpilotNotFoundError):
        client.get_execution("missing")


def test_write_budget_spaces_writes_to_stay_under_the_limit(clock) -> None:
    script = Script(httpx.Response(201, json=ENTITY))
    client = make_client(script, clock, writes_per_minute=3)
    for _ in range(4):
        client.create_entity("opportunity", {})
    assert len(script.requests) == 4
    assert clock.sleeps == [61.0]  # a minute, and a second of margin for network and clock skew


def test_reads_do_not_use_the_write_budget(clock) -> None:
    script = Script(httpx.Response(200, json={"hits": 0, "results": []}))
    client = make_client(script, clock, writes_per_minute=1)
    for _ in range(5):
        client.search_entities({"q": "_schema:contact"})
    assert clock.sleeps == []


def test_the_token_never_reaches_logs(clock, caplog) -> None:
    script = Script(httpx.Response(503), httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(201, json=ENTITY))
    client = make_client(script, clock, org_id="739224")
    with caplog.at_level(logging.DEBUG):
        client.upsert_entity("opportunity", ["_id"], {"_id": ENTITY["_id"]})
    assert caplog.records, "the gateway logs each request"
    assert TOKEN not in caplog.text
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert script.requests[0].headers["x-epilot-org-id"] == "739224"


def test_search_iterator_follows_sort_end_and_stable_query_id(clock) -> None:
    first = [{**ENTITY, "_id": f"6f1c7d8e-0000-4000-8000-00000000000{i}"} for i in range(2)]
    script = Script(
        httpx.Response(
            200, json={"hits": 3, "results": first, "sort_end": [1735776000000, first[-1]["_id"]], "stable_query_id": "ctx-1"}
        ),
        httpx.Response(
            200,
            json={
                "hits": 3,
                "results": [{**ENTITY, "_id": "6f1c7d8e-0000-4000-8000-000000000009"}],
                "sort_end": [1735776000001, "z"],
                "stable_query_id": "ctx-2",
            },
        ),
    )
    pages = list(make_client(script, clock).iter_search_entities("_schema:opportunity", page_size=2))
    assert [len(page.results) for page in pages] == [2, 1]
    second = json.loads(script.requests[1].content)
    assert second["search_after"] == [1735776000000, first[-1]["_id"]]
    assert second["stable_query_id"] == "ctx-1" and "from" not in second
    assert second["sort"] == ["_updated_at:asc", "_id:asc"] and second["size"] == 2


def test_read_ahead_asks_for_the_next_page_before_it_is_wanted_and_raises_its_error_in_order(clock) -> None:
    first = [{**ENTITY, "_id": f"6f1c7d8e-0000-4000-8000-00000000000{n}"} for n in range(2)]
    asked_for_second = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        if "search_after" not in json.loads(request.content):
            return httpx.Response(200, json={"hits": 4, "results": first, "sort_end": [1735776000000, first[-1]["_id"]]})
        asked_for_second.set()
        return httpx.Response(400, json={"status": 400, "error": "search_after is stale"})

    pages = make_client(answer, clock).iter_search_entities("_schema:opportunity", page_size=2, read_ahead=True)
    assert [entity.id for entity in next(pages).results] == [entity["_id"] for entity in first]
    assert asked_for_second.wait(timeout=5)  # requested while the caller still works on the first page
    with pytest.raises(EpilotValidationError, match="stale"):
        next(pages)


def test_documents_are_paged_as_entities_are_and_come_as_epilot_sent_them(clock) -> None:
    """The sync's reading: the same requests, each page's results unchecked (a malformed one included) and uncopied."""
    first = [{**ENTITY, "_id": f"6f1c7d8e-0000-4000-8000-00000000000{n}"} for n in range(999)] + [{"_title": "no id"}]
    script = Script(
        httpx.Response(200, json={"hits": 1001, "results": first, "sort_end": [1735776000000, "last"],
                                  "stable_query_id": "ctx-1"}),
        httpx.Response(200, json={"hits": 1001, "results": [{**ENTITY, "_id": "6f1c7d8e-0000-4000-8000-00000000000z"}]}),
        httpx.Response(200, json={"hits": 1, "results": {"not": "a list"}}),
    )
    client = make_client(script, clock)
    pages = list(client.iter_search_documents("_schema:opportunity", include_deleted="true"))
    assert [page.hits for page in pages] == [1001, 1001]
    assert pages[0].documents == first and pages[1].documents[0]["_id"].endswith("z")
    asked = [json.loads(request.content) for request in script.requests]
    assert asked[0]["include_deleted"] == "true" and asked[0]["sort"] == ["_updated_at:asc", "_id:asc"]
    assert asked[1]["search_after"] == [1735776000000, "last"] and asked[1]["stable_query_id"] == "ctx-1"
    with pytest.raises(EpilotInvalidResponseError, match="'results' is not a list"):
        list(client.iter_search_documents("_schema:opportunity"))


def test_a_documents_system_attributes_are_an_entitys_fields_before_its_data() -> None:
    """The sync checks documents with `system_attributes`; an entity is built from the same checks."""
    assert SystemAttributes._fields == tuple(field.name for field in dataclasses.fields(Entity))[:-1]
    document = {**ENTITY, "_tags": ["a"]}
    entity = Entity.from_api(document)
    assert system_attributes(document) == tuple(getattr(entity, name) for name in SystemAttributes._fields)


def test_a_server_that_refuses_the_readonly_guard_gets_it_checked_client_side(clock) -> None:
    refused = httpx.Response(400, json={"status": 400, "error": "_updated_at: Tried to write read-only property"})
    current = httpx.Response(200, json={"entity": ENTITY, "relations": []})
    script = Script(refused, current, httpx.Response(200, json=ENTITY))
    make_client(script, clock).patch_entity("opportunity", ENTITY["_id"], {"status": "x"}, updated_at=ENTITY["_updated_at"])
    assert [r.method for r in script.requests] == ["PATCH", "GET", "PATCH"]
    assert "_updated_at" not in json.loads(script.requests[-1].content)

    newer = {**ENTITY, "_updated_at": "2025-02-01T00:00:00.000Z"}
    stale = Script(refused, httpx.Response(200, json={"entity": newer, "relations": []}))
    with pytest.raises(EpilotConflictError):
        make_client(stale, clock).patch_entity("opportunity", ENTITY["_id"], {"status": "x"}, updated_at=ENTITY["_updated_at"])
    assert [r.method for r in stale.requests] == ["PATCH", "GET"]


def test_ids_from_data_stay_one_path_segment(clock) -> None:
    script = Script(httpx.Response(404, json={"message": "not found"}))
    client = make_client(script, clock)
    with pytest.raises(EpilotNotFoundError):
        client.get_entity("opportunity", "../../v1/entity:search?q=*#x")
    url = script.requests[0].url
    assert url.raw_path.decode().split("?")[0] == "/v1/entity/opportunity/..%2F..%2Fv1%2Fentity%3Asearch%3Fq%3D%2A%23x"
    assert url.query == b"hydrate=false" and url.fragment == ""


def test_a_connection_the_server_closed_meanwhile_is_replaced_at_once_for_reads_only(clock) -> None:
    closed = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    script = Script(closed, httpx.Response(200, json={"entity": ENTITY}))
    assert make_client(script, clock).get_entity("opportunity", ENTITY["_id"]).id == ENTITY["_id"]
    assert len(script.requests) == 2 and clock.sleeps == []
    twice = Script(closed, closed, httpx.Response(200, json={"entity": ENTITY}))
    make_client(twice, clock).get_entity("opportunity", ENTITY["_id"])
    assert len(twice.requests) == 3 and len(clock.sleeps) == 1 and clock.sleeps[0] > 0  # the second time backs off
    create = Script(closed, httpx.Response(201, json=ENTITY))
    with pytest.raises(EpilotConnectionError):
        make_client(create, clock).create_entity("opportunity", {})  # it may have been created: not sent again
    assert len(create.requests) == 1
