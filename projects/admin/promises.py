"""Promises: the list with forecasts and the back-test, alerts, forecast curves, and setting a promised date on an
order (written to epilot)."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from projects import models
from projects.admin.base import ReadOnlyAdmin, building_file_link
from projects.forms import PromiseForm
from projects.services.errors import ServiceError
from projects.services.promises import promise_set
from projects.templatetags.backoffice import badge
from projects.validation import parse_id

STATE_COLOURS = {"open": "started", "at_risk": "conflict", "breached": "failed", "kept": "succeeded"}


@admin.register(models.Promise)
class PromiseAdmin(ReadOnlyAdmin):
    """Every promised date with its forecast; at risk and breached first by default in the dashboard's links."""

    # Five narrow columns: the list fits 1,280 pixels beside the navigation and the filters.
    list_display = ["order_link", "milestone_display", "promised_display", "forecast_display", "state_badge"]
    list_filter = ["state", "milestone", "area", "source"]
    list_select_related = ["order__opportunity", "area"]
    search_fields = ["order__title", "order__search_text"]
    date_hierarchy = "promised_on"
    change_list_template = "admin/projects/promise/change_list.html"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        curves = models.ForecastCurve.objects.filter(area=None, start="signed").order_by("target")
        extra_context = {**(extra_context or {}), "backtest": list(curves)}
        return super().changelist_view(request, extra_context)

    @admin.display(description=_("order"), ordering="order__title")
    def order_link(self, obj: models.Promise) -> str:
        order = format_html('<a href="{}">{}</a>', reverse("admin:projects_order_change", args=[obj.order_id]), obj.order)
        if obj.order.opportunity is None or not obj.order.opportunity.address:
            return order
        return format_html("{}<br><small>{}</small>", order, building_file_link(obj.order.opportunity))

    @admin.display(description=_("milestone"), ordering="milestone")
    def milestone_display(self, obj: models.Promise) -> str:
        return models.Stage(obj.milestone).label

    @admin.display(description=_("promised"), ordering="promised_on")
    def promised_display(self, obj: models.Promise) -> str:
        return format_html('<span style="white-space:nowrap">{}</span><br><small>{}</small>',
                           formats.date_format(obj.promised_on, "SHORT_DATE_FORMAT"), obj.get_source_display())

    @admin.display(description=_("forecast"), ordering="forecast_p50")
    def forecast_display(self, obj: models.Promise) -> str:
        if obj.forecast_p50 is None:
            return "–"
        return format_html('<span style="white-space:nowrap">{}</span><br><small style="white-space:nowrap">{}</small>',
                           formats.date_format(obj.forecast_p50, "SHORT_DATE_FORMAT"),
                           formats.date_format(obj.forecast_p90, "SHORT_DATE_FORMAT") if obj.forecast_p90 else "–")

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: models.Promise) -> str:
        state = badge(STATE_COLOURS.get(obj.state, ""), obj.get_state_display())
        if not obj.days_late:
            return state
        return format_html("{}<br><small>{}</small>", state, ngettext("%(days)d day late", "%(days)d days late",
                                                                     obj.days_late) % {"days": obj.days_late})


@admin.register(models.PromiseAlert)
class PromiseAlertAdmin(ReadOnlyAdmin):
    list_display = ["promise_display", "state", "created_at", "sent_at", "error"]
    list_filter = ["state"]
    list_select_related = ["promise__order"]

    @admin.display(description=_("promise"), ordering="promise")
    def promise_display(self, obj: models.PromiseAlert) -> str:
        # A method, not the foreign key itself: Django keeps a foreign key's column on one line, wider than the page.
        # Plain text: the first column is already the link to the alert.
        return str(obj.promise)


@admin.register(models.ForecastCurve)
class ForecastCurveAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "finished", "p50", "p90", "p90_held_display", "computed_at"]
    list_filter = ["target", "start"]
    exclude = ["quantiles"]

    @admin.display(description="P50")
    def p50(self, obj: models.ForecastCurve) -> str:
        return _("%(days)d days") % {"days": round(obj.quantiles[50])} if obj.quantiles else "–"

    @admin.display(description="P90")
    def p90(self, obj: models.ForecastCurve) -> str:
        return _("%(days)d days") % {"days": round(obj.quantiles[90])} if obj.quantiles else "–"

    @admin.display(description=_("P90 held (back-test)"))
    def p90_held_display(self, obj: models.ForecastCurve) -> str:
        return "–" if obj.p90_held is None else f"{obj.p90_held:.0%}"


def order_promise_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    """Set or remove an order's promised date in epilot (permission `set_promise`), with the version staff saw."""
    if not request.user.has_perm("projects.set_promise"):
        raise PermissionDenied
    order = get_object_or_404(models.Order, pk=parse_id(object_id))
    current = {p.milestone: p for p in order.promises.all()}
    initial = {"milestone": request.GET.get("milestone", "connected"),
               "expected_updated_at": order.payload.get("_updated_at", "")}
    if initial["milestone"] in current:
        initial["promised_on"] = current[initial["milestone"]].promised_on
    form = PromiseForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            promise_set(order=order, milestone=form.cleaned_data["milestone"], promised_on=form.cleaned_data["promised_on"],
                        user=request.user, expected_updated_at=form.cleaned_data["expected_updated_at"])
        except ServiceError as exc:
            model_admin.message_user(request, exc.message, messages.ERROR)
        else:
            model_admin.message_user(request, _("The promised date is saved in epilot."), messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:projects_order_change", args=[order.pk]))
    context = {**model_admin.admin_site.each_context(request), "title": _("Promised date"), "opts": model_admin.model._meta,
               "form": form, "order": order, "promises": sorted(current.values(), key=lambda p: p.milestone)}
    return TemplateResponse(request, "admin/projects/order_promise.html", context)
