"""Webhook events are claimed by the worker processing them; every minute the outbox sweep processes events left
waiting and sends again the tasks of jobs still queued; every six hours the key for v1a signatures is refreshed."""
from django.db import migrations, models

SWEEP = "outbox sweep (work whose task never reached the broker)"
KEY_REFRESH = "webhook public key refresh"


def add_sweep(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(name=SWEEP, defaults={
        "task": "projects.outbox_sweep", "interval": every_minute,
        "description": "Processes received webhook events whose task was never queued (the broker was down) or whose "
                       "worker died, and sends again the tasks of step jobs, workflow-start jobs and sync runs still "
                       "queued after five minutes."})


    every_six_hours, _ = IntervalSchedule.objects.get_or_create(every=6, period="hours")
    PeriodicTask.objects.get_or_create(name=KEY_REFRESH, defaults={
        "task": "projects.webhook_public_key_refresh", "interval": every_six_hours,
        "description": "Reads the organisation's public key that v1a webhook signatures verify with (no-op without "
                       "a known organisation); deliveries never ask epilot for it."})


def remove_sweep(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name__in=[SWEEP, KEY_REFRESH]).delete()


class Migration(migrations.Migration):
    dependencies = [("projects", "0018_area_address_figures"), ("django_celery_beat", "0019_alter_periodictasks_options")]
    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="claimed_until",
            field=models.DateTimeField(blank=True, null=True, verbose_name="taken by a worker until"),
        ),
        migrations.RunPython(add_sweep, remove_sweep),
    ]
