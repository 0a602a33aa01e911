"""The periodic sync, every 5 minutes by default; operators change it in the admin (django-celery-beat)."""
import datetime

from django.db import migrations


def create_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name="epilot sync (incremental)",
        defaults={"task": "projects.sync_epilot", "interval": interval, "kwargs": '{"trigger": "schedule"}',
                  "description": "Pulls changed epilot entities into the mirror.",
                  # Long ago, so that a fresh installation's first beat runs it at once instead of in 5 minutes.
                  "last_run_at": datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name="epilot sync (incremental)").delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0001_initial"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(create_schedule, remove_schedule)]
