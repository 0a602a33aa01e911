"""Backoffice staff may provision the webhook; a nightly full sync (02:30) finds what webhooks and the poll missed, purges too."""
from django.db import migrations

from projects.migrations._permissions import grant_to_groups

NIGHTLY = "epilot sync (full, nightly)"


def forwards(apps, schema_editor):
    grant_to_groups(apps, {"Backoffice": ["view_webhooksubscription", "provision_webhook"],
                           "Viewer": ["view_webhooksubscription"]})
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    night, _ = CrontabSchedule.objects.get_or_create(minute="30", hour="2", day_of_week="*", day_of_month="*",
                                                     month_of_year="*", timezone="Europe/Berlin")
    PeriodicTask.objects.get_or_create(name=NIGHTLY, defaults={
        "task": "projects.sync_epilot", "crontab": night, "kwargs": '{"trigger": "schedule", "full": true}',
        "description": "Reads every entity again; marks those epilot purged as deleted."})
    hourly, _ = CrontabSchedule.objects.get_or_create(minute="17", hour="*", day_of_week="*", day_of_month="*",
                                                      month_of_year="*", timezone="Europe/Berlin")
    PeriodicTask.objects.get_or_create(name="webhook replay (failed deliveries)", defaults={
        "task": "projects.webhook_reconcile", "crontab": hourly,
        "description": "Asks epilot to deliver again what failed to reach the back-office (no-op without a webhook)."})


def backwards(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[NIGHTLY, "webhook replay (failed deliveries)"]).delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0012_webhook_subscription"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [migrations.RunPython(forwards, backwards)]
