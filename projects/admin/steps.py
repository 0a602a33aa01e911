"""The task inbox ("Aufgaben"): open workflow steps across all executions, worked one by one or in bulk jobs."""
from __future__ import annotations

import secrets
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import ReadOnlyAdmin, ReadOnlyInline, entity_summary
from projects.forms import CloseExecutionForm, StepOperationForm
from projects.selectors import end_of_week, epilot_user_id_of, steps_in_area
from projects.services.errors import ServiceError
from projects.services.steps import closing_reasons, execution_close, step_job_create, step_job_progress
from projects.templatetags.backoffice import badge, colleagues
from projects.validation import parse_id


class OpenFilter(admin.SimpleListFilter):
    """Open steps of running executions by default; done ones on request."""

    title = _("state")
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("done", _("Completed or skipped")), ("all", _("All"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "all":
            return queryset
        if self.value() == "done":
            return queryset.filter(status__in=models.MirroredStep.DONE_STATUSES)
        return queryset.filter(execution__status="STARTED", enabled=True).exclude(status__in=models.MirroredStep.DONE_STATUSES)

    def choices(self, changelist: Any):
        yield {"selected": self.value() is None, "query_string": changelist.get_query_string(remove=[self.parameter_name]),
               "display": _("Open")}
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup}), "display": title}


class DueFilter(admin.SimpleListFilter):
    title = _("due")
    parameter_name = "due"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", _("Overdue")), ("week", _("This week")), ("none", _("No due date"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == "overdue":
            return queryset.filter(due_date__lt=now)
        if self.value() == "week":
            return queryset.filter(due_date__gte=now, due_date__lt=end_of_week(now))
        if self.value() == "none":
            return queryset.filter(due_date__isnull=True)
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    """Mine (the user's linked epilot id), nobody, or one linked colleague."""

    title = _("assignee")
    parameter_name = "assignee"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        choices = [("mine", _("Mine")), ("none", _("Nobody"))]
        for profile in models.StaffProfile.objects.exclude(epilot_user_id="").select_related("user").order_by("user__username"):
            choices.append((profile.epilot_user_id, profile.user.get_full_name() or profile.user.username))
        return choices

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        if value == "none":
            return queryset.filter(assignees="")
        if value == "mine":
            value = epilot_user_id_of(request.user)
            if not value:
                return queryset.none()
        return queryset.filter(assignees__contains=f",{value},")


