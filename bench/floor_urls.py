"""The product's URLs plus two minimal views returning the same rows as JSON: the floor the API is compared with."""
from django.http import JsonResponse
from django.urls import path

from config.urls import urlpatterns as product_urlpatterns
from projects.models import AusbauProject

LIST_FIELDS = ["id", "opportunity__epilot_id", "title", "phase", "progress_percent", "current_section", "current_step", "budget",
               "has_running_workflow", "opportunity__status", "opportunity__street", "opportunity__city", "tags", "updated_at"]
STATUS_FIELDS = ["id", "phase", "progress_percent", "current_section", "current_step", "updated_at"]


def floor_projects(request):
    rows = list(AusbauProject.objects.order_by("id").values(*LIST_FIELDS)[:100])
    return JsonResponse({"results": rows})


def floor_status(request, pk: int):
    return JsonResponse(AusbauProject.objects.filter(pk=pk).values(*STATUS_FIELDS).first())


urlpatterns = [
    path("floor/projects/", floor_projects),
    path("floor/projects/<int:pk>/status/", floor_status),
    *product_urlpatterns,
]
