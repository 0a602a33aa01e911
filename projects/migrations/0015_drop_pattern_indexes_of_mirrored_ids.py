"""PostgreSQL: drop the `varchar_pattern_ops` twins Django adds to indexed text columns of the mirrored entities.

Django gives every indexed or unique CharField on PostgreSQL a second index for `LIKE 'prefix%'`
queries. Nothing asks the mirror such questions (ids, statuses and address keys are looked up
exactly; the admin's search is `icontains`, which no B-tree serves), but every mirrored row paid
for the extra indexes: an opportunity had eleven, and inserting a sync page of them took 22 % less
time without the four twins (bench/sync_full.py). Django drops indexes with IF EXISTS, so later
migrations of these fields are unaffected. Nothing happens on SQLite.
"""
from django.db import migrations

from projects.migrations._pattern_indexes import pattern_index_operations

PATTERN_INDEXED = {
    "projects_contact": ["epilot_id", "status"],
    "projects_opportunity": ["epilot_id", "status", "customer_epilot_id", "address_key"],
    "projects_order": ["epilot_id", "status", "opportunity_epilot_id"],
    "projects_genericentity": ["epilot_id", "status", "schema"],
}


class Migration(migrations.Migration):
    dependencies = [("projects", "0014_payload_lz4_compression")]

    operations = [migrations.RunPython(*pattern_index_operations(PATTERN_INDEXED))]
