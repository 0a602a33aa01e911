"""URL configuration: the admin is the product; the API lives under /api/."""
from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from projects import views as project_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False), name="home"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Probes answer with or without the trailing slash: a load balancer treats APPEND_SLASH's redirect as a failure.
    re_path(r"^health/?$", project_views.health, name="health"),
    re_path(r"^health/live/?$", project_views.liveness, name="health-live"),
    re_path(r"^health/ready/?$", project_views.readiness, name="health-ready"),
    re_path(r"^metrics/?$", project_views.metrics, name="metrics"),
    path("webhooks/epilot/", project_views.epilot_webhook, name="epilot-webhook"),
    re_path(r"^public/areas/(?P<token>[A-Za-z0-9_-]{24,64})/$", project_views.public_gauge, name="public-gauge"),
    re_path(r"^public/areas/(?P<token>[A-Za-z0-9_-]{24,64})/gauge\.(?P<kind>svg|json)$", project_views.public_gauge,
            name="public-gauge-file"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("projects.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]), name="api-schema"),
    path("api/docs/",
         SpectacularSwaggerView.as_view(url_name="api-schema", authentication_classes=[], permission_classes=[AllowAny]),
         name="api-docs"),
]

handler404 = "projects.api.errors.json_or_html_404"
handler500 = "projects.api.errors.json_or_html_500"
