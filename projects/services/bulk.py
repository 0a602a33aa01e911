"""Set-based upsert for the sync engine.

`QuerySet.bulk_create(update_conflicts=True)` compiles every value through the SQL compiler and,
on PostgreSQL, splices all parameters into one statement; for 1,000 mirrored entities a page that
cost more than fetching them. One `INSERT ... ON CONFLICT DO UPDATE` run with `executemany` lets
SQLite loop natively and psycopg pipeline the rows. Both databases accept the same statement.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, models


def bulk_upsert(model: type[models.Model], rows: Iterable[Mapping[str, Any]], *, unique_field: str,
                update_fields: Sequence[str], newer_by: str | None = None, keep_when_empty: Sequence[str] = ()) -> int:
    """Insert or update `rows` (field name to value) on `unique_field`; returns the number of rows sent.

    With `newer_by` (a date field) an existing row is only overwritten by one at least as new, so two
    writers that read epilot at different moments can never put an older version back. Columns in
    `keep_when_empty` keep their value when the new row has an empty string there.
    """
    rows = list(rows)
    if not rows:
        return 0
    fields = [model._meta.get_field(name) for name in (unique_field, *update_fields)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(_placeholder(field) for field in fields)
    table = quote(model._meta.db_table)
    updates = ", ".join(
        f"{quote(field.column)} = CASE WHEN EXCLUDED.{quote(field.column)} = '' THEN {table}.{quote(field.column)} "
        f"ELSE EXCLUDED.{quote(field.column)} END" if field.name in keep_when_empty
        else f"{quote(field.column)} = EXCLUDED.{quote(field.column)}" for field in fields[1:])
    sql = (f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
           f"ON CONFLICT ({quote(fields[0].column)}) DO UPDATE SET {updates}")
    if newer_by:
        column = quote(model._meta.get_field(newer_by).column)
        sql += f" WHERE {table}.{column} IS NULL OR EXCLUDED.{column} >= {table}.{column}"
    converters = [_converter(field) for field in fields]
    params = [[convert(row, field.name) for convert, field in zip(converters, fields, strict=True)] for row in rows]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A server-binding psycopg cursor on the same connection (and transaction): rows are
            # pipelined as parameters of one prepared statement instead of being spliced into SQL text.
            import psycopg

            with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
                raw.executemany(sql, params)  # errors surface as django.db errors, as through Django's cursor
        else:
            cursor.executemany(sql, params)
    return len(rows)


# A row may carry a JSON field's text already (`payload__json`): the sync serialises each payload
# once, to check its size and NUL characters, and the same text is what the database stores.
PRE_ENCODED = "{}__json"


def _converter(field: models.Field) -> Callable[[Mapping[str, Any], str], Any]:
    """The database parameter of one column for a row, as `get_db_prep_save` would give it, without its per-value cost."""
    if isinstance(field, models.JSONField):
        def json_param(row: Mapping[str, Any], name: str) -> Any:
            text = row.get(PRE_ENCODED.format(name))
            if text is not None:
                return text
            value = row[name]
            return None if value is None and field.null else json.dumps(value, ensure_ascii=False)
        return json_param
    if isinstance(field, models.DateTimeField) and connection.vendor != "postgresql":
        adapt = connection.ops.adapt_datetimefield_value
        return lambda row, name: adapt(row[name])
    if isinstance(field, models.DecimalField):
        adapt_decimal = connection.ops.adapt_decimalfield_value
        return lambda row, name: adapt_decimal(row[name], field.max_digits, field.decimal_places)
    if isinstance(field, (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.DateTimeField)):
        return lambda row, name: row[name]  # psycopg and sqlite3 take these as they are
    return lambda row, name: field.get_db_prep_save(row[name], connection)


def _placeholder(field: models.Field) -> str:
    if connection.vendor == "postgresql" and isinstance(field, models.JSONField):
        return "%s::jsonb"
    return "%s"
