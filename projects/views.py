"""Plain Django views outside the admin and the API: health for load balancers and monitoring."""
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from projects.services.health import health_report


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Database, broker and sync freshness per schema; 503 when any of them fails.

    Error texts (driver messages, host names) are shown to signed-in staff only.
    """
    report = health_report()
    details = bool(getattr(request, "user", None) and request.user.is_active and request.user.is_staff)
    return JsonResponse(report.as_dict(details=details), status=200 if report.ok else 503)


@never_cache
@require_GET
def liveness(request: HttpRequest) -> JsonResponse:
    """The process answers and reaches its database (for restarts, not for routing)."""
    report = health_report(include_sync=False)
    database = report.checks[0]
    return JsonResponse({"status": "ok" if database.ok else "fail"}, status=200 if database.ok else 503)
