"""The gateway frees what epilot answered as soon as the caller is done with it, without the garbage collector."""
from __future__ import annotations

import gc
import weakref

import httpx

from integrations.epilot import EpilotClient, ServiceURLs

ENTITY = {"_id": "6f1c7d8e-0000-4000-8000-000000000001", "_schema": "opportunity", "_title": "X", "_org": "1",
          "_created_at": "2025-01-01T00:00:00.000Z", "_updated_at": "2025-01-02T00:00:00.000Z"}


class TrackedBody(httpx.SyncByteStream):
    """A response body whose lifetime the test can watch."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def __iter__(self):
        yield self.content


def test_a_response_body_is_freed_without_waiting_for_the_garbage_collector() -> None:
    """httpx binds each response's stream back to the response; a sync's page bodies would wait in memory for a full
    collection. With the collector off, the body must be gone once the answer has been read."""
    bodies: list[weakref.ref] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = TrackedBody(httpx.Response(200, json={"entity": ENTITY}).content)
        bodies.append(weakref.ref(body))
        return httpx.Response(200, stream=body, headers={"Content-Type": "application/json"})

    client = EpilotClient(token="t", urls=ServiceURLs.single_origin("https://epilot.test"),
                          transport=httpx.MockTransport(answer))
    gc.collect()
    gc.disable()
    try:
        entity = client.get_entity("opportunity", ENTITY["_id"])
        assert entity.id == ENTITY["_id"] and len(bodies) == 1
        assert bodies[0]() is None
    finally:
        gc.enable()
