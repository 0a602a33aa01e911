"""The back-office in the Django admin.

Mirrored data is read-only here: the sync writes it, and every change goes to epilot through a
service (workflow starts, conversions, status writes, automation) and comes back on the next sync.
Actions and buttons are thin adapters: they parse the form, call one service, show its message.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from kombu import exceptions as kombu_exceptions

from integrations.epilot.types import WorkflowExecution as RemoteExecution
from projects import models
from projects.formatting import format_amount, portal_url
from projects.forms import KNOWN_OPPORTUNITY_STATUSES, ConvertForm, StartWorkflowForm, StatusForm
from projects.services.api_clients import api_client_issue_token, api_client_revoke, api_client_rotate, parse_throttle_rate
from projects.services.automations import AUSBAU_FLOW_NAME, automation_provision
from projects.services.conversion import conversion_preview, opportunity_convert
from projects.services.errors import ServiceError, StatusConflict
from projects.services.status import opportunity_set_status
from projects.services.sync import sync_enqueue
from projects.services.workflows import workflow_start, workflow_start_many
from projects.templatetags.backoffice import badge
from projects.validation import parse_id, parse_id_list

def portal_link(schema: str, epilot_id: str) -> str:
    return format_html('<a href="{}" target="_blank" rel="noopener">In epilot öffnen ↗</a>', portal_url(schema, epilot_id))


def audit_link(epilot_id: str) -> str:
    url = reverse("admin:projects_epilotwrite_changelist") + "?" + urlencode({"target_epilot_id": epilot_id})
    return format_html('<a href="{}">Audit-Verlauf</a>', url)


def schema_of(obj: Any) -> str:
    return getattr(obj, "schema", None) or {"contact": "contact", "opportunity": "opportunity", "order": "order"}[obj._meta.model_name]


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


class ExecutionInline(ReadOnlyInline):
    model = models.WorkflowExecution
    fk_name = "opportunity"
    fields = ["name", "status_badge", "current_section", "current_step", "progress", "started_at"]
    readonly_fields = fields
    verbose_name_plural = "Workflows"

    @admin.display(description="Status")
    def status_badge(self, obj: models.WorkflowExecution) -> str:
        return badge(obj.status)

    @admin.display(description="Fortschritt")
    def progress(self, obj: models.WorkflowExecution) -> str:
        return f"{obj.completed_steps}/{obj.total_steps} ({obj.progress_percent} %)"


class OrderExecutionInline(ExecutionInline):
    fk_name = "order"


class ContactExecutionInline(ExecutionInline):
    fk_name = "contact"


class OrderInline(ReadOnlyInline):
    model = models.Order
    fk_name = "opportunity"
    fields = ["title", "status_badge", "amount", "epilot_updated_at"]
    readonly_fields = fields
    verbose_name_plural = "Aufträge"

    @admin.display(description="Status")
    def status_badge(self, obj: models.Order) -> str:
        return badge(obj.status)

    @admin.display(description="Betrag")
    def amount(self, obj: models.Order) -> str:
        return format_amount(obj.amount_total, obj.currency)


class MirroredAdmin(ReadOnlyAdmin):
    """Lists and detail pages of mirrored entities, with 'start workflow' for every schema."""

    list_filter = ["status", ("epilot_deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "epilot_id"]
    date_hierarchy = "epilot_updated_at"
    list_per_page = 50
    actions = ["start_workflow_action"]
    change_form_template = "admin/projects/entity_change_form.html"
    exclude = ["payload"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields if f.name not in ("id", "payload")] + ["links", "payload_pretty"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        technical = [name for name in self.get_readonly_fields(request, obj)
                     if name.endswith("epilot_id") or name.startswith("epilot_") or name in ("synced_at", "payload_pretty", "tags")]
        main = [name for name in self.get_readonly_fields(request, obj) if name not in technical]
        return [(None, {"fields": main}), ("Technische Details aus epilot", {"classes": ["collapse"], "fields": technical})]

    @admin.display(description="epilot")
    def epilot_link(self, obj: Any) -> str:
        return format_html('<a href="{}" target="_blank" rel="noopener" title="In epilot öffnen">↗ Portal</a>',
                           portal_url(schema_of(obj), obj.epilot_id))

    @admin.display(description="Links")
    def links(self, obj: Any) -> str:
        return format_html("{} · {}", portal_link(schema_of(obj), obj.epilot_id), audit_link(obj.epilot_id))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Any) -> str:
        return badge(obj.status)

    @admin.display(description="Zuletzt synchronisiert", ordering="synced_at")
    def last_sync(self, obj: Any) -> Any:
        return obj.synced_at

    @admin.display(description="Daten aus epilot")
    def payload_pretty(self, obj: Any) -> str:
        import json

        return format_html("<pre style='max-height:400px;overflow:auto;white-space:pre-wrap'>{}</pre>",
                           json.dumps(obj.payload, indent=2, ensure_ascii=False))

    def has_start_workflow_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.start_workflow")

    @admin.action(description="Workflow starten …", permissions=["start_workflow"])
    def start_workflow_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(reverse(f"admin:projects_{self.model._meta.model_name}_start_workflow") + f"?ids={ids}")

    def get_urls(self):  # noqa: ANN201 - Django's signature
        name = self.model._meta.model_name
        return [
            path("start-workflow/", self.admin_site.admin_view(self.start_workflow_view), name=f"projects_{name}_start_workflow"),
            *self.extra_urls(),
            *super().get_urls(),
        ]

    def extra_urls(self) -> list:
        return []

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "entity_buttons": self.entity_buttons(request, object_id)}
        return super().change_view(request, object_id, form_url, extra_context)

    def entity_buttons(self, request: HttpRequest, object_id: str) -> list[tuple[str, str]]:
        buttons = []
        if self.has_start_workflow_permission(request):
            url = reverse(f"admin:projects_{self.model._meta.model_name}_start_workflow") + f"?ids={object_id}"
            buttons.append(("Workflow starten", url))
        return buttons

    def start_workflow_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_start_workflow_permission(request):
            raise Http404
        ids = parse_id_list(request.POST.get("ids") or request.GET.get("ids", ""))
        if ids is None:
            return HttpResponseBadRequest("ids: comma-separated whole numbers expected")
        entities = list(self.model.objects.filter(pk__in=ids, epilot_deleted_at__isnull=True))
        if not entities:
            self.message_user(request, "Keine (nicht gelöschten) Einträge ausgewählt.", messages.WARNING)
            return HttpResponseRedirect(reverse(f"admin:projects_{self.model._meta.model_name}_changelist"))
        form = StartWorkflowForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            definition = form.cleaned_data["definition"]
            allow_duplicate = form.cleaned_data["allow_duplicate"]
            if len(entities) == 1:
                entity = entities[0]
                try:
                    start = workflow_start(definition=definition, schema=schema_of(entity), entity_id=entity.epilot_id,
                                           entity_title=entity.title, user=request.user, allow_duplicate=allow_duplicate)
                except ServiceError as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                else:
                    self.message_user(request, f"'{definition.name}' auf '{entity.title}' gestartet (Ausführung {start.execution_epilot_id}).",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(reverse(f"admin:projects_{self.model._meta.model_name}_change", args=[entity.pk]))
            else:
                try:
                    job = workflow_start_many(definition=definition, user=request.user, allow_duplicate=allow_duplicate,
                                              entities=[(schema_of(e), e.epilot_id, e.title) for e in entities])
                except ServiceError as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                else:
                    self.message_user(request, f"{len(entities)} Starts eingeplant; der Fortschritt steht unten.", messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:projects_workflowstartjob_change", args=[job.pk]))
        running = {}
        for execution in models.WorkflowExecution.objects.filter(entity_epilot_id__in=[e.epilot_id for e in entities], status="STARTED"):
            running.setdefault(execution.entity_epilot_id, []).append(execution.name or execution.definition_epilot_id)
        context = {
            **self.admin_site.each_context(request), "title": "Workflow starten", "opts": self.model._meta, "form": form,
            "ids": ",".join(str(e.pk) for e in entities),
            "rows": [(e, schema_of(e), running.get(e.epilot_id, [])) for e in entities],
        }
        return TemplateResponse(request, "admin/projects/start_workflow.html", context)


@admin.register(models.Contact)
class ContactAdmin(MirroredAdmin):
    list_display = ["title", "email", "last_sync", "epilot_link"]
    list_filter = [("epilot_deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "email", "epilot_id"]
    inlines = [ContactExecutionInline]


class PhaseFilter(admin.SimpleListFilter):
    title = "Projektphase"
    parameter_name = "phase"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(models.AusbauProject.Phase.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(project__phase=self.value()) if self.value() else queryset


class HasOrderFilter(admin.SimpleListFilter):
    title = "Auftrag"
    parameter_name = "has_order"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "mit Auftrag"), ("no", "ohne Auftrag")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(orders__isnull=False).distinct()
        if self.value() == "no":
            return queryset.filter(orders__isnull=True)
        return queryset


@admin.register(models.Opportunity)
class OpportunityAdmin(MirroredAdmin):
    list_display = ["title", "status_badge", "customer", "address_display", "budget_display", "phase", "workflow_progress",
                    "epilot_link"]
    list_select_related = ["customer", "project"]
    list_filter = ["status", PhaseFilter, HasOrderFilter, ("epilot_deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "street", "city", "postal_code", "customer__title", "epilot_id"]
    actions = ["start_workflow_action", "convert_action"]
    inlines = [OrderInline, ExecutionInline]

    @admin.display(description="Adresse", ordering="street")
    def address_display(self, obj: models.Opportunity) -> str:
        return obj.address or "–"

    @admin.display(description="Budget", ordering="budget")
    def budget_display(self, obj: models.Opportunity) -> str:
        return format_amount(int(obj.budget * 100), "EUR") if obj.budget is not None else "–"

    @admin.display(description="Phase", ordering="project__phase")
    def phase(self, obj: models.Opportunity) -> str:
        project = getattr(obj, "project", None)
        return badge(project.phase, project.get_phase_display()) if project else "–"

    @admin.display(description="Workflow")
    def workflow_progress(self, obj: models.Opportunity) -> str:
        project = getattr(obj, "project", None)
        if not project or not (project.has_running_workflow or project.progress_percent):
            return "–"
        return format_html('<progress max="100" value="{}" style="width:70px"></progress> {} % {}', project.progress_percent,
                           project.progress_percent, project.current_section)

    def has_convert_opportunity_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.convert_opportunity")

    def has_write_status_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.write_status")

    @admin.action(description="In Auftrag umwandeln …", permissions=["convert_opportunity"])
    def convert_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect | None:
        if queryset.count() != 1:
            self.message_user(request, "Bitte genau eine Opportunity zum Umwandeln auswählen.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:projects_opportunity_convert", args=[queryset.get().pk]))

    def extra_urls(self) -> list:
        return [
            path("<int:pk>/convert/", self.admin_site.admin_view(self.convert_view), name="projects_opportunity_convert"),
            path("<int:pk>/status/", self.admin_site.admin_view(self.status_view), name="projects_opportunity_status"),
        ]

    def entity_buttons(self, request: HttpRequest, object_id: str) -> list[tuple[str, str]]:
        buttons = super().entity_buttons(request, object_id)
        if self.has_convert_opportunity_permission(request):
            buttons.append(("In Auftrag umwandeln", reverse("admin:projects_opportunity_convert", args=[object_id])))
        if self.has_write_status_permission(request):
            buttons.append(("Status ändern", reverse("admin:projects_opportunity_status", args=[object_id])))
        return buttons

    def convert_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_convert_opportunity_permission(request):
            raise Http404
        opportunity = get_object_or_404(models.Opportunity.objects.select_related("customer"), pk=parse_id(pk))
        existing = models.Conversion.objects.filter(opportunity=opportunity).first()
        initial = {"amount": opportunity.budget} if opportunity.budget is not None else {}
        form = ConvertForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                conversion = opportunity_convert(opportunity=opportunity, definition=form.cleaned_data["definition"],
                                                 amount_total=form.amount_cents(), target_status=form.cleaned_data["target_status"],
                                                 user=request.user)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                existing = models.Conversion.objects.filter(opportunity=opportunity).first()
                if existing:
                    return HttpResponseRedirect(reverse("admin:projects_conversion_change", args=[existing.pk]))
            else:
                self.message_user(request, f"Auftrag '{conversion.order_title}' angelegt, verknüpft und Workflow gestartet.",
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_conversion_change", args=[conversion.pk]))
        amount = form.amount_cents() if form.is_bound and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request), "title": "In Auftrag umwandeln", "opts": self.model._meta, "form": form,
            "opportunity": opportunity, "preview": conversion_preview(opportunity, amount_total=amount), "existing": existing,
        }
        return TemplateResponse(request, "admin/projects/convert.html", context)

    def status_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_write_status_permission(request):
            raise Http404
        opportunity = get_object_or_404(models.Opportunity, pk=parse_id(pk))
        initial = {"status": opportunity.status, "expected_updated_at": opportunity.payload.get("_updated_at", "")}
        form = StatusForm(request.POST or None, initial=initial)
        conflict = None
        if request.method == "POST" and form.is_valid():
            try:
                opportunity_set_status(opportunity=opportunity, status=form.cleaned_data["status"], user=request.user,
                                       expected_updated_at=form.cleaned_data["expected_updated_at"])
            except StatusConflict as exc:
                conflict = exc
                form = StatusForm(initial={"status": exc.ours, "expected_updated_at": exc.theirs_updated_at})
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"Status in epilot auf '{form.cleaned_data['status']}' gesetzt.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_opportunity_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request), "title": "Status ändern", "opts": self.model._meta, "form": form,
            "opportunity": opportunity, "conflict": conflict, "known_statuses": KNOWN_OPPORTUNITY_STATUSES,
        }
        return TemplateResponse(request, "admin/projects/status.html", context)


@admin.register(models.Order)
class OrderAdmin(MirroredAdmin):
    list_display = ["title", "status_badge", "opportunity", "amount", "last_sync", "epilot_link"]
    list_select_related = ["opportunity"]
    search_fields = ["title", "epilot_id", "opportunity__title"]
    inlines = [OrderExecutionInline]

    @admin.display(description="Betrag", ordering="amount_total")
    def amount(self, obj: models.Order) -> str:
        return format_amount(obj.amount_total, obj.currency)


@admin.register(models.GenericEntity)
class GenericEntityAdmin(MirroredAdmin):
    list_display = ["title", "schema", "status_badge", "last_sync", "epilot_link"]
    list_filter = ["schema", "status"]


@admin.register(models.WorkflowDefinition)
class WorkflowDefinitionAdmin(ReadOnlyAdmin):
    list_display = ["name", "epilot_id", "engine", "enabled", "sections_display", "step_count", "removed_in_epilot", "synced_at"]
    list_filter = ["engine", "enabled", "removed_in_epilot"]
    search_fields = ["name", "epilot_id"]
    exclude = ["payload"]

    @admin.display(description="Abschnitte")
    def sections_display(self, obj: models.WorkflowDefinition) -> str:
        return " → ".join(obj.sections)


@admin.register(models.WorkflowExecution)
class WorkflowExecutionAdmin(ReadOnlyAdmin):
    list_display = ["name", "entity_link", "status_badge", "current_section", "current_step", "progress", "started_at"]
    list_filter = ["status", "engine", "entity_schema", "current_section"]
    search_fields = ["name", "epilot_id", "entity_epilot_id"]
    date_hierarchy = "started_at"
    exclude = ["flow"]
    readonly_fields = ["steps"]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: models.WorkflowExecution) -> str:
        return badge(obj.status)

    @admin.display(description="Fortschritt")
    def progress(self, obj: models.WorkflowExecution) -> str:
        return format_html('<progress max="{}" value="{}" style="width:70px"></progress> {}/{}', obj.total_steps or 1,
                           obj.completed_steps, obj.completed_steps, obj.total_steps)

    @admin.display(description="Entität")
    def entity_link(self, obj: models.WorkflowExecution) -> str:
        return format_html("{} · {}", obj.entity_schema, portal_link(obj.entity_schema, obj.entity_epilot_id))

    @admin.display(description="Schritte")
    def steps(self, obj: models.WorkflowExecution) -> str:
        parse = RemoteExecution.from_v2 if obj.engine == "v2" else RemoteExecution.from_v1
        try:
            steps = parse(obj.flow).steps
        except ValueError:
            return "–"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                                ((step.section or "", step.name, badge(step.status or "")) for step in steps))
        return format_html("<table><tr><th>Abschnitt</th><th>Schritt</th><th>Status</th></tr>{}</table>", rows)


@admin.register(models.AusbauProject)
class AusbauProjectAdmin(ReadOnlyAdmin):
    list_display = ["title", "phase_badge", "progress", "current_section", "current_step", "budget", "has_running_workflow", "updated_at"]
    list_filter = ["phase", "has_running_workflow"]
    search_fields = ["title", "opportunity__street", "opportunity__city"]
    date_hierarchy = "updated_at"
    list_select_related = ["opportunity"]

    @admin.display(description="Phase", ordering="phase")
    def phase_badge(self, obj: models.AusbauProject) -> str:
        return badge(obj.phase, obj.get_phase_display())

    @admin.display(description="Fortschritt", ordering="progress_percent")
    def progress(self, obj: models.AusbauProject) -> str:
        return format_html('<progress max="100" value="{}" style="width:80px"></progress> {} %', obj.progress_percent, obj.progress_percent)


@admin.register(models.QuarantinedEntity)
class QuarantinedEntityAdmin(ReadOnlyAdmin):
    list_display = ["schema", "epilot_id", "reason", "first_seen_at", "last_seen_at"]
    list_filter = ["schema"]
    search_fields = ["epilot_id", "reason"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("projects.delete_quarantinedentity")


@admin.register(models.SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = ["schema", "watermark_updated_at", "watermark_id", "last_success_at", "lock_owner", "lock_expires_at"]


@admin.register(models.SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "trigger", "status_badge", "created", "updated", "deleted", "quarantined", "pages", "duration", "error"]
    list_filter = ["status", "trigger"]
    date_hierarchy = "started_at"
    change_list_template = "admin/projects/syncrun/change_list.html"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: models.SyncRun) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Dauer")
    def duration(self, obj: models.SyncRun) -> str:
        return f"{obj.duration_seconds:.1f} s" if obj.duration_seconds is not None else "–"

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


@admin.register(models.EpilotWrite)
class EpilotWriteAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "action", "result_badge", "user", "actor", "target_schema", "target_epilot_id", "error"]
    list_filter = ["action", "result", "target_schema", "actor"]
    search_fields = ["target_epilot_id", "epilot_ids", "error"]
    date_hierarchy = "started_at"
    list_select_related = ["user"]

    @admin.display(description="Ergebnis", ordering="result")
    def result_badge(self, obj: models.EpilotWrite) -> str:
        return badge(obj.result, obj.get_result_display())

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return lookup == "target_epilot_id" or super().lookup_allowed(lookup, value, request)


class ConversionWriteInline(ReadOnlyInline):
    model = models.EpilotWrite
    fields = ["started_at", "action", "result", "epilot_ids", "error"]
    readonly_fields = fields
    show_change_link = True
    verbose_name_plural = "Schritte in epilot"


@admin.register(models.Conversion)
class ConversionAdmin(ReadOnlyAdmin):
    list_display = ["opportunity", "order_title", "step", "status_badge", "requested_by", "updated_at"]
    list_filter = ["status", "step"]
    search_fields = ["opportunity__title", "order_title", "order_epilot_id", "key"]
    actions = ["resume_action"]
    inlines = [ConversionWriteInline]
    readonly_fields = ["opportunity", "order_link", "key", "definition", "resume_link", "source_status", "target_status", "order_title",
                       "amount_total", "currency", "step", "status", "error", "execution_epilot_id", "requested_by", "created_at",
                       "updated_at"]
    exclude = ["claimed_until", "order_epilot_id"]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: models.Conversion) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Fortsetzen")
    def resume_link(self, obj: models.Conversion) -> str:
        if obj.status == models.Conversion.Status.DONE:
            return "–"
        return format_html('<a href="{}">Mit (anderem) Workflow fortsetzen …</a>',
                           reverse("admin:projects_opportunity_convert", args=[obj.opportunity_id]))

    @admin.display(description="Auftrag in epilot")
    def order_link(self, obj: models.Conversion) -> str:
        return portal_link("order", obj.order_epilot_id) if obj.order_epilot_id else "–"

    def has_convert_opportunity_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.convert_opportunity")

    @admin.action(description="Umwandlung fortsetzen", permissions=["convert_opportunity"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for conversion in queryset.exclude(status=models.Conversion.Status.DONE).select_related("opportunity", "definition"):
            try:
                opportunity_convert(opportunity=conversion.opportunity, definition=conversion.definition, user=request.user)
            except ServiceError as exc:
                self.message_user(request, f"{conversion}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{conversion}: abgeschlossen.", messages.SUCCESS)


class JobItemInline(ReadOnlyInline):
    model = models.WorkflowStart
    fields = ["entity_schema", "entity_title", "status", "execution_epilot_id", "error"]
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = "Einzelne Starts"


@admin.register(models.WorkflowStartJob)
class WorkflowStartJobAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "definition", "status", "requested_by", "finished_at"]
    inlines = [JobItemInline]
    change_form_template = "admin/projects/workflowstartjob/change_form.html"

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        job = get_object_or_404(models.WorkflowStartJob, pk=parse_id(object_id))
        counts = {status: job.items.filter(status=status).count() for status, _ in models.WorkflowStart.Status.choices}
        total = sum(counts.values())
        done = total - counts[models.WorkflowStart.Status.PENDING]
        extra_context = {**(extra_context or {}), "job": job, "counts": counts, "total": total, "done": done,
                         "percent": round(100 * done / total) if total else 100}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(models.WorkflowStart)
class WorkflowStartAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "definition", "entity_schema", "entity_title", "status", "actor", "execution_epilot_id", "error"]
    list_filter = ["status", "entity_schema", "actor"]
    search_fields = ["entity_epilot_id", "entity_title", "execution_epilot_id"]


@admin.register(models.AutomationRule)
class AutomationRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "trigger", "definition", "owner", "firings_count", "failed_starts"]
    list_filter = ["enabled", "schema"]
    fields = ["name", "enabled", "schema", "attribute", "value", "definition"]

    @admin.display(description="Auslöser")
    def trigger(self, obj: models.AutomationRule) -> str:
        return f"{obj.schema}.{obj.attribute} = {obj.value}"

    @admin.display(description="Wer löst aus?")
    def owner(self, obj: models.AutomationRule) -> str:
        from projects.services.rules import rule_conflicting_automation

        automation = rule_conflicting_automation(schema=obj.schema, attribute=obj.attribute, value=obj.value,
                                                 definition_epilot_id=obj.definition.epilot_id)
        if automation:
            return badge("conflict", f"epilot-Automation '{automation.name}' (Regel wirkt nicht)")
        return badge("started", "diese lokale Regel") if obj.enabled else badge("skipped", "niemand (Regel aus)")

    @admin.display(description="Ausgelöst")
    def firings_count(self, obj: models.AutomationRule) -> int:
        return obj.firings.count()

    @admin.display(description="Fehlgeschlagene Starts")
    def failed_starts(self, obj: models.AutomationRule) -> str:
        failed = models.WorkflowStart.objects.filter(actor=f"rule:{obj.pk}", status=models.WorkflowStart.Status.FAILED).count()
        if not failed:
            return "0"
        url = reverse("admin:projects_workflowstart_changelist") + "?" + urlencode({"actor": f"rule:{obj.pk}", "status": "failed"})
        return format_html('<a href="{}">{}</a> {}', url, failed, badge("failed", "wird bei der nächsten Änderung wiederholt"))


@admin.register(models.ProvisionedAutomation)
class ProvisionedAutomationAdmin(ReadOnlyAdmin):
    list_display = ["name", "flow_id", "trigger", "definition_epilot_id", "enabled", "provisioned_at"]
    actions = ["provision_action"]
    change_list_template = "admin/projects/provisionedautomation/change_list.html"

    @admin.display(description="Auslöser (gehört epilot)")
    def trigger(self, obj: models.ProvisionedAutomation) -> str:
        return f"{obj.schema}.{obj.attribute} = {obj.value}"

    def has_provision_automation_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.provision_automation")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):  # noqa: ANN201 - Django's signature
        extra_context = {**(extra_context or {}), "can_provision": self.has_provision_automation_permission(request),
                         "flow_name": AUSBAU_FLOW_NAME}
        return super().changelist_view(request, extra_context)

    def get_urls(self):  # noqa: ANN201 - Django's signature
        return [path("provision/", self.admin_site.admin_view(self.provision_view), name="projects_provisionedautomation_provision"),
                *super().get_urls()]

    def provision_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if request.method == "POST" and self.has_provision_automation_permission(request):
            self._provision(request)
        return HttpResponseRedirect(reverse("admin:projects_provisionedautomation_changelist"))

    @admin.action(description="In epilot anlegen/aktualisieren", permissions=["provision_automation"])
    def provision_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._provision(request)

    def _provision(self, request: HttpRequest) -> None:
        try:
            record, created = automation_provision(user=request.user)
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            verb = "angelegt" if created else "aktualisiert"
            self.message_user(request, f"Automation '{record.name}' in epilot {verb} (Flow {record.flow_id}).", messages.SUCCESS)


class ApiClientForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=models.ApiClient.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=["read"])

    class Meta:
        model = models.ApiClient
        fields = ["name", "scopes", "throttle_rate"]

    def clean_throttle_rate(self) -> str:
        rate = self.cleaned_data["throttle_rate"]
        try:
            parse_throttle_rate(rate)
        except ValueError:
            raise forms.ValidationError("Format: Anzahl/Zeitraum, z. B. 600/min, 10/s, 5000/hour") from None
        return rate


@admin.register(models.ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    form = ApiClientForm
    list_display = ["name", "scopes", "throttle_rate", "active_badge", "last_used_at", "created_at"]
    readonly_fields = ["token_prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_action", "rotate_action"]

    @admin.display(description="Aktiv")
    def active_badge(self, obj: models.ApiClient) -> str:
        return badge("succeeded", "aktiv") if obj.is_active else badge("failed", "widerrufen")

    def save_model(self, request: HttpRequest, obj: models.ApiClient, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        token = api_client_issue_token(obj)
        self.message_user(request, format_html("Token für '{}' (wird nur jetzt angezeigt): <code id='new-api-token'>{}</code>",
                                               obj.name, token), messages.WARNING)

    @admin.action(description="Widerrufen", permissions=["change"])
    def revoke_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in queryset:
            api_client_revoke(client)
        self.message_user(request, f"{queryset.count()} Client(s) widerrufen.", messages.SUCCESS)

    @admin.action(description="Neues Token ausstellen", permissions=["change"])
    def rotate_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        for client in queryset:
            try:
                token = api_client_rotate(client)
            except ServiceError as exc:
                self.message_user(request, f"{client.name}: {exc.message}", messages.ERROR)
                continue
            self.message_user(request, format_html("Neues Token für '{}' (nur jetzt sichtbar): <code>{}</code>", client.name, token),
                              messages.WARNING)


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
            self.message_user(request, f"Aufgaben nicht eingeplant: {type(exc).__name__}: {exc}", messages.ERROR)


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, GuardedPeriodicTaskAdmin)
