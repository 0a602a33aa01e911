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
