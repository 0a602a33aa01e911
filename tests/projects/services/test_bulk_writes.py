"""Bulk writes of the mirror (projects/mirror/bulk.py): every row once, whatever the count, in statements of few shapes."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from projects.mirror.bulk import bulk_update_by_pk, bulk_upsert, dumps_json
from projects.mirror.pages import MirrorChanges, prepare_page, store_page
from projects.models import AusbauProject, Opportunity, PendingExecutionRead, QuarantinedEntity

pytestmark = pytest.mark.django_db

# Row counts around the statement size (100 rows), and one that is a large page.
COUNTS = (1, 37, 99, 100, 101, 163, 1000, 1013)


def rows(count: int, *, start: int = 0, schema: str = "opportunity") -> list[dict]:
    now = timezone.now()
    return [{"epilot_id": f"bulk-{number:06d}", "schema": schema, "workflows": {"w": [number]}, "since": now}
            for number in range(start, start + count)]


@contextmanager
def sqlite_statements() -> Iterator[list[str]]:
    """The statements SQLite runs in the block, as it runs them."""
    connection.ensure_connection()
    executed: list[str] = []
    connection.connection.set_trace_callback(executed.append)
    try:
        yield executed
    finally:
        connection.connection.set_trace_callback(None)


def upsert(batch: list[dict]) -> None:
    bulk_upsert(PendingExecutionRead, batch, unique_field="epilot_id", update_fields=["schema", "workflows", "since"])


@pytest.mark.parametrize("count", COUNTS)
def test_every_row_is_written_once_and_updated_in_place(count: int) -> None:
    upsert(rows(count))
    assert PendingExecutionRead.objects.count() == count
    upsert(rows(count, schema="order"))  # the same keys again: updated, not doubled
    written = {epilot_id: (schema, workflows) for epilot_id, schema, workflows
               in PendingExecutionRead.objects.values_list("epilot_id", "schema", "workflows")}
    assert written == {f"bulk-{number:06d}": ("order", {"w": [number]}) for number in range(count)}

    ids = dict(PendingExecutionRead.objects.values_list("epilot_id", "pk"))
    bulk_update_by_pk(PendingExecutionRead, [{"id": ids[f"bulk-{number:06d}"], "schema": "contact"}
                                             for number in range(count)], ["schema"])
    assert set(PendingExecutionRead.objects.values_list("schema", flat=True)) == {"contact"}


def test_sqlite_writes_come_in_a_few_statement_shapes() -> None:
    """sqlite3 keeps the statements it prepared; one per remainder size made a process's memory grow with its writes."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL copies the rows; the statement cache is sqlite3's")
    with sqlite_statements() as executed:
        start = 0
        for count in (*COUNTS, *range(2, 60, 3)):
            upsert(rows(count, start=start))
            start += count
    # Each statement names the ids it writes: their number is its rows.
    sizes = Counter(len(re.findall(r"bulk-\d{6}", sql)) for sql in executed if sql.startswith("INSERT"))
    assert sum(size * times for size, times in sizes.items()) == start == PendingExecutionRead.objects.count()
    assert set(sizes) <= {100, 64, 32, 16, 8, 4, 2, 1}, sizes


def refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_json_texts_are_valid_json_whatever_python_holds() -> None:
    """orjson refuses integers beyond 64 bits; the fallback writes NaN and infinity as null, as orjson does."""
    text = dumps_json({"units": 2**80, "budget": float("nan"), "limits": [float("inf"), -float("inf"), 1.5]})
    assert json.loads(text, parse_constant=refuse_constant) == {"units": 2**80, "budget": None, "limits": [None, None, 1.5]}


def test_a_document_python_reads_but_json_cannot_hold_is_mirrored_as_valid_json() -> None:
    """A page read with Python's json (an integer beyond 64 bits made orjson refuse it) may hold NaN."""
    document = {"_id": "nan-opportunity", "_schema": "opportunity", "_org": "1", "_title": "NaN",
                "_updated_at": "2026-01-02T00:00:00Z", "wohneinheiten": 2**80, "budget_estimate": float("nan")}
    with transaction.atomic():
        store_page(prepare_page("opportunity", [document]), MirrorChanges(), None, None)
    payload = Opportunity.objects.get(epilot_id="nan-opportunity").payload
    assert payload["wohneinheiten"] == 2**80 and payload["budget_estimate"] is None
    assert not QuarantinedEntity.objects.exists()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("SELECT json_valid(payload) FROM projects_opportunity")
            assert cursor.fetchall() == [(1,)]


