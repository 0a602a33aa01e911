"""A new staff member in a real browser: log in, start a workflow, convert an opportunity.

Playwright drives Debian's chromium (/usr/bin/chromium, no browser download); the app runs on
pytest-django's live server on loopback against the embedded sandbox.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),  # the groups come from a data migration
    pytest.mark.skipif(
        CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; make test does it as root)"
    ),
]
# Playwright's sync API runs an event loop in this thread; the ORM calls below happen outside it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def screenshot(page, path: str, full_page: bool = False) -> None:
    """Save an image of the page once it has finished loading.

    Chromium refuses a capture while a navigation is under way, so wait for the load first.
    """
    page.wait_for_load_state("load")
    page.screenshot(path=path, full_page=full_page)


# Operators' lists of many technical columns (and third-party apps' lists): they may scroll sideways beside the
# filter column at 1,280 px. Every other list is staff's daily work and must fit.
MAY_SCROLL = {"projects.syncrun", "projects.schemaattribute", "projects.workflowdefinition", "projects.automationrecipe"}


def every_list_fits(page, origin: str) -> list[str]:
    """The admin's lists of this project whose table is wider than the page, with their widths (MAY_SCROLL aside)."""
    from django.contrib import admin

    wide = []
    for app, model in sorted((model._meta.app_label, model._meta.model_name) for model in admin.site._registry
                             if model._meta.app_label == "projects"):
        if f"{app}.{model}" in MAY_SCROLL:
            continue
        page.goto(f"{origin}/admin/{app}/{model}/")
        widths = page.evaluate("() => { const r = document.querySelector('#changelist .results');"
                               " return r ? [r.scrollWidth, r.clientWidth] : [0, 0]; }")
        if widths[0] > widths[1]:
            wide.append(f"{app}.{model}: {widths[0]} px in {widths[1]} px")
    return wide


@pytest.fixture
def page(live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = browser.new_context(locale="de-DE", viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        # The last page, to read a failure by; a refused capture must not hide the test's own result.
        with contextlib.suppress(Exception):
            screenshot(page, str(tmp_path / "last-page.png"), full_page=True)
        browser.close()


def test_staff_log_in_start_a_workflow_and_convert_an_opportunity(page, live_server) -> None:
    call_command("sync_epilot", stdout=StringIO())
    clerk = User.objects.create_user("sachbearbeiterin", password="Glasfaser-2026", is_staff=True)
    clerk.groups.add(Group.objects.get(name="Backoffice"))

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "sachbearbeiterin")
    page.fill("#id_password", "Glasfaser-2026")
    page.click("input[type=submit]")
    assert page.locator("#ausbau-dashboard").is_visible()
    assert "Sandbox" in page.locator(".epilot-banner").inner_text()

    # Start "Ausbau Glasfaser" on one opportunity from the list.
    page.get_by_role("link", name="Opportunities", exact=True).first.click()
    row = page.locator("tr", has_text="Glasfaser Neubaugebiet Nordstraße")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "start_workflow_action")
    page.click("button[name=index]")
    assert page.locator("#start-preview").inner_text().count("Glasfaser Neubaugebiet Nordstraße") == 1
    page.click("input[value='In epilot starten']")
    assert "gestartet" in page.locator("ul.messagelist").inner_text()
    assert "Trassenplanung erstellen" in page.locator(".inline-group", has_text="Workflows").inner_text()
    nord = demo_id("opportunity:nordstrasse")
    assert [e.definition_id for e in get_epilot_client().get_executions(context=nord, schema="opportunity")] == [
        AUSBAU_DEFINITION_ID
    ]

    # Convert another opportunity from its page.
    page.get_by_role("link", name="Opportunities", exact=True).first.click()
    page.get_by_role("link", name="Glasfaser Kalkstraße").click()
    page.get_by_role("link", name="In Auftrag umwandeln").click()
    preview = page.locator("#order-preview").inner_text()
    assert "Ausbau: Glasfaser Kalkstraße" in preview and "31.000,00" in preview and "€" in preview and "Thomas Becker" in preview
    page.click("input[value=Umwandeln]")
    assert "angelegt, verknüpft und Workflow gestartet" in page.locator("ul.messagelist").inner_text()
    assert "Erledigt" in page.content()
    kalk = get_epilot_client().get_entity("opportunity", demo_id("opportunity:kalkstrasse"))
    assert kalk.data["status"] == "geschlossen" and len(kalk.relation_ids("items")) == 1


