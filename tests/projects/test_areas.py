"""Rollout areas: import, matching, every figure on a hand-made example, the API, exports, permissions."""
from __future__ import annotations

import datetime as dt
import io
import threading
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import demo_id
from projects.mirror.addresses import address_key
from projects.models import AreaAddress, Opportunity, RolloutArea, Stage
from projects.selectors import area_figures
from projects.services.api_clients import api_client_create
from projects.services.areas import (
    ADDRESS_FIGURES,
    FIGURES_CHUNK,
    FIGURES_CHUNK_OPPORTUNITIES,
    ImportRejected,
    area_addresses_import,
    areas_refresh,
    figure_chunks,
    read_address_file,
)
from tests.database_sessions import database_sessions, database_sessions_once_settled

pytestmark = pytest.mark.django_db

# The demo's opportunities (seed): nordstrasse Nordstraße 12 (ausstehend), rohdenhaus Rohdenhauser Straße 40
# (bearbeitung), flehenberg Flehenberger Weg 7 (geschlossen, order completed), schulzentrum Fliethe 20 (geschlossen,
# order placed), angerbach Am Angerbach 1 (abgebrochen); all 42489.
CSV = """area;postal_code;street;house_number;units
Rohdenhaus;42489;Rohdenhauser Str.;40;6
Rohdenhaus;42489;nordstrasse;12 ;2
Rohdenhaus;42489;Fliethe;20;10
Rohdenhaus;42489;Am  Angerbach;1;3
Rohdenhaus;42489;Flehenberger-Weg;7 ;4
Düssel Ortskern;42489;Dorfstraße;3;8
Düssel Ortskern;42489;Dorfstraße;5;5
"""


