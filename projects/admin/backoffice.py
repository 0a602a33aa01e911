"""What the back-office did and decides: the audit trail, conversions and local rules."""
from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import ReadOnlyAdmin, ReadOnlyInline, portal_link
from projects.forms import AutomationRuleForm
from projects.selectors import automation_owning_trigger
from projects.services.conversion import opportunity_convert
from projects.services.errors import ServiceError
from projects.templatetags.backoffice import badge


@admin.register(models.EpilotWrite)
class EpilotWriteAdmin(ReadOnlyAdmin):
    list_display = ["started_display", "action", "result_badge", "by_display", "target_display"]
    list_filter = ["action", "result", "target_schema", "actor"]
    search_fields = ["target_epilot_id", "epilot_ids", "error"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Each write with the title of its target as the mirror holds it (an indexed read per row shown)."""
        titles = [model.objects.filter(epilot_id=OuterRef("target_epilot_id")).values("title")[:1]
                  for model in (models.Opportunity, models.Order, models.Contact, models.GenericEntity)]
        executions = models.WorkflowExecution.objects.filter(epilot_id=OuterRef("target_epilot_id")).values("name")[:1]
        return super().get_queryset(request).annotate(
            target_title=Coalesce(*(Subquery(title) for title in titles), Subquery(executions)))

    @admin.display(description=_("started"), ordering="started_at")
    def started_display(self, obj: models.EpilotWrite) -> str:
        return formats.date_format(timezone.localtime(obj.started_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("triggered by"), ordering="actor")
    def by_display(self, obj: models.EpilotWrite) -> str:
        """The colleague (else the actor: a command, a rule, an API client), and under it why a write failed."""
        who = obj.user.get_full_name() or obj.user.get_username() if obj.user else obj.actor
        return format_html("{}<br><small>{}</small>", who, obj.error[:200]) if obj.error else who

    @admin.display(description=_("target"), ordering="target_epilot_id")
    def target_display(self, obj: models.EpilotWrite) -> str:
        """What was written to, by its title; its type and a short id when the mirror does not hold it."""
        title = getattr(obj, "target_title", None)
        if title:
            return format_html('{}<br><small title="{}">{}</small>', title, obj.target_epilot_id, obj.target_schema)
        if obj.target_epilot_id:
            return format_html('{} <small title="{}">{}…</small>', obj.target_schema, obj.target_epilot_id,
                               obj.target_epilot_id[:8])
        return obj.target_schema or "–"

    @admin.display(description=_("result"), ordering="result")
    def result_badge(self, obj: models.EpilotWrite) -> str:
        return badge(obj.result, obj.get_result_display())

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "target_epilot_id" or super().lookup_allowed(lookup, value, request)


class ConversionWriteInline(ReadOnlyInline):
    model = models.EpilotWrite
    fields = ["started_at", "action", "result", "epilot_ids", "error"]
    readonly_fields = fields
    show_change_link = True
    verbose_name_plural = _("steps in epilot")


@admin.register(models.Conversion)
class ConversionAdmin(ReadOnlyAdmin):
    list_display = ["opportunity_display", "step", "status_badge", "requested_by", "updated_display"]
    list_select_related = ["opportunity", "requested_by"]
    list_filter = ["status", "step"]
    search_fields = ["opportunity__title", "order_title", "order_epilot_id", "key"]
    actions = ["resume_action"]
    inlines = [ConversionWriteInline]
    readonly_fields = [
        "opportunity",
        "order_link",
        "key",
        "definition",
        "resume_link",
        "source_status",
        "target_status",
        "order_title",
        "amount_total",
        "currency",
        "step",
        "status",
        "error",
        "execution_epilot_id",
        "requested_by",
        "created_at",
        "updated_at",
    ]
    exclude = ["claimed_until", "order_epilot_id"]

    @admin.display(description=_("opportunity"), ordering="opportunity__title")
    def opportunity_display(self, obj: models.Conversion) -> str:
        """The opportunity, and under it the order it becomes."""
        return format_html("{}<br><small>→ {}</small>", obj.opportunity, obj.order_title) if obj.order_title \
            else str(obj.opportunity)

    @admin.display(description=_("updated"), ordering="updated_at")
    def updated_display(self, obj: models.Conversion) -> str:
        return formats.date_format(timezone.localtime(obj.updated_at), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: models.Conversion) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description=_("resume"))
    def resume_link(self, obj: models.Conversion) -> str:
        if obj.status == models.Conversion.Status.DONE:
            return "–"
        return format_html('<a href="{}">{}</a>', reverse("admin:projects_opportunity_convert", args=[obj.opportunity_id]),
                           _("Resume with (another) workflow …"))

    @admin.display(description=_("order in epilot"))
    def order_link(self, obj: models.Conversion) -> str:
        return portal_link("order", obj.order_epilot_id) if obj.order_epilot_id else "–"

    def has_convert_opportunity_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.convert_opportunity")

    @admin.action(description=_("Resume conversion"), permissions=["convert_opportunity"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for conversion in queryset.exclude(status=models.Conversion.Status.DONE).select_related("opportunity", "definition"):
            try:
                opportunity_convert(opportunity=conversion.opportunity, definition=conversion.definition, user=request.user)
            except ServiceError as exc:
                self.message_user(request, f"{conversion}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, _("%(conversion)s: completed.") % {"conversion": conversion}, messages.SUCCESS)


@admin.register(models.AutomationRule)
class AutomationRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "trigger", "definition", "owner", "firings_count", "failed_starts"]
    list_filter = ["enabled", "schema"]
    form = AutomationRuleForm

    @admin.display(description=_("trigger"))
    def trigger(self, obj: models.AutomationRule) -> str:
        return f"{obj.schema}.{obj.attribute} = {obj.value}"

    @admin.display(description=_("who triggers?"))
    def owner(self, obj: models.AutomationRule) -> str:
        automation = automation_owning_trigger(schema=obj.schema, attribute=obj.attribute, value=obj.value,
                                                 definition_epilot_id=obj.definition.epilot_id)
        if automation:
            return badge("conflict", _("epilot automation '%(name)s' (the rule has no effect)") % {"name": automation.name})
        return badge("started", _("this local rule")) if obj.enabled else badge("skipped", _("nobody (rule off)"))

    @admin.display(description=_("fired"))
    def firings_count(self, obj: models.AutomationRule) -> int:
        return obj.firings.count()

    @admin.display(description=_("failed starts"))
    def failed_starts(self, obj: models.AutomationRule) -> str:
        failed = models.WorkflowStart.objects.filter(actor=f"rule:{obj.pk}", status=models.WorkflowStart.Status.FAILED).count()
        if not failed:
            return "0"
        url = (
            reverse("admin:projects_workflowstart_changelist") + "?" + urlencode({"actor": f"rule:{obj.pk}", "status": "failed"})
        )
        return format_html('<a href="{}">{}</a> {}', url, failed, badge("failed", _("retried on the next change")))
