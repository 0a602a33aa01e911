"""The trigram indexes take a sync's new entries into a larger pending list than PostgreSQL's default, and autovacuum
merges them into the index after the sync, instead of the backend writing the page that fills the list (a full sync's
cost: docs/benchmarks.md). A search reads the pending list too until then."""
from django.db import migrations

TABLES = ["projects_contact", "projects_opportunity", "projects_order", "projects_areaaddress"]
PENDING_LIST_KB = 65536


def enlarge(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:  # where pg_trgm was not available there is no index (0028)
            cursor.execute(f"ALTER INDEX IF EXISTS {table}_search_trgm SET (gin_pending_list_limit = {PENDING_LIST_KB})")


def reset(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"ALTER INDEX IF EXISTS {table}_search_trgm RESET (gin_pending_list_limit)")


class Migration(migrations.Migration):
    dependencies = [("projects", "0030_promise_notice")]
    operations = [migrations.RunPython(enlarge, reset, elidable=False)]
