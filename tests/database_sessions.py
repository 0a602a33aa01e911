"""PostgreSQL's count of sessions on the test database, for tests that check a thread closed its own connection."""
from __future__ import annotations

import time

from django.db import connection


def database_sessions() -> int | None:
    """The sessions on this database now (None on SQLite, which has no server to ask)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def database_sessions_once_settled(expected: int | None) -> int | None:
    """The session count, asked again for up to five seconds while it differs from `expected` (a server process ends
    a moment after its client closed the connection)."""
    deadline = time.monotonic() + 5
    while (count := database_sessions()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count