@pytest.mark.parametrize("locale, dashboard_word, project_word", [("de-DE", "Laufende Workflows nach Abschnitt", "Fortschritt"),
                                                                  ("en-GB", "Running workflows by section", "Progress")])
def test_the_demo_in_each_language_with_screenshots(live_server, tmp_path, locale, dashboard_word, project_word) -> None:
    """The demo story as a new user sees it, in the browser's language; SCREENSHOTS_DIR=docs/screenshots keeps the images."""
    from playwright.sync_api import sync_playwright

    from projects.models import AusbauProject

    call_command("seed_sandbox", stdout=StringIO())
    call_command("demo_story", stdout=StringIO())
    User.objects.create_superuser("demo", password="wuelfrath-demo")
    project = AusbauProject.objects.get(opportunity__epilot_id=demo_id("opportunity:rohdenhaus"))
    target = os.environ.get("SCREENSHOTS_DIR") or str(tmp_path)
    language = locale[:2]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(f"{live_server.url}/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "wuelfrath-demo")
        page.click("input[type=submit]")
        assert dashboard_word.upper() in page.locator("#ausbau-dashboard").inner_text().upper()  # card titles are upper case
        screenshot(page, f"{target}/dashboard-{language}.png", full_page=True)
        page.goto(f"{live_server.url}/admin/projects/ausbauproject/{project.pk}/change/")
        assert project_word in page.locator("#content").inner_text()
        screenshot(page, f"{target}/project-{language}.png", full_page=True)
        browser.close()


def test_an_areas_map_draws_its_buildings_without_asking_another_host(page, live_server) -> None:
    from projects.models import RolloutArea
    from projects.services.areas import area_addresses_import
    from projects.services.funnel import milestone_rules_replace

    call_command("sync_epilot", stdout=StringIO())
    rows = [("Nordstraße", "12"), ("Rohdenhauser Straße", "40"), ("Fliethe", "20"), ("Flehenberger Weg", "7"),
            ("Gibt-es-nicht-Weg", "1")]
    area_addresses_import([(line, {"area": "Rohdenhaus", "postal_code": "42489", "street": street, "house_number": number,
                                   "units": "2"}) for line, (street, number) in enumerate(rows, start=2)])
    milestone_rules_replace([{"key": "passed", "definition": AUSBAU_DEFINITION_ID, "step": "Tiefbau durchführen"}],
                            actor="test")
    viewer = User.objects.create_user("leserin", password="Glasfaser-2026", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewer"))
    elsewhere = []
    page.on("request", lambda request: elsewhere.append(request.url)
            if not request.url.startswith(live_server.url) and not request.url.startswith("data:") else None)

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "leserin")
    page.fill("#id_password", "Glasfaser-2026")
    page.click("input[type=submit]")
    area = RolloutArea.objects.get(name="Rohdenhaus")
    page.goto(f"{live_server.url}/admin/projects/rolloutarea/{area.pk}/change/")
    page.wait_for_selector("#area-map[data-ready=true]")
    assert page.locator("#area-map path.leaflet-interactive").count() >= 4  # four buildings and the hull
    assert "Gibt-es-nicht-Weg 1" in page.locator("#area-unlocated").inner_text()
    assert "unterschrieben" in page.locator("#area-map-legend").inner_text()
    assert "Vom Vertrag bis zur Freischaltung" in page.content() and page.locator("#area-funnel").is_visible()
    assert elsewhere == []

    # A click on a building leads to its building file.
    page.locator("#area-map path.leaflet-interactive").nth(2).click(force=True)
    page.wait_for_url("**/admin/building/?key=*")
    assert "Hausakte" in page.locator("h1").inner_text() and page.locator("#building-stage").is_visible()
    assert elsewhere == []


def test_staff_find_a_house_by_its_street_and_read_the_inbox_without_ids(live_server, tmp_path) -> None:
    """On the demo as `make run` builds it, at 1,280 pixels: the inbox names streets and people and cuts off nothing,
    the header search leads from a street to its building file, the area's chart has weeks of points.
    SCREENSHOTS_DIR=docs/screenshots keeps the images."""
    import re

    from playwright.sync_api import sync_playwright

    from projects.models import RolloutArea

    call_command("seed_sandbox", stdout=StringIO())
    call_command("demo_story", stdout=StringIO())
    User.objects.create_superuser("demo", password="wuelfrath-demo")
    target = os.environ.get("SCREENSHOTS_DIR") or str(tmp_path)
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_context(locale="de-DE", viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "demo")
        page.fill("#id_password", "wuelfrath-demo")
        page.click("input[type=submit]")

        page.goto(f"{live_server.url}/admin/projects/mirroredstep/?state=all")
        rows = page.locator("#result_list tbody").inner_text()
        assert "Rohdenhauser Straße 40" in rows and "Jörg Schmitz" in rows and "Tobias Krämer" in rows
        assert not uuid.search(rows) and "u-tiefbau" not in rows
        assert page.evaluate("() => { const r = document.querySelector('#changelist .results');"
                             " return r.scrollWidth <= r.clientWidth; }"), "the table is wider than the page"
        cut = page.evaluate("() => [...document.querySelectorAll('#result_list td, #result_list th')]"
                            ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.innerText)")
        assert cut == []
        screenshot(page, f"{target}/inbox-de.png")
        assert every_list_fits(page, live_server.url) == []
        english = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
        english.goto(f"{live_server.url}/admin/")
        english.fill("#id_username", "demo")
        english.fill("#id_password", "wuelfrath-demo")
        english.click("input[type=submit]")
        assert every_list_fits(english, live_server.url) == []

        page.fill("#header-search-q", "Tiefenbacher W. 15")
        page.press("#header-search-q", "Enter")
        page.wait_for_url("**/admin/search/?q=*")
        screenshot(page, f"{target}/search-de.png")
        page.locator("#search-buildings a", has_text="Tiefenbacher Weg 15").first.click()
        page.wait_for_url("**/admin/building/?key=*")
        assert "Hausakte" in page.locator("h1").inner_text()
        assert "Glasfaser Tiefenbach Höfe" in page.locator("#building-opportunities").inner_text()
        assert "Ausbau: Glasfaser Tiefenbach Höfe" in page.locator("#building-orders").inner_text()
        assert "Ausbau Glasfaser" in page.locator("#building-workflows").inner_text()
        assert page.locator("#building-open-steps tbody tr").count() >= 1
        assert "Klaus Hoffmann" in page.locator("#building-customers").inner_text()
        screenshot(page, f"{target}/building-file-de.png", full_page=True)

        flandersbach = RolloutArea.objects.get(name="Flandersbach")
        page.goto(f"{live_server.url}/admin/projects/rolloutarea/{flandersbach.pk}/change/")
        points = page.locator("#signed-chart polyline").first.get_attribute("points").split()
        assert len(points) >= 14
        screenshot(page, f"{target}/area-de.png", full_page=True)

        page.goto(f"{live_server.url}/admin/projects/promise/?state__exact=breached")
        assert "gebrochen" in page.locator("#result_list").inner_text()
        assert "Rückrechnung" in page.locator("#promise-backtest").inner_text()
        assert page.evaluate("() => { const r = document.querySelector('#changelist .results');"
                             " return r.scrollWidth <= r.clientWidth; }")
        screenshot(page, f"{target}/promises-de.png")

        page.goto(f"{live_server.url}/admin/projects/promisealert/")
        page.locator("#result_list tbody tr a").first.click()  # one link per row, to the alert
        page.wait_for_url("**/admin/projects/promisealert/*/change/")
        browser.close()
