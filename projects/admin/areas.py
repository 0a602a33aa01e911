"""Rollout areas in the admin: take-up against the quota, the phase board, the campaign list, the import."""
from __future__ import annotations

import csv
import io
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.admin.base import ReadOnlyAdmin
from projects.formatting import spreadsheet_safe
from projects.selectors import area_figures, area_sections, unsigned_addresses
from projects.services.areas import ImportRejected, area_addresses_import, read_address_file
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
    fields = ["name", "quota_percent", "deadline", "notes", "figures_panel", "phase_board", "chart", "campaign"]
    readonly_fields = ["figures_panel", "phase_board", "chart", "campaign"]
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
        header = ["postal_code", "street", "house_number", "units"]
        rows = [[spreadsheet_safe(value) for value in row] for row in rows]
        filename = f"{area.name}-ohne-vertrag" if request.LANGUAGE_CODE.startswith("de") else f"{area.name}-unsigned"
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
            response = HttpResponse(buffer.getvalue(),
                                    content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
            response["Content-Disposition"] = content_disposition_header(True, f"{filename}.xlsx")
            return response
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = content_disposition_header(True, f"{filename}.csv")
        return response


@admin.register(models.AreaAddress)
class AreaAddressAdmin(ReadOnlyAdmin):
    list_display = ["street", "house_number", "postal_code", "units", "area"]
    list_filter = ["area"]
    search_fields = ["street", "postal_code"]
    list_select_related = ["area"]
