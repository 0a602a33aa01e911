"""Groups for staff: "Backoffice" may do everything the back-office offers, "Viewer" only look."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

BACKOFFICE_EXTRA = ["start_workflow", "convert_opportunity", "write_status", "provision_automation", "run_sync",
                    "add_automationrule", "change_automationrule", "delete_automationrule", "delete_quarantinedentity"]


def create_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    view = Permission.objects.filter(content_type__app_label__in=["projects", "django_celery_beat"], codename__startswith="view_")
    viewer, _ = Group.objects.get_or_create(name="Viewer")
    viewer.permissions.set(view)
    backoffice, _ = Group.objects.get_or_create(name="Backoffice")
    extra = Permission.objects.filter(content_type__app_label="projects", codename__in=BACKOFFICE_EXTRA)
    schedules = Permission.objects.filter(content_type__app_label="django_celery_beat", codename__in=[
        "change_periodictask", "change_intervalschedule", "change_crontabschedule"])
    backoffice.permissions.set([*view, *extra, *schedules])


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["Viewer", "Backoffice"]).delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0002_sync_schedule"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_groups, remove_groups)]
