"""The admin header's search and the building file (Hausakte): site-wide pages, not a model's."""
from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _

from projects.admin.base import building_file_url
from projects.formatting import portal_url
from projects.services.building_file import building_file
from projects.services.errors import NotFound
from projects.services.search import search

# What each result group needs the user to be allowed to see.
GROUP_PERMISSIONS = {"buildings": "projects.view_opportunity", "customers": "projects.view_contact",
                     "opportunities": "projects.view_opportunity", "orders": "projects.view_order"}


def search_view(request: HttpRequest) -> HttpResponse:
    """Results grouped, buildings (their files) first."""
    groups = {group for group, permission in GROUP_PERMISSIONS.items() if request.user.has_perm(permission)}
    if not groups:
        raise PermissionDenied
    query = request.GET.get("q", "").strip()[:200]
    results = search(query, groups=groups)
    context = {**admin.site.each_context(request), "title": _("Search"), "query": query, "results": results,
               "buildings": [(hit, building_file_url(hit.key)) for hit in results.buildings],
               "too_short": bool(query) and not results.count and len(query.replace(" ", "")) < 2}
    return TemplateResponse(request, "admin/projects/search.html", context)


def building_file_view(request: HttpRequest) -> HttpResponse:
    """Everything at one address; 404 for an address nothing has."""
    if not request.user.has_perm("projects.view_opportunity"):
        raise PermissionDenied
    try:
        file = building_file(request.GET.get("key", "")[:240])
    except NotFound:
        raise Http404(_("No building or opportunity has this address.")) from None
    context = {**admin.site.each_context(request), "title": file.label, "file": file,
               "opportunity_links": [(o, portal_url("opportunity", o.epilot_id)) for o in file.opportunities],
               "order_links": [(o, portal_url("order", o.epilot_id)) for o in file.orders],
               "can_see_audit": request.user.has_perm("projects.view_epilotwrite")}
    return TemplateResponse(request, "admin/projects/building_file.html", context)
