"""API clients of the REST API: tokens shown once, revocation, rotation."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.forms import ApiClientForm
from projects.services.api_clients import api_client_issue_token, api_client_revoke, api_client_rotate
from projects.services.errors import ServiceError
from projects.templatetags.backoffice import badge


@admin.register(models.ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    form = ApiClientForm
    list_display = ["name", "scopes", "throttle_rate", "active_badge", "last_used_at", "created_at"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_action", "rotate_action"]

    @admin.display(description=_("active"))
    def active_badge(self, obj: models.ApiClient) -> str:
        return badge("succeeded", _("active")) if obj.is_active else badge("failed", _("revoked"))

    def save_model(self, request: HttpRequest, obj: models.ApiClient, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        token = api_client_issue_token(obj)
        self.message_user(request, format_html(_("Token for '{}' (shown only now): <code id='new-api-token'>{}</code>"),
                                               obj.name, token), messages.WARNING)

    @admin.action(description=_("Revoke"), permissions=["change"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in queryset:
            api_client_revoke(client)
        self.message_user(request, _("%(count)d client(s) revoked.") % {"count": queryset.count()}, messages.SUCCESS)

    @admin.action(description=_("Issue a new token"), permissions=["change"])
    def rotate_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in queryset:
            try:
                token = api_client_rotate(client)
            except ServiceError as exc:
                self.message_user(request, f"{client.name}: {exc.message}", messages.ERROR)
                continue
            self.message_user(request,
                              format_html(_("New token for '{}' (visible only now): <code>{}</code>"), client.name, token),
                              messages.WARNING)
