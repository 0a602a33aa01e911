"""One error document for every API failure: {"error": {"status", "code", "message", "fields"?}}."""
from __future__ import annotations

from typing import Any

from django.http import JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from projects.services.errors import (
    Conflict,
    InProgress,
    NotAllowed,
    NotFound,
    RemoteFailure,
    ServiceError,
    StatusConflict,
)


def _flatten(detail: Any) -> str:
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    return str(detail)


def _messages(value: Any) -> list[str]:
    """A field's errors as a list of texts; errors of list items or nested objects become one text naming them."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    return [_flatten(value)]


class ServiceConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


class UpstreamFailure(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_code = "epilot_failure"


def _from_service_error(exc: ServiceError) -> exceptions.APIException:
    """The HTTP answer to a use case that could not be carried out: 404 (not there), 409 (the state), 502 (epilot)."""
    if isinstance(exc, RemoteFailure):
        return UpstreamFailure(exc.message)
    if isinstance(exc, NotFound):
        return exceptions.NotFound(exc.message)
    if isinstance(exc, (NotAllowed, InProgress, Conflict, StatusConflict)):
        return ServiceConflict(exc.message)
    return exceptions.APIException(exc.message)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API failure as one document; service errors mapped here, once, for every view."""
    if isinstance(exc, ServiceError):
        exc = _from_service_error(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    error: dict[str, Any] = {"status": response.status_code, "code": getattr(exc, "default_code", "error")}
    codes = getattr(exc, "get_codes", lambda: None)()
    if isinstance(detail, dict) and "detail" not in detail:
        error["code"] = "invalid"
        error["fields"] = {key: _messages(value) for key, value in detail.items()}
        error["message"] = "Invalid request: " + _flatten(detail)
    else:
        error["message"] = _flatten(detail.get("detail", detail) if isinstance(detail, dict) else detail)
        if isinstance(codes, dict) and isinstance(codes.get("detail"), str):
            error["code"] = codes["detail"]
    response.data = {"error": error}
    return response


def json_or_html_404(request: Any, exception: Exception | None = None) -> Any:
    """Django's 404 for URLs no view matches: the API error document under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 404, "code": "not_found", "message": "No such resource."}}, status=404)
    return page_not_found(request, exception)


def json_or_html_500(request: Any) -> Any:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"status": 500, "code": "server_error", "message": "Internal error; it has been logged."}},
                            status=500)
    return server_error(request)
