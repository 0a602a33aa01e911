"""Opportunities by address: one index with what a building's figures read of each opportunity at it (address, status,
deletion, coordinates), in place of the address's own index and, on PostgreSQL, its `varchar_pattern_ops` twin, which no
`LIKE` query reads.

The old indexes are dropped by name: as an AlterField, SQLite would copy the whole table to drop an index.
Going back builds the plain index again, not the unused twin.
"""
from django.db import migrations, models

ADDRESS_KEY_INDEX = "projects_opportunity_address_key_643ccbc9"


class Migration(migrations.Migration):

    dependencies = [
        ("projects", "0035_opportunity_customer_joined_by_epilot_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="opportunity",
                    name="address_key",
                    field=models.CharField(
                        blank=True, help_text="postal code, street and house number normalised, as rollout areas match them",
                        max_length=240, verbose_name="address key"),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    sql=[f'DROP INDEX IF EXISTS "{ADDRESS_KEY_INDEX}"', f'DROP INDEX IF EXISTS "{ADDRESS_KEY_INDEX}_like"'],
                    reverse_sql=[f'CREATE INDEX "{ADDRESS_KEY_INDEX}" ON "projects_opportunity" ("address_key")'],
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="opportunity",
            index=models.Index(fields=["address_key", "status", "epilot_deleted_at", "latitude", "longitude"],
                               name="opportunity_at_address"),
        ),
    ]
