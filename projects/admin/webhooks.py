"""The live-mirror webhook: what is provisioned in epilot, provisioning and rotating it, replaying failed deliveries."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import ReadOnlyAdmin
from projects.mirror.schemas import configured_schemas
from projects.services.errors import ServiceError
from projects.services.webhook_subscriptions import webhook_provision, webhook_reconcile

PERMISSION = "projects.provision_webhook"


class ProvisionWebhookForm(forms.Form):
    url = forms.URLField(label=_("Receiver URL"), max_length=500, assume_scheme="https",
                         help_text=_("Where epilot sends changes: this back-office's /webhooks/epilot/ as reached from the "
                                     "internet."))
    schemas = forms.MultipleChoiceField(label=_("Entity types"), widget=forms.CheckboxSelectMultiple)
    rotate = forms.BooleanField(label=_("Rotate the signing secret"), required=False,
                                help_text=_("Replaces the webhook config in epilot; the old secret stays valid for an hour."))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["schemas"].choices = [(schema, schema) for schema in configured_schemas()]


@admin.register(models.WebhookSubscription)
class WebhookSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["name", "url", "config_id", "secret_hint", "provisioned_at", "rotated_at", "reconciled_at"]
    fields = ["name", "url", "config_id", "schemas", "flow_ids", "secret_hint", "provisioned_at", "rotated_at",
              "previous_valid_until", "reconciled_at"]

    def get_urls(self) -> list:
        return [
            path("provision/", self.admin_site.admin_view(self.provision_view), name="projects_webhooksubscription_provision"),
            path("replay/", self.admin_site.admin_view(self.replay_view), name="projects_webhooksubscription_replay"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {}), "can_provision": request.user.has_perm(PERMISSION)}
        return super().changelist_view(request, extra_context)

    def provision_view(self, request: HttpRequest) -> HttpResponse:
        """Create or update the webhook and its flows in epilot (confirmation form, then one audited run)."""
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied
        current = models.WebhookSubscription.objects.first()
        initial = {"url": current.url if current else request.build_absolute_uri(reverse("epilot-webhook")),
                   "schemas": current.schemas if current and current.schemas else configured_schemas()}
        form = ProvisionWebhookForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                report = webhook_provision(url=form.cleaned_data["url"], schemas=form.cleaned_data["schemas"],
                                           rotate=form.cleaned_data["rotate"], user=request.user, actor="admin")
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                text = _("The webhook is provisioned (signing secret %(hint)s, stored encrypted).") if report.changed else \
                    _("The webhook was already provisioned this way; nothing changed.")
                self.message_user(request, text % {"hint": report.subscription.secret_hint}, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_webhooksubscription_changelist"))
        context = {**self.admin_site.each_context(request), "title": _("Provision the epilot webhook"),
                   "opts": self.model._meta, "form": form, "current": current}
        return TemplateResponse(request, "admin/projects/webhook_provision.html", context)

    def replay_view(self, request: HttpRequest) -> HttpResponse:
        """Ask epilot to deliver failed deliveries again (POST only)."""
        if not request.user.has_perm(PERMISSION) or request.method != "POST":
            raise PermissionDenied
        try:
            count = webhook_reconcile(user=request.user, actor="admin")
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, _("%(count)d failed deliveries replayed.") % {"count": count}, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:projects_webhooksubscription_changelist"))
