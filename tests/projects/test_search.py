"""The header search: buildings, customers, opportunities and orders by what callers say, on either database."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from projects.mirror.addresses import searchable
from projects.services.areas import area_addresses_import
from projects.services.search import search

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirrored() -> None:
    """The sandbox's demo mirrored, and a rollout area with a few buildings."""
    call_command("sync_epilot", stdout=StringIO())
    rows = [("Tiefenbacher Weg", "15"), ("Tiefenbacher Weg", "150"), ("Düsselstraße", "3"), ("Hauptstr.", "5 a"),
            ("Am Angerbach", "1")]
    area_addresses_import([(line, {"area": "Süd", "postal_code": "42489", "street": street, "house_number": number,
                                   "units": "1"}) for line, (street, number) in enumerate(rows, start=2)])


def labels(query: str) -> list[str]:
    return [hit.label for hit in search(query).buildings]


@pytest.mark.parametrize("query", ["Tiefenbacher Weg 15", "tiefenbacher weg 15", "Tiefenbacher W. 15",
                                   "TIEFENBACHER WEG 15", "Tiefenbacher-Weg 15", "tiefenb 15"])
def test_a_street_in_any_usual_spelling_finds_its_building_and_not_its_neighbours(mirrored, query) -> None:
    assert labels(query) == ["Tiefenbacher Weg 15, 42489"]


@pytest.mark.parametrize("query", ["Düsselstraße 3", "Duesselstrasse 3", "düsselstr. 3", "Düsselstr 3", "DÜSSEL STRASSE 3"])
def test_umlauts_and_street_abbreviations_read_alike(mirrored, query) -> None:
    assert labels(query) == ["Düsselstraße 3, 42489"]


def test_house_number_letters_with_or_without_a_space(mirrored) -> None:
    assert labels("Hauptstraße 5a") == labels("hauptstr. 5 A") == ["Hauptstr. 5 a, 42489"]


def test_a_street_alone_lists_its_buildings_first_then_addresses_only_epilot_has(mirrored) -> None:
    assert labels("Tiefenbacher Weg") == ["Tiefenbacher Weg 15, 42489", "Tiefenbacher Weg 150, 42489"]
    assert labels("Kalkstraße 58") == ["Kalkstraße 58, 42489 Wülfrath"]  # no area lists it: the opportunity's address


@pytest.mark.parametrize(("query", "group", "title"), [
    ("Hoffmann", "customers", "Klaus Hoffmann"),
    ("klaus hoffmann", "customers", "Klaus Hoffmann"),
    ("K-10008", "customers", "Klaus Hoffmann"),
    ("k.hoffmann@example.org", "customers", "Klaus Hoffmann"),
    ("Yilmaz", "customers", "Elif Yılmaz"),
    ("Krueger", "customers", "Peter Krüger"),
    ("OPP-2025-108", "opportunities", "Glasfaser Tiefenbach Höfe"),
    ("AUF-2025-201", "orders", "Ausbau: Glasfaser Flehenberg"),
    ("Flehenberger Weg 7", "orders", "Ausbau: Glasfaser Flehenberg"),  # an order by its opportunity's address
    ("Tiefenbacher Weg 15", "customers", "Klaus Hoffmann"),  # a customer by the address of their opportunity
])
def test_names_numbers_and_e_mail_addresses(mirrored, query, group, title) -> None:
    assert [str(row) for row in getattr(search(query), group)] == [title]


def test_a_query_too_short_or_unknown_finds_nothing(mirrored) -> None:
    assert search("k").count == 0
    assert search("  .  ").count == 0
    assert search("Nirgendwo 99").count == 0
    assert search("%").count == 0 and search("_").count == 0  # LIKE's wildcards are words' separators here


def test_folding_is_the_same_for_rows_and_queries() -> None:
    assert searchable("Düsselstraße 3") == searchable("duesselstr. 3") == " duesselstrasse 3 "
    assert searchable("Hauptstr 5 a") == " hauptstrasse 5a "
    assert searchable("Max Mustermann", "Max", "MUSTERMANN", "max@example.org") == " max mustermann example org "


def test_the_search_runs_a_fixed_number_of_statements(mirrored) -> None:
    with CaptureQueriesContext(connection) as queries:
        search("Tiefenbacher Weg 15")
    assert len(queries) <= 8  # however many rows match: none per row
