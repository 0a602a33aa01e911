"""Plain Django views outside the admin and the API: health for load balancers and monitoring, epilot's webhooks, and
the public gauge of an area's pre-marketing."""
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils import translation
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from config.metrics import exposition
from projects.services.campaign import public_gauge_area, public_gauge_figures
from projects.services.errors import NotFound
from projects.services.health import MirrorCollector, health_report, metrics_allowed
from projects.services.webhooks import webhook_receive


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """For monitoring: database, broker, sync freshness per schema, work left waiting, quarantine; 503 when any of them
    fails (quarantine never does). Not for load balancers: it fails while epilot is down.

    Error texts (driver messages, host names) are shown to signed-in staff only.
    """
    report = health_report()
    details = bool(getattr(request, "user", None) and request.user.is_active and request.user.is_staff)
    return JsonResponse(report.as_dict(details=details), status=200 if report.ok else 503)


@never_cache
@require_GET
def liveness(request: HttpRequest) -> JsonResponse:
    """The process answers (for restarts): no database, no broker, nothing a restart would not fix."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics, for a bearer of METRICS_TOKEN or a client in METRICS_ALLOWED_NETWORKS; 403 for others."""
    if not metrics_allowed(request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR", "")):
        return JsonResponse({"error": "metrics are for the configured token or networks"}, status=403)
    body, content_type = exposition([MirrorCollector()])
    return HttpResponse(body, content_type=content_type)


@never_cache
@require_GET
def readiness(request: HttpRequest) -> JsonResponse:
    """The database and the broker answer (for routing); 503 otherwise. Neither epilot nor the sync's age counts."""
    report = health_report(include_sync=False)
    details = bool(getattr(request, "user", None) and request.user.is_active and request.user.is_staff)
    return JsonResponse(report.as_dict(details=details), status=200 if report.ok else 503)


class BodyTooLarge(ValueError):
    """The request body exceeds EPILOT_WEBHOOK_MAX_BYTES."""


class BadChunk(ValueError):
    """A chunked body whose framing is broken."""


def raw_body(request: HttpRequest, limit: int) -> bytes:
    """The request body as sent, also when it came chunked (no Content-Length); raises BodyTooLarge.

    Django reads a body by CONTENT_LENGTH only. gunicorn de-chunks a chunked body into `wsgi.input`
    and marks it `wsgi.input_terminated`, so that stream is read here, at most `limit` + 1 bytes; a
    server that passes the chunks through (runserver, wsgiref) gets them decoded here.
    """
    length = request.META.get("CONTENT_LENGTH")
    if length:
        if not length.isdigit() or int(length) > limit:
            raise BodyTooLarge
        return request.body
    stream = request.META.get("wsgi.input")
    if stream is None:
        return request.body
    if request.META.get("wsgi.input_terminated"):
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise BodyTooLarge
        return data
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return _dechunked(stream, limit)
    return request.body


def _dechunked(stream: Any, limit: int) -> bytes:
    """Decode a `Transfer-Encoding: chunked` body from the raw stream; raises BodyTooLarge (or BadChunk)."""
    data = bytearray()
    while True:
        line = stream.readline(100)
        if not line and not data:
            return b""  # the server passed no body on (Django's runserver drops one without Content-Length)
        size_text = line.split(b";", 1)[0].strip()
        # Hex digits only: int() would also take a sign ("-5" reads the rest of the stream) or underscores.
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise BadChunk
        size = int(size_text, 16)
        if size == 0:
            while stream.readline(1000) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields
            return bytes(data)
        if len(data) + size > limit:
            raise BodyTooLarge
        data += stream.read(size)
        stream.read(2)  # the CRLF after each chunk


@csrf_exempt
@never_cache
@require_POST
def epilot_webhook(request: HttpRequest) -> JsonResponse:
    """Signed epilot deliveries: verified and recorded at once (2xx), the mirror is updated by a worker."""
    try:
        body = raw_body(request, settings.EPILOT_WEBHOOK_MAX_BYTES)
    except BodyTooLarge:
        return JsonResponse({"error": {"status": 413, "message": "The body is larger than 1 MB."}}, status=413)
    except BadChunk:
        return JsonResponse({"error": {"status": 400, "message": "The chunked body is malformed."}}, status=400)
    headers = {name: request.headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    receipt = webhook_receive(headers=headers, body=body)
    if receipt.status >= 400:
        return JsonResponse({"error": {"status": receipt.status, "message": receipt.reason}}, status=receipt.status)
    return JsonResponse({"status": receipt.reason}, status=receipt.status)


PUBLIC_CACHE_SECONDS = 300


@xframe_options_exempt  # the municipality embeds it in an <iframe>
@require_GET
def public_gauge(request: HttpRequest, token: str, kind: str = "html") -> HttpResponse:
    """An area's take-up against its quota for the public (no login, no personal data, nothing from another host):
    an HTML widget, an SVG image or JSON; German unless `?lang=en`. 404 for an unknown or revoked token."""
    language = "en" if request.GET.get("lang") == "en" else "de"
    try:
        area = public_gauge_area(token)
    except NotFound:
        return HttpResponse(status=404, content_type="text/plain")
    figures = public_gauge_figures(area)
    drawing = {"figures": figures, "bar": round(3.36 * min(figures["take_up_percent"], 100)),
               "quota_x": 12 + round(3.36 * min(figures["quota_percent"], 100))}
    with translation.override(language):
        if kind == "json":
            response: HttpResponse = JsonResponse(figures, json_dumps_params={"ensure_ascii": False})
        elif kind == "svg":
            response = HttpResponse(render_to_string("projects/public_gauge.svg", drawing),
                                    content_type="image/svg+xml; charset=utf-8")
        else:
            response = HttpResponse(render_to_string("projects/public_gauge.html", {
                "figures": figures, "language": language, "svg": render_to_string("projects/public_gauge.svg", drawing)}))
    response["Cache-Control"] = f"public, max-age={PUBLIC_CACHE_SECONDS}"
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
    response["Vary"] = "Accept-Encoding"
    response["Access-Control-Allow-Origin"] = "*"
    return response
