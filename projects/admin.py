"""Admin for the mirror: read-only views of what epilot holds; changes go to epilot through services."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from projects import models
from projects.services.sync import sync_enqueue

PORTAL_PATHS = {"opportunity": "opportunities", "order": "orders"}


def portal_url(schema: str, epilot_id: str) -> str:
    """The entity in the epilot portal, as the guide links it."""
    base = settings.EPILOT_PORTAL_URL.rstrip("/")
    if schema in PORTAL_PATHS:
        return f"{base}/app/{PORTAL_PATHS[schema]}/{epilot_id}"
    return f"{base}/app/entities/{schema}/{epilot_id}"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Mirrored data is written by the sync only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MirroredAdmin(ReadOnlyAdmin):
    schema = ""
    list_filter = ["status", "epilot_deleted_at"]
    search_fields = ["title", "epilot_id"]
    date_hierarchy = "epilot_updated_at"
    list_per_page = 50

    @admin.display(description="epilot")
    def epilot_link(self, obj: Any) -> str:
        return format_html('<a href="{}" target="_blank" rel="noopener">Im Portal öffnen</a>', portal_url(self.schema, obj.epilot_id))


@admin.register(models.Contact)
class ContactAdmin(MirroredAdmin):
    schema = "contact"
    list_display = ["title", "email", "epilot_updated_at", "synced_at", "epilot_link"]
    search_fields = ["title", "email", "epilot_id"]


@admin.register(models.Opportunity)
class OpportunityAdmin(MirroredAdmin):
    schema = "opportunity"
    list_display = ["title", "status", "customer", "city", "budget", "epilot_updated_at", "epilot_link"]
    list_select_related = ["customer"]
    search_fields = ["title", "street", "city", "epilot_id"]


@admin.register(models.Order)
class OrderAdmin(MirroredAdmin):
    schema = "order"
    list_display = ["title", "status", "opportunity", "amount", "epilot_updated_at", "epilot_link"]
    list_select_related = ["opportunity"]

    @admin.display(description="Betrag", ordering="amount_total")
    def amount(self, obj: models.Order) -> str:
        return f"{obj.amount_total / 100:,.2f} {obj.currency}" if obj.amount_total is not None else "–"


@admin.register(models.GenericEntity)
class GenericEntityAdmin(MirroredAdmin):
    list_display = ["title", "schema", "status", "epilot_updated_at"]
    list_filter = ["schema", "status"]


@admin.register(models.WorkflowDefinition)
class WorkflowDefinitionAdmin(ReadOnlyAdmin):
    list_display = ["name", "epilot_id", "engine", "enabled", "step_count", "removed_in_epilot", "synced_at"]
    list_filter = ["engine", "enabled", "removed_in_epilot"]


@admin.register(models.WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyAdmin):
    list_display = ["name", "entity_schema", "status", "current_section", "current_step", "progress", "started_at"]
    list_filter = ["status", "engine", "entity_schema", "current_section"]
    search_fields = ["name", "epilot_id", "entity_epilot_id"]

    @admin.display(description="Fortschritt")
    def progress(self, obj: models.WorkflowExecution) -> str:
        return f"{obj.completed_steps}/{obj.total_steps}"


@admin.register(models.AusbauProject)
class AusbauProjectAdmin(ReadOnlyAdmin):
    list_display = ["title", "phase", "progress_percent", "current_section", "budget", "has_running_workflow", "updated_at"]
    list_filter = ["phase", "has_running_workflow"]
    search_fields = ["title", "opportunity__street", "opportunity__city"]


@admin.register(models.QuarantinedEntity)
class QuarantinedEntityAdmin(admin.ModelAdmin):
    list_display = ["schema", "epilot_id", "reason", "first_seen_at", "last_seen_at"]
    list_filter = ["schema"]
    search_fields = ["epilot_id", "reason"]
    readonly_fields = [f.name for f in models.QuarantinedEntity._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(models.SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["schema", "watermark_updated_at", "watermark_id", "last_success_at", "lock_owner", "lock_expires_at"]


@admin.register(models.SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "trigger", "status", "created", "updated", "deleted", "quarantined", "pages", "error"]
    list_filter = ["status", "trigger"]
    change_list_template = "admin/projects/syncrun/change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):  # noqa: ANN201 - Django's signature
        extra_context = {**(extra_context or {}), "can_run_sync": request.user.has_perm("projects.run_sync")}
        return super().changelist_view(request, extra_context)

    def get_urls(self):  # noqa: ANN201 - Django's signature
        return [path("sync-now/", self.admin_site.admin_view(self.sync_now), name="projects_syncrun_sync_now"), *super().get_urls()]

    def sync_now(self, request: HttpRequest) -> HttpResponseRedirect:
        if request.method != "POST" or not request.user.has_perm("projects.run_sync"):
            messages.error(request, "Keine Berechtigung, einen Sync zu starten.")
            return HttpResponseRedirect(reverse("admin:projects_syncrun_changelist"))
        run = sync_enqueue(trigger=models.SyncRun.Trigger.ADMIN)
        messages.success(request, f"Sync eingeplant (Lauf #{run.pk}); ein Worker startet ihn gleich.")
        return HttpResponseRedirect(reverse("admin:projects_syncrun_change", args=[run.pk]))
