"""Rollout areas: importing the addresses in scope, and the figures the rollout is steered by.

Figures (their names are the API's contract): `units_in_scope`, `addresses_in_scope`, `units_signed`
(units of addresses with at least one matched opportunity that is neither deleted nor `abgebrochen`
and has a signed order: not deleted, `placed` or `completed`, linked through the order's
`opportunity` relation or the opportunity's `items`), `take_up_percent`, `quota_percent`,
`units_missing_for_quota`, `deadline`, `days_left`, `units_connected` (units of addresses whose
project is `completed`) and `projects_by_phase`. They are recomputed for the areas whose addresses a change
of the mirror's projects touches (all of them after a full sync or an import).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from projects.mirror.addresses import address_key
from projects.mirror.bulk import column_in, values_read_at_once
from projects.models import AreaAddress, AreaSnapshot, AusbauProject, Opportunity, Order, RolloutArea
from projects.services.errors import NotAllowed

COLUMNS = ["area", "postal_code", "street", "house_number", "units"]
SIGNED_ORDER_STATUSES = ("placed", "completed")


@dataclass(frozen=True)
class ImportResult:
    areas: dict[str, int]  # area name → addresses imported


class ImportRejected(NotAllowed):
    """The file has bad rows; nothing was imported. `errors` names each row by its line number."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(_("Nothing was imported; %(count)d rows are wrong: %(errors)s")
                         % {"count": len(errors), "errors": "; ".join(errors[:20])})
        self.errors = errors


