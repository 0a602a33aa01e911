"""An entity table's secondary indexes while a full pass fills it from empty.

A database builds an index from a whole table at once for a fraction of what it costs to keep it
up to date while the same rows arrive a page at a time (PostgreSQL's manual, "Populating a
Database": create indexes after loading the data). A full pass into an empty table therefore sets
aside the table's secondary indexes, every one that backs no primary key or unique constraint (the
B-trees of filtered columns; on PostgreSQL also the header search's trigram index), and builds them
again after its last page, also when the pass fails. The pass itself finds rows by their epilot ids,
whose unique indexes stay.

What is set aside is recorded on the schema's SyncState in the transaction that drops it, so a
process that dies in between leaves the record behind, and the next run of that schema builds them
(`indexes_restore`). PostgreSQL builds them on a connection of their own while the run's next
schema loads; SQLite, with its single writer, builds them at once on the run's connection.
"""
from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import DatabaseError, connection, models, transaction

from projects.models import Contact, Opportunity, Order, SyncState

logger = logging.getLogger("projects.sync")

LOADED_IN_PAGES = (Contact, Opportunity, Order)  # tables that hold one schema each, filled by its passes
SET_ASIDE_LOCK_TIMEOUT = "1s"  # a table someone else is using keeps its indexes: the pass then takes the slower way


def secondary_indexes(model: type[models.Model]) -> list[dict[str, str]]:
    """The table's indexes that back no primary key or unique constraint, as {"name", "sql"} (the statement that
    creates each), by name."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                           "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
                           "AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid ORDER BY c.relname",
                           [connection.ops.quote_name(table)])
        else:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s "
                           "AND sql IS NOT NULL AND upper(sql) NOT LIKE 'CREATE UNIQUE %%' ORDER BY name", [table])
        return [{"name": name, "sql": sql} for name, sql in cursor.fetchall()]


def indexes_restore(states: Iterable[SyncState]) -> list[str]:
    """Build the indexes these schemas' records say are set aside (a process died during a full pass); returns the
    names built. Call it holding the sync lease of the schemas, so that no other run has them set aside meanwhile,
    and not inside a transaction. A build that fails is logged and stays recorded for the next run."""
    built: list[str] = []
    if connection.in_atomic_block:
        return built
    for state in states:
        if state.indexes_set_aside:
            logger.warning("indexes of %s were set aside by a full sync that stopped before building them again: "
                           "building %s", state.schema, ", ".join(entry["name"] for entry in state.indexes_set_aside))
            built += indexes_build(state.pk)
    return built


def indexes_build(state_pk: int) -> list[str]:
    """Build the indexes recorded as set aside on this SyncState and clear the record of each built; returns their
    names. Not inside a transaction (PostgreSQL's pending foreign-key checks forbid building an index in one). Logs,
    and keeps recorded, any that fails: the mirror is whole without them, only slower to filter."""
    recorded = SyncState.objects.values_list("indexes_set_aside", flat=True).get(pk=state_pk)
    built, left = [], []
    for entry in recorded:
        try:
            with connection.cursor() as cursor:
                cursor.execute(_if_not_exists(entry["sql"]))
        except DatabaseError:
            logger.exception("index %s was not built again; the next sync run tries again", entry["name"])
            left.append(entry)
        else:
            built.append(entry["name"])
    SyncState.objects.filter(pk=state_pk).update(indexes_set_aside=left)
    return built


def _if_not_exists(sql: str) -> str:
    return CREATE_INDEX.sub("CREATE INDEX IF NOT EXISTS ", sql, count=1)


CREATE_INDEX = re.compile(r"^CREATE INDEX (?!IF NOT EXISTS )", re.IGNORECASE)


class IndexesSetAside:
    """The indexes a sync run's full passes set aside, and their builds; `join` waits for those still running."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def during_pass(self, model: type[models.Model], state: SyncState) -> Iterator[list[str]]:
        """Within: the table's secondary indexes are dropped if it is empty; after: they are built again. Yields the
        names set aside (none inside a transaction, for a table with rows, or for one in use elsewhere)."""
        aside = _set_aside(model, state)
        try:
            yield [entry["name"] for entry in aside]
        finally:
            if aside:
                if connection.vendor == "postgresql":
                    self._build_beside(state.pk)
                else:
                    indexes_build(state.pk)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _build_beside(self, state_pk: int) -> None:
        thread = threading.Thread(target=_build_and_close, args=(state_pk,), name=f"build indexes of {state_pk}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)


def _build_and_close(state_pk: int) -> None:
    try:
        indexes_build(state_pk)
    except Exception:  # the mirror is complete without them; the next run builds them (indexes_restore)
        logger.exception("indexes set aside were not built again")
    finally:
        connection.close()


def _set_aside(model: type[models.Model], state: SyncState) -> list[dict[str, str]]:
    if model not in LOADED_IN_PAGES or connection.in_atomic_block or model.objects.exists():
        return []
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"SET LOCAL lock_timeout TO '{SET_ASIDE_LOCK_TIMEOUT}'")
            aside = secondary_indexes(model)
            for entry in aside:
                cursor.execute(f"DROP INDEX {connection.ops.quote_name(entry['name'])}")
            recorded: list[Any] = SyncState.objects.values_list("indexes_set_aside", flat=True).get(pk=state.pk)
            SyncState.objects.filter(pk=state.pk).update(indexes_set_aside=[*recorded, *aside])
    except DatabaseError as exc:  # the lock was not free in time: the pass keeps the indexes
        logger.info("indexes of %s kept during the full pass: %s", model._meta.db_table, exc)
        return []
    return aside
