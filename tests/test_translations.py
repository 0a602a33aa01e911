"""One language at a time: every string has its German translation, the admin follows the browser, the API speaks English."""
from __future__ import annotations

import html as html_module
import re
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[1]
# Words only the user interface uses (the demo's data is German too, so these avoid place and step names).
GERMAN_UI = ["Fortschritt", "Ausgewählte", "Aufträge", "Abschnitt", "Ausbauprojekte", "Umwandlung", "zugewiesen", "Auslöser",
             "synchronisiert", "Laufende", "Verwaltung", "Aufgaben", "Entitätstyp", "Keine "]
ENGLISH_UI = ["Running workflows", "Conversion rate", "Start workflow", "last synchronised", "entity type", "Select ",
              "Administration", "Workflows & tasks", "Projects by phase", "progress", "Change status", " by "]


def visible_text(html: str) -> str:
    """The text a reader sees: no tags, scripts, styles or attribute values."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return html_module.unescape(re.sub(r"<[^>]+>", " ", html))


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (Debian: gettext), as makemessages does")
def test_every_string_has_a_german_translation(monkeypatch) -> None:
    """makemessages writes into the project's own catalogue (it takes the `locale` folder it walks past, whatever
    LOCALE_PATHS says): the strings are read from there, and the catalogue is put back as it was."""
    catalogue = ROOT / "locale" / "de" / "LC_MESSAGES" / "django.po"
    committed = catalogue.read_bytes()
    monkeypatch.chdir(ROOT)
    try:
        call_command("makemessages", locale=["de"], no_obsolete=True, verbosity=0, stdout=StringIO(),
                     extensions=["html", "txt", "py", "svg"],
                     ignore_patterns=[".venv/*", "var/*", "tests/*", "bench/*", "docs/*", "locale/*"])
        entries = catalogue.read_text().split("\n\n")[1:]
    finally:
        catalogue.write_bytes(committed)
    untranslated = [entry.split("\n")[-2:] for entry in entries
                    if "#, fuzzy" in entry or re.search(r'^msgstr(\[0\])? ""\Z', entry.strip(), re.M)]
    assert untranslated == []


@pytest.fixture
def demo_admin(db, client):
    call_command("sync_epilot", stdout=StringIO())
    user = User.objects.create_superuser("demo", password="wuelfrath-demo")
    client.force_login(user)
    return client


def admin_pages() -> list[str]:
    from django.contrib import admin

    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        if model._meta.app_label in ("projects", "django_celery_beat"):
            name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
            pages.append(reverse(f"{name}_changelist"))
            first = model._default_manager.order_by("pk").first()
            if first is not None:
                pages.append(reverse(f"{name}_change", args=[first.pk]))
    from projects.admin.search import building_file_url
    from projects.models import Opportunity

    pages.append(reverse("admin:search") + "?q=Tiefenbacher+Weg")
    pages.append(building_file_url(Opportunity.objects.exclude(address_key="").order_by("pk").first().address_key))
    return pages


@pytest.mark.parametrize("language, foreign", [("de", ENGLISH_UI), ("en", GERMAN_UI)])
def test_every_admin_page_speaks_one_language(demo_admin, language, foreign) -> None:
    for url in admin_pages():
        page = demo_admin.get(url, HTTP_ACCEPT_LANGUAGE=language)
        assert page.status_code == 200, url
        text = visible_text(page.content.decode())
        found = [word for word in foreign if word in text]
        assert found == [], f"{url} ({language}) shows {found}"


def test_german_is_the_default_and_the_index_is_grouped(demo_admin) -> None:
    text = visible_text(demo_admin.get(reverse("admin:index")).content.decode())
    assert "Projekte" in text and "Workflows & Aufgaben" in text and "Synchronisation" in text and "Verwaltung" in text
    english = visible_text(demo_admin.get(reverse("admin:index"), HTTP_ACCEPT_LANGUAGE="en").content.decode())
    assert "Projects" in english and "Workflows & tasks" in english and "Running workflows by section" in english


def test_money_is_formatted_for_the_language(demo_admin) -> None:
    url = reverse("admin:projects_ausbauproject_changelist")
    assert "90.000,00\u00a0€" in demo_admin.get(url, HTTP_ACCEPT_LANGUAGE="de").content.decode()
    assert "€90,000.00" in demo_admin.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()


def test_the_root_leads_to_the_admin(client) -> None:
    answer = client.get("/")
    assert answer.status_code == 302 and answer.url == reverse("admin:index")


def test_api_errors_are_english_whatever_the_browser_asks(db, client) -> None:
    from projects.services.api_clients import api_client_create

    token = api_client_create(name="Sprachtest", scopes=["read"])[1]
    answer = client.get("/api/v1/projects/?phase=unsinn", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT_LANGUAGE="de")
    assert answer.status_code == 400 and "Invalid request" in answer.json()["error"]["message"]


def test_every_field_of_the_back_office_has_a_translatable_label() -> None:
    """A field without its own verbose_name shows its English column name (`address key`) in the German admin."""
    from django.apps import apps
    from django.utils.functional import Promise

    untranslated = [f"{model.__name__}.{field.name}" for model in apps.get_app_config("projects").get_models()
                    for field in model._meta.get_fields()
                    if field.concrete and not field.primary_key and not isinstance(field.verbose_name, Promise)]
    assert untranslated == []


# Labels that are the same word in German, and one django-celery-beat does not mark for translation at all.
SAME_IN_GERMAN = {"Name", "Status", "Workflow", "epilot"}
NOT_TRANSLATABLE = {"django_celery_beat.PeriodicTask.task"}


def test_every_field_label_shown_in_the_admin_reads_german() -> None:
    """Every field of every model the admin shows (ours and other apps') has a German label (projects/third_party_labels.py
    fills what other apps' catalogues leave in English)."""
    from django.contrib import admin
    from django.utils import translation

    english = []
    for model in admin.site._registry:
        for field in model._meta.get_fields():
            if not getattr(field, "concrete", False) or field.primary_key:
                continue
            with translation.override("en"):
                label = str(field.verbose_name)
            with translation.override("de"):
                name = f"{model._meta.label}.{field.name}"
                if str(field.verbose_name) == label and label not in SAME_IN_GERMAN and name not in NOT_TRANSLATABLE:
                    english.append(f"{name}: {label}")
    assert english == []