def read_address_file(name: str, content: bytes) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV (`,` or `;`, header row, UTF-8) or XLSX file. Raises ImportRejected for a file over
    AREA_IMPORT_MAX_BYTES, over AREA_IMPORT_MAX_ROWS rows, or one that cannot be read (naming the line)."""
    if len(content) > settings.AREA_IMPORT_MAX_BYTES:
        raise ImportRejected([_("the file is larger than %(size)d KiB") % {"size": settings.AREA_IMPORT_MAX_BYTES // 1024}])
    if Path(name).suffix.lower() == ".xlsx":
        return _capped(_read_xlsx(content))
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRejected([_("the file is neither UTF-8 text nor an XLSX workbook")]) from None
    header = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    try:
        _check_header(reader.fieldnames or [])
        return _capped((reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader)
    except csv.Error as exc:  # a NUL character, a field longer than the csv module takes, broken quoting
        raise ImportRejected([_("line %(line)d: %(problems)s") % {"line": reader.line_num + 1, "problems": str(exc)}]) \
            from None


def _capped(rows: Iterator[tuple[int, dict[str, str]]]) -> list[tuple[int, dict[str, str]]]:
    """The rows, read one by one and refused beyond AREA_IMPORT_MAX_ROWS (a small workbook can claim millions)."""
    read = []
    for row in rows:
        if len(read) == settings.AREA_IMPORT_MAX_ROWS:
            raise ImportRejected([_("the file has more than %(rows)d rows; split it by area")
                                  % {"rows": settings.AREA_IMPORT_MAX_ROWS}])
        read.append(row)
    return read


def _read_xlsx(content: bytes) -> Iterator[tuple[int, dict[str, str]]]:
    from openpyxl import load_workbook

    try:
        # read_only streams the sheet row by row instead of building every cell in memory.
        sheet = load_workbook(io.BytesIO(content), read_only=True, data_only=True).active
        rows = sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS)
        header = [str(cell or "").strip() for cell in next(rows, ())]
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        reason = _("the file is not a readable XLSX workbook (%(error)s)") % {"error": type(exc).__name__}
        raise ImportRejected([reason]) from None
    _check_header(header)
    for line, values in enumerate(rows, start=2):
        if any(value not in (None, "") for value in values):
            yield line, {name: "" if value is None else str(value).strip() for name, value in zip(header, values, strict=False)}


MAX_COLUMNS = 50  # the five columns and whatever else a spreadsheet carries along


def _check_header(header: list[str]) -> None:
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise ImportRejected([_("line 1: the header lacks %(columns)s") % {"columns": ", ".join(missing)}])


def area_addresses_import(rows: Iterable[tuple[int, dict[str, str]]], *, quota_percent: Decimal | None = None,
                          deadline: dt.date | None = None) -> ImportResult:
    """Replace the address lists of the areas the rows name (creating areas as needed), all or nothing.

    Raises ImportRejected naming every bad row by its line number; then nothing changes.
    """
    errors: list[str] = []
    by_area: dict[str, dict[str, AreaAddress]] = defaultdict(dict)
    for line, row in rows:
        problems = []
        area = row.get("area", "")
        if not area or len(area) > 200:
            problems.append(_("area is missing or longer than 200 characters"))
        try:
            units = int(row.get("units", ""))
            if units < 1 or units > 10_000:
                raise ValueError
        except ValueError:
            problems.append(_("units must be a whole number from 1 to 10000"))
            units = 0
        key = address_key(row.get("postal_code", ""), row.get("street", ""), row.get("house_number", ""))
        if not key:
            problems.append(_("postal code, street and house number are all needed"))
        elif len(row.get("postal_code", "")) > 10 or len(row.get("street", "")) > 200 or len(row.get("house_number", "")) > 20:
            problems.append(_("a value is too long"))
        if any("\x00" in value for value in row.values()):
            problems.append(_("a value contains a NUL character"))
        elif key in by_area[area]:
            problems.append(_("the address is listed twice for this area"))
        if problems:
            errors.append(_("line %(line)d: %(problems)s") % {"line": line, "problems": ", ".join(problems)})
            continue
        by_area[area][key] = AreaAddress(postal_code=row["postal_code"], street=row["street"],
                                         house_number=row["house_number"], units=units, key=key)
    if errors:
        raise ImportRejected(errors)
    if not by_area:
        raise ImportRejected([_("the file lists no addresses")])
    with transaction.atomic():
        for name, addresses in by_area.items():
            area, _created = RolloutArea.objects.get_or_create(name=name)
            if quota_percent is not None or deadline is not None:
                if quota_percent is not None:
                    area.quota_percent = quota_percent
                if deadline is not None:
                    area.deadline = deadline
                area.save(update_fields=["quota_percent", "deadline"])
            area.addresses.all().delete()
            for address in addresses.values():
                address.area = area
            AreaAddress.objects.bulk_create(addresses.values(), batch_size=2000)
    areas_refresh()
    return ImportResult(areas={name: len(addresses) for name, addresses in by_area.items()})


PHASE_COLUMNS = {phase: f"projects_{phase}" for phase in AusbauProject.Phase.values}
ADDRESS_FIGURES = ["signed", "connected", *PHASE_COLUMNS.values()]


def areas_refresh(*, address_keys: Iterable[str] | None = None) -> int:
    """Recompute the figures of the addresses with these keys and the areas that list them (everything when None);
    returns how many areas were updated.

    Each address keeps what it contributes (signed, connected, projects by phase); an area's figures
    are their sums, added up by the database. A change therefore costs its own addresses and one sum
    per area it touches. An area whose addresses were never computed is computed whole first.
    """
    if address_keys is None:
        areas = list(RolloutArea.objects.all())
        keys = None
    else:
        keys = sorted(set(address_keys))
        if not keys:
            return 0
        touched = AreaAddress.objects.filter(column_in(AreaAddress, "key", keys)).order_by()
        areas = list(RolloutArea.objects.filter(pk__in=set(values_read_at_once(touched, "area", flat=True))))
    if not areas:
        return 0
    with transaction.atomic():
        # Two workers refreshing one area one after the other, so neither sums it without the other's addresses
        # (PostgreSQL; SQLite writes one transaction at a time anyway). Locked in one order: no deadlock.
        list(RolloutArea.objects.select_for_update().filter(pk__in=[area.pk for area in areas]).order_by("pk")
             .values_list("pk", flat=True))
        addresses = AreaAddress.objects.order_by()
        if keys is None:
            listed = list(addresses.values_list("pk", "key", *ADDRESS_FIGURES))
        else:
            never = [area.pk for area in areas if area.figures_at is None]
            listed = list(addresses.filter(column_in(AreaAddress, "key", keys)).values_list("pk", "key", *ADDRESS_FIGURES))
            if never:
                listed += addresses.filter(column_in(AreaAddress, "area", never)).values_list("pk", "key", *ADDRESS_FIGURES)
        _store_address_figures(listed, address_figures(None if keys is None else sorted({key for _pk, key, *_ in listed})))
        _store_area_sums(areas, timezone.now())
    return len(areas)


def address_figures(keys: list[str] | None) -> dict[str, tuple[Any, ...]]:
    """key -> (signed, connected, projects per phase in PHASE_COLUMNS' order) for these address keys (all when None).

    Signed: a live opportunity (not deleted, not `abgebrochen`) at the address has a signed order
    (not deleted, `placed` or `completed`). Connected: a project at the address is `completed`.
    """
    live = Opportunity.objects.filter(epilot_deleted_at__isnull=True).exclude(status="abgebrochen").exclude(address_key="")
    projects = AusbauProject.objects.exclude(opportunity__address_key="")
    if keys is None:
        signed = set(live.filter(orders__epilot_deleted_at__isnull=True, orders__status__in=SIGNED_ORDER_STATUSES)
                     .order_by().values_list("address_key", flat=True).distinct())
    else:
        # From the opportunities at these addresses to their orders (both indexed), never from all signed orders.
        projects = projects.filter(opportunity__in=Opportunity.objects.filter(column_in(Opportunity, "address_key", keys)))
        key_of = dict(values_read_at_once(live.filter(column_in(Opportunity, "address_key", keys)).order_by(), "id",
                                          "address_key"))
        orders = Order.objects.filter(column_in(Order, "opportunity", list(key_of)), epilot_deleted_at__isnull=True,
                                      status__in=SIGNED_ORDER_STATUSES).order_by()
        signed = {key_of[owner] for owner in values_read_at_once(orders, "opportunity", flat=True)}
    phases_by_key: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PHASE_COLUMNS, 0))
    for key, phase in projects.order_by().values_list("opportunity__address_key", "phase"):
        phases_by_key[key][phase] += 1
    figures = {}
    for key in (keys if keys is not None else signed | set(phases_by_key)):
        phases = phases_by_key.get(key) or dict.fromkeys(PHASE_COLUMNS, 0)
        figures[key] = (key in signed, phases[AusbauProject.Phase.COMPLETED] > 0, *phases.values())
    return figures


NOTHING = (False, False, *[0] * len(PHASE_COLUMNS))


def _store_address_figures(listed: list[tuple[Any, ...]], figures: dict[str, tuple[Any, ...]]) -> None:
    """Write the figures that changed: one UPDATE per distinct set of figures, the addresses' pks as one parameter."""
    by_figures: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for pk, key, *stored in listed:
        wanted = figures.get(key, NOTHING)
        if tuple(stored) != wanted:
            by_figures[wanted].append(pk)
    for wanted, pks in by_figures.items():
        AreaAddress.objects.filter(column_in(AreaAddress, "id", pks)).update(**dict(zip(ADDRESS_FIGURES, wanted, strict=True)))


def _store_area_sums(areas: list[RolloutArea], now: Any) -> None:
    """Each area's figures as the database sums them over its addresses, and the day's snapshot."""
    sums = {row["area"]: row for row in AreaAddress.objects.filter(column_in(AreaAddress, "area", [a.pk for a in areas]))
            .order_by().values("area").annotate(
                all_units=Sum("units"), count=Count("id"), signed_units=Sum("units", filter=Q(signed=True)),
                connected_units=Sum("units", filter=Q(connected=True)), **{f"sum_{c}": Sum(c) for c in PHASE_COLUMNS.values()})}
    today = timezone.localdate(now)
    for area in areas:
        row = sums.get(area.pk, {})
        signed = row.get("signed_units") or 0
        RolloutArea.objects.filter(pk=area.pk).update(
            units_in_scope=row.get("all_units") or 0, addresses_in_scope=row.get("count") or 0, units_signed=signed,
            units_connected=row.get("connected_units") or 0, figures_at=now,
            projects_by_phase={phase: row[f"sum_{column}"] for phase, column in PHASE_COLUMNS.items()
                               if row.get(f"sum_{column}")})
        AreaSnapshot.objects.update_or_create(area=area, day=today, defaults={"units_signed": signed})


def areas_on_projects_changed(sender: Any, opportunity_ids: set[int] | None, address_keys: set[str], **kwargs: Any) -> None:
    """Listener of `projects_changed`: the areas at these addresses (all after a full run) get new figures."""
    areas_refresh(address_keys=None if opportunity_ids is None else address_keys)
