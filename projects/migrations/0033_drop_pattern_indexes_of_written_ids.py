"""PostgreSQL: drop the `varchar_pattern_ops` twins of the indexed text columns that syncs and webhooks write.

As migration 0015 did for the mirrored entities: Django gives every indexed or unique CharField on
PostgreSQL a second index for `LIKE 'prefix%'` queries, and nothing asks these tables such a
question (their ids, statuses, phases and address keys are looked up exactly). Every execution,
step, project, promise and webhook event written paid for the twins all the same: an execution had
five. Django drops indexes with IF EXISTS, so later migrations of these fields are unaffected.
Nothing happens on SQLite.
"""
from django.db import migrations

from projects.migrations._pattern_indexes import pattern_index_operations

PATTERN_INDEXED = {
    "projects_workflowexecution": ["epilot_id", "definition_epilot_id", "status", "entity_epilot_id", "entity_schema"],
    "projects_mirroredstep": ["section", "assignees", "status"],
    "projects_opportunityitem": ["order_epilot_id"],
    "projects_pendingexecutionread": ["epilot_id"],
    "projects_ausbauproject": ["phase"],
    "projects_areaaddress": ["key"],
    "projects_promise": ["building_key", "state"],
    "projects_latesignup": ["order_epilot_id"],
    "projects_webhookevent": ["event_id", "webhook_id", "entity_epilot_id", "outcome"],
}


class Migration(migrations.Migration):
    dependencies = [("projects", "0032_figures_updated_in_place")]

    operations = [migrations.RunPython(*pattern_index_operations(PATTERN_INDEXED))]
