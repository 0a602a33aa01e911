"""Request middleware of the installation: a request id on every log line and one log line per request."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from config import metrics
from config.logging import accepted_request_id, current_request_id

logger = logging.getLogger("ausbau.request")

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestIdMiddleware:
    """Take the caller's `X-Request-ID` (or make one), echo it in the response, log and count the request when it ends.

    The line carries method, path (never the query string: it may hold a token), status and
    duration; the id is on every line logged meanwhile and on the tasks the request queues.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        token = current_request_id.set(accepted_request_id(request.headers.get("X-Request-ID")))
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = current_request_id.get()
            seconds = time.monotonic() - started
            logger.info("%s %s %s", request.method, request.path, response.status_code, extra={
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1)})
            # The view's name, not the path: paths carry ids, and a label per id would never end.
            view = request.resolver_match.view_name if request.resolver_match else "unmatched"
            method = request.method if request.method in KNOWN_METHODS else "other"
            metrics.http_requests.labels(view, method, str(response.status_code)).inc()
            metrics.http_duration.labels(view).observe(seconds)
            return response
        finally:
            current_request_id.reset(token)


class RejectNulMiddleware:
    """Answer 400 to a request whose path or query string holds a NUL character (also percent-encoded).

    No id, name or filter of this product contains one, and PostgreSQL refuses NUL in text, so such
    a value would otherwise reach a query and fail there with a server error. Checked once, at the
    edge, for the admin and the API alike.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path or any(
                "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()):
            message = "The request contains a NUL character, which no identifier or filter may hold."
            if request.path.startswith("/api/"):
                return JsonResponse({"error": {"status": 400, "code": "invalid", "message": message}},
                                    status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
