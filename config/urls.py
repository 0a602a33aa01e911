"""URL configuration: the admin is the product; the API lives under /api/."""
from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

admin.site.site_header = "Ausbau Backoffice"
admin.site.site_title = "Ausbau Backoffice"
admin.site.index_title = "Glasfaserausbau Stadtwerke Wülfrath"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