def write(tmp_path, text: str, name: str = "adressen.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def imported(tmp_path) -> RolloutArea:
    call_command("sync_epilot", stdout=StringIO())
    call_command("import_area_addresses", str(write(tmp_path, CSV)), "--quota", "40", "--deadline", "2027-03-31",
                 stdout=StringIO())
    return RolloutArea.objects.get(name="Rohdenhaus")


@pytest.mark.parametrize("a, b", [
    (("42489", "Nordstraße", "12"), ("42489", "nordstrasse", "12")),
    (("42489", "Nordstr.", "12 a"), ("42489", " NORDSTRASSE ", "12A")),
    (("42489", "Max-Planck-Straße", "1"), ("42489", "Max  Planck -- Str.", "1")),
])
def test_addresses_match_normalised(a, b) -> None:
    assert address_key(*a) == address_key(*b) != ""


def test_different_addresses_do_not_match() -> None:
    assert address_key("42489", "Nordstraße", "12") != address_key("42490", "Nordstraße", "12")
    assert address_key("42489", "Nordstraße", "12") != address_key("42489", "Nordstraße", "12b")
    assert address_key("42489", "", "12") == ""


def test_every_figure_on_a_hand_made_example(imported) -> None:
    figures = area_figures(imported, today=dt.date(2027, 3, 1))
    # signed: Flehenberger Weg 7 (order completed, 4 units) and Fliethe 20 (order placed, 10 units);
    # Am Angerbach is abgebrochen, Nordstraße and Rohdenhaus have no order.
    assert figures == {
        "units_in_scope": 25, "addresses_in_scope": 5, "units_signed": 14, "take_up_percent": 56.0, "quota_percent": 40.0,
        "units_missing_for_quota": 0, "deadline": dt.date(2027, 3, 31), "days_left": 30, "units_connected": 4,
        "projects_by_phase": {"planning": 2, "approved": 1, "completed": 1, "cancelled": 1}}
    dussel = area_figures(RolloutArea.objects.get(name="Düssel Ortskern"))
    assert dussel["units_signed"] == 0 and dussel["units_missing_for_quota"] == 6  # ceil(0.4 * 13)


def test_a_full_refresh_of_more_addresses_than_one_chunk_sums_them_all(tmp_path) -> None:
    """A full refresh works the areas' addresses out a chunk at a time; the demo's addresses sort after the first."""
    _refresh_more_addresses_than_one_chunk(tmp_path)


def test_a_full_refresh_chunk_holds_a_bounded_number_of_opportunities_however_many_share_a_building() -> None:
    """A chunk holds every opportunity at its addresses: bounded by addresses alone, it would grow with each building."""
    crowded = [("00001|a|1", FIGURES_CHUNK_OPPORTUNITIES - 10), ("00001|a|2", 20), ("00001|a|3", FIGURES_CHUNK_OPPORTUNITIES + 1)]
    sparse = [(f"00002|b|{number}", 1) for number in range(FIGURES_CHUNK + 1)]
    chunks = figure_chunks(reversed(crowded + sparse))
    counts = dict(crowded + sparse)
    assert [key for chunk in chunks for key in chunk] == sorted(counts)  # every key once, in order
    assert chunks[:3] == [["00001|a|1"], ["00001|a|2"], ["00001|a|3"]]  # a building with more than a chunk: alone
    assert all(len(chunk) <= FIGURES_CHUNK for chunk in chunks) and len(chunks) == 5
    assert all(sum(counts[key] for key in chunk) <= FIGURES_CHUNK_OPPORTUNITIES for chunk in chunks if len(chunk) > 1)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_thread_works_out_the_next_chunk_and_closes_its_connection(tmp_path) -> None:
    sessions_before = database_sessions()
    _refresh_more_addresses_than_one_chunk(tmp_path)
    assert database_sessions_once_settled(sessions_before) == sessions_before


def _refresh_more_addresses_than_one_chunk(tmp_path) -> None:
    call_command("sync_epilot", stdout=StringIO())
    fillers = "".join(f"Rohdenhaus;00001;Leerweg;{number};1\n" for number in range(1, 2101))
    # A full refresh works out the addresses with an opportunity: each filler has one (with nothing signed).
    Opportunity.objects.bulk_create([
        Opportunity(epilot_id=f"filler-{number}", address_key=address_key("00001", "Leerweg", str(number)), payload={},
                    synced_at=timezone.now()) for number in range(1, 2101)])
    call_command("import_area_addresses", str(write(tmp_path, CSV + fillers)), stdout=StringIO())
    AreaAddress.objects.update(signed=False, connected=False, projects_planning=0, projects_cancelled=0)
    areas_refresh()
    figures = area_figures(RolloutArea.objects.get(name="Rohdenhaus"))
    assert (figures["addresses_in_scope"], figures["units_in_scope"]) == (2105, 2125)
    assert (figures["units_signed"], figures["units_connected"]) == (14, 4)
    assert figures["projects_by_phase"] == {"planning": 2, "approved": 1, "completed": 1, "cancelled": 1}


def test_a_full_refresh_empties_the_addresses_no_opportunity_is_at_and_keeps_imported_coordinates(imported) -> None:
    flehenberg = AreaAddress.objects.get(area=imported, key=address_key("42489", "Flehenberger Weg", "7"))
    assert (flehenberg.signed, flehenberg.connected, flehenberg.projects_completed) == (True, True, 1)
    # The building's opportunity now lies elsewhere, and an address without one carries figures from somewhere.
    Opportunity.objects.filter(address_key=flehenberg.key).update(address_key=address_key("42489", "Anderswo", "1"))
    AreaAddress.objects.filter(pk=flehenberg.pk).update(located_by_import=True, latitude=51.28, longitude=7.03)
    dorf = AreaAddress.objects.get(key=address_key("42489", "Dorfstraße", "5"))
    AreaAddress.objects.filter(pk=dorf.pk).update(signed=True, projects_planning=2, stage=Stage.CONNECTED,
                                                  passed_at=timezone.now(), waiting_on="Tiefbau", latitude=51.0, longitude=7.0)

    areas_refresh()

    flehenberg.refresh_from_db()
    dorf.refresh_from_db()
    empty = (False, False, 0, 0, Stage.IN_SCOPE, None, None, "")
    assert (flehenberg.signed, flehenberg.connected, flehenberg.projects_completed, flehenberg.projects_planning,
            flehenberg.stage, flehenberg.signed_at, flehenberg.connected_at, flehenberg.waiting_on) == empty
    assert (flehenberg.latitude, flehenberg.longitude) == (51.28, 7.03)
    assert (dorf.signed, dorf.connected, dorf.projects_completed, dorf.projects_planning, dorf.stage, dorf.signed_at,
            dorf.passed_at, dorf.waiting_on) == empty
    assert (dorf.latitude, dorf.longitude) == (None, None)
    figures = area_figures(RolloutArea.objects.get(pk=imported.pk))
    assert (figures["units_signed"], figures["units_connected"]) == (10, 0)  # Fliethe 20 alone
    assert area_figures(RolloutArea.objects.get(name="Düssel Ortskern"))["units_signed"] == 0


def test_no_index_of_a_building_names_one_of_its_figures() -> None:
    """PostgreSQL updates a row in place (HOT) only while no indexed column changes: the figures a refresh writes
    must stay out of every index, and on PostgreSQL the pages keep room for the new version."""
    figure_columns = {AreaAddress._meta.get_field(name).column for name in ADDRESS_FIGURES}
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AreaAddress._meta.db_table)
        indexed = {column for constraint in constraints.values() if constraint["index"] or constraint["unique"]
                   for column in constraint["columns"] or ()}
        assert indexed >= {"key", "area_id"} and not indexed & figure_columns, indexed & figure_columns
        if connection.vendor == "postgresql":
            cursor.execute("SELECT reloptions FROM pg_class WHERE relname = %s", [AreaAddress._meta.db_table])
            assert "fillfactor=70" in cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "sqlite", reason="PostgreSQL's plan depends on its statistics")
