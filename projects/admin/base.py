"""Building blocks of every admin page: read-only admins and inlines, portal and audit links."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from projects.formatting import portal_url


def portal_link(schema: str, epilot_id: str) -> str:
    return format_html('<a href="{}" target="_blank" rel="noopener">{} ↗</a>', portal_url(schema, epilot_id), _("Open in epilot"))


def building_file_url(key: str) -> str:
    return reverse("admin:building_file") + "?" + urlencode({"key": key})


def building_file_link(opportunity: Any, text: str | None = None) -> str:
    """The opportunity's address linked to its building file (escaped text only when it has no comparable address)."""
    if opportunity is None or not opportunity.address:
        return "–" if text is None else text
    if not opportunity.address_key:
        return opportunity.address if text is None else text
    return format_html('<a href="{}" class="building-file-link">{}</a>', building_file_url(opportunity.address_key),
                       opportunity.address if text is None else text)


def entity_summary(*, schema: str, epilot_id: str, opportunity: Any = None, order: Any = None, contact: Any = None) -> str:
    """An execution's or a step's entity as staff read it: its title (linked), its address (linked to the building
    file) and customer; an entity the mirror does not hold by its type and a short id."""
    entity = order or opportunity or contact
    if entity is None:
        return format_html('{} <span title="{}">{}…</span>', schema, epilot_id, epilot_id[:8])
    title = format_html('<a href="{}">{}</a>', reverse(f"admin:projects_{type(entity)._meta.model_name}_change",
                                                       args=[entity.pk]), entity)
    place = opportunity or (order.opportunity if order is not None else None)
    if place is None or not place.address:
        return title
    customer = place.customer.title if place.customer else ""
    return format_html('{}<br><small>{}{}</small>', title, building_file_link(place), f" · {customer}" if customer else "")


def audit_link(epilot_id: str) -> str:
    url = reverse("admin:projects_epilotwrite_changelist") + "?" + urlencode({"target_epilot_id": epilot_id})
    return format_html('<a href="{}">{}</a>', url, _("Audit history"))


def schema_of(obj: Any) -> str:
    return (
        getattr(obj, "schema", None)
        or {"contact": "contact", "opportunity": "opportunity", "order": "order"}[obj._meta.model_name]
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the sync or the services write; staff look, they do not edit."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
