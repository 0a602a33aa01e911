"""SQLite during a long write: its write-ahead log copied into the database file by a thread beside the writer, not
by the writer, and its statement journals kept in memory.

In WAL mode the connection whose commit makes the log pass `wal_autocheckpoint` pages copies the
log into the database file and waits for the disk to take it (synchronous=NORMAL syncs at
checkpoints). During a full sync that connection is the writer: it stood still at those commits
while the page builders waited for it. Here the writer's automatic checkpoints are off for the
block, and a thread with a connection of its own checkpoints several times a second (PASSIVE,
which never waits for the writer or a reader); sqlite3 releases the GIL while it does. Once the
log is long it asks for the log to start afresh (RESTART), and at the end empties it (TRUNCATE),
each waiting a moment at most for the writer and readers.

Inside a transaction SQLite keeps, for each statement that changes rows, the pages it changes as
they were, so that a failing statement can be undone alone; from 64 KiB on it writes them to a
temporary file. A sync's statement of a hundred rows changes pages of indexes whose keys (epilot
ids) arrive at random, and passes that size at nearly every statement: the files were written and
thrown away again, a statement at a time. With `temp_store=MEMORY` they stay in memory for the block.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator

from django.db import connection as default_connection
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# Held while the thread is inside SQLite, and by a fork. A child forked while the thread was in SQLite would keep
# SQLite's global mutexes locked (its memory allocator's among them) and hang at its first SQLite call, even a
# garbage collection freeing a connection: the page builders and the execution reader are forked during a sync.
_in_sqlite = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_in_sqlite.acquire, after_in_parent=_in_sqlite.release,
                        after_in_child=_in_sqlite.release)

CHECK_EVERY_SECONDS = 0.1  # how often the thread checkpoints
RESTART_FROM_PAGES = 2048  # log pages from which the log is made to start again from its beginning
RESTART_WAITS_SECONDS = 0.2  # for the writer to end its page, and for readers (PASSIVE waits for nobody)


@contextlib.contextmanager
def checkpoints_beside_writer(connection: BaseDatabaseWrapper = default_connection) -> Iterator[None]:
    """Checkpoint the log of `connection`'s database in a thread while the block writes through it (SQLite in WAL
    mode on a file); elsewhere nothing. A checkpoint that fails is logged and tried again; it never fails the block."""
    path = _wal_database_path(connection)
    if path is None:
        yield
        return
    stop = threading.Event()
    checkpointer = threading.Thread(target=_checkpoint_until, args=(path, stop), name="sqlite-checkpoints", daemon=True)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        pages_before = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    checkpointer.start()
    try:
        yield
    finally:
        stop.set()
        checkpointer.join()
        if connection.connection is not None:  # (a failed block may have closed it)
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA wal_autocheckpoint={pages_before}")


def _wal_database_path(connection: BaseDatabaseWrapper) -> str | None:
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
    return str(connection.settings_dict["NAME"]) if mode.lower() == "wal" else None


def _checkpoint_until(path: str, stop: threading.Event) -> None:
    try:
        with _in_sqlite:
            # Opened by its name as Django opens it (a path or a URI).
            own = sqlite3.connect(path, timeout=RESTART_WAITS_SECONDS, check_same_thread=False, uri=True)
    except sqlite3.Error as exc:
        logger.warning("sqlite checkpoints: cannot open %s: %s", path, exc)
        return
    last_error = ""
    try:
        while not stop.wait(CHECK_EVERY_SECONDS):
            try:
                with _in_sqlite:
                    _checkpoint(own)
            except sqlite3.Error as exc:
                if str(exc) != last_error:  # once, not ten times a second
                    logger.warning("sqlite checkpoints: %s", exc)
                last_error = str(exc)
        with _in_sqlite, contextlib.suppress(sqlite3.Error):
            own.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # leave the file small, unless someone reads
    finally:
        with _in_sqlite:
            own.close()


def _checkpoint(own: sqlite3.Connection) -> None:
    # Copies what the writer committed since the last one; with nothing new it only reads the log's header.
    _busy, logged, _copied = own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if logged >= RESTART_FROM_PAGES:
        # The log only starts again from its beginning when a writer begins right after a checkpoint that
        # copied all of it, which a writer going from page to page rarely does. RESTART makes the next
        # one start it afresh; it waits a moment for the writer's page (which then waits as briefly for
        # it) and for readers, and is tried again where they are still busy.
        own.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()


@contextlib.contextmanager
def statement_journals_in_memory(connection: BaseDatabaseWrapper = default_connection) -> Iterator[None]:
    """SQLite: the block's statement journals (and temporary tables) kept in memory, then the connection's setting
    as it was; elsewhere, and inside a transaction (where SQLite refuses to change it), nothing."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA temp_store")
        before = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA temp_store=MEMORY")
    try:
        yield
    finally:
        if connection.connection is not None:  # (a failed block may have closed it)
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA temp_store={before}")
