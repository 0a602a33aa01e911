"""Set-based writes and reads for the sync engine: bulk upserts, and id lists passed as one parameter.

`QuerySet.bulk_create(update_conflicts=True)` compiles every value through the SQL compiler and,
on PostgreSQL, splices all parameters into one statement, which for a page of documents costs more
than fetching it. On SQLite one `INSERT ... ON CONFLICT DO UPDATE` runs with
`executemany`, which loops natively; on PostgreSQL the rows are COPied into a temporary table and
upserted from there in one statement.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Context, Decimal
from operator import itemgetter
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform

from projects.mirror.pg_copy import copy_new_rows, copy_then_upsert, documents_as_text


def dumps_json(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text for a JSON column, always valid JSON: orjson where it can, json for what orjson refuses (huge integers,
    odd keys). A number that is not finite (NaN, infinity) is written null, as orjson writes it."""
    try:
        return orjson.dumps(value, default=default).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, default=default, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or infinity, which Python's json would write as NaN: no JSON reader takes that
        return json.dumps(_finite(value), default=default, ensure_ascii=False, allow_nan=False)


def dumps_json_utf8(value: Any, *, default: Callable[[Any], Any] | None = None) -> bytes:
    """`dumps_json`'s text as UTF-8 bytes, which orjson writes directly.

    A row may carry a JSON column's text so (`PRE_ENCODED`): bytes travel between processes and
    into the database without being decoded and encoded again on the way.
    """
    try:
        return orjson.dumps(value, default=default)
    except (orjson.JSONEncodeError, TypeError):
        return dumps_json(value, default=default).encode()


def _finite(value: Any) -> Any:
    """`value` with every float that is not finite replaced by None, in lists and objects too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def bulk_upsert(model: type[models.Model], rows: Iterable[Mapping[str, Any]], *, unique_field: str | Sequence[str],
                update_fields: Sequence[str], newer_by: str | None = None, keep_when_empty: Sequence[str] = (),
                believed_new: bool = False) -> int:
    """Insert or update `rows` (field name to value) on `unique_field` (or the fields of a unique constraint);
    returns the number of rows sent.

    Without `update_fields` a row whose key is there already is left as it is (DO NOTHING).
    With `newer_by` (a date field) an existing row is only overwritten by one at least as new, so two
    writers that read epilot at different moments can never put an older version back. Columns in
    `keep_when_empty` keep their value when the new row has an empty string (NULL, for other types) there.
    `believed_new` says the caller saw none of the rows in the table: PostgreSQL then COPies them
    straight in, and falls back to the upsert should another writer have inserted one meanwhile.
    """
    rows = list(rows)
    if not rows:
        return 0
    keys = (unique_field,) if isinstance(unique_field, str) else tuple(unique_field)
    fields = [model._meta.get_field(name) for name in (*keys, *update_fields)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    table = quote(model._meta.db_table)
    def empty(field: models.Field) -> str:
        return "= ''" if isinstance(field, (models.CharField, models.TextField)) else "IS NULL"

    updates = ", ".join(
        f"{quote(field.column)} = CASE WHEN EXCLUDED.{quote(field.column)} {empty(field)} THEN {table}.{quote(field.column)} "
        f"ELSE EXCLUDED.{quote(field.column)} END" if field.name in keep_when_empty
        else f"{quote(field.column)} = EXCLUDED.{quote(field.column)}" for field in fields[len(keys):])
    target = ", ".join(quote(field.column) for field in fields[:len(keys)])
    conflict = f"ON CONFLICT ({target}) DO UPDATE SET {updates}" if updates else f"ON CONFLICT ({target}) DO NOTHING"
    if newer_by:
        column = quote(model._meta.get_field(newer_by).column)
        conflict += f" WHERE {table}.{column} IS NULL OR EXCLUDED.{column} >= {table}.{column}"
    # The last row of a key wins, as it would row by row; one statement may not touch a row twice.
    key_of = itemgetter(*keys)
    params = _parameters(fields, list({key_of(row): row for row in rows}.values()))
    # One transaction for all rows: in autocommit SQLite would commit (and sync to disk) once per row.
    documents = [index for index, field in enumerate(fields) if isinstance(field, models.JSONField)]
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            if len(params) <= FEW_ROWS:
                # A webhook's or a write's handful of rows: one statement, not a staging table's six round trips.
                row = f"({', '.join(['%s'] * len(fields))})"
                cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(params))} {conflict}",
                               [value for values in documents_as_text(params, documents) for value in values])
            elif not (believed_new and copy_new_rows(model, fields, params)):
                copy_then_upsert(model, fields, params, conflict)
        else:
            # A JSON text given as UTF-8 bytes would be stored as a BLOB: SQLite takes its bytes as text instead.
            placeholders = ["CAST(? AS TEXT)" if index in documents else "?" for index in range(len(fields))]
            with _json_checks_skipped(model, cursor):
                _insert_in_groups(cursor, f"INSERT INTO {table} ({columns}) VALUES", placeholders, conflict, params)
    return len(rows)


@contextmanager
def _json_checks_skipped(model: type[models.Model], cursor: Any) -> Iterator[None]:
    """SQLite: the table's CHECK constraints off for the block where they only ask JSON columns for valid JSON.

    Django checks a JSON column with `JSON_VALID`, so SQLite would parse every document once more as
    it is written. The texts written here come from `dumps_json` (or are `PRE_ENCODED` with it), whose
    output is valid JSON by construction. A table with any other check keeps them all.
    """
    if not _checks_are_json_only(model):
        yield
        return
    cursor.execute("PRAGMA ignore_check_constraints = ON")
    try:
        yield
    finally:
        cursor.execute("PRAGMA ignore_check_constraints = OFF")


@functools.cache
def _checks_are_json_only(model: type[models.Model]) -> bool:
    """Whether every CHECK constraint of the model's table (SQLite) is the JSON_VALID of a JSON column."""
    if any(isinstance(constraint, models.CheckConstraint) for constraint in model._meta.constraints):
        return False
    return all(isinstance(field, models.JSONField) or field.db_parameters(connection)["check"] is None
               for field in model._meta.concrete_fields)


