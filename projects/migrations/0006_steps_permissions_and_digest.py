"""Backoffice staff may work workflow steps and keep their own staff profile; the task digest runs every morning."""
from django.db import migrations

from projects.migrations._permissions import grant_to_groups

BACKOFFICE_EXTRA = ["work_steps", "view_mirroredstep", "view_stepjob", "view_staffprofile", "add_staffprofile",
                    "change_staffprofile"]
VIEWER_EXTRA = ["view_mirroredstep", "view_stepjob", "view_staffprofile"]


def grant(apps, schema_editor):
    grant_to_groups(apps, {"Backoffice": BACKOFFICE_EXTRA, "Viewer": VIEWER_EXTRA})
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    morning, _ = CrontabSchedule.objects.get_or_create(minute="30", hour="6", day_of_week="1-5", day_of_month="*",
                                                       month_of_year="*", timezone="Europe/Berlin")
    PeriodicTask.objects.get_or_create(name="task digest (daily e-mail)", defaults={
        "task": "projects.task_digest", "crontab": morning,
        "description": "E-mails each linked staff user their overdue and newly assigned workflow steps."})


def revoke(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name="task digest (daily e-mail)").delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0005_workflow_steps"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(grant, revoke)]
