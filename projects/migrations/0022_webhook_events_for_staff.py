"""Viewer and Backoffice see webhook events; Backoffice reprocesses failed ones (its `run_sync` permission)."""
from django.db import migrations

from projects.migrations._permissions import grant_to_groups


def forwards(apps, schema_editor):
    grant_to_groups(apps, {"Backoffice": ["view_webhookevent"], "Viewer": ["view_webhookevent"]})


def backwards(apps, schema_editor):
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    permission = permission_model.objects.filter(content_type__app_label="projects", codename="view_webhookevent").first()
    if permission is not None:
        for group in group_model.objects.filter(name__in=["Backoffice", "Viewer"]):
            group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [("projects", "0021_field_labels")]
    operations = [migrations.RunPython(forwards, backwards)]
