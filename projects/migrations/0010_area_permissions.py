"""Backoffice staff manage rollout areas and import their addresses; Viewers look."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

BACKOFFICE = ["view_rolloutarea", "add_rolloutarea", "change_rolloutarea", "delete_rolloutarea", "view_areaaddress"]
VIEWER = ["view_rolloutarea", "view_areaaddress"]


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, codenames in (("Backoffice", BACKOFFICE), ("Viewer", VIEWER)):
        group = group_model.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(*permission_model.objects.filter(content_type__app_label="projects", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("projects", "0009_rollout_areas")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