class AreaFilter(admin.SimpleListFilter):
    """Steps of projects whose address lies in a rollout area."""

    title = _("rollout area")
    parameter_name = "area"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in models.RolloutArea.objects.order_by("name").values_list("pk", "name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        area_id = parse_id(self.value() or "")
        if not area_id:
            return queryset
        return queryset.filter(steps_in_area(area_id))


@admin.register(models.MirroredStep)
class TaskInboxAdmin(ReadOnlyAdmin):
    # Five columns, so the inbox fits 1,280 pixels beside the navigation and the filters: section and workflow go
    # under the step's name.
    list_display = ["step_display", "entity", "status_badge", "assignees_display", "due_display"]
    list_display_links = ["step_display"]
    list_filter = [OpenFilter, AssigneeFilter, DueFilter, AreaFilter, "section", "execution__name", "status"]
    search_fields = ["name", "section", "execution__name", "execution__entity_epilot_id", "execution__epilot_id",
                     "execution__opportunity__street", "execution__order__opportunity__street"]
    list_select_related = ["execution", "execution__opportunity__customer", "execution__order__opportunity__customer",
                           "execution__contact"]
    list_per_page = 100
    actions = ["complete_steps", "skip_steps", "reopen_steps", "assign_steps", "schedule_steps"]
    exclude = ["assignees"]
    fieldsets = [
        (None, {"fields": ["name", "step_display", "entity", "status_badge", "assignees_display", "due_display",
                           "completed_at", "assigned_at", "enabled", "execution_type"]}),
        (_("Technical details from epilot"), {"classes": ["collapse"],
                                              "fields": ["epilot_id", "section_epilot_id", "assigned_to", "synced_at"]}),
    ]
    readonly_fields = ["step_display", "entity", "status_badge", "assignees_display", "due_display"]

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        return [F("due_date").asc(nulls_last=True), "execution_id", "position"]

    @admin.display(description=_("step"), ordering="name")
    def step_display(self, obj: models.MirroredStep) -> str:
        workflow = obj.execution.name or obj.execution.definition_epilot_id
        return format_html('{}<br><small>{}{}</small>', obj.name, f"{obj.section} · " if obj.section else "", workflow)

    @admin.display(description=_("entity"))
    def entity(self, obj: models.MirroredStep) -> str:
        execution = obj.execution
        return entity_summary(schema=execution.entity_schema, epilot_id=execution.entity_epilot_id,
                              opportunity=execution.opportunity, order=execution.order, contact=execution.contact)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: models.MirroredStep) -> str:
        return badge(obj.status)

    @admin.display(description=_("assigned to"))
    def assignees_display(self, obj: models.MirroredStep) -> str:
        return colleagues(obj.assigned_to)

    @admin.display(description=_("due"), ordering="due_date")
    def due_display(self, obj: models.MirroredStep) -> str:
        if obj.due_date is None:
            return "–"
        # Date and time on two lines, each never wrapped: the column stays narrow and nothing is cut off.
        local = timezone.localtime(obj.due_date)
        day, time = formats.date_format(local, "SHORT_DATE_FORMAT"), formats.time_format(local, "TIME_FORMAT")
        if obj.is_open and obj.due_date < timezone.now():
            return format_html('<strong class="overdue" style="color:#dc3545;white-space:nowrap">{}</strong> '
                               '<small style="white-space:nowrap">{}</small><br><small class="overdue">{}</small>',
                               day, time, _("overdue"))
        return format_html('<span style="white-space:nowrap">{}</span> <small style="white-space:nowrap">{}</small>',
                           day, time)

    def has_work_steps_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.work_steps")

    @admin.action(description=_("Complete selected steps in epilot"), permissions=["work_steps"])
    def complete_steps(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm(request, queryset, models.StepJob.Operation.COMPLETE)

    @admin.action(description=_("Skip selected steps in epilot"), permissions=["work_steps"])
    def skip_steps(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm(request, queryset, models.StepJob.Operation.SKIP)

    @admin.action(description=_("Reopen selected steps in epilot"), permissions=["work_steps"])
    def reopen_steps(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm(request, queryset, models.StepJob.Operation.REOPEN)

    @admin.action(description=_("Assign selected steps in epilot"), permissions=["work_steps"])
    def assign_steps(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm(request, queryset, models.StepJob.Operation.ASSIGN)

    @admin.action(description=_("Set the due date of selected steps in epilot"), permissions=["work_steps"])
    def schedule_steps(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm(request, queryset, models.StepJob.Operation.SET_DUE)

    def _confirm(self, request: HttpRequest, queryset: QuerySet, operation: str) -> HttpResponse | None:
        """The confirmation page; on "apply", one job for all selected steps and its progress page."""
        if "apply" in request.POST:
            selected = request.session.get(SELECTION_KEY.format(request.POST.get("selection", "")))
            if not isinstance(selected, list):
                self.message_user(request, _("The selection has expired; select the steps again."), messages.ERROR)
                return None
            steps = list(models.MirroredStep.objects.filter(pk__in=selected).select_related("execution"))
            form = StepOperationForm(request.POST)
            if form.is_valid():
                try:
                    job = step_job_create(operation=form.cleaned_data["operation"], steps=steps,
                                          assignees=form.cleaned_data.get("assignee_ids") or (),
                                          due_date=form.cleaned_data.get("due_date"), user=request.user)
                except ServiceError as exc:
                    self.message_user(request, exc.message, messages.ERROR)
                    return None
                request.session.pop(SELECTION_KEY.format(request.POST["selection"]), None)
                self.message_user(request, _("%(count)d steps are being updated in epilot.") % {"count": job.items.count()},
                                  messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_stepjob_change", args=[job.pk]))
            selection = request.POST.get("selection", "")
        else:
            steps = list(queryset.select_related("execution"))
            form = StepOperationForm(initial={"operation": operation})
            # Kept in the session, not as one form field per step: Django refuses a POST of more than
            # DATA_UPLOAD_MAX_NUMBER_FIELDS fields, and a whole inbox may be selected ("select all").
            selection = secrets.token_urlsafe(12)
            request.session[SELECTION_KEY.format(selection)] = [step.pk for step in steps]
        context = {**self.admin_site.each_context(request), "title": _("Work steps in epilot"), "opts": self.model._meta,
                   "form": form, "steps": steps, "selection": selection,
                   "operation": operation, "action": request.POST.get("action", "")}
        return TemplateResponse(request, "admin/projects/step_operation.html", context)


SELECTION_KEY = "step-selection:{}"


class StepJobItemInline(ReadOnlyInline):
    model = models.StepJobItem
    fields = ["label", "expected_status", "status", "error"]  # the step by its name and workflow, not its ids
    readonly_fields = fields
    show_change_link = False
    verbose_name_plural = _("steps")


@admin.register(models.StepJob)
class StepJobAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "operation", "status", "requested_by", "finished_at"]
    list_filter = ["operation", "status"]
    inlines = [StepJobItemInline]
    change_form_template = "admin/projects/stepjob/change_form.html"

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        job = get_object_or_404(models.StepJob, pk=parse_id(object_id))
        progress = step_job_progress(job)
        handled = progress["total"] - progress["pending"]
        extra_context = {**(extra_context or {}), "job": job, "progress": progress, "handled": handled,
                         "percent": round(100 * handled / progress["total"]) if progress["total"] else 100}
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(models.StaffProfile)
class StaffProfileAdmin(admin.ModelAdmin):
    """Staff keep their own profile (epilot user id, daily e-mail); only superusers change or create others'.

    Otherwise anyone with the change permission could switch off a colleague's digest or take a
    colleague's epilot user id and receive their steps.
    """

    list_display = ["user", "epilot_user_id", "task_digest", "last_digest_at"]
    search_fields = ["user__username", "user__email", "epilot_user_id"]
    readonly_fields = ["last_digest_at"]
    autocomplete_fields = []

    def has_change_permission(self, request: HttpRequest, obj: models.StaffProfile | None = None) -> bool:
        return super().has_change_permission(request, obj) and _own_or_superuser(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: models.StaffProfile | None = None) -> bool:
        return super().has_delete_permission(request, obj) and _own_or_superuser(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = get_user_model().objects.filter(pk=request.user.pk)  # a profile of one's own only
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def _own_or_superuser(request: HttpRequest, profile: models.StaffProfile | None) -> bool:
    return profile is None or request.user.is_superuser or profile.user_id == request.user.pk


def close_execution_view(model_admin: admin.ModelAdmin, request: HttpRequest,
                         execution: models.WorkflowExecution) -> HttpResponse:
    """The page that closes one running execution with epilot's closing reasons (permission `work_steps`)."""
    change_url = reverse("admin:projects_workflowexecution_change", args=[execution.pk])
    try:
        reasons = closing_reasons(execution.epilot_id)
    except ServiceError as exc:
        model_admin.message_user(request, exc.message, messages.ERROR)
        return HttpResponseRedirect(change_url)
    form = CloseExecutionForm(request.POST or None, reasons=reasons)
    if request.method == "POST" and form.is_valid():
        try:
            execution_close(execution_epilot_id=execution.epilot_id, reason_ids=form.cleaned_data["reasons"],
                            description=form.cleaned_data["description"], user=request.user)
        except ServiceError as exc:
            model_admin.message_user(request, exc.message, messages.ERROR)
        else:
            model_admin.message_user(request, _("The workflow was closed in epilot."), messages.SUCCESS)
        return HttpResponseRedirect(change_url)
    context = {**model_admin.admin_site.each_context(request), "title": _("Close workflow"), "opts": model_admin.model._meta,
               "form": form, "execution": execution}
    return TemplateResponse(request, "admin/projects/close_execution.html", context)
