"""Set-based upsert for the sync engine.

`QuerySet.bulk_create(update_conflicts=True)` compiles every value through the SQL compiler and,
on PostgreSQL, splices all parameters into one statement; for 1,000 mirrored entities a page that
cost more than fetching them. On SQLite one `INSERT ... ON CONFLICT DO UPDATE` runs with
`executemany`, which loops natively; on PostgreSQL the rows are COPied into a temporary table and
upserted from there in one statement.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, models, transaction


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
    placeholders = ", ".join(["%s"] * len(fields))
    table = quote(model._meta.db_table)
    updates = ", ".join(
        f"{quote(field.column)} = CASE WHEN EXCLUDED.{quote(field.column)} = '' THEN {table}.{quote(field.column)} "
        f"ELSE EXCLUDED.{quote(field.column)} END" if field.name in keep_when_empty
        else f"{quote(field.column)} = EXCLUDED.{quote(field.column)}" for field in fields[1:])
    conflict = f"ON CONFLICT ({quote(fields[0].column)}) DO UPDATE SET {updates}"
    if newer_by:
        column = quote(model._meta.get_field(newer_by).column)
        conflict += f" WHERE {table}.{column} IS NULL OR EXCLUDED.{column} >= {table}.{column}"
    converters = [_converter(field) for field in fields]
    # The last row of a key wins, as it would row by row; one statement may not touch a row twice.
    by_key = {row[unique_field]: row for row in rows}
    params = [[convert(row, field.name) for convert, field in zip(converters, fields, strict=True)] for row in by_key.values()]
    # One transaction for all rows: in autocommit SQLite would commit (and sync to disk) once per row.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            _copy_then_upsert(model, fields, params, conflict)
        else:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) {conflict}", params)
    return len(rows)


def _copy_then_upsert(model: type[models.Model], fields: Sequence[models.Field], params: list[list[Any]], conflict: str) -> None:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT ... SELECT ... ON CONFLICT.

    COPY streams rows without a round trip or a statement each; the upsert then runs once, set-based.
    The staging table lives until the transaction ends. Errors surface as django.db errors.
    """
    import psycopg

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    staging = quote(f"staging_{model._meta.db_table}")
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
        raw.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
                    f"SELECT {columns} FROM {table} WITH NO DATA")
        with raw.copy(f"COPY {staging} ({columns}) FROM STDIN") as copy:
            for row in params:
                copy.write_row(row)
        raw.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} {conflict}")
        raw.execute(f"TRUNCATE {staging}")


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
        in_utc = connection.timezone_name == "UTC"

        def sqlite_datetime(row: Mapping[str, Any], name: str) -> Any:
            value = row[name]
            if in_utc and value is not None and value.tzinfo is dt.UTC:
                return str(value.replace(tzinfo=None))  # what adapt() gives, without its time-zone arithmetic
            return adapt(value)
        return sqlite_datetime
    if isinstance(field, models.DecimalField):
        adapt_decimal = connection.ops.adapt_decimalfield_value
        return lambda row, name: adapt_decimal(row[name], field.max_digits, field.decimal_places)
    if isinstance(field, (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.DateTimeField)):
        return lambda row, name: row[name]  # psycopg and sqlite3 take these as they are
    return lambda row, name: field.get_db_prep_save(row[name], connection)
