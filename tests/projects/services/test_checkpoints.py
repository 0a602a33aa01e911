"""SQLite's write-ahead log is copied into the database file by a thread beside a full sync's writer."""
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

from projects.mirror.checkpoints import checkpoints_beside_writer

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
