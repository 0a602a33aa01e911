"""The header search's trigram indexes (migrations 0028, 0031) while a full pass fills an empty table.

PostgreSQL builds a GIN index from a whole table at once for a fraction of what it costs to take the
same rows one page at a time (its manual, "Populating a Database": create indexes after loading).
A full pass into an empty table therefore sets the table's index aside and builds it again after
its last page (also when the pass fails), beside the run's next schema. A process that dies in
between leaves the index missing: every sync run first builds those of its schemas again
(`search_indexes_ensure`).

Only PostgreSQL has these indexes, and only where the pg_trgm extension is installed; elsewhere
everything here does nothing.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator

from django.db import DatabaseError, connection, models, transaction

from projects.models import Contact, Opportunity, Order

logger = logging.getLogger("projects.sync")

SEARCHED = (Contact, Opportunity, Order)
PENDING_LIST_KB = 65536  # as migration 0031 sets it
SET_ASIDE_LOCK_TIMEOUT = "1s"  # a table someone else is using keeps its index: the pass then takes the slower way


def index_name(model: type[models.Model]) -> str:
    return f"{model._meta.db_table}_search_trgm"


def _has_trigrams() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        return cursor.fetchone() is not None


def _present(names: list[str]) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ANY(%s)",
                       [names])
        return {name for (name,) in cursor.fetchall()}


def search_index_build(model: type[models.Model]) -> None:
    """Build the model's trigram index unless it exists (PostgreSQL with pg_trgm only: the callers check).

    Writers of the table wait while it is built; readers do not. Raises DatabaseError when it fails.
    """
    table, name = model._meta.db_table, index_name(model)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE INDEX IF NOT EXISTS {connection.ops.quote_name(name)} ON {connection.ops.quote_name(table)} "
                       f"USING gin (search_text gin_trgm_ops) WITH (gin_pending_list_limit = {PENDING_LIST_KB})")


def search_indexes_ensure(searched: Iterable[type[models.Model]]) -> list[str]:
    """Build the trigram indexes of these models that a set-aside left missing (a process that died during a full
    pass); returns the names of those built. Call it holding the sync lease of their schemas, so that no other run
    has one set aside meanwhile; not inside a transaction (see `SearchIndexBuilds`). A build that fails is logged."""
    wanted = [model for model in searched if model in SEARCHED]
    if not wanted or connection.in_atomic_block or not _has_trigrams():
        return []
    present = _present([index_name(model) for model in wanted])
    built = []
    for model in wanted:
        if index_name(model) in present:
            continue
        logger.warning("search index %s was missing (a full sync stopped before it was built again): building it",
                       index_name(model))
        try:
            search_index_build(model)
        except DatabaseError:  # the search is slower without it, the sync is not wrong; the next run tries again
            logger.exception("search index %s was not built", index_name(model))
        else:
            built.append(index_name(model))
    return built


class SearchIndexBuilds:
    """The search indexes a sync run's full passes set aside, built again beside the run's later work.

    Each is built on a connection of its own while the next schema's pages are written (it blocks
    only writers of its own table); `join` waits for them. Nothing is set aside inside a transaction:
    its pending foreign-key checks forbid building an index in it, and another connection could not
    build one before it ends.
    """

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def set_aside(self, model: type[models.Model]) -> Iterator[bool]:
        """Within: the model's trigram index is dropped if its table is empty; after: it is built again. Yields
        whether it was set aside (not on SQLite, without pg_trgm, inside a transaction, for a table with rows, or for
        one in use elsewhere)."""
        aside = (model in SEARCHED and not connection.in_atomic_block and _has_trigrams() and not model.objects.exists()
                 and _drop_if_free(model))
        try:
            yield aside
        finally:
            if aside:
                self._build_beside(model)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _build_beside(self, model: type[models.Model]) -> None:
        thread = threading.Thread(target=_build_and_close, args=(model,), name=f"build {index_name(model)}", daemon=True)
        thread.start()
        self._threads.append(thread)


def _build_and_close(model: type[models.Model]) -> None:
    try:
        search_index_build(model)
    except Exception:  # the mirror is complete without it; the next run builds it (search_indexes_ensure)
        logger.exception("search index %s was not built", index_name(model))
    finally:
        connection.close()


def _drop_if_free(model: type[models.Model]) -> bool:
    name = index_name(model)
    if name not in _present([name]):
        return False
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout TO '{SET_ASIDE_LOCK_TIMEOUT}'")
            cursor.execute(f"DROP INDEX IF EXISTS {connection.ops.quote_name(name)}")
    except DatabaseError as exc:  # the lock was not free in time: the pass keeps the index
        logger.info("search index %s kept during the full pass: %s", name, exc)
        return False
    return True
