"""Bulk writes of the mirror (projects/mirror/bulk.py): every row once, whatever the count, in statements of few shapes."""
from __future__ import annotations

import re
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from projects.mirror.bulk import bulk_update_by_pk, bulk_upsert
from projects.models import PendingExecutionRead

pytestmark = pytest.mark.django_db

# Row counts around the statement size (100 rows), and one that is a large page.
COUNTS = (1, 37, 99, 100, 101, 163, 1000, 1013)


def rows(count: int, *, start: int = 0, schema: str = "opportunity") -> list[dict]:
    now = timezone.now()
    return [{"epilot_id": f"bulk-{number:06d}", "schema": schema, "workflows": {"w": [number]}, "since": now}
            for number in range(start, start + count)]


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
    connection.ensure_connection()
    executed: list[str] = []
    connection.connection.set_trace_callback(executed.append)
    try:
        start = 0
        for count in (*COUNTS, *range(2, 60, 3)):
            upsert(rows(count, start=start))
            start += count
    finally:
        connection.connection.set_trace_callback(None)
    # Each statement names the ids it writes: their number is its rows.
    sizes = Counter(len(re.findall(r"bulk-\d{6}", sql)) for sql in executed if sql.startswith("INSERT"))
    assert sum(size * times for size, times in sizes.items()) == start == PendingExecutionRead.objects.count()
    assert set(sizes) <= {100, 64, 32, 16, 8, 4, 2, 1}, sizes
