"""Trigram indexes for the header search on PostgreSQL (a `LIKE '% word%'` on 50,000 rows then reads the index, not
the table). Where the role may not create the pg_trgm extension, the search works without them, slower; SQLite
needs none at this size."""
import logging

from django.db import migrations

logger = logging.getLogger(__name__)
TABLES = ["projects_contact", "projects_opportunity", "projects_order", "projects_areaaddress"]


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        try:
            cursor.execute("SAVEPOINT search_trigram")
            cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            cursor.execute("RELEASE SAVEPOINT search_trigram")
        except Exception as exc:  # noqa: BLE001 - a missing privilege or package only makes the search slower
            cursor.execute("ROLLBACK TO SAVEPOINT search_trigram")
            logger.warning("pg_trgm is not available (%s): the header search runs without trigram indexes", exc)
            return
        for table in TABLES:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_search_trgm ON {table} "
                           "USING gin (search_text gin_trgm_ops)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"DROP INDEX IF EXISTS {table}_search_trgm")


class Migration(migrations.Migration):
    dependencies = [("projects", "0027_search_words")]
    operations = [migrations.RunPython(create, drop, elidable=False)]
