"""Reachability and token checks for each epilot service (used by `manage.py epilot_check`)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from integrations.epilot.client import EpilotClient
from integrations.epilot.errors import EpilotError


@dataclass(frozen=True)
class ServiceCheck:
    """The outcome of probing one service."""

    service: str
    url: str
    ok: bool
    detail: str
    milliseconds: float


def check_services(client: EpilotClient) -> list[ServiceCheck]:
    """Probe each service with one cheap read; never raises for an epilot failure."""
    probes: list[tuple[str, str, Callable[[], Any], Callable[[Any], str]]] = [
        ("entity", client.urls.entity, client.list_schemas, lambda schemas: f"{len(schemas)} schemas"),
        ("workflows-definition", client.urls.workflows_definition, client.get_definitions,
         lambda definitions: f"{len(definitions)} workflow definitions"),
        ("workflows-execution", client.urls.workflows_execution,
         lambda: client.search_flow_executions(entity_id="00000000-0000-0000-0000-000000000000", entity_schema="contact"),
         lambda _: "reachable"),
        ("automation", client.urls.automation, lambda: client.search_flows(size=1),
         lambda result: f"{result[0]} automation flows"),
    ]
    checks = []
    for service, url, probe, describe in probes:
        started = time.monotonic()
        try:
            detail, ok = describe(probe()), True
        except EpilotError as exc:
            detail, ok = exc.message, False
        checks.append(ServiceCheck(service, url, ok, detail, (time.monotonic() - started) * 1000))
    return checks
