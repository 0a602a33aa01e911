"""Mirrored entities (contacts, opportunities, orders, further schemas) and Ausbau projects, with their actions and pages."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import (
    ReadOnlyAdmin,
    ReadOnlyInline,
    audit_link,
    building_file_link,
    portal_link,
    schema_of,
)
from projects.formatting import format_amount, format_euros, portal_url
from projects.forms import KNOWN_OPPORTUNITY_STATUSES, ConvertForm, StartWorkflowForm, StatusForm
from projects.selectors import project_executions, project_orders, running_workflows_by_entity
from projects.services.conversion import conversion_preview, opportunity_convert
from projects.services.errors import ServiceError, StatusConflict
from projects.services.status import opportunity_set_status
from projects.services.workflows import workflow_start, workflow_start_many
from projects.templatetags.backoffice import badge
from projects.validation import parse_id, parse_id_list


class ExecutionInline(ReadOnlyInline):
    model = models.WorkflowExecution
    fk_name = "opportunity"
    fields = ["name", "status_badge", "current_section", "current_step", "progress", "started_at"]
    readonly_fields = fields
    verbose_name_plural = _("workflows")

    @admin.display(description=_("status"))
    def status_badge(self, obj: models.WorkflowExecution) -> str:
        return badge(obj.status)

    @admin.display(description=_("progress"))
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
    verbose_name_plural = _("orders")

    @admin.display(description=_("status"))
    def status_badge(self, obj: models.Order) -> str:
        return badge(obj.status)

    @admin.display(description=_("amount"))
    def amount(self, obj: models.Order) -> str:
        return format_amount(obj.amount_total, obj.currency)


# Columns the detail page shows another way: money (budget_display and amount: OpportunityAdmin, OrderAdmin), and the
# customer as a link (a join on the contact's epilot id, which the admin would show as plain text).
DETAIL_DISPLAY = {"budget": "budget_display", "amount_total": "amount", "customer": "customer_link"}


class PromiseInline(ReadOnlyInline):
    model = models.Promise
    fields = ["milestone", "promised_on", "source", "forecast_p50", "forecast_p90", "state", "days_late"]
    readonly_fields = fields
    verbose_name_plural = _("promised dates")


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
        """Every column (money as money, in the user's language) but the search words, plus the links and the
        document as epilot sent it."""
        names = [DETAIL_DISPLAY.get(f.name, f.name) for f in self.model._meta.fields
                 if f.name not in ("id", "payload", "search_text", "currency")]
        return [*names, "links", "payload_pretty"]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        technical = [
            name
            for name in self.get_readonly_fields(request, obj)
            if name.endswith("epilot_id") or name.startswith("epilot_") or name in ("synced_at", "payload_pretty", "tags")
        ]
        main = [name for name in self.get_readonly_fields(request, obj) if name not in technical]
        return [(None, {"fields": main}), (_("Technical details from epilot"), {"classes": ["collapse"], "fields": technical})]

    @admin.display(description="epilot")
    def epilot_link(self, obj: Any) -> str:
        return format_html('<a href="{}" target="_blank" rel="noopener" title="{}">↗ Portal</a>',
                           portal_url(schema_of(obj), obj.epilot_id), _("Open in epilot"))

    @admin.display(description=_("links"))
    def links(self, obj: Any) -> str:
        place = obj if isinstance(obj, models.Opportunity) else getattr(obj, "opportunity", None)
        if place is not None and place.address_key:
            return format_html("{} · {} · {}", building_file_link(place, _("Building file")),
                               portal_link(schema_of(obj), obj.epilot_id), audit_link(obj.epilot_id))
        return format_html("{} · {}", portal_link(schema_of(obj), obj.epilot_id), audit_link(obj.epilot_id))

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Any) -> str:
        return badge(obj.status)

    @admin.display(description=_("status"), ordering="status")
    def status_with_link(self, obj: Any) -> str:
        """The status, and under it the entity in the epilot portal."""
        return format_html('{}<br><small><a href="{}" target="_blank" rel="noopener" title="{}">↗ Portal</a></small>',
                           badge(obj.status), portal_url(schema_of(obj), obj.epilot_id), _("Open in epilot"))

    @admin.display(description=_("last synchronised"), ordering="synced_at")
    def last_sync(self, obj: Any) -> Any:
        return obj.synced_at

    @admin.display(description=_("data from epilot"))
    def payload_pretty(self, obj: Any) -> str:
        import json

        return format_html("<pre style='max-height:400px;overflow:auto;white-space:pre-wrap'>{}</pre>",
                           json.dumps(obj.payload, indent=2, ensure_ascii=False))

    def has_start_workflow_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.start_workflow")

    @admin.action(description=_("Start workflow …"), permissions=["start_workflow"])
    def start_workflow_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect:
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(reverse(f"admin:projects_{self.model._meta.model_name}_start_workflow") + f"?ids={ids}")

    def get_urls(self):
        name = self.model._meta.model_name
        return [
            path("start-workflow/", self.admin_site.admin_view(self.start_workflow_view), name=f"projects_{name}_start_workflow"),
            *self.extra_urls(),
            *super().get_urls(),
        ]

    def extra_urls(self) -> list:
        return []

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "entity_buttons": self.entity_buttons(request, object_id)}
        return super().change_view(request, object_id, form_url, extra_context)

    def entity_buttons(self, request: HttpRequest, object_id: str) -> list[tuple[str, str]]:
        buttons = []
        if self.has_start_workflow_permission(request):
            url = reverse(f"admin:projects_{self.model._meta.model_name}_start_workflow") + f"?ids={object_id}"
            buttons.append((_("Start workflow"), url))
        return buttons

    def start_workflow_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_start_workflow_permission(request):
            raise Http404
        ids = parse_id_list(request.POST.get("ids") or request.GET.get("ids", ""))
        if ids is None:
            return HttpResponseBadRequest("ids: comma-separated whole numbers expected")
        entities = list(self.model.objects.filter(pk__in=ids, epilot_deleted_at__isnull=True))
        if not entities:
            self.message_user(request, _("No entries (that are not deleted) selected."), messages.WARNING)
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
                    self.message_user(
                        request,
                        _("'%(workflow)s' started on '%(entity)s' (execution %(execution)s).")
                        % {"workflow": definition.name, "entity": entity.title, "execution": start.execution_epilot_id},
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(reverse(f"admin:projects_{self.model._meta.model_name}_change", args=[entity.pk]))
            else:
                try:
                    job = workflow_start_many(definition=definition, user=request.user, allow_duplicate=allow_duplicate,
                                              entities=[(schema_of(e), e.epilot_id, e.title) for e in entities])
                except ServiceError as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                else:
                    self.message_user(
                        request, _("%(count)d starts queued; the progress is shown below.") % {"count": len(entities)},
                        messages.SUCCESS
                    )
                    return HttpResponseRedirect(reverse("admin:projects_workflowstartjob_change", args=[job.pk]))
        running = running_workflows_by_entity([e.epilot_id for e in entities])
        context = {
            **self.admin_site.each_context(request), "title": _("Start workflow"), "opts": self.model._meta, "form": form,
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
    title = _("project phase")
    parameter_name = "phase"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(models.AusbauProject.Phase.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(project__phase=self.value()) if self.value() else queryset


class HasOrderFilter(admin.SimpleListFilter):
    title = _("order")
    parameter_name = "has_order"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", _("with order")), ("no", _("without order"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(orders__isnull=False).distinct()
        if self.value() == "no":
            return queryset.filter(orders__isnull=True)
        return queryset


@admin.register(models.Opportunity)
class OpportunityAdmin(MirroredAdmin):
    list_display = ["title_display", "status_with_link", "address_display", "budget_display", "phase"]
    list_select_related = ["customer", "project"]
    list_filter = ["status", PhaseFilter, HasOrderFilter, ("epilot_deleted_at", admin.EmptyFieldListFilter)]
    search_fields = ["title", "street", "city", "postal_code", "customer__title", "epilot_id"]
    actions = ["start_workflow_action", "convert_action"]
    inlines = [OrderInline, ExecutionInline]

    @admin.display(description=_("title"), ordering="title")
    def title_display(self, obj: models.Opportunity) -> str:
        """The title, and under it the customer."""
        return format_html("{}<br><small>{}</small>", obj, obj.customer.title) if obj.customer else str(obj)

    @admin.display(description=_("customer"))
    def customer_link(self, obj: models.Opportunity) -> str:
        customer = obj.customer
        if customer is None:
            return obj.customer_epilot_id or "–"  # named by epilot, not mirrored (yet)
        return format_html('<a href="{}">{}</a>', reverse("admin:projects_contact_change", args=[customer.pk]), customer)

    @admin.display(description=_("address"), ordering="street")
    def address_display(self, obj: models.Opportunity) -> str:
        return building_file_link(obj)

    @admin.display(description=_("budget"), ordering="budget")
    def budget_display(self, obj: models.Opportunity) -> str:
        return format_euros(obj.budget)

    @admin.display(description=_("phase"), ordering="project__phase")
    def phase(self, obj: models.Opportunity) -> str:
        """The project's phase, and under it how far its workflow came."""
        project = getattr(obj, "project", None)
        if not project:
            return "–"
        phase = badge(project.phase, project.get_phase_display())
        if not (project.has_running_workflow or project.progress_percent):
            return phase
        return format_html("{}<br><small>{} % {}</small>", phase, project.progress_percent, project.current_section)

    def has_convert_opportunity_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.convert_opportunity")

    def has_write_status_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.write_status")

    @admin.action(description=_("Convert into an order …"), permissions=["convert_opportunity"])
    def convert_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponseRedirect | None:
        if queryset.count() != 1:
            self.message_user(request, _("Select exactly one opportunity to convert."), messages.WARNING)
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
            buttons.append((_("Convert into an order"), reverse("admin:projects_opportunity_convert", args=[object_id])))
        if self.has_write_status_permission(request):
            buttons.append((_("Change status"), reverse("admin:projects_opportunity_status", args=[object_id])))
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
                                                 amount_total=form.amount_cents(),
                                                 target_status=form.cleaned_data["target_status"], user=request.user)
            except ServiceError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                existing = models.Conversion.objects.filter(opportunity=opportunity).first()
                if existing:
                    return HttpResponseRedirect(reverse("admin:projects_conversion_change", args=[existing.pk]))
            else:
                self.message_user(request, _("Order '%(order)s' created, linked and its workflow started.")
                                  % {"order": conversion.order_title}, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_conversion_change", args=[conversion.pk]))
        amount = form.amount_cents() if form.is_bound and form.is_valid() else None
        context = {
            **self.admin_site.each_context(request), "title": _("Convert into an order"), "opts": self.model._meta, "form": form,
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
                self.message_user(request, _("Status set to '%(status)s' in epilot.") % {"status": form.cleaned_data["status"]},
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_opportunity_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request), "title": _("Change status"), "opts": self.model._meta, "form": form,
            "opportunity": opportunity, "conflict": conflict, "known_statuses": KNOWN_OPPORTUNITY_STATUSES,
        }
        return TemplateResponse(request, "admin/projects/status.html", context)


@admin.register(models.Order)
class OrderAdmin(MirroredAdmin):
    list_display = ["title", "status_with_link", "opportunity_display", "amount"]
    list_select_related = ["opportunity"]
    search_fields = ["title", "epilot_id", "opportunity__title"]
    inlines = [OrderExecutionInline, PromiseInline]

    @admin.display(description=_("amount"), ordering="amount_total")
    def amount(self, obj: models.Order) -> str:
        return format_amount(obj.amount_total, obj.currency)

    @admin.display(description=_("opportunity"), ordering="opportunity__title")
    def opportunity_display(self, obj: models.Order) -> str:
        """The opportunity, and under it its address (linked to the building file)."""
        if obj.opportunity is None:
            return "–"
        if not obj.opportunity.address:
            return str(obj.opportunity)
        return format_html("{}<br><small>{}</small>", obj.opportunity, building_file_link(obj.opportunity))

    def extra_urls(self) -> list:
        from projects.admin.promises import order_promise_view

        return [path("<int:pk>/promise/", self.admin_site.admin_view(
            lambda request, pk: order_promise_view(self, request, pk)), name="projects_order_promise")]

    def entity_buttons(self, request: HttpRequest, object_id: str) -> list[tuple[str, str]]:
        buttons = super().entity_buttons(request, object_id)
        if request.user.has_perm("projects.set_promise"):
            buttons.append((_("Set promised date"), reverse("admin:projects_order_promise", args=[object_id])))
        return buttons


@admin.register(models.GenericEntity)
class GenericEntityAdmin(MirroredAdmin):
    list_display = ["title", "schema", "status_badge", "last_sync", "epilot_link"]
    list_filter = ["schema", "status"]


@admin.register(models.AusbauProject)
class AusbauProjectAdmin(ReadOnlyAdmin):
    # Five columns, so the list fits 1,280 pixels beside the navigation and the filters.
    list_display = ["title_display", "phase_badge", "progress_display", "budget_display", "updated_display"]
    list_filter = ["phase", "has_running_workflow"]
    search_fields = ["title", "opportunity__street", "opportunity__city"]
    date_hierarchy = "updated_at"
    list_select_related = ["opportunity"]
    fields = ["opportunity", "phase_badge", "progress", "current_section", "current_step", "budget_display", "orders_table",
              "workflows_table", "tags_display", "updated_at"]
    readonly_fields = fields

    @admin.display(description=_("tags"))
    def tags_display(self, obj: models.AusbauProject) -> str:
        return ", ".join(tag for tag in obj.tags.split(",") if tag) or "–"

    @admin.display(description=_("orders"))
    def orders_table(self, obj: models.AusbauProject) -> str:
        orders = project_orders(obj)
        if not orders:
            return "–"
        rows = format_html_join("", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>', (
            (reverse("admin:projects_order_change", args=[order.pk]), order.title, badge(order.status),
             format_amount(order.amount_total, order.currency)) for order in orders))
        return format_html('<table id="project-orders">{}</table>', rows)

    @admin.display(description=_("workflows"))
    def workflows_table(self, obj: models.AusbauProject) -> str:
        executions = project_executions(obj)
        if not executions:
            return "–"
        rows = format_html_join("", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}/{}</td></tr>', (
            (reverse("admin:projects_workflowexecution_change", args=[e.pk]), e.name or e.definition_epilot_id, badge(e.status),
             e.current_section or "–", e.completed_steps, e.total_steps) for e in executions))
        return format_html('<table id="project-workflows"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>{}</table>',
                           _("workflow"), _("status"), _("current section"), _("steps"), rows)

    @admin.display(description=_("budget"), ordering="budget")
    def budget_display(self, obj: models.AusbauProject) -> str:
        return format_euros(obj.budget)

    @admin.display(description=_("title"), ordering="title")
    def title_display(self, obj: models.AusbauProject) -> str:
        address = obj.opportunity.address if obj.opportunity_id else ""
        return format_html("{}<br><small>{}</small>", obj.title, address) if address else obj.title

    @admin.display(description=_("progress"), ordering="progress_percent")
    def progress_display(self, obj: models.AusbauProject) -> str:
        where = " · ".join(part for part in (obj.current_section, obj.current_step) if part)
        return format_html('<progress max="100" value="{}" style="width:70px"></progress> {} %<br><small>{}</small>',
                           obj.progress_percent, obj.progress_percent, where)

    @admin.display(description=_("updated"), ordering="updated_at")
    def updated_display(self, obj: models.AusbauProject) -> str:
        return formats.date_format(timezone.localtime(obj.updated_at), "SHORT_DATE_FORMAT") if obj.updated_at else "–"

    @admin.display(description=_("phase"), ordering="phase")
    def phase_badge(self, obj: models.AusbauProject) -> str:
        return badge(obj.phase, obj.get_phase_display())

    @admin.display(description=_("progress"), ordering="progress_percent")
    def progress(self, obj: models.AusbauProject) -> str:
        return format_html(
            '<progress max="100" value="{}" style="width:80px"></progress> {} %', obj.progress_percent, obj.progress_percent
        )
