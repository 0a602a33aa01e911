"""Backoffice staff manage rollout areas and import their addresses; Viewers look."""
from django.db import migrations

from projects.migrations._permissions import grant_to_groups

BACKOFFICE = ["view_rolloutarea", "add_rolloutarea", "change_rolloutarea", "delete_rolloutarea", "view_areaaddress"]
VIEWER = ["view_rolloutarea", "view_areaaddress"]


def grant(apps, schema_editor):
    grant_to_groups(apps, {"Backoffice": BACKOFFICE, "Viewer": VIEWER})


class Migration(migrations.Migration):
    dependencies = [("projects", "0009_rollout_areas")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
