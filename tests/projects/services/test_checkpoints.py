"""SQLite during a full sync's writes: its write-ahead log copied into the database file by a thread beside the
writer, its statement journals kept in memory."""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper

from integrations.epilot import EpilotClient
from projects.mirror.checkpoints import checkpoints_beside_writer, statement_journals_in_memory
from projects.models import SyncRun
from projects.services.sync import Progress, sync_run

ROWS = 200  # of 8 KB each: some 400 log pages of 4 KiB, fewer than SQLite's automatic checkpoint waits for


def sqlite_file(path: Path) -> DatabaseWrapper:
    """A Django connection to a SQLite file in WAL mode, as the settings open one."""
    return DatabaseWrapper({
        "ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "USER": "", "PASSWORD": "", "HOST": "", "PORT": "",
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}, "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True, "CONN_MAX_AGE": 0, "CONN_HEALTH_CHECKS": False, "TIME_ZONE": None, "TEST": {},
    }, alias="checkpoints")


def write_rows(writer: DatabaseWrapper) -> None:
    with writer.cursor() as cursor:
        cursor.execute("CREATE TABLE page (body TEXT)")
        cursor.executemany("INSERT INTO page VALUES (%s)", [("x" * 8192,) for _ in range(ROWS)])


def autocheckpoint(writer: DatabaseWrapper) -> int:
    with writer.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        return cursor.fetchone()[0]


def checkpointers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "sqlite-checkpoints"]


@pytest.fixture
def unblocked(django_db_blocker):
    """A SQLite file of the test's own, beside the test database pytest-django guards."""
    with django_db_blocker.unblock():
        yield


def test_the_log_reaches_the_database_file_through_the_thread_not_the_writer(tmp_path: Path, unblocked) -> None:
    database = tmp_path / "mirror.sqlite3"
    writer = sqlite_file(database)
    try:
        with checkpoints_beside_writer(writer):
            assert autocheckpoint(writer) == 0  # the writer's commits never stop to copy the log
            write_rows(writer)
            deadline = time.monotonic() + 10
            while os.path.getsize(database) < ROWS * 8192 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert os.path.getsize(database) >= ROWS * 8192  # copied from the log while the block still ran
        assert autocheckpoint(writer) == 1000
        assert not checkpointers()
        assert os.path.getsize(f"{database}-wal") == 0  # copied whole and emptied at the end: no reader held it
        with writer.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM page")
            assert cursor.fetchone()[0] == ROWS
    finally:
        writer.close()


FORKS = 500  # about 1 in 100 hung before forks waited for the thread to leave SQLite


def test_a_process_forked_while_the_thread_checkpoints_can_use_sqlite(tmp_path: Path, unblocked) -> None:
    """As the page builders and the execution reader are forked during a sync: a child that inherited SQLite's
    mutexes locked by the thread would hang at its first SQLite call."""
    writer = sqlite_file(tmp_path / "mirror.sqlite3")
    hung = 0
    try:
        with writer.cursor() as cursor:
            cursor.execute("CREATE TABLE page (body TEXT)")
        with checkpoints_beside_writer(writer):
            for _ in range(FORKS):
                with writer.cursor() as cursor:  # work for the thread's next checkpoint
                    cursor.executemany("INSERT INTO page VALUES (%s)", [("x" * 8192,)] * 20)
                child = os.fork()
                if child == 0:
                    try:
                        sqlite3.connect(":memory:").execute("SELECT 1").fetchall()
                    finally:
                        os._exit(0)
                deadline = time.monotonic() + 2
                while os.waitpid(child, os.WNOHANG)[0] == 0:
                    if time.monotonic() > deadline:
                        hung += 1
                        os.kill(child, signal.SIGKILL)
                        os.waitpid(child, 0)
                        break
                    time.sleep(0.002)
    finally:
        writer.close()
    assert hung == 0


def test_without_the_thread_the_log_stays_in_the_log(tmp_path: Path, unblocked) -> None:
    """What the test above tells apart: these rows alone do not make SQLite copy the log."""
    database = tmp_path / "mirror.sqlite3"
    writer = sqlite_file(database)
    try:
        write_rows(writer)
        time.sleep(0.3)
        assert os.path.getsize(database) < ROWS * 8192
        assert os.path.getsize(f"{database}-wal") >= ROWS * 8192
    finally:
        writer.close()


