"""Buildings, the funnel's milestone rules and settings, and the campaigns' quota changes and late sign-ups in the
admin (the area's own page: areas.py)."""
from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from projects import models
from projects.admin.areas import STAGE_COLOURS
from projects.admin.base import ReadOnlyAdmin, building_file_url
from projects.services.areas import STAGE_REACHED
from projects.services.campaign import quota_change_decide
from projects.services.errors import NotAllowed
from projects.services.funnel import (
    STUCK,
    any_stuck,
    building_age_days,
    building_entities,
    funnel_recompute,
    is_stuck,
    rule_preview,
    stuck_filter,
)
from projects.services.milestones import Rule


class ReachedFilter(admin.SimpleListFilter):
    """Buildings that reached a stage, whatever came after (as the funnel counts them)."""

    title = _("reached")
    parameter_name = "reached"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(models.Stage.choices)

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(STAGE_REACHED[self.value()]) if self.value() in STAGE_REACHED else queryset


class StuckFilter(admin.SimpleListFilter):
    title = _("stuck")
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("any", _("any stage")), ("signed_not_passed", _("signed, not passed")),
                ("passed_not_connected", _("passed, not connected")),
                ("connected_not_activated", _("connected, not activated"))]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "any":
            return queryset.filter(any_stuck())
        return queryset.filter(stuck_filter(self.value())) if self.value() in STUCK else queryset


@admin.register(models.AreaAddress)
class BuildingAdmin(ReadOnlyAdmin):
    """Each building of an area: its stage, the date of each milestone, what it waits on, its opportunities."""

    list_display = ["address_display", "units", "area", "stage_display", "waiting_on"]
    list_filter = ["area", "stage", ReachedFilter, StuckFilter]
    search_fields = ["street", "postal_code"]
    list_select_related = ["area"]
    fields = ["file_link", "area", "postal_code", "street", "house_number", "units", "stage_display", "signed_at", "passed_at",
              "connected_at", "activated_at", "since_display", "waiting_on", "latitude", "longitude", "entities"]
    readonly_fields = fields

    @admin.display(description=_("address"), ordering="street")
    def address_display(self, obj: models.AreaAddress) -> str:
        """The address, and under it the link to its building file."""
        return format_html('{} {}, {}<br><small><a href="{}">{}</a></small>', obj.street, obj.house_number, obj.postal_code,
                           building_file_url(obj.key), _("Building file"))

    @admin.display(description=_("building file"))
    def file_link(self, obj: models.AreaAddress) -> str:
        return format_html('<a href="{}">{}</a>', building_file_url(obj.key), _("Building file"))

    @admin.display(description=_("stage"), ordering="stage")
    def stage_display(self, obj: models.AreaAddress) -> str:
        stuck = is_stuck(obj)
        days = building_age_days(obj)
        since = format_html("<br><small>{}</small>", ngettext("%(days)d day", "%(days)d days", days) % {"days": days}) \
            if days is not None else ""
        return format_html('<span style="color:{}">●</span> {}{}{}', STAGE_COLOURS[obj.stage], obj.get_stage_display(),
                           format_html(' <strong class="bad">{}</strong>', _("stuck")) if stuck else "", since)

    @admin.display(description=_("days at this stage"))
    def since_display(self, obj: models.AreaAddress) -> str:
        days = building_age_days(obj)
        return "–" if days is None else str(days)

    @admin.display(description=_("opportunities and orders"))
    def entities(self, obj: models.AreaAddress) -> str:
        opportunities, orders = building_entities(obj)
        if not opportunities:
            return "–"
        rows = [(reverse("admin:projects_opportunity_change", args=[o.pk]), _("opportunity"), o, o.status)
                for o in opportunities]
        rows += [(reverse("admin:projects_order_change", args=[o.pk]), _("order"), o, o.status) for o in orders]
        return format_html('<ul id="building-entities">{}</ul>',
                           format_html_join("", '<li>{}: <a href="{}">{}</a> ({})</li>',
                                            ((kind, url, entity, status) for url, kind, entity, status in rows)))


class MilestoneRuleForm(forms.ModelForm):
    class Meta:
        model = models.MilestoneRule
        fields = ["milestone", "definition", "step"]
        widgets = {"definition": forms.Select}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", _("any workflow"))]
        for epilot_id, name, engine in models.WorkflowDefinition.objects.filter(removed_in_epilot=False).order_by(
                "name").values_list("epilot_id", "name", "engine"):
            choices.append((epilot_id, f"{name} ({engine.upper()}, {epilot_id})"))
        current = self.initial.get("definition") or ""
        if current and current not in dict(choices):
            choices.append((current, current))
        self.fields["definition"].widget.choices = list(dict(choices).items())


@admin.register(models.MilestoneRule)
class MilestoneRuleAdmin(admin.ModelAdmin):
    """Which completed step marks which milestone; saving or deleting a rule recomputes every building."""

    form = MilestoneRuleForm
    list_display = ["milestone", "definition_display", "step", "preview"]
    list_filter = ["milestone"]
    readonly_fields = ["preview"]

    @admin.display(description=_("workflow"))
    def definition_display(self, obj: models.MilestoneRule) -> str:
        if not obj.definition:
            return str(_("any workflow"))
        definition = models.WorkflowDefinition.objects.filter(epilot_id=obj.definition).first()
        return f"{definition.name} ({obj.definition})" if definition else obj.definition

    @admin.display(description=_("buildings it marks"))
    def preview(self, obj: models.MilestoneRule) -> int | str:
        return rule_preview(Rule(obj.milestone, obj.definition, obj.step)) if obj.pk else "–"

    def save_model(self, request: HttpRequest, obj: models.MilestoneRule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        transaction.on_commit(funnel_recompute)

    def delete_model(self, request: HttpRequest, obj: models.MilestoneRule) -> None:
        super().delete_model(request, obj)
        transaction.on_commit(funnel_recompute)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        super().delete_queryset(request, queryset)
        transaction.on_commit(funnel_recompute)


@admin.register(models.FunnelSettings)
class FunnelSettingsAdmin(admin.ModelAdmin):
    """One row: after how many days a building counts as stuck."""

    list_display = ["__str__", "signed_not_passed_days", "passed_not_connected_days", "connected_not_activated_days"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not models.FunnelSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.QuotaChange)
class QuotaChangeAdmin(ReadOnlyAdmin):
    """Proposed changes of started campaigns; another person approves (applies) or refuses them."""

    list_display = ["area", "quota_percent", "previous_quota_percent", "deadline", "previous_deadline", "reason", "status",
                    "proposed_by_name", "proposed_at", "decided_by", "decided_at"]
    list_filter = ["status", "area"]
    actions = ["approve", "refuse"]

    @admin.action(description=_("Approve (and apply) the selected changes"), permissions=["approve"])
    def approve(self, request: HttpRequest, queryset: Any) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description=_("Refuse the selected changes"), permissions=["approve"])
    def refuse(self, request: HttpRequest, queryset: Any) -> None:
        self._decide(request, queryset, approve=False)

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.approve_quotachange")

    def _decide(self, request: HttpRequest, queryset: Any, *, approve: bool) -> None:
        for change in queryset:
            try:
                quota_change_decide(change, approve=approve, user=request.user)
            except NotAllowed as exc:
                self.message_user(request, f"{change.area}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{change.area}: {change.get_status_display() if not approve else _('approved')}",
                                  messages.SUCCESS)


@admin.register(models.LateSignup)
class LateSignupAdmin(ReadOnlyAdmin):
    list_display = ["order_title", "order_epilot_id", "area", "signed_at", "flagged_at", "error"]
    list_filter = ["area"]
