"""Sync states record the indexes a full pass set aside (projects/mirror/indexes_set_aside.py), so that a run after a
killed one builds them again. The release before set the trigram indexes aside without a record and rebuilt missing
ones by name: any such index a killed first sync left missing is built here, once."""
from django.db import migrations, models

SEARCHED = ["projects_contact", "projects_opportunity", "projects_order"]
PENDING_LIST_KB = 65536  # as migration 0031 sets it


def build_missing_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        if cursor.fetchone() is None:  # without pg_trgm there are none (0028)
            return
        for table in SEARCHED:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {table}_search_trgm ON {table} USING gin (search_text gin_trgm_ops) "
                           f"WITH (gin_pending_list_limit = {PENDING_LIST_KB})")


class Migration(migrations.Migration):

    dependencies = [
        ('projects', '0033_drop_pattern_indexes_of_written_ids'),
    ]

    operations = [
        migrations.AddField(
            model_name='syncstate',
            name='indexes_set_aside',
            field=models.JSONField(blank=True, default=list, verbose_name='indexes set aside'),
        ),
        migrations.RunPython(build_missing_trigram_indexes, migrations.RunPython.noop, elidable=False),
    ]
