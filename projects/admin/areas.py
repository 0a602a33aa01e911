"""Rollout areas in the admin: take-up against the quota, the funnel and the map, the phase board, the campaign list,
the import; buildings; the funnel's milestone rules."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils import formats
from django.utils.html import format_html, format_html_join
from django.utils.http import content_disposition_header
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import building_file_url
from projects.formatting import spreadsheet_safe
from projects.selectors import area_figures, area_sections, unsigned_addresses
from projects.services.areas import ImportRejected, area_addresses_import, read_address_file
from projects.services.campaign import (
    area_forecast,
    area_terms_change,
    forecast_error_days,
    public_gauge_enable,
    public_gauge_revoke,
    quota_change_propose,
    walk_list,
)
from projects.services.errors import NotAllowed
from projects.services.funnel import (
    STUCK_COLUMNS,
    area_funnel,
    buildings_geojson,
    buildings_stage_counts,
    stuck_rows,
)
from projects.validation import parse_id


def take_up_gauge(figures: dict[str, Any]) -> str:
    """A bar of the take-up with a line at the quota (inline SVG, no scripts or CDN)."""
    take_up = min(figures["take_up_percent"], 100)
    quota = min(figures["quota_percent"], 100)
    colour = "#198754" if figures["units_missing_for_quota"] == 0 else "#fd7e14"
    return format_html(
        '<svg class="gauge" width="160" height="16" role="img" aria-label="{} % / {} %">'
        '<rect width="160" height="16" rx="3" fill="#e9ecef"/><rect width="{}" height="16" rx="3" fill="{}"/>'
        '<line x1="{}" x2="{}" y1="0" y2="16" stroke="#212529" stroke-width="2"/></svg>&nbsp;{}&nbsp;%',
        figures["take_up_percent"], figures["quota_percent"], round(1.6 * take_up), colour, round(1.6 * quota),
        round(1.6 * quota), formats.number_format(figures["take_up_percent"], 1))


def signed_chart(area: models.RolloutArea, figures: dict[str, Any]) -> str:
    """Units signed per day against the quota line and the deadline (inline SVG)."""
    points = list(area.snapshots.order_by("day").values_list("day", "units_signed"))
    if not points:
        return "–"
    needed = figures["units_missing_for_quota"] + figures["units_signed"]
    top = max([needed, *(units for day, units in points), 1])
    first = points[0][0]
    last = max(points[-1][0], area.deadline or points[-1][0])
    span = max((last - first).days, 1)

    def x(day) -> float:
        return 40 + 500 * (day - first).days / span

    def y(units: int) -> float:
        return 170 - 150 * units / top

    line = " ".join(f"{x(day):.1f},{y(units):.1f}" for day, units in points)
    deadline = format_html('<line x1="{0}" x2="{0}" y1="20" y2="170" stroke="#dc3545" stroke-dasharray="4"/>'
                           '<text x="{0}" y="14" font-size="11" text-anchor="middle">{1}</text>',
                           f"{x(area.deadline):.1f}", _("deadline")) if area.deadline else ""
    return format_html(
        '<svg id="signed-chart" width="560" height="190" role="img" aria-label="{}">'
        '<line x1="40" x2="540" y1="170" y2="170" stroke="#adb5bd"/>'
        '<line x1="40" x2="540" y1="{}" y2="{}" stroke="#212529" stroke-dasharray="6 3"/>'
        '<text x="4" y="{}" font-size="11">{}</text>{}'
        '<polyline points="{}" fill="none" stroke="#0d6efd" stroke-width="2"/>'
        '<text x="4" y="184" font-size="11">{}</text><text x="540" y="184" font-size="11" text-anchor="end">{}</text></svg>',
        _("units signed over time"), f"{y(needed):.1f}", f"{y(needed):.1f}", f"{y(needed) - 3:.1f}", _("quota"), deadline,
        line, first.isoformat(), last.isoformat())


STAGE_COLOURS = {"in_scope": "#adb5bd", "signed": "#0d6efd", "passed": "#fd7e14", "connected": "#6f42c1",
                 "activated": "#198754"}


def weekly_funnel_chart(area: models.RolloutArea) -> str:
    """Buildings that reached each stage, at the last snapshot of every ISO week (inline SVG lines)."""
    by_week: dict[tuple[int, int], dict] = {}
    for day, funnel in area.snapshots.exclude(funnel={}).order_by("day").values_list("day", "funnel"):
        by_week[day.isocalendar()[:2]] = {"day": day, **funnel}
    weeks = list(by_week.values())[-52:]
    if not weeks:
        return "–"
    top = max([1, *(week.get("in_scope", [0, 0])[0] for week in weeks)])
    step = 500 / max(len(weeks) - 1, 1)

    def line(stage: str) -> str:
        return " ".join(f"{40 + i * step:.1f},{170 - 150 * week.get(stage, [0, 0])[0] / top:.1f}"
                        for i, week in enumerate(weeks))

    lines = format_html_join("", '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>',
                             ((line(stage), STAGE_COLOURS[stage], label) for stage, label in models.Stage.choices))
    return format_html('<svg id="funnel-chart" width="560" height="190" role="img" aria-label="{}">'
                       '<line x1="40" x2="540" y1="170" y2="170" stroke="#adb5bd"/>{}'
                       '<text x="4" y="184" font-size="11">{}</text><text x="540" y="184" font-size="11" text-anchor="end">{}'
                       '</text><text x="4" y="24" font-size="11">{}</text></svg>', _("the funnel week by week"), lines,
                       weeks[0]["day"].isoformat(), weeks[-1]["day"].isoformat(), top)


class AddressImportForm(forms.Form):
    file = forms.FileField(label=_("Address list (CSV or XLSX)"),
                           help_text=_("Columns area, postal_code, street, house_number, units; a header row; ',' or ';'."))
    quota = forms.DecimalField(label=_("Quota (%)"), required=False, min_value=1, max_value=100, decimal_places=1)
    deadline = forms.DateField(label=_("Pre-marketing deadline"), required=False, widget=forms.DateInput(attrs={"type": "date"}))


@admin.register(models.RolloutArea)
class RolloutAreaAdmin(admin.ModelAdmin):
    list_display = ["name", "gauge", "signed_display", "missing_display", "days_left_display", "units_connected",
                    "addresses_in_scope"]
    search_fields = ["name"]
    fields = ["name", "campaign_start", "quota_percent", "deadline", "promise_connected_weeks", "promise_activated_weeks",
              "promise_notice",
              "notes", "figures_panel", "campaign_panel",
              "funnel_panel", "map_panel", "funnel_chart", "phase_board", "chart", "campaign"]
    readonly_fields = ["figures_panel", "campaign_panel", "funnel_panel", "map_panel", "funnel_chart", "phase_board", "chart",
                       "campaign"]

    def get_readonly_fields(self, request: HttpRequest, obj: models.RolloutArea | None = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.campaign_started:
            fields = ["campaign_start", "quota_percent", "deadline", *fields]  # frozen: changed by an approved proposal
        return fields

    def save_model(self, request: HttpRequest, obj: models.RolloutArea, form: Any, change: bool) -> None:
        if change:
            terms = {name: form.cleaned_data[name] for name in ("quota_percent", "deadline", "campaign_start")
                     if name in form.changed_data and form.cleaned_data.get(name) is not None}
            area_terms_change(obj, **terms)  # raises ThresholdFrozen once the campaign started
        super().save_model(request, obj, form, change)

    @admin.display(description=_("pre-marketing"))
    def campaign_panel(self, obj: models.RolloutArea) -> str:
        if not obj.pk:
            return "–"
        forecast = area_forecast(obj)

        def day(value: Any) -> str:
            return formats.date_format(value, "SHORT_DATE_FORMAT") if value else "–"

        def rate(value: float | None) -> str:
            return "–" if value is None else formats.number_format(value, 1)

        errors = forecast_error_days()
        past = ", ".join(f"{area.name}: {days:+d}" for area, days in errors) or "–"
        rows = [(_("signed per day (last 14 days)"), f"{rate(forecast.rate_per_day)} ± {rate(forecast.spread_per_day)}"),
                (_("needed per day for the quota"), rate(forecast.needed_per_day)),
                (_("quota reached (forecast)"),
                 f"{day(forecast.reached_on)} ({day(forecast.earliest)} – {day(forecast.latest)})"),
                (_("forecast error on past campaigns (days)"), past)]
        table = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        links = format_html(
            '<a href="{}" id="walk-list">{}</a> (<a href="{}">CSV</a> · <a href="{}">XLSX</a>) · <a href="{}">{}</a> · '
            '<a href="{}">{}</a> · {}',
            reverse("admin:projects_rolloutarea_walk", args=[obj.pk, "html"]), _("walk list"),
            reverse("admin:projects_rolloutarea_walk", args=[obj.pk, "csv"]),
            reverse("admin:projects_rolloutarea_walk", args=[obj.pk, "xlsx"]),
            reverse("admin:projects_rolloutarea_propose", args=[obj.pk]), _("propose a change of quota or deadline"),
            reverse("admin:projects_latesignup_changelist") + f"?area__id__exact={obj.pk}",
            _("late sign-ups: %(count)d") % {"count": obj.late_signups.count()}, self._gauge_links(obj))
        return format_html('<table id="campaign-panel">{}</table><p>{}</p>', table, links)

    def _gauge_links(self, obj: models.RolloutArea) -> str:
        action = reverse("admin:projects_rolloutarea_gauge", args=[obj.pk])
        if obj.public_token:
            url = reverse("public-gauge", args=[obj.public_token])
            return format_html('{}: <a href="{}" id="public-gauge-link">{}</a> (<a href="{}">SVG</a>, <a href="{}">JSON</a>) · '
                               '<a href="{}?revoke=1">{}</a>', _("public gauge"), url, url,
                               reverse("public-gauge-file", args=[obj.public_token, "svg"]),
                               reverse("public-gauge-file", args=[obj.public_token, "json"]), action, _("revoke"))
        return format_html('<a href="{}" id="public-gauge-make">{}</a>', action, _("make a public gauge"))
    change_list_template = "admin/projects/rolloutarea/change_list.html"

    @admin.display(description=_("take-up against the quota"))
    def gauge(self, obj: models.RolloutArea) -> str:
        return take_up_gauge(area_figures(obj))

    @admin.display(description=_("units signed / in scope"))
    def signed_display(self, obj: models.RolloutArea) -> str:
        return f"{obj.units_signed} / {obj.units_in_scope}"

    @admin.display(description=_("missing for the quota"))
    def missing_display(self, obj: models.RolloutArea) -> int:
        return area_figures(obj)["units_missing_for_quota"]

    @admin.display(description=_("days left"), ordering="deadline")
    def days_left_display(self, obj: models.RolloutArea) -> str:
        days = area_figures(obj)["days_left"]
        return "–" if days is None else (str(days) if days >= 0 else _("deadline passed"))

    @admin.display(description=_("figures"))
    def figures_panel(self, obj: models.RolloutArea) -> str:
        if not obj.pk:
            return "–"
        figures = area_figures(obj)
        rows = [(_("take-up"), take_up_gauge(figures)), (_("units signed"), figures["units_signed"]),
                (_("units in scope"), figures["units_in_scope"]), (_("addresses in scope"), figures["addresses_in_scope"]),
                (_("missing for the quota"), figures["units_missing_for_quota"]),
                (_("days left"), "–" if figures["days_left"] is None else figures["days_left"]),
                (_("units connected"), figures["units_connected"])]
        body = format_html("<tr><th>{}</th><td>{}</td></tr>" * len(rows), *[value for row in rows for value in row])
        return format_html('<table id="area-figures">{}</table>', body)

    @admin.display(description=_("from signed to switched on"))
    def funnel_panel(self, obj: models.RolloutArea) -> str:
        if not obj.pk:
            return "–"
        funnel = area_funnel(obj.pk)
        labels = dict(models.Stage.choices)
        stuck_labels = {"signed_not_passed": _("signed, not passed"), "passed_not_connected": _("passed, not connected"),
                        "connected_not_activated": _("connected, not activated")}
        buildings_url = reverse("admin:projects_areaaddress_changelist")
        head = format_html_join("", "<th>{}</th>", ((labels[stage["key"]],) for stage in funnel.stages))
        counts = format_html_join("", '<td><a href="{}?area__id__exact={}&amp;reached={}">{}</a> ({} {})</td>', (
            (buildings_url, obj.pk, stage["key"], stage["buildings"], stage["units"], _("units")) for stage in funnel.stages))
        conversion = format_html_join("", "<td>{}</td>", (
            ("–" if stage["conversion_percent"] is None else f'{formats.number_format(stage["conversion_percent"], 1)} %',)
            for stage in funnel.stages))
        stuck = format_html_join(" · ", '<a href="{}?area__id__exact={}&amp;stuck={}">{}: {}</a> ({})', (
            (buildings_url, obj.pk, name, stuck_labels[name], count,
             _("after %(days)d days") % {"days": funnel.stuck_after_days[name]}) for name, count in funnel.stuck.items()))
        csv_url = reverse("admin:projects_rolloutarea_stuck", args=[obj.pk, "csv"])
        xlsx_url = reverse("admin:projects_rolloutarea_stuck", args=[obj.pk, "xlsx"])
        return format_html('<table id="area-funnel"><tr>{}</tr><tr>{}</tr><tr>{}</tr></table><p id="area-stuck">{}: {} · '
                           '<a href="{}">CSV</a> · <a href="{}">XLSX</a></p>', head, counts, conversion, _("stuck"), stuck,
                           csv_url, xlsx_url)

    @admin.display(description=_("map"))
    def map_panel(self, obj: models.RolloutArea) -> str:
        if not obj.pk:
            return "–"
        counts = buildings_stage_counts(obj.pk)
        legend = format_html_join("", '<span class="legend"><svg width="12" height="12"><circle cx="6" cy="6" r="5" '
                                  'fill="{}" stroke="#212529"/></svg> {}: {}</span> ',
                                  ((STAGE_COLOURS[stage], label, counts.get(stage, 0)) for stage, label in models.Stage.choices))
        return format_html(
            '<link rel="stylesheet" href="{}"><div id="area-map" style="height:420px;max-width:900px;background:#f8f9fa" '
            'data-geojson="{}" data-tiles="{}" data-attribution="{}" data-colours="{}" data-unlocated-label="{}"></div>'
            '<div id="area-map-legend">{}</div>'
            '<div id="area-unlocated"></div><script src="{}"></script><script src="{}"></script>',
            static("leaflet/leaflet.css"), reverse("admin:projects_rolloutarea_buildings_geojson", args=[obj.pk]),
            settings.MAP_TILE_URL, settings.MAP_TILE_ATTRIBUTION, json.dumps(STAGE_COLOURS),
            _("Buildings without coordinates (not on the map):"), legend,
            static("leaflet/leaflet.js"), static("projects/area_map.js"))

    @admin.display(description=_("the funnel week by week"))
    def funnel_chart(self, obj: models.RolloutArea) -> str:
        return weekly_funnel_chart(obj) if obj.pk else "–"

    @admin.display(description=_("projects by phase"))
    def phase_board(self, obj: models.RolloutArea) -> str:
        labels = dict(models.AusbauProject.Phase.choices)
        order = list(labels)
        cells = [(labels.get(phase, phase), count) for phase, count in
                 sorted(obj.projects_by_phase.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)]
        if not cells:
            return "–"
        sections = area_sections(obj)
        board = format_html('<table id="phase-board"><tr>{}</tr><tr>{}</tr></table>',
                            format_html("<th>{}</th>" * len(cells), *[label for label, count in cells]),
                            format_html("<td>{}</td>" * len(cells), *[count for label, count in cells]))
        if not sections:
            return board
        return format_html('{}<table id="section-board"><tr><th>{}</th>{}</tr><tr><td></td>{}</tr></table>', board,
                           _("running workflows by section"), format_html("<th>{}</th>" * len(sections),
                                                                        *[name for name, count in sections]),
                           format_html("<td>{}</td>" * len(sections), *[count for name, count in sections]))

    @admin.display(description=_("units signed over time"))
    def chart(self, obj: models.RolloutArea) -> str:
        return signed_chart(obj, area_figures(obj)) if obj.pk else "–"

    @admin.display(description=_("addresses without a contract"))
    def campaign(self, obj: models.RolloutArea) -> str:
        if not obj.pk:
            return "–"
        count = unsigned_addresses(obj).count()
        csv_url = reverse("admin:projects_rolloutarea_unsigned", args=[obj.pk, "csv"])
        xlsx_url = reverse("admin:projects_rolloutarea_unsigned", args=[obj.pk, "xlsx"])
        return format_html('{} · <a href="{}" id="unsigned-csv">CSV</a> · <a href="{}">XLSX</a>', count, csv_url, xlsx_url)

    def get_urls(self) -> list:
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="projects_rolloutarea_import"),
            path("<path:object_id>/unsigned.<str:kind>", self.admin_site.admin_view(self.unsigned_view),
                 name="projects_rolloutarea_unsigned"),
            path("<path:object_id>/stuck.<str:kind>", self.admin_site.admin_view(self.stuck_view),
                 name="projects_rolloutarea_stuck"),
            path("<path:object_id>/buildings.geojson", self.admin_site.admin_view(self.buildings_geojson_view),
                 name="projects_rolloutarea_buildings_geojson"),
            path("<path:object_id>/walk.<str:kind>", self.admin_site.admin_view(self.walk_view),
                 name="projects_rolloutarea_walk"),
            path("<path:object_id>/propose/", self.admin_site.admin_view(self.propose_view),
                 name="projects_rolloutarea_propose"),
            path("<path:object_id>/gauge/", self.admin_site.admin_view(self.gauge_view), name="projects_rolloutarea_gauge"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {}), "can_import": self.has_add_permission(request)}
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload an address list (permission to add areas); a file with bad rows changes nothing."""
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied
        form = AddressImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                # At most one byte over the cap is read: enough for the service to refuse it.
                content = upload.read(settings.AREA_IMPORT_MAX_BYTES + 1)
                result = area_addresses_import(read_address_file(upload.name, content),
                                               quota_percent=form.cleaned_data["quota"], deadline=form.cleaned_data["deadline"])
            except ImportRejected as exc:
                errors = exc.errors
            else:
                self.message_user(request, _("%(areas)d areas imported: %(detail)s") % {
                    "areas": len(result.areas), "detail": ", ".join(f"{k} ({v})" for k, v in result.areas.items())},
                    messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_rolloutarea_changelist"))
        context = {**self.admin_site.each_context(request), "title": _("Import addresses in scope"), "opts": self.model._meta,
                   "form": form, "errors": errors}
        return TemplateResponse(request, "admin/projects/area_import.html", context)

    def unsigned_view(self, request: HttpRequest, object_id: str, kind: str) -> HttpResponse:
        """The addresses without a contract as CSV or XLSX, for the door-to-door campaign."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        rows = [[a.postal_code, a.street, a.house_number, a.units] for a in unsigned_addresses(area)]
        filename = f"{area.name}-ohne-vertrag" if request.LANGUAGE_CODE.startswith("de") else f"{area.name}-unsigned"
        return spreadsheet_response(["postal_code", "street", "house_number", "units"], rows, filename, kind)

    def stuck_view(self, request: HttpRequest, object_id: str, kind: str) -> HttpResponse:
        """The area's stuck buildings (every list) as CSV or XLSX, oldest first in each list."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        filename = f"{area.name}-haengend" if request.LANGUAGE_CODE.startswith("de") else f"{area.name}-stuck"
        return spreadsheet_response(STUCK_COLUMNS, stuck_rows(area.pk), filename, kind)

    def walk_view(self, request: HttpRequest, object_id: str, kind: str) -> HttpResponse:
        """Where to knock next: per street, the households without a contract (print view, CSV or XLSX)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        streets = walk_list(area)
        if kind == "html":
            return TemplateResponse(request, "admin/projects/walk_list.html", {
                **self.admin_site.each_context(request), "area": area, "streets": streets, "opts": self.model._meta,
                "title": _("Walk list: %(area)s") % {"area": area.name}})
        rows = [[street.name, a.house_number, street.postal_code, a.units, street.signed_percent]
                for street in streets for a in street.addresses]
        filename = f"{area.name}-laufliste" if request.LANGUAGE_CODE.startswith("de") else f"{area.name}-walk-list"
        return spreadsheet_response(["street", "house_number", "postal_code", "units", "street_signed_percent"], rows,
                                    filename, kind)

    def propose_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Propose a change of a started campaign's quota or deadline, with a reason, for another person to approve."""
        if not self.has_view_permission(request) or not request.user.has_perm("projects.add_quotachange"):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        form = ProposeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                quota_change_propose(area, quota_percent=form.cleaned_data["quota_percent"],
                                     deadline=form.cleaned_data["deadline"], reason=form.cleaned_data["reason"],
                                     user=request.user, actor=request.user.get_username())
            except NotAllowed as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(request, _("Proposed; another person with the permission approves it."), messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:projects_quotachange_changelist"))
        return TemplateResponse(request, "admin/projects/area_propose.html", {
            **self.admin_site.each_context(request), "area": area, "form": form, "opts": self.model._meta,
            "title": _("Propose a change: %(area)s") % {"area": area.name}})

    def gauge_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Make (or, with ?revoke=1, revoke) the area's public gauge; a confirmation page, then POST."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        revoke = request.GET.get("revoke") == "1"
        if request.method == "POST":
            if revoke:
                public_gauge_revoke(area)
                self.message_user(request, _("The public gauge is revoked; its address shows nothing any more."))
            else:
                public_gauge_enable(area)
                self.message_user(request, _("The public gauge has a new address; an earlier one shows nothing any more."))
            return HttpResponseRedirect(reverse("admin:projects_rolloutarea_change", args=[area.pk]))
        return TemplateResponse(request, "admin/projects/area_gauge.html", {
            **self.admin_site.each_context(request), "area": area, "revoke": revoke, "opts": self.model._meta,
            "title": _("Public gauge: %(area)s") % {"area": area.name}})

    def buildings_geojson_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The map's data: buildings as points coloured by stage, the outline, the buildings without coordinates."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        area = get_object_or_404(models.RolloutArea, pk=parse_id(object_id))
        return JsonResponse(buildings_geojson(area.pk, link=lambda building: building_file_url(building.key)))


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ProposeForm(forms.Form):
    quota_percent = forms.DecimalField(label=_("New quota (%)"), required=False, min_value=1, max_value=100,
                                       decimal_places=1)
    deadline = forms.DateField(label=_("New deadline"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    reason = forms.CharField(label=_("Reason"), widget=forms.Textarea(attrs={"rows": 3}), max_length=2000)


def spreadsheet_response(header: list[str], rows: list[list[Any]], filename: str, kind: str) -> HttpResponse:
    """Rows as a CSV or XLSX download; text never becomes a formula."""
    rows = [[spreadsheet_safe(value) for value in row] for row in rows]
    if kind == "xlsx":
        from openpyxl import Workbook

        book = Workbook()
        sheet = book.active
        sheet.append(header)
        for row in rows:
            sheet.append(row)
            for cell in sheet[sheet.max_row]:
                if isinstance(cell.value, str):
                    cell.data_type = "s"  # a text cell, never a formula, whatever it starts with
        buffer = io.BytesIO()
        book.save(buffer)
        response = HttpResponse(buffer.getvalue(), content_type=XLSX)
        response["Content-Disposition"] = content_disposition_header(True, f"{filename}.xlsx")
        return response
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, f"{filename}.csv")
    return response
