"""Rollout areas: importing the addresses in scope, and the figures the rollout is steered by.

Figures (their names are the API's contract): `units_in_scope`, `addresses_in_scope`, `units_signed`
(units of addresses with at least one matched opportunity that is neither deleted nor `abgebrochen`
and has a signed order: not deleted, `placed` or `completed`, linked through the order's
`opportunity` relation or the opportunity's `items`), `take_up_percent`, `quota_percent`,
`units_missing_for_quota`, `deadline`, `days_left`, `units_connected` (units of buildings that reached
the funnel's `connected` milestone; while no rule marks it, of addresses whose project is `completed`) and
`projects_by_phase`. They are recomputed for the areas whose addresses a change
of the mirror's projects touches (all of them after a full sync or an import).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from projects.mirror.addresses import address_key, searchable
from projects.mirror.bulk import bulk_update_by_pk, column_in, values_read_at_once
from projects.mirror.prefetch import read_ahead
from projects.models import AreaAddress, AreaSnapshot, AusbauProject, Opportunity, Order, RolloutArea, Stage
from projects.services.errors import NotAllowed
from projects.services.milestones import MILESTONES, BuildingMilestones, milestone_rules, milestones_of

COLUMNS = ["area", "postal_code", "street", "house_number", "units"]  # and optionally lat, lon
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
                          deadline: dt.date | None = None, outline: bytes | None = None) -> ImportResult:
    """Replace the address lists of the areas the rows name (creating areas as needed), all or nothing.

    Optional columns `lat` and `lon` place a building on the map (else epilot's coordinates do); `outline`
    is a GeoJSON polygon of the area (a FeatureCollection names each feature's area in `properties.area`).
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
        location = _location(row.get("lat", ""), row.get("lon", ""))
        if location is None:
            problems.append(_("lat and lon must both be decimal degrees (latitude -90 to 90, longitude -180 to 180)"))
        if any("\x00" in value for value in row.values()):
            problems.append(_("a value contains a NUL character"))
        elif key in by_area[area]:
            problems.append(_("the address is listed twice for this area"))
        if problems:
            errors.append(_("line %(line)d: %(problems)s") % {"line": line, "problems": ", ".join(problems)})
            continue
        latitude, longitude = location or (None, None)
        by_area[area][key] = AreaAddress(postal_code=row["postal_code"], street=row["street"],
                                         house_number=row["house_number"], units=units, key=key, latitude=latitude,
                                         longitude=longitude, located_by_import=latitude is not None,
                                         search_text=searchable(row["street"], row["house_number"], row["postal_code"]))
    if errors:
        raise ImportRejected(errors)
    if not by_area:
        raise ImportRejected([_("the file lists no addresses")])
    outlines = read_outlines(outline, list(by_area)) if outline else {}
    with transaction.atomic():
        for name, addresses in by_area.items():
            area, _created = RolloutArea.objects.get_or_create(name=name)
            if name in outlines:
                area.outline = outlines[name]
                area.save(update_fields=["outline"])
            if area.campaign_started and area.changes_terms(quota_percent, deadline):
                raise ImportRejected([_("the campaign of %(area)s started: its quota and deadline change only by an "
                                        "approved proposal") % {"area": name}])
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


def _location(lat: str, lon: str) -> tuple[float, float] | tuple[None, None] | None:
    """(lat, lon) of an import row; (None, None) when it has none; None when they are not coordinates."""
    if not lat and not lon:
        return None, None
    try:
        latitude, longitude = float(lat.replace(",", ".")), float(lon.replace(",", "."))
    except ValueError:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    return latitude, longitude


MAX_OUTLINE_POINTS = 10_000


def read_outlines(content: bytes, areas: list[str]) -> dict[str, dict[str, Any]]:
    """area name → GeoJSON Polygon or MultiPolygon from a GeoJSON file: a geometry or a Feature (for the one area
    imported), or a FeatureCollection whose features name their area in `properties.area` (or `name`).

    Raises ImportRejected when it is not such a file or names an area the import does not list.
    """
    try:
        document = json.loads(content.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise ImportRejected([_("the outline is not a GeoJSON file")]) from None
    features = document.get("features") if isinstance(document, dict) and document.get("type") == "FeatureCollection" \
        else [document]
    outlines: dict[str, dict[str, Any]] = {}
    for feature in features if isinstance(features, list) else []:
        if not isinstance(feature, dict):
            continue
        geometry = feature.get("geometry") if feature.get("type") == "Feature" else feature
        properties = feature.get("properties") if isinstance(feature.get("properties"), dict) else {}
        name = str(properties.get("area") or properties.get("name") or (areas[0] if len(areas) == 1 else ""))
        if name not in areas:
            raise ImportRejected([_("the outline names the area %(area)s, which the address list does not list")
                                  % {"area": name or "–"}])
        if not _is_polygon(geometry):
            raise ImportRejected([_("the outline of %(area)s is not a GeoJSON Polygon or MultiPolygon in degrees")
                                  % {"area": name}])
        outlines[name] = {"type": geometry["type"], "coordinates": geometry["coordinates"]}
    if not outlines:
        raise ImportRejected([_("the outline holds no polygon")])
    return outlines


def _is_polygon(geometry: Any) -> bool:
    if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
        return False
    polygons = geometry.get("coordinates")
    polygons = [polygons] if geometry["type"] == "Polygon" else polygons
    points = [point for polygon in polygons or [] if isinstance(polygon, list) for ring in polygon
              if isinstance(ring, list) for point in ring]
    return 0 < len(points) <= MAX_OUTLINE_POINTS and all(
        isinstance(point, list) and len(point) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                            for v in point[:2])
        and -180 <= point[0] <= 180 and -90 <= point[1] <= 90 for point in points)


PHASE_COLUMNS = {phase: f"projects_{phase}" for phase in AusbauProject.Phase.values}
MILESTONE_COLUMNS = ["stage", "signed_at", "passed_at", "connected_at", "activated_at", "waiting_on", "latitude",
                     "longitude"]
ADDRESS_FIGURES = ["signed", "connected", *PHASE_COLUMNS.values(), *MILESTONE_COLUMNS]


def areas_refresh(*, address_keys: Iterable[str] | None = None) -> int:
    """Recompute the figures of the addresses with these keys and the areas that list them (everything when None);
    returns how many areas were updated.

    Each address keeps what it contributes (signed, connected, projects by phase, its milestones); an
    area's figures are their sums, added up by the database. A change therefore costs its own addresses
    and one sum per area it touches. An area whose addresses were never computed is computed whole first.
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
    # Outside an outer transaction another connection sees what the figures are worked out from.
    beside = not connection.in_atomic_block
    with transaction.atomic():
        _lock(areas)
        addresses = AreaAddress.objects.order_by()
        columns = ("pk", "key", "located_by_import", *ADDRESS_FIGURES)
        if keys is None:
            # Every figure of an address comes from the opportunities at it (deleted ones too: their projects
            # count), so only the addresses with one are worked out, a chunk at a time from their own
            # opportunities: what a full refresh holds at once is bounded by the chunk, not by the size of the
            # mirror (`figure_chunks`). A thread works out the next chunk's figures while this one's are stored;
            # it reads no address, and it starts once the areas are locked, so a refresh that waited for them
            # still comes after everything this one read. The other addresses are emptied by one statement where
            # they are not.
            with_opportunities = Opportunity.objects.exclude(address_key="").filter(address_key__in=addresses.values("key"))
            chunks = figure_chunks(with_opportunities.order_by().values_list("address_key").annotate(Count("id")))
            with contextlib.closing(read_ahead(chunks, address_figures, in_thread=beside)) as figures:
                for chunk, chunk_figures in zip(chunks, figures, strict=True):
                    _store_address_figures(_read_addresses(addresses.filter(column_in(AreaAddress, "key", chunk)), columns),
                                           chunk_figures)
            _empty_figures(addresses.exclude(key__in=with_opportunities.values("address_key")))
        else:
            never = [area.pk for area in areas if area.figures_at is None]
            listed = list(addresses.filter(column_in(AreaAddress, "key", keys)).values_list(*columns))
            if never:
                listed += addresses.filter(column_in(AreaAddress, "area", never)).values_list(*columns)
            _store_address_figures(listed, address_figures(sorted({row[1] for row in listed})))
        _store_area_sums(areas, timezone.now())
    return len(areas)


FIGURES_CHUNK = 2000  # addresses whose figures a full refresh works out at once, at most
FIGURES_CHUNK_OPPORTUNITIES = 5000  # and the opportunities at them, unless one address alone has more


def figure_chunks(opportunities_per_key: Iterable[tuple[str, int]]) -> list[list[str]]:
    """Address keys, sorted, in chunks of at most FIGURES_CHUNK keys and FIGURES_CHUNK_OPPORTUNITIES opportunities.

    A chunk's figures are worked out from every opportunity at its addresses, their orders and
    projects: bounded by addresses alone, a chunk would hold more the more opportunities each building has.
    """
    chunks: list[list[str]] = []
    chunk: list[str] = []
    opportunities = 0
    for key, count in sorted(opportunities_per_key):
        if chunk and (len(chunk) == FIGURES_CHUNK or opportunities + count > FIGURES_CHUNK_OPPORTUNITIES):
            chunks.append(chunk)
            chunk, opportunities = [], 0
        chunk.append(key)
        opportunities += count
    if chunk:
        chunks.append(chunk)
    return chunks


def _read_addresses(addresses: Any, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """The addresses' `columns`, while a thread works out the next chunk's figures.

    sqlite3 steps through a result row by row and gives the GIL up at every row, each time waiting
    for the working thread to hand it back: SQLite's rows are read at once. psycopg reads a result in
    one step, and PostgreSQL's JSON of these mostly empty columns would cost more than the rows.
    """
    if connection.vendor == "postgresql":
        return list(addresses.values_list(*columns))
    return values_read_at_once(addresses, *columns)


def areas_snapshot() -> int:
    """Write today's snapshot (units signed, the funnel) of every area from its buildings as they stand, so the charts
    have a point for every day even when nothing changed; returns how many areas."""
    areas = list(RolloutArea.objects.order_by("pk"))
    if not areas:
        return 0
    with transaction.atomic():
        _lock(areas)
        _store_area_sums(areas, timezone.now())
    return len(areas)


def _lock(areas: list[RolloutArea]) -> None:
    """Lock the areas' rows until the transaction ends: two workers refreshing one area go one after the other, so
    neither sums it without the other's addresses (PostgreSQL; SQLite writes one transaction at a time anyway).
    Locked in one order: no deadlock."""
    list(RolloutArea.objects.select_for_update().filter(pk__in=[area.pk for area in areas]).order_by("pk")
         .values_list("pk", flat=True))


def address_figures(keys: list[str]) -> dict[str, tuple[Any, ...]]:
    """key -> its figures in ADDRESS_FIGURES' order for these address keys.

    Signed: a live opportunity (not deleted, not `abgebrochen`) at the address has a signed order
    (not deleted, `placed` or `completed`); signed since that order's creation in epilot. Connected: the
    building reached the `connected` milestone, or, while no rule marks that milestone, a project at the
    address is `completed`. The stage and milestone dates: services/milestones.py.
    """
    # The opportunities at these addresses and their orders, read once for the signed figures and the milestones.
    # Deleted ones too (their projects count), read once: the projects are then found by their unique opportunity.
    at_keys = Opportunity.objects.exclude(address_key="").filter(column_in(Opportunity, "address_key", keys)).order_by()
    every = values_read_at_once(at_keys, "id", "address_key", "status", "latitude", "longitude", "epilot_deleted_at")
    opportunities = [row[:5] for row in every if row[5] is None]
    key_of = {pk: key for pk, key, status, _latitude, _longitude in opportunities if status != "abgebrochen"}  # live ones
    signed: dict[str, Any] = {}
    # From the opportunities at these addresses to their orders (both indexed), never from all signed orders. By the
    # indexed opportunity column alone, status and deletion picked here: given them, SQLite's planner preferred the
    # status index and read every placed order.
    orders = Order.objects.filter(column_in(Order, "opportunity", [row[0] for row in opportunities])).order_by()
    order_rows = values_read_at_once(orders, "id", "opportunity", "status", "epilot_deleted_at", "epilot_created_at",
                                     "synced_at")
    for _pk, owner, status, deleted, created, synced in order_rows:
        if owner not in key_of or deleted is not None or status not in SIGNED_ORDER_STATUSES:
            continue
        since = created or synced
        if key_of[owner] not in signed or since < signed[key_of[owner]]:
            signed[key_of[owner]] = since
    key_by_pk = {row[0]: row[1] for row in every}
    projects = AusbauProject.objects.filter(column_in(AusbauProject, "opportunity", list(key_by_pk))).order_by()
    phases_by_key: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PHASE_COLUMNS, 0))
    for owner, phase in values_read_at_once(projects, "opportunity", "phase"):
        phases_by_key[key_by_pk[owner]][phase] += 1
    rules = milestone_rules()
    milestones = milestones_of(keys, [(pk, key, latitude, longitude) for pk, key, _status, latitude, longitude in opportunities],
                               [(pk, owner) for pk, owner, _status, deleted, _created, _synced in order_rows
                                if deleted is None], rules)
    # Connected is the milestone where rules mark it, else (no rule for it yet) a completed project.
    connected_by_rule = any(rule.milestone == "connected" for rule in rules)
    figures = {}
    for key in keys:
        phases = phases_by_key.get(key) or dict.fromkeys(PHASE_COLUMNS, 0)
        building = milestones.get(key) or BuildingMilestones()
        reached = building.reached
        stage = next((m for m in reversed(MILESTONES) if m in reached), Stage.SIGNED if key in signed else Stage.IN_SCOPE)
        connected = "connected" in reached if connected_by_rule else phases[AusbauProject.Phase.COMPLETED] > 0
        figures[key] = (key in signed, connected, *phases.values(), stage, signed.get(key),
                        reached.get("passed"), reached.get("connected"), reached.get("activated"),
                        "" if stage == Stage.ACTIVATED else building.waiting_on, building.latitude, building.longitude)
    return figures


NOTHING = (False, False, *[0] * len(PHASE_COLUMNS), Stage.IN_SCOPE, None, None, None, None, "", None, None)
LOCATION = slice(len(ADDRESS_FIGURES) - 2, None)  # latitude, longitude: kept when they were imported


def _store_address_figures(listed: list[tuple[Any, ...]], figures: dict[str, tuple[Any, ...]]) -> None:
    """Write the figures of the addresses whose figures changed, many rows per statement."""
    changed = []
    for pk, key, located_by_import, *stored in listed:
        wanted = figures.get(key, NOTHING)
        if located_by_import:
            wanted = (*wanted[:LOCATION.start], *stored[LOCATION])
        if tuple(stored) != wanted:
            changed.append({"id": pk, **dict(zip(ADDRESS_FIGURES, wanted, strict=True))})
    bulk_update_by_pk(AreaAddress, changed, ADDRESS_FIGURES)


def _empty_figures(addresses: Any) -> None:
    """Give these addresses (none with an opportunity) the figures of an address with none, where they have others;
    coordinates that came with the import are kept."""
    empty = dict(zip(ADDRESS_FIGURES, NOTHING, strict=True))
    location = {name: empty.pop(name) for name in ADDRESS_FIGURES[LOCATION]}
    addresses.filter(located_by_import=True).exclude(**empty).update(**empty)
    addresses.filter(located_by_import=False).exclude(**empty, **location).update(**empty, **location)


def _store_area_sums(areas: list[RolloutArea], now: Any) -> None:
    """Each area's figures as the database sums them over its addresses (one aggregate), and the day's snapshot with
    its funnel."""
    sums = {row["area"]: row for row in AreaAddress.objects.filter(column_in(AreaAddress, "area", [a.pk for a in areas]))
            .order_by().values("area").annotate(
                all_units=Sum("units"), count=Count("id"), signed_units=Sum("units", filter=Q(signed=True)),
                connected_units=Sum("units", filter=Q(connected=True)), **{f"sum_{c}": Sum(c) for c in PHASE_COLUMNS.values()},
                **FUNNEL_AGGREGATES)}
    today = timezone.localdate(now)
    for area in areas:
        row = sums.get(area.pk, {})
        signed = row.get("signed_units") or 0
        RolloutArea.objects.filter(pk=area.pk).update(
            units_in_scope=row.get("all_units") or 0, addresses_in_scope=row.get("count") or 0, units_signed=signed,
            units_connected=row.get("connected_units") or 0, figures_at=now,
            projects_by_phase={phase: row[f"sum_{column}"] for phase, column in PHASE_COLUMNS.items()
                               if row.get(f"sum_{column}")})
        snapshot = {"units_signed": signed, "funnel": {stage["key"]: [stage["buildings"], stage["units"]]
                                                       for stage in _funnel_of(row)}}
        # One UPDATE in the common case (today's row exists); the area's lock keeps a second writer out meanwhile.
        if not AreaSnapshot.objects.filter(area=area, day=today).update(**snapshot):
            AreaSnapshot.objects.create(area=area, day=today, **snapshot)


STAGE_REACHED = {"in_scope": Q(), "signed": Q(signed=True), "passed": Q(passed_at__isnull=False),
                 "connected": Q(connected_at__isnull=False), "activated": Q(activated_at__isnull=False)}
FUNNEL_AGGREGATES = {name: aggregate for stage, reached in STAGE_REACHED.items() for name, aggregate in (
    (f"reached_{stage}_buildings", Count("id", filter=reached)), (f"reached_{stage}_units", Sum("units", filter=reached)))}


def _funnel_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": stage, "buildings": row.get(f"reached_{stage}_buildings") or 0,
             "units": row.get(f"reached_{stage}_units") or 0} for stage in STAGE_REACHED]


def funnel_stages(area_ids: list[int] | None) -> dict[int | None, list[dict[str, Any]]]:
    """area pk (None: all of these areas together) → buildings and units that reached each stage, in the build's
    order; a building counts at every milestone it reached, whatever came after. All areas when `area_ids` is None."""
    addresses = AreaAddress.objects.order_by()
    if area_ids is not None:
        addresses = addresses.filter(column_in(AreaAddress, "area", area_ids))
    result: dict[int | None, list[dict[str, Any]]] = {}
    total: dict[str, int] = defaultdict(int)
    for row in addresses.values("area").annotate(**FUNNEL_AGGREGATES):
        result[row["area"]] = _funnel_of(row)
        for name in FUNNEL_AGGREGATES:
            total[name] += row[name] or 0
    result[None] = _funnel_of(total)
    return result


def areas_on_projects_changed(sender: Any, opportunity_ids: set[int] | None, address_keys: set[str], **kwargs: Any) -> None:
    """Listener of `projects_changed`: the areas at these addresses (all after a full run) get new figures."""
    areas_refresh(address_keys=None if opportunity_ids is None else address_keys)
