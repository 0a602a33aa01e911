"""PostgreSQL's side of the bulk writes (bulk.py): rows sent with COPY, in the binary format where every value fits it.

COPY streams rows without a statement or a round trip each. A row's JSON documents (str, or the
UTF-8 bytes a sync page carries) are sent as they are.
"""
from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, models, transaction


def copy_then_upsert(model: type[models.Model], fields: Sequence[models.Field], params: list[list[Any]], conflict: str) -> None:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT ... SELECT ... ON CONFLICT.

    COPY streams rows without a round trip or a statement each; the upsert then runs once, set-based.
    The staging table lives until the transaction ends. Errors surface as django.db errors.
    """
    import psycopg

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    indexes = [index for index, field in enumerate(fields) if isinstance(field, models.JSONField)]
    # JSON is staged as uncompressed text and parsed once, by the INSERT: a jsonb staging column
    # parsed and compressed every document twice (COPY was 40 % of the database's time in a sync).
    staged = ", ".join(quote(field.column) + ("::text" if index in indexes else "") for index, field in enumerate(fields))
    taken = ", ".join(quote(field.column) + ("::jsonb" if index in indexes else "") for index, field in enumerate(fields))
    # One staging table per column set: two upserts of a model in one transaction may write different columns.
    staging = quote(f"staging_{model._meta.db_table}_{zlib.crc32(columns.encode()):08x}")
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
        raw.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ON COMMIT DROP AS "
                    f"SELECT {staged} FROM {table} WITH NO DATA")
        for index in indexes:
            raw.execute(f"ALTER TABLE {staging} ALTER COLUMN {quote(fields[index].column)} SET STORAGE EXTERNAL")
        # Binary COPY: timestamps, numbers and texts travel as the server stores them, nothing to parse or escape.
        types = [BYTEA if index in indexes else oid for index, oid in enumerate(_column_types(raw, staging))]
        _copy_documents(raw, staging, columns, params, types, indexes, version=b"")
        raw.execute(f"INSERT INTO {table} ({columns}) SELECT {taken} FROM {staging} {conflict}")
        raw.execute(f"TRUNCATE {staging}")


def copy_new_rows(model: type[models.Model], fields: Sequence[models.Field], params: list[Sequence[Any]]) -> bool:
    """PostgreSQL: COPY rows straight into the table, in a savepoint; False (nothing written) when one of them
    is there by now (a unique key taken), so the caller upserts instead.

    For a page of new documents this spares the staging table and the INSERT ... SELECT (a first
    sync writes only such pages). A column whose type a
    migration changed while the process runs would fail here (the types are kept per process).
    """
    import psycopg

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    try:
        with transaction.atomic(), connection.wrap_database_errors, psycopg.Cursor(connection.connection) as raw:
            table_types = _column_types(raw, table, [field.column for field in fields])
            # jsonb's binary form is a version byte (1) and the document's text: the text goes as it is.
            documents = [index for index, oid in enumerate(table_types) if oid == JSONB]
            types = [BYTEA if oid == JSONB else oid for oid in table_types]
            _copy_documents(raw, table, columns, params, types, documents, version=b"\x01")
    except IntegrityError:
        return False
    return True


def _copy_rows(raw: Any, relation: str, columns: str, params: list[Sequence[Any]], binary_types: list[int] | None) -> None:
    """COPY `params` into `relation`: in the binary format with these column type oids, else as text."""
    with raw.copy(f"COPY {relation} ({columns}) FROM STDIN" + (" (FORMAT BINARY)" if binary_types else "")) as copy:
        if binary_types:
            copy.set_types(binary_types)
        for row in params:
            copy.write_row(row)


JSONB, BYTEA = 3802, 17


def _copy_documents(raw: Any, relation: str, columns: str, params: list[Sequence[Any]], types: list[int],
                    documents: list[int], *, version: bytes) -> None:
    """COPY `params`, whose columns at `documents` hold JSON texts (str or UTF-8 bytes): in the binary format where
    every other value fits it, each document then sent as `version` and its UTF-8 bytes as they are (a binary
    field's bytes go to the column type's own input, whatever type the client names: bytea's sends them
    unchanged); else as text."""
    as_bytes = [_documents_as_utf8(row, documents, version) for row in params] if documents else params
    if _fit_binary(types, as_bytes):
        _copy_rows(raw, relation, columns, as_bytes, types)
    else:
        _copy_rows(raw, relation, columns, documents_as_text(params, documents), None)


def _documents_as_utf8(row: Sequence[Any], documents: list[int], version: bytes) -> list[Any]:
    values = list(row)
    for index in documents:
        value = values[index]
        if value is not None:
            encoded = value if type(value) is bytes else value.encode()
            values[index] = version + encoded if version else encoded
    return values


def documents_as_text(params: list[Sequence[Any]], documents: list[int]) -> list[Sequence[Any]]:
    """`params` with the JSON texts given as UTF-8 bytes at `documents` decoded, for the drivers' text parameters."""
    if not any(type(row[index]) is bytes for row in params for index in documents):
        return params
    return [[value.decode() if index in documents and type(value) is bytes else value for index, value in enumerate(row)]
            for row in params]


_column_oids: dict[tuple[str, tuple[str, ...] | None], list[int]] = {}


def _column_types(raw: Any, relation: str, columns: Sequence[str] | None = None) -> list[int]:
    """The type oids of a table's `columns` (all, in order, when None); kept per process, as migrations
    run before the app starts and built-in types have the same oids on every server."""
    key = (relation, tuple(columns) if columns is not None else None)
    if key not in _column_oids:
        raw.execute("SELECT attname, atttypid FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum", [relation])
        found = raw.fetchall()
        by_name = dict(found)
        _column_oids[key] = [oid for _name, oid in found] if columns is None else [by_name[name] for name in columns]
    return _column_oids[key]


# Python types the binary COPY format takes for a column's type oid (text, varchar, bpchar; int8, int4, int2;
# timestamptz; numeric; bool; double precision; bytea, which JSON texts are sent as). A value of another type
# (epilot sent a number where a name belongs) goes as text.
BINARY_TYPES: dict[int, tuple[type, ...]] = {25: (str,), 1043: (str,), 1042: (str,), 20: (int,), 23: (int,), 21: (int,),
                                             1184: (dt.datetime,), 1700: (Decimal, int), 16: (bool,), 701: (float,),
                                             BYTEA: (bytes,)}


def _fit_binary(types: list[int], params: list[Sequence[Any]]) -> bool:
    """Whether every value has the Python type the binary format of its column expects (None always does);
    False for a column of a type not listed here."""
    if any(oid not in BINARY_TYPES for oid in types):
        return False
    checks = list(enumerate(BINARY_TYPES[oid] for oid in types))
    for row in params:
        for index, kinds in checks:
            value = row[index]
            if value is not None and type(value) not in kinds:  # exact types: True is no int8, a SafeString goes as text
                return False
    return True
