"""Validate httpx requests and responses against the official epilot OpenAPI specs with openapi-core."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.responses.exceptions import ResponseNotFound
from werkzeug.datastructures import Headers, ImmutableMultiDict

# Unchanged copies of shared/epilot-openapi (see specs/SOURCE.md), so CI needs nothing outside the repo.
SPEC_DIRS = [Path(__file__).resolve().parent / "specs"]

# Which spec describes a path; the sandbox serves them all from one origin.
SPEC_BY_PREFIX = [
    ("/v1/workflows/definitions", "workflow-definition.json"),
    ("/v2/flows/templates", "workflow-definition.json"),
    ("/v1/workflows/executions", "workflow-execution.json"),
    ("/v2/flows/executions", "workflow-execution.json"),
    ("/v1/automation", "automation.json"),
    ("/v1/entity", "entity.json"),
    ("/v2/entity", "entity.json"),
    ("/v1/webhooks", "webhooks.json"),
    ("/v2/webhooks", "webhooks.json"),
]


# Places where the specs contradict themselves; a strict validator flags them on any correct exchange.
KNOWN_SPEC_DEFECTS = [
    # patchEntity documents `_updated_at` in the body as its conflict guard, yet Entity marks it readOnly.
    ("PATCH /v1/entity/", "Tried to write read-only property with"),
    # createFlow/putFlow require `actions`, yet AutomationFlow marks them readOnly (see notes/epilot-api.md).
    ("/v1/automation/flows", "Tried to write read-only property with"),
    # A V2 manual task is valid under both ManualTask and AiAgentTask, so the `oneOf` of Task never holds.
    ("/v2/flows/executions", "is valid under each of"),
]


def is_known_spec_defect(where: str, details: str) -> bool:
    return any(path in where and text in details for path, text in KNOWN_SPEC_DEFECTS)


def spec_path(name: str) -> Path:
    for directory in SPEC_DIRS:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"epilot spec {name} not found in {SPEC_DIRS}")


@cache
def openapi_for(name: str) -> tuple[OpenAPI, str]:
    spec = json.loads(spec_path(name).read_text())
    return OpenAPI.from_dict(spec), spec["servers"][0]["url"]


def spec_for_path(path: str) -> str:
    for prefix, name in SPEC_BY_PREFIX:
        if path.startswith(prefix):
            return name
    raise LookupError(f"no epilot spec covers {path}")


class _Request:
    def __init__(self, request: httpx.Request, host_url: str) -> None:
        url = urlsplit(str(request.url))
        self.host_url = host_url
        self.path = url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/json")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)), header=Headers(dict(request.headers)), cookie=ImmutableMultiDict()
        )


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "application/json") if response.content else ""
        self.headers = Headers(dict(response.headers))


@dataclass
class ContractRecorder(httpx.BaseTransport):
    """A transport that forwards to `inner` and validates every exchange against the specs."""

    inner: httpx.BaseTransport
    exchanges: list[tuple[str, str, int]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self.inner.handle_request(request)
        response.read()
        path = urlsplit(str(request.url)).path
        openapi, host_url = openapi_for(spec_for_path(path))
        openapi_request = _Request(request, host_url)
        try:
            openapi.validate_request(openapi_request)
        except Exception as exc:
            self._report(f"request {request.method} {path}", exc)
        try:
            openapi.validate_response(openapi_request, _Response(response))
        except ResponseNotFound:
            pass  # a status the spec does not describe for this operation (for example an injected 503)
        except Exception as exc:
            self._report(f"response {response.status_code} to {request.method} {path}", exc)
        self.exchanges.append((request.method, path, response.status_code))
        return response

    def _report(self, where: str, exc: Exception) -> None:
        details = _describe(exc)
        errors = _schema_errors(exc)
        if errors and all(is_known_spec_defect(where, error) for error in errors):
            return
        self.violations.append(f"{where}: {details}")


def _schema_errors(exc: BaseException) -> list[str]:
    found: list[str] = []
    cause: BaseException | None = exc
    while cause is not None:
        found.extend(str(error) for error in getattr(cause, "schema_errors", None) or ())
        cause = cause.__cause__
    return found


def _describe(exc: Exception) -> str:
    parts = [f"{type(exc).__name__}: {exc}"]
    cause = exc.__cause__
    while cause is not None:
        detail = getattr(cause, "schema_errors", None)
        parts.append(f"{type(cause).__name__}: {cause}" + (f" {[str(e)[:300] for e in detail]}" if detail else ""))
        cause = cause.__cause__
    return " <- ".join(parts)[:1500]