def test_a_refresh_reads_the_opportunities_at_its_addresses_from_one_index_alone(imported) -> None:
    """Each opportunity's row holds its payload: the figures read what they need of them from the index."""
    with CaptureQueriesContext(connection) as queries:
        areas_refresh()
    table = connection.ops.quote_name(Opportunity._meta.db_table)
    by_address = [query["sql"] for query in queries.captured_queries
                  if f"FROM {table}" in query["sql"] and "address_key" in query["sql"] and "json_each" in query["sql"]]
    assert by_address
    with connection.cursor() as cursor:
        for sql in by_address:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "USING COVERING INDEX opportunity_at_address" in plan, plan


def test_a_new_contract_counts_after_the_next_sync(imported) -> None:
    client = get_epilot_client()
    order = client.create_entity("order", {"_title": "Auftrag Nordstraße", "status": "placed",
                                           "opportunity": {"$relation": [{"entity_id": demo_id("opportunity:nordstrasse")}]}})
    assert order.id
    call_command("sync_epilot", stdout=StringIO())
    imported.refresh_from_db()
    assert imported.units_signed == 16 and imported.snapshots.count() == 1


def test_bad_rows_import_nothing_and_name_their_lines(imported, tmp_path) -> None:
    before = list(AreaAddress.objects.order_by("id").values_list("id", flat=True))
    bad = "area,postal_code,street,house_number,units\nRohdenhaus,42489,Neue Straße,1,zwei\nRohdenhaus,,Weg,2,3\n"
    with pytest.raises(CommandError) as failure:
        call_command("import_area_addresses", str(write(tmp_path, bad)), stdout=StringIO())
    assert "line 2" in str(failure.value) and "line 3" in str(failure.value)
    assert list(AreaAddress.objects.order_by("id").values_list("id", flat=True)) == before


def test_reimporting_an_area_replaces_its_list_from_xlsx(imported, tmp_path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["area", "postal_code", "street", "house_number", "units"])
    book.active.append(["Rohdenhaus", "42489", "Fliethe", 20, 12])
    book.save(tmp_path / "neu.xlsx")
    call_command("import_area_addresses", str(tmp_path / "neu.xlsx"), stdout=StringIO())
    imported.refresh_from_db()
    assert imported.addresses.count() == 1 and imported.units_in_scope == 12 and imported.units_signed == 12
    assert RolloutArea.objects.get(name="Düssel Ortskern").addresses.count() == 2  # not in the file: unchanged