def test_a_database_in_memory_gets_no_thread(unblocked) -> None:
    """Nothing to copy: no log file (as for PostgreSQL, which has no log of SQLite's)."""
    writer = sqlite_file(Path(":memory:"))
    try:
        with checkpoints_beside_writer(writer):
            write_rows(writer)
            assert not checkpointers()
            assert autocheckpoint(writer) == 1000
    finally:
        writer.close()


def test_postgresql_gets_no_thread(unblocked) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the test database is SQLite")
    with checkpoints_beside_writer(connection):
        assert not checkpointers()


def bytes_written_by_this_process() -> int:
    """What this process has handed to write calls so far (Linux)."""
    lines = Path("/proc/self/io").read_text().splitlines()
    return int(next(line for line in lines if line.startswith("wchar:")).split()[1])


def random_keys_inserted_in_one_statement(writer: DatabaseWrapper) -> int:
    """Bytes written while one statement inserts rows whose indexed keys fall at random into a filled index, inside a
    transaction (as a sync's page does); the table is dropped after. The rows are little more than their keys, so
    nearly all that the commit writes are the index's pages, which the statement journals as well."""
    with writer.cursor() as cursor:
        cursor.execute("CREATE TABLE entity (key TEXT, body TEXT)")
        cursor.execute("CREATE INDEX entity_key ON entity (key)")
        fill = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s) " \
               "INSERT INTO entity SELECT hex(randomblob(16)), '' FROM n"
        cursor.execute(fill, [20_000])
        before = bytes_written_by_this_process()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(fill, [2_000])
        cursor.execute("COMMIT")
        written = bytes_written_by_this_process() - before
        cursor.execute("DROP TABLE entity")
    return written


def test_statement_journals_stay_in_memory_within_the_block(tmp_path: Path, unblocked) -> None:
    if not Path("/proc/self/io").exists():
        pytest.skip("counts the bytes written through Linux's /proc")
    writer = sqlite_file(tmp_path / "mirror.sqlite3")
    try:
        journalled_to_files = random_keys_inserted_in_one_statement(writer)
        with statement_journals_in_memory(writer):
            in_memory = random_keys_inserted_in_one_statement(writer)
        # The commit writes the same log either way; the statement's journal of the index pages it changed went to a
        # temporary file as well.
        assert in_memory < journalled_to_files * 0.75
        with writer.cursor() as cursor:
            cursor.execute("PRAGMA temp_store")
            assert cursor.fetchone()[0] == 0  # the default again
    finally:
        writer.close()


def test_the_setting_comes_back_after_a_failed_block(tmp_path: Path, unblocked) -> None:
    writer = sqlite_file(tmp_path / "mirror.sqlite3")
    try:
        with writer.cursor() as cursor:
            cursor.execute("PRAGMA temp_store=FILE")
        with pytest.raises(RuntimeError), statement_journals_in_memory(writer):
            raise RuntimeError("the pass failed")
        with writer.cursor() as cursor:
            cursor.execute("PRAGMA temp_store")
            assert cursor.fetchone()[0] == 1
    finally:
        writer.close()


@pytest.mark.django_db
def test_inside_a_transaction_the_setting_is_left_as_it_is() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA temp_store")
        before = cursor.fetchone()[0]
        with statement_journals_in_memory(connection):  # SQLite would refuse the change here
            cursor.execute("PRAGMA temp_store")
            assert cursor.fetchone()[0] == before


# Serialized as the transactional tests after it (test_conversion_concurrency.py) are: a plain one's flush recreates
# the content types, which theirs, restored from the snapshot, then collide with.
@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_full_sync_writes_its_pages_with_statement_journals_in_memory(epilot: EpilotClient) -> None:
    def temp_store() -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA temp_store")
            return cursor.fetchone()[0]

    before = temp_store()
    seen: set[int] = set()

    def watch(progress: Progress) -> None:
        seen.add(temp_store())

    assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True, on_progress=watch).status == "succeeded"
    assert seen == {2}  # MEMORY
    assert temp_store() == before
    seen.clear()
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, on_progress=watch)  # an incremental run leaves it
    assert seen == {before}
