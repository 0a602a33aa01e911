"""Workflow definitions, executions and the starts made from here (single and as jobs)."""
from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import ReadOnlyAdmin, ReadOnlyInline, entity_summary
from projects.admin.steps import close_execution_view
from projects.selectors import job_progress
from projects.templatetags.backoffice import badge, colleagues
from projects.validation import parse_id


@admin.register(models.WorkflowDefinition)
class WorkflowDefinitionAdmin(ReadOnlyAdmin):
    list_display = ["name", "epilot_id", "engine", "enabled", "sections_display", "step_count", "removed_in_epilot", "synced_at"]
    list_filter = ["engine", "enabled", "removed_in_epilot"]
    search_fields = ["name", "epilot_id"]
    exclude = ["payload"]

    @admin.display(description=_("sections"))
    def sections_display(self, obj: models.WorkflowDefinition) -> str:
        return " → ".join(obj.sections)


@admin.register(models.WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyAdmin):
    list_display = ["name_display", "entity_link", "status_badge", "current_display", "progress"]
    list_select_related = ["opportunity__customer", "order__opportunity__customer", "contact"]
    list_filter = ["status", "engine", "entity_schema", "current_section"]
    search_fields = ["name", "epilot_id", "entity_epilot_id"]
    date_hierarchy = "started_at"
    fieldsets = [
        (None, {"fields": ["name", "entity_link", "status_badge", "current_display", "progress", "started_at",
                           "completed_at", "epilot_updated_at", "steps_table"]}),
        (_("Technical details from epilot"), {"classes": ["collapse"], "fields": [
            "epilot_id", "engine", "definition", "definition_epilot_id", "entity_schema", "entity_epilot_id", "synced_at"]}),
    ]
    readonly_fields = ["entity_link", "status_badge", "current_display", "progress", "steps_table"]
    change_form_template = "admin/projects/workflowexecution/change_form.html"

    def get_urls(self) -> list:
        urls = [path("<path:object_id>/close/", self.admin_site.admin_view(self.close_view),
                     name="projects_workflowexecution_close")]
        return urls + super().get_urls()

    def close_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if not request.user.has_perm("projects.work_steps"):
            raise PermissionDenied
        execution = get_object_or_404(models.WorkflowExecution, pk=parse_id(object_id))
        return close_execution_view(self, request, execution)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_work_steps": request.user.has_perm("projects.work_steps")}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: models.WorkflowExecution) -> str:
        return badge(obj.status)

    @admin.display(description=_("workflow"), ordering="name")
    def name_display(self, obj: models.WorkflowExecution) -> str:
        started = formats.date_format(timezone.localtime(obj.started_at), "SHORT_DATE_FORMAT") if obj.started_at else ""
        return format_html("{}<br><small>{}</small>", obj.name or obj.definition_epilot_id,
                           _("started %(day)s") % {"day": started} if started else "")

    @admin.display(description=_("current step"), ordering="current_step")
    def current_display(self, obj: models.WorkflowExecution) -> str:
        if not obj.current_step:
            return "–"
        return format_html("{}<br><small>{}</small>", obj.current_step, obj.current_section) if obj.current_section \
            else obj.current_step

    @admin.display(description=_("progress"))
    def progress(self, obj: models.WorkflowExecution) -> str:
        return format_html('<progress max="{}" value="{}" style="width:70px"></progress> {}/{}', obj.total_steps or 1,
                           obj.completed_steps, obj.completed_steps, obj.total_steps)

    @admin.display(description=_("entity"))
    def entity_link(self, obj: models.WorkflowExecution) -> str:
        return entity_summary(schema=obj.entity_schema, epilot_id=obj.entity_epilot_id, opportunity=obj.opportunity,
                              order=obj.order, contact=obj.contact)

    @admin.display(description=_("steps"))
    def steps_table(self, obj: models.WorkflowExecution) -> str:
        steps = list(obj.steps.all())
        if not steps:
            return "–"
        rows = format_html_join("", '<tr><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>',
                                ((step.section, reverse("admin:projects_mirroredstep_change", args=[step.pk]), step.name,
                                  badge(step.status), colleagues(step.assigned_to),
                                  formats.date_format(timezone.localtime(step.due_date), "SHORT_DATE_FORMAT")
                                  if step.due_date else "")
                                 for step in steps))
        return format_html("<table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>",
                           _("section"), _("step"), _("status"), _("assigned to"), _("due"), rows)


class JobItemInline(ReadOnlyInline):
    model = models.WorkflowStart
    fields = ["entity_schema", "entity_title", "status", "execution_epilot_id", "error"]
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = _("single starts")


@admin.register(models.WorkflowStartJob)
class WorkflowStartJobAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "definition", "status", "requested_by", "finished_at"]
    inlines = [JobItemInline]
    change_form_template = "admin/projects/workflowstartjob/change_form.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        job = get_object_or_404(models.WorkflowStartJob, pk=parse_id(object_id))
        progress = job_progress(job)
        extra_context = {**(extra_context or {}), "job": job, "counts": progress.counts, "total": progress.total,
                         "done": progress.done, "percent": progress.percent}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(models.WorkflowStart)
class WorkflowStartAdmin(ReadOnlyAdmin):
    list_display = ["created_display", "definition_name", "entity_display", "status_display"]
    list_select_related = ["definition"]
    list_filter = ["status", "entity_schema", "actor"]
    search_fields = ["entity_epilot_id", "entity_title", "execution_epilot_id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        mirrored = models.WorkflowExecution.objects.filter(epilot_id=OuterRef("execution_epilot_id")).values("pk")[:1]
        return super().get_queryset(request).annotate(execution_pk=Subquery(mirrored))

    @admin.display(description=_("created"), ordering="created_at")
    def created_display(self, obj: models.WorkflowStart) -> str:
        """When, and under it who (a colleague, a command, a rule, an API client)."""
        return format_html("{}<br><small>{}</small>", formats.date_format(timezone.localtime(obj.created_at),
                                                                          "SHORT_DATETIME_FORMAT"), obj.actor)

    @admin.display(description=_("workflow"), ordering="definition__name")
    def definition_name(self, obj: models.WorkflowStart) -> str:
        """The workflow, and under it the execution it started."""
        return format_html("{}<br><small>{}</small>", obj.definition.name, self.execution_display(obj))

    @admin.display(description=_("entity"), ordering="entity_title")
    def entity_display(self, obj: models.WorkflowStart) -> str:
        return format_html("{}<br><small>{}</small>", obj.entity_title or obj.entity_epilot_id[:8] + "…", obj.entity_schema)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj: models.WorkflowStart) -> str:
        """The status, and under it why a start failed (wrapped, so the list stays as wide as the page)."""
        if obj.error:
            return format_html('{}<br><small class="errornote-inline">{}</small>', obj.get_status_display(), obj.error)
        return obj.get_status_display()

    @admin.display(description=_("workflow execution"))
    def execution_display(self, obj: models.WorkflowStart) -> str:
        """The started execution, linked once the mirror holds it; its id shortened until then."""
        if getattr(obj, "execution_pk", None):
            return format_html('<a href="{}">{} ›</a>', reverse("admin:projects_workflowexecution_change",
                                                               args=[obj.execution_pk]), _("workflow execution"))
        if obj.execution_epilot_id:
            return format_html('<span title="{}">{}…</span>', obj.execution_epilot_id, obj.execution_epilot_id[:8])
        return "–"