def test_the_api_and_the_campaign_export(imported) -> None:
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='Reporting', scopes=['read'])[1]}")
    assert reader.get("/api/v1/areas/").status_code == 403  # households' addresses need the areas scope
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='GIS', scopes=['areas'])[1]}")
    listed = api.get("/api/v1/areas/").json()["results"]
    assert [(area["name"], area["units_signed"]) for area in listed] == [("Rohdenhaus", 14), ("Düssel Ortskern", 0)]
    detail = api.get(f"/api/v1/areas/{imported.pk}/").json()
    assert detail["take_up_percent"] == 56.0 and detail["units_connected"] == 4
    unsigned = api.get(f"/api/v1/areas/{imported.pk}/addresses/?signed=false").json()["results"]
    assert {a["street"] for a in unsigned} == {"Rohdenhauser Str.", "nordstrasse", "Am  Angerbach"}
    csv_answer = api.get(f"/api/v1/areas/{imported.pk}/addresses/?signed=false&format=csv")
    assert csv_answer["Content-Type"].startswith("text/csv")
    assert csv_answer.content.decode().splitlines()[0] == "postal_code,street,house_number,units,signed"
    assert api.get("/api/v1/areas/999999/").status_code == 404
    assert api.get(f"/api/v1/areas/{imported.pk}/addresses/?signed=vielleicht").status_code == 400


def test_the_admin_shows_the_area_and_a_viewer_imports_nothing(imported, client, tmp_path) -> None:
    clerk = User.objects.create_user("clerk", password="pw-123456", is_staff=True)
    clerk.groups.add(Group.objects.get(name="Backoffice"))
    client.force_login(clerk)
    page = client.get(f"/admin/projects/rolloutarea/{imported.pk}/change/").content.decode()
    assert 'id="area-figures"' in page and 'id="phase-board"' in page and 'id="signed-chart"' in page
    assert "Genehmigt" in page  # the phases by name
    export = client.get(f"/admin/projects/rolloutarea/{imported.pk}/unsigned.csv")
    assert export.status_code == 200 and export.content.decode().count("\n") == 4
    xlsx = client.get(f"/admin/projects/rolloutarea/{imported.pk}/unsigned.xlsx")
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    upload = io.BytesIO(b"area,postal_code,street,house_number,units\nNeu,42489,Goethestrasse,1,2\n")
    upload.name = "neu.csv"
    assert client.post("/admin/projects/rolloutarea/import/", {"file": upload}).status_code == 302
    assert RolloutArea.objects.filter(name="Neu").exists()

    viewer = User.objects.create_user("viewer", password="pw-123456", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewer"))
    client.force_login(viewer)
    upload = io.BytesIO(b"area,postal_code,street,house_number,units\nVerboten,42489,Weg,1,2\n")
    upload.name = "x.csv"
    assert client.post("/admin/projects/rolloutarea/import/", {"file": upload}).status_code == 403
    assert not RolloutArea.objects.filter(name="Verboten").exists()


def test_an_opportunity_without_an_address_attribute_matches_by_its_first_address_like_attribute() -> None:
    import datetime as dt_

    from projects.mirror.rows import entity_row

    now = dt_.datetime(2026, 11, 1, tzinfo=dt_.UTC)
    data = {"_id": "o-1", "_schema": "opportunity", "_title": "Glasfaser", "_org": "1", "_created_at": "2026-01-01T00:00:00Z",
            "_updated_at": "2026-01-01T00:00:00Z", "status": "bearbeitung", "customer_note": {"text": "x"},
            "installation_address": [{"street": "Goethestr.", "street_number": "3 b", "postal_code": "42489"}]}
    row = entity_row("opportunity", data, now)
    assert row["address_key"] == address_key("42489", "Goethestraße", "3B")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite writes one transaction at a time anyway")
@pytest.mark.django_db(transaction=True)
def test_two_refreshes_of_one_area_take_turns_so_neither_sums_without_the_others_addresses() -> None:
    area = RolloutArea.objects.create(name="Nord", figures_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC))  # computed before
    here, there = (AreaAddress.objects.create(area=area, postal_code="42489", street="Nordstraße", house_number=number,
                                              units=units, key=address_key("42489", "Nordstraße", number))
                   for number, units in (("12", 2), ("14", 5)))
    holding, release, refreshed = threading.Event(), threading.Event(), threading.Event()

    def another_refresh_of_the_other_address() -> None:
        try:
            with transaction.atomic():
                RolloutArea.objects.select_for_update().get(pk=area.pk)  # as areas_refresh takes its areas
                AreaAddress.objects.filter(pk=there.pk).update(signed=True)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    def refresh() -> None:
        try:
            areas_refresh(address_keys=[here.key])
            refreshed.set()
        finally:
            connections.close_all()

    holder, refresher = threading.Thread(target=another_refresh_of_the_other_address), threading.Thread(target=refresh)
    holder.start()
    assert holding.wait(10)
    refresher.start()
    assert not refreshed.wait(0.5)
    release.set()
    holder.join(10)
    refresher.join(10)
    area.refresh_from_db()
    assert refreshed.is_set() and (area.units_in_scope, area.units_signed) == (7, 5)  # the other address's 5 counted