def bulk_update_by_pk(model: type[models.Model], rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> int:
    """Set `fields` of existing rows, each named by its "id", in statements of many rows; returns the rows sent.

    One `UPDATE ... FROM` a list of rows (arrays on PostgreSQL, VALUES in groups on SQLite): Django's
    bulk_update builds a CASE per field and row, which took seconds for a few thousand rows. A row
    that is gone meanwhile is not written (never inserted again).
    """
    rows = list(rows)
    if not rows:
        return 0
    quote = connection.ops.quote_name
    targets = [model._meta.pk, *(model._meta.get_field(name) for name in fields)]
    params = _parameters(targets, [{model._meta.pk.name: row["id"], **row} for row in rows])
    table = quote(model._meta.db_table)
    names = [f"v{index}" for index in range(len(targets))]
    assignments = ", ".join(f"{quote(field.column)} = incoming.{name}"
                            for field, name in zip(targets[1:], names[1:], strict=True))
    key = f"{table}.{quote(targets[0].column)} = incoming.{names[0]}"
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # All rows in one statement, a typed array per column: a statement per thousand rows made PostgreSQL
            # hash-join (read) the whole table once per statement.
            columns = [list(column) for column in zip(*params, strict=True)]
            source = ", ".join(f"unnest(%s::{field.cast_db_type(connection)}[]) AS {name}"
                               for field, name in zip(targets, names, strict=True))
            cursor.execute(f"UPDATE {table} SET {assignments} FROM (SELECT {source}) AS incoming WHERE {key}", columns)
            return len(rows)
        per_statement = max(1, min(ROWS_PER_STATEMENT, _sqlite_parameter_limit() // len(targets)))
        row = "(" + ", ".join(["%s"] * len(targets)) + ")"
        for start, size in statement_groups(len(params), per_statement):
            group = params[start:start + size]
            # SQLite names the columns of VALUES column1, column2, ...; it finds each row by its primary key.
            source = (f"(SELECT {', '.join(f'column{i + 1} AS {name}' for i, name in enumerate(names))} "
                      f"FROM (VALUES {', '.join([row] * len(group))})) AS incoming")
            cursor.execute(f"UPDATE {table} SET {assignments} FROM {source} WHERE {key}",
                           [value for values in group for value in values])
    return len(rows)


def _insert_in_groups(cursor: Any, insert: str, placeholders: list[str], conflict: str, params: list[Sequence[Any]]) -> None:
    """SQLite: many rows per INSERT, in the few sizes `statement_groups` gives; the full ones run with one executemany.

    sqlite3 releases the GIL for every statement; a thread building the next page then takes it
    each time, and the writer waits up to a switch interval to get it back. Row by row, that
    was a wait per row. The statement is written with sqlite3's own `?` placeholders and run on its
    cursor: Django's would rewrite each `%s` of a page with a regular expression.
    Errors surface as django.db errors.
    """
    row = f"({', '.join(placeholders)})"
    per_statement = max(1, min(ROWS_PER_STATEMENT, _sqlite_parameter_limit() // len(placeholders)))
    groups = statement_groups(len(params), per_statement)
    full = [start for start, size in groups if size == per_statement]
    raw = cursor.cursor
    with connection.wrap_database_errors:
        if full:
            sqlite3.Cursor.executemany(raw, f"{insert} {', '.join([row] * per_statement)} {conflict}",
                                       [[value for values in params[start:start + per_statement] for value in values]
                                        for start in full])
        for start, size in groups[len(full):]:
            sqlite3.Cursor.execute(raw, f"{insert} {', '.join([row] * size)} {conflict}",
                                   [value for values in params[start:start + size] for value in values])


def statement_groups(count: int, per_statement: int) -> list[tuple[int, int]]:
    """(first row, rows) of each statement writing `count` rows: groups of `per_statement`, the rest in powers of two.

    sqlite3 keeps the statements it prepared on each connection, and a statement of many rows is
    large. With a statement of its own for every size of a remainder, that cache filled with
    statements used once, and a process's memory grew with its writes; in these sizes a table has a
    few statements, prepared once (docs/internals.md).
    """
    groups = [(start, per_statement) for start in range(0, count - count % per_statement, per_statement)]
    start = len(groups) * per_statement
    while start < count:
        size = 1 << ((count - start).bit_length() - 1)
        groups.append((start, size))
        start += size
    return groups


ROWS_PER_STATEMENT = 100  # larger statements take more memory prepared and run no faster (docs/benchmarks.md)
FEW_ROWS = 20  # PostgreSQL: up to this many rows go as one INSERT ... VALUES


def _sqlite_parameter_limit() -> int:
    """How many parameters one SQLite statement takes here (Django assumes 999; builds since 3.32 take 32,766 or more)."""
    raw = connection.connection
    if hasattr(raw, "getlimit"):  # Python 3.11+
        return raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return connection.features.max_query_params


# A row may carry a JSON field's text already (`payload__json`): the sync serialises each payload
# once, to check its size and NUL characters, and the same text is what the database stores.
PRE_ENCODED = "{}__json"  # a JSON field's text, encoded with `dumps_json` (or `dumps_json_utf8`) by whoever built the row
PRE_ADAPTED = "{}__db"  # a field's database parameter, adapted by whoever built the row (`adapt_ahead`)


def adapt_ahead(model: type[models.Model], rows: Iterable[dict[str, Any]]) -> None:
    """Give `rows` the database parameters of their date-time fields ahead of the write, as `<name>__db`.

    Meant for a thread that builds rows while another writes: the writer then only picks values.
    Reads no database. Nothing to do where the driver takes datetimes as they are (PostgreSQL).
    """
    if connection.vendor == "postgresql":
        return
    rows = list(rows)
    for field in model._meta.concrete_fields:
        if not isinstance(field, models.DateTimeField) or not rows or field.name not in rows[0]:
            continue
        convert, key, last, adapted = _converter(field), PRE_ADAPTED.format(field.name), None, None
        for row in rows:
            value = row[field.name]
            if value is not last or adapted is None:  # a page's rows share one `synced_at`: adapted once
                last, adapted = value, convert(value)
            row[key] = adapted


def _parameters(fields: Sequence[models.Field], rows: list[Mapping[str, Any]]) -> list[Sequence[Any]]:
    """The database parameters of `rows`, column by column as `get_db_prep_save` would give them.

    Values that the drivers take as they are, or that the rows carry encoded (`PRE_ENCODED`) or adapted
    (`PRE_ADAPTED`), are picked in one C-level `itemgetter` call per row; only the other columns that
    need it (dates on SQLite, JSON not yet encoded, decimals) are converted, a column at a time, and a
    column holding one value throughout (`synced_at`) is converted once.
    """
    keys: list[str] = []
    conversions: list[tuple[int, Callable[[Any], Any]]] = []
    for index, field in enumerate(fields):
        encoded = PRE_ENCODED.format(field.name)
        if isinstance(field, models.JSONField) and all(row.get(encoded) is not None for row in rows):
            keys.append(encoded)
            continue
        adapted = PRE_ADAPTED.format(field.name)
        if rows and adapted in rows[0] and all(adapted in row for row in rows):
            keys.append(adapted)
            continue
        keys.append(field.name)
        convert = _converter(field)
        if convert is not None:
            conversions.append((index, convert))
    pick = itemgetter(*keys) if len(keys) > 1 else (lambda row: (row[keys[0]],))
    picked = list(map(pick, rows))
    if not conversions or not picked:
        return picked
    columns = list(zip(*picked, strict=False))
    for index, convert in conversions:
        column = columns[index]
        if len(set(map(id, column))) == 1:  # the same object throughout (equal is not enough: 1 == True)
            columns[index] = (convert(column[0]),) * len(column)
        else:
            columns[index] = tuple(map(convert, column))
    return list(zip(*columns, strict=False))


def _converter(field: models.Field) -> Callable[[Any], Any] | None:
    """How one column's value becomes its database parameter, or None where psycopg and sqlite3 take it as it is."""
    if isinstance(field, models.JSONField):
        return lambda value: None if value is None and field.null else dumps_json(value)
    if isinstance(field, models.DateTimeField) and connection.vendor != "postgresql":
        adapt = connection.ops.adapt_datetimefield_value
        in_utc = connection.timezone_name == "UTC"

        def sqlite_datetime(value: Any) -> Any:
            if value is None:
                return None
            if in_utc and value.tzinfo is dt.UTC:
                return value.isoformat(" ")[:-6]  # what adapt() gives for a UTC value, without its time-zone arithmetic
            return adapt(value)
        return sqlite_datetime
    if isinstance(field, models.DecimalField):
        adapt_decimal = connection.ops.adapt_decimalfield_value
        return lambda value: adapt_decimal(value, field.max_digits, field.decimal_places)
    if isinstance(field, (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.DateTimeField)):
        return None
    if isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.IntegerField):
        return None  # a primary key (AutoField and BigAutoField are IntegerFields): the drivers take the int
    return lambda value: field.get_db_prep_save(value, connection)


def values_read_at_once(queryset: models.QuerySet, *fields: str, flat: bool = False) -> list[Any]:
    """`queryset.values_list(*fields, flat=flat)` as a list, for results of thousands of rows (texts, numbers, dates,
    decimals, booleans, JSON).

    The database gathers the rows into one JSON array, read in one step and parsed in one call. On
    SQLite, sqlite3 releases the GIL for every row it steps to and must take it back before the
    next: while the sync's reader threads hold it, every row of a long result waited for it. On
    PostgreSQL, psycopg loads each date-time in Python (Django's time-zone loader), which for the
    projects' and areas' facts cost more than the query. The order is the queryset's only where
    it is ordered on PostgreSQL (read as values_list then). Raises TypeError for a field of another
    type.
    """
    converters: list[Callable[[Any], Any] | None] = []
    as_json: set[int] = set()  # fields the database nests as JSON, not as their text
    floats: set[int] = set()
    for index, name in enumerate(fields):
        field = queryset.model._meta.pk if name == "pk" else queryset.model._meta.get_field(name)
        if isinstance(field, models.ForeignKey):
            field = field.target_field
        if isinstance(field, models.DateTimeField):
            converters.append(_datetime_reader())
        elif isinstance(field, (models.CharField, models.TextField)) or field.get_internal_type() in _INTEGER_TYPES:
            converters.append(None)
        elif isinstance(field, models.BooleanField):
            converters.append(lambda value: None if value is None else bool(value))  # SQLite keeps 0 and 1
        elif isinstance(field, models.FloatField):
            converters.append(lambda value: None if value is None else float(value))  # JSON writes 7.0 as 7
            floats.add(index)
        elif isinstance(field, models.DecimalField) and (field.max_digits or 99) <= DECIMAL_DIGITS_IN_A_FLOAT:
            converters.append(_decimal_reader(field))
        elif isinstance(field, models.JSONField):
            converters.append(None)
            as_json.add(index)
        else:
            raise TypeError(f"values_read_at_once reads texts, numbers, dates, booleans and JSON, "
                            f"not {name} ({type(field).__name__})")
    if flat and len(fields) != 1:
        raise TypeError("values_read_at_once reads one field when flat")
    postgresql = connection.vendor == "postgresql"
    if postgresql and (queryset.ordered or queryset.query.is_sliced):
        return list(queryset.values_list(*fields, flat=flat))
    aliases = {f"value_{index}": models.F(name) for index, name in enumerate(fields)}
    sql, params = queryset.values(**aliases).query.sql_with_params()
    # SQLite nests a JSON column's text as JSON only through json(), and writes a float into JSON with 15 significant
    # digits (so as text with the 17 every double needs; '%%' as Django reads it); PostgreSQL nests json and jsonb as they
    # are, floats exact.
    values = [alias if postgresql else f"json({alias})" if index in as_json else
              f"CASE WHEN {alias} IS NULL THEN NULL ELSE printf('%%!.17g', {alias}) END" if index in floats else alias
              for index, alias in enumerate(aliases)]
    if postgresql:
        gathered = values[0] if flat else f"json_build_array({', '.join(values)})"
        statement = f"SELECT COALESCE(json_agg({gathered}), '[]')::text FROM ({sql}) AS gathered"
    else:
        gathered = values[0] if flat else f"json_array({', '.join(values)})"
        statement = f"SELECT json_group_array({gathered}) FROM ({sql})"
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        rows = loads_json(cursor.fetchone()[0])
    if flat:
        return rows if converters[0] is None else [converters[0](value) for value in rows]
    for index, convert in enumerate(converters):
        if convert is not None:
            for row in rows:
                row[index] = convert(row[index])
    return [tuple(row) for row in rows]


DECIMAL_DIGITS_IN_A_FLOAT = 15  # a decimal of at most this many digits survives JSON's float exactly


def loads_json(text: str | bytes) -> Any:
    """A JSON text parsed: orjson where it can, json for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _datetime_reader() -> Callable[[Any], Any]:
    """A DateTimeField's value as the database wrote it into JSON, as an aware datetime: what Django's converters give,
    without their regular expression (SQLite) or psycopg's loader written in Python (PostgreSQL)."""
    aware = settings.USE_TZ and connection.timezone_name == "UTC"

    def read(value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            if connection.vendor == "postgresql":
                raise
            return connection.ops.convert_datetimefield_value(value, None, connection)
        if parsed.tzinfo is None:  # SQLite's text, in UTC where USE_TZ
            return parsed.replace(tzinfo=dt.UTC) if aware else \
                connection.ops.convert_datetimefield_value(value, None, connection)
        return parsed.astimezone(dt.UTC) if aware else parsed  # PostgreSQL's, with the session's offset
    return read


def _decimal_reader(field: models.DecimalField) -> Callable[[Any], Any]:
    """A DecimalField's value as JSON's number, as the Decimal Django reads (rounded to the field's places)."""
    to_decimal = Context(prec=DECIMAL_DIGITS_IN_A_FLOAT).create_decimal_from_float
    places = Decimal(1).scaleb(-field.decimal_places)

    def read(value: Any) -> Any:
        if value is None:
            return None
        number = to_decimal(value) if isinstance(value, (int, float)) else Decimal(value)
        return number.quantize(places, context=field.context)
    return read


_INTEGER_TYPES = {"AutoField", "BigAutoField", "SmallAutoField", "IntegerField", "BigIntegerField", "SmallIntegerField",
                  "PositiveIntegerField", "PositiveBigIntegerField", "PositiveSmallIntegerField"}


def column_in(model: type[models.Model], field_name: str, values: list[Any]) -> RawSQL:
    """A filter `field IN values` with the values as one parameter (an array, or JSON on SQLite).

    Django sends one parameter per value; for a page of 1,000 ids PostgreSQL then spent 50 ms
    planning each lookup, and Django as long preparing the values.
    """
    quote = connection.ops.quote_name
    sql, params = among(f"{quote(model._meta.db_table)}.{quote(model._meta.get_field(field_name).column)}", values)
    return RawSQL(sql, params, output_field=models.BooleanField())


def json_key(field_name: str, *path: str) -> KeyTransform:
    """The value at `path` inside a JSON column, for `values()`/`values_list()`.

    Use it instead of a name like "payload__workflows": Django resolves such a name by first
    trying it as a relation and catching the FieldError, whose traceback then holds the caller's
    frame in a reference cycle. A sync's page (a thousand documents) then lived until the cyclic
    garbage collector ran, instead of being freed when the page was written.
    """
    value: Any = field_name
    for key in path:
        value = KeyTransform(key, value)
    return value


def among(column: str, values: list[Any]) -> tuple[str, list[Any]]:
    """SQL for `column IN values` with the values as one parameter of text: JSON, or on PostgreSQL an integer array.

    Django's psycopg cursors bind parameters on the client, and psycopg quotes a list one element at a
    time in Python, which for a page's ids costs more than the lookup itself.
    """
    if connection.vendor != "postgresql":
        return f"{column} IN (SELECT value FROM json_each(%s))", [dumps_json(values)]
    if not values:
        return "FALSE", []
    if all(type(value) is int for value in values):
        return f"{column} = ANY(%s::bigint[])", ["{" + ",".join(map(str, values)) + "}"]
    return f"{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))", [dumps_json(values)]
