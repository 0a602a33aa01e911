"""PostgreSQL: compress the mirrored documents with lz4 instead of pglz, where the server has lz4.

epilot documents of 2-3 KB are just above PostgreSQL's TOAST threshold, so every mirrored row is
compressed on write; with pglz that was some 40 % of the time PostgreSQL spent inserting a sync
page (bench/sync_full.py). Rows written before keep their compression until rewritten. Nothing
happens on SQLite, or on a server built without lz4.
"""
from django.db import migrations

PAYLOAD_COLUMNS = [
    ("projects_contact", "payload"),
    ("projects_opportunity", "payload"),
    ("projects_order", "payload"),
    ("projects_genericentity", "payload"),
    ("projects_workflowexecution", "flow"),
]


def set_compression(method: str):
    def apply(apps, schema_editor):
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'", [method])
            available = cursor.fetchone()
            if not available or not available[0]:
                return
            for table, column in PAYLOAD_COLUMNS:
                cursor.execute(f"ALTER TABLE {connection.ops.quote_name(table)} "
                               f"ALTER COLUMN {connection.ops.quote_name(column)} SET COMPRESSION {method}")
    return apply


class Migration(migrations.Migration):
    dependencies = [("projects", "0013_webhook_permissions_and_nightly_full_sync")]

    operations = [migrations.RunPython(set_compression("lz4"), set_compression("pglz"))]