def test_exports_neutralise_formulas_and_quote_the_area_name(admin_client) -> None:
    area = RolloutArea.objects.create(name='Nord "Süd"; x')
    for number, street in enumerate(['=HYPERLINK("http://evil.example","klick")', "+1+1", "-2", "@SUM(A1)", "\tTab",
                                     "Normale Straße"], start=1):
        AreaAddress.objects.create(area=area, postal_code="42489", street=street, house_number=str(number), units=1,
                                   key=address_key("42489", street, str(number)))
    csv_export = admin_client.get(f"/admin/projects/rolloutarea/{area.pk}/unsigned.csv")
    streets = [line.split(",", 2)[1] for line in csv_export.content.decode().splitlines()[1:]]
    assert all(not street.lstrip('"').startswith(("=", "+", "-", "@", "\t")) for street in streets)
    assert "Normale Straße" in streets
    disposition = csv_export["Content-Disposition"]
    assert disposition.startswith("attachment; filename") and "filename*=utf-8''" in disposition  # RFC 6266, encoded

    from openpyxl import load_workbook

    xlsx = admin_client.get(f"/admin/projects/rolloutarea/{area.pk}/unsigned.xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    cells = [row[1] for row in sheet.iter_rows(min_row=2)]
    assert all(cell.data_type == "s" and not str(cell.value).startswith("=") for cell in cells)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='GIS', scopes=['areas'])[1]}")
    body = api.get(f"/api/v1/areas/{area.pk}/addresses/?format=csv").content.decode()
    assert "\n=" not in body and ",=HYPERLINK" not in body and "'=HYPERLINK" in body


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("a.csv", b"area,postal_code,street,house_number,units\nX,42489," + b"s" * 140_000 + b",1,2\n", "Zeile 2"),
    ("a.csv", b"area,postal_code,street,house_number,units\nX,42489,Weg\x00,1,2\n", "Zeile 2"),
    ("a.csv", b"area,postal_code,street,house_number,units\n" + b"X,42489,Weg,1,2\n" * 3, "mehr als 2 Zeilen"),
    ("a.csv", b"area,postal_code,street,house_number,units\nX,42489,Weg,1,2\n" + b" " * 3000, "größer als 2 KiB"),
])
def test_address_imports_are_capped_and_name_the_line_and_import_nothing(name, content, reason, settings) -> None:
    settings.AREA_IMPORT_MAX_ROWS, settings.AREA_IMPORT_MAX_BYTES = 2, 2048 if b" " * 3000 in content else 10_000_000
    with pytest.raises(ImportRejected) as refused:
        area_addresses_import(read_address_file(name, content))
    assert reason in " ".join(refused.value.errors)
    assert not RolloutArea.objects.filter(name="X").exists()


def test_a_small_workbook_claiming_many_rows_is_refused_without_reading_them_all(settings, tmp_path) -> None:
    from openpyxl import Workbook

    settings.AREA_IMPORT_MAX_ROWS = 1000
    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(["area", "postal_code", "street", "house_number", "units"])
    for number in range(5000):
        sheet.append(["X", "42489", "Weg", number + 1, 1])
    book.save(tmp_path / "many.xlsx")
    with pytest.raises(ImportRejected, match="mehr als 1000 Zeilen"):
        read_address_file("many.xlsx", (tmp_path / "many.xlsx").read_bytes())


def test_a_nul_inside_a_workbook_cell_is_named(tmp_path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["area", "postal_code", "street", "house_number", "units"])
    book.active.append(["X", "42489", "Weg", "1", 1])
    book.active["C2"].value = "Weg"  # openpyxl refuses NUL itself; a CSV is where it arrives
    book.save(tmp_path / "ok.xlsx")
    rows = read_address_file("ok.xlsx", (tmp_path / "ok.xlsx").read_bytes())
    rows[0][1]["street"] = "W\x00eg"
    with pytest.raises(ImportRejected, match="Zeile 2: ein Wert enthält ein NUL-Zeichen"):
        area_addresses_import(rows)
