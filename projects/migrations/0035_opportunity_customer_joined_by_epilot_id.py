"""An opportunity's customer is resolved by a join on the contact's epilot id: the foreign-key column goes."""
import django.db.models.deletion
from django.db import migrations

import projects.models.entities


class Migration(migrations.Migration):

    dependencies = [
        ("projects", "0034_sync_state_indexes_set_aside"),
    ]

    operations = [
        migrations.RemoveField(model_name="opportunity", name="customer"),
        migrations.AddField(
            model_name="opportunity",
            name="customer",
            field=projects.models.entities.EpilotRelation(
                blank=True, from_fields=("customer_epilot_id",), null=True, on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="opportunities", to="projects.contact", to_fields=("epilot_id",), verbose_name="customer"),
        ),
    ]
