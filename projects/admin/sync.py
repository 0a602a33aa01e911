"""The sync: runs, per-schema state, quarantine, and the schedule (django-celery-beat, with guarded actions)."""
from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from kombu import exceptions as kombu_exceptions

from projects import models
from projects.admin.base import ReadOnlyAdmin
from projects.services.reconcile import schema_attributes_acknowledge
from projects.services.sync import sync_enqueue
from projects.services.webhooks import webhook_events_process
from projects.templatetags.backoffice import badge


@admin.register(models.QuarantinedEntity)
class QuarantinedEntityAdmin(ReadOnlyAdmin):
    list_display = ["schema", "epilot_id", "reason", "first_seen_at", "last_seen_at"]
    list_filter = ["schema"]
    search_fields = ["epilot_id", "reason"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("projects.delete_quarantinedentity")


@admin.register(models.Reconciliation)
class ReconciliationAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "schema", "status", "epilot_count", "mirror_count", "deleted_found", "missing_found",
                    "newer_found", "webhook_gaps", "requests", "error"]
    list_filter = ["schema", "status"]


@admin.register(models.SchemaAttribute)
class SchemaAttributeAdmin(ReadOnlyAdmin):
    """Attributes epilot sends per schema; new ones and type changes are announced until acknowledged."""

    list_display = ["schema", "name", "kind", "previous_kind", "first_seen", "kind_changed_at", "baseline", "acknowledged_at"]
    list_filter = ["schema", "baseline", ("acknowledged_at", admin.EmptyFieldListFilter)]
    search_fields = ["name"]
    actions = ["acknowledge"]

    @admin.action(description=_("Acknowledge selected attributes (no longer announced)"), permissions=["change"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = schema_attributes_acknowledge(queryset)
        self.message_user(request, _("%(count)d attributes acknowledged.") % {"count": count}, messages.SUCCESS)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and request.user.has_perm("projects.change_schemaattribute")  # the action; no edit form


@admin.register(models.SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["schema", "watermark_updated_at", "watermark_id", "last_success_at", "lock_owner", "lock_expires_at"]


@admin.register(models.SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = [
        "started_at",
        "trigger",
        "status_badge",
        "created",
        "updated",
        "deleted",
        "quarantined",
        "pages",
        "duration",
        "error",
    ]
    list_filter = ["status", "trigger"]
    date_hierarchy = "started_at"
    change_list_template = "admin/projects/syncrun/change_list.html"

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: models.SyncRun) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description=_("duration"))
    def duration(self, obj: models.SyncRun) -> str:
        return f"{obj.duration_seconds:.1f} s" if obj.duration_seconds is not None else "–"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {}), "can_run_sync": request.user.has_perm("projects.run_sync")}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("sync-now/", self.admin_site.admin_view(self.sync_now), name="projects_syncrun_sync_now"),
            *super().get_urls(),
        ]

    def sync_now(self, request: HttpRequest) -> HttpResponseRedirect:
        if request.method != "POST" or not request.user.has_perm("projects.run_sync"):
            messages.error(request, _("You may not start a sync."))
            return HttpResponseRedirect(reverse("admin:projects_syncrun_changelist"))
        run = sync_enqueue(trigger=models.SyncRun.Trigger.ADMIN)
        messages.success(request, _("Sync queued (run #%(run)s); a worker starts it shortly.") % {"run": run.pk})
        return HttpResponseRedirect(reverse("admin:projects_syncrun_change", args=[run.pk]))


class GuardedPeriodicTaskAdmin(PeriodicTaskAdmin):
    """django-celery-beat's admin, whose actions declare no permission: here each needs `change`."""

    @admin.action(description=_("Enable selected tasks"), permissions=["change"])
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().enable_tasks(request, queryset)

    @admin.action(description=_("Disable selected tasks"), permissions=["change"])
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().disable_tasks(request, queryset)

    @admin.action(description=_("Toggle activity of selected tasks"), permissions=["change"])
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().toggle_tasks(request, queryset)

    @admin.action(description=_("Run selected tasks"), permissions=["change"])
    def run_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            super().run_tasks(request, queryset)
        except (ValueError, TypeError, kombu_exceptions.KombuError, OSError) as exc:
            # Malformed JSON arguments or an unreachable broker: say so instead of a server error.
            error = f"{type(exc).__name__}: {exc}"
            self.message_user(request, _("Tasks not queued: %(error)s") % {"error": error}, messages.ERROR)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, GuardedPeriodicTaskAdmin)


class GuardedAccessAttemptAdmin(AccessAttemptAdmin):
    """django-axes' login attempts; deleting one unlocks its username or address. Its action needs `delete`."""

    @admin.action(description=_("Clean up expired attempts"), permissions=["delete"])
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet) -> None:
        super().cleanup_expired_attempts(request, queryset)


admin.site.unregister(AccessAttempt)
admin.site.register(AccessAttempt, GuardedAccessAttemptAdmin)


@admin.register(models.WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "webhook_id", "schema", "entity_epilot_id", "outcome_badge", "latency", "attempts", "error"]
    list_filter = ["outcome", "schema"]
    search_fields = ["webhook_id", "event_id", "entity_epilot_id"]
    date_hierarchy = "received_at"
    actions = ["reprocess"]

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_badge(self, obj: models.WebhookEvent) -> str:
        colour = {"processed": "succeeded", "failed": "failed"}.get(obj.outcome, "pending")
        return badge(colour, obj.get_outcome_display())

    @admin.display(description=_("latency to the mirror"))
    def latency(self, obj: models.WebhookEvent) -> str:
        return "–" if obj.latency_seconds is None else f"{obj.latency_seconds:.2f} s"

    def has_run_sync_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.run_sync")

    @admin.action(description=_("Process selected events again (re-read the entities from epilot)"), permissions=["run_sync"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet) -> None:
        outcomes = [event.outcome for event in webhook_events_process(list(queryset.order_by("received_at")[:200]))]
        self.message_user(request, _("%(done)d of %(total)d events processed.") % {
            "done": outcomes.count(models.WebhookEvent.Outcome.PROCESSED), "total": len(outcomes)}, messages.SUCCESS)