def test_sqlite_skips_only_the_json_checks_and_only_while_writing() -> None:
    """The texts bulk_upsert writes are dumps_json's, so SQLite need not parse them again (JSON_VALID); a table with other
    checks keeps them, and every check is back once the write is done."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's jsonb parses the text as it stores it; there is no check to skip")
    with sqlite_statements() as executed:
        upsert(rows(150))
    writes = [index for index, sql in enumerate(executed) if sql.startswith("INSERT")]
    switches = [index for index, sql in enumerate(executed) if "ignore_check_constraints" in sql]
    assert len(switches) == 2 and switches[0] < min(writes) and max(writes) < switches[1]
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA ignore_check_constraints")
        assert cursor.fetchone() == (0,)
        with pytest.raises(IntegrityError), transaction.atomic():
            cursor.execute("UPDATE projects_pendingexecutionread SET workflows = 'not json'")

    opportunity = Opportunity.objects.create(epilot_id="checked", title="checked", payload={}, synced_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():  # progress_percent is positive: that check stays
        bulk_upsert(AusbauProject, [{"opportunity": opportunity.pk, "title": "t", "phase": "planning", "progress_percent": -1,
                                     "updated_at": timezone.now()}],
                    unique_field="opportunity", update_fields=["title", "phase", "progress_percent", "updated_at"])


TEXTS = ["customer_epilot_id", "street", "postal_code", "city", "address_key", "search_text"]


def test_coordinates_and_amounts_are_written_exactly() -> None:
    """PostgreSQL copies a page of opportunities in the binary format: double precision and numeric as they are."""
    now = timezone.now()
    points = [(51.28123456789012, 7.0381234567891234), (-89.999999999999, -179.99999999999), (0.1 + 0.2, 1e-7)]
    rows = [{"epilot_id": f"point-{number}", "title": "", "status": "", "tags__json": "[]", "payload__json": "{}",
             "epilot_updated_at": now, "synced_at": now, "latitude": latitude, "longitude": longitude,
             "budget": Decimal("123456789012.34"), **dict.fromkeys(TEXTS, "")}
            for number, (latitude, longitude) in enumerate(points * 10)]
    bulk_upsert(Opportunity, rows, unique_field="epilot_id", believed_new=True,
                update_fields=["title", "status", "tags", "payload", "epilot_updated_at", "synced_at", "latitude", "longitude",
                               "budget", *TEXTS])
    stored = sorted(Opportunity.objects.values_list("epilot_id", "latitude", "longitude", "budget"))
    assert [(latitude, longitude) for _id, latitude, longitude, _budget in stored] == [
        points[number % 3] for number in sorted(range(30), key=lambda number: f"point-{number}")]
    assert {budget for *_rest, budget in stored} == {Decimal("123456789012.34")}


def documents(count: int, *, version: int) -> list[dict]:
    return [{"_id": f"text-{number:03d}", "_schema": "opportunity", "_org": "1", "_title": f"Müller {number}",
             "_updated_at": f"2026-01-0{version}T00:00:00Z", "notiz": f"Straße „{version}“ \\ \"quoted\" 🏠 {number}",
             "address": [{"street": "Düsseldorfer Straße", "street_number": str(number), "postal_code": "42489"}]}
            for number in range(count)]


@pytest.mark.parametrize("count", [1, 30])  # PostgreSQL: a few rows go as one INSERT, more are COPied
def test_documents_are_stored_as_the_same_text_whichever_way_they_are_written(count: int) -> None:
    """A page's documents travel to the database as UTF-8 bytes: they are stored as JSON text (not bytes), exact,
    when new (COPied straight in on PostgreSQL) and when known (upserted from a staging table)."""
    for version in (1, 2):
        with transaction.atomic():
            store_page(prepare_page("opportunity", documents(count, version=version)), MirrorChanges(), None, None)
        stored = dict(Opportunity.objects.values_list("epilot_id", "payload"))
        assert stored == {document["_id"]: document for document in documents(count, version=version)}
    assert not QuarantinedEntity.objects.exists()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT typeof(payload), json_valid(payload) FROM projects_opportunity")
            assert cursor.fetchall() == [("text", 1)]
