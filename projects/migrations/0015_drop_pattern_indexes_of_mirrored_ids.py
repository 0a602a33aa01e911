"""PostgreSQL: drop the `varchar_pattern_ops` twins Django adds to indexed text columns of the mirrored entities.

Django gives every indexed or unique CharField on PostgreSQL a second index for `LIKE 'prefix%'`
queries. Nothing asks the mirror such questions (ids, statuses and address keys are looked up
exactly; the admin's search is `icontains`, which no B-tree serves), but every mirrored row paid
for the extra indexes: an opportunity had eleven, and inserting a sync page of them took 22 % less
time without the four twins (bench/sync_full.py). Django drops indexes with IF EXISTS, so later
migrations of these fields are unaffected. Nothing happens on SQLite.
"""
from django.db import migrations

PATTERN_INDEXED = {
    "projects_contact": ["epilot_id", "status"],
    "projects_opportunity": ["epilot_id", "status", "customer_epilot_id", "address_key"],
    "projects_order": ["epilot_id", "status", "opportunity_epilot_id"],
    "projects_genericentity": ["epilot_id", "status", "schema"],
}


def pattern_indexes(schema_editor):
    for table, columns in PATTERN_INDEXED.items():
        for column in columns:
            yield table, column, schema_editor._create_index_name(table, [column], suffix="_like")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for _table, _column, name in pattern_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def recreate(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for table, column, name in pattern_indexes(schema_editor):
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} ({quote(column)} varchar_pattern_ops)")


class Migration(migrations.Migration):
    dependencies = [("projects", "0014_payload_lz4_compression")]

    operations = [migrations.RunPython(drop, recreate)]
