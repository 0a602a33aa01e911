"""Reconciliation by ids (hourly) and drift of attributes; the nightly full sync is off once reconciliation runs."""
from django.db import migrations, models

from projects.migrations._permissions import grant_to_groups

HOURLY = "epilot reconciliation (hourly)"
NIGHTLY = "epilot sync (full, nightly)"


def schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = CrontabSchedule.objects.get_or_create(minute="41", hour="*", day_of_week="*", day_of_month="*",
                                                      month_of_year="*", timezone="Europe/Berlin")
    PeriodicTask.objects.get_or_create(name=HOURLY, defaults={
        "task": "projects.reconcile_epilot", "crontab": hourly,
        "description": "Compares epilot's ids with the mirror: marks purged entities deleted, fetches missing and newer "
                       "ones, records the counts. Replaces the nightly full sync."})
    PeriodicTask.objects.filter(name=NIGHTLY).update(enabled=False)
    grant_to_groups(apps, {"Backoffice": ["view_reconciliation", "view_schemaattribute", "change_schemaattribute"],
                           "Viewer": ["view_reconciliation", "view_schemaattribute"]})


def unschedule(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name=HOURLY).delete()
    PeriodicTask.objects.filter(name=NIGHTLY).update(enabled=True)


class Migration(migrations.Migration):

    dependencies = [
        ('projects', '0023_api_scopes'),
        ('django_celery_beat', '0019_alter_periodictasks_options'),
    ]

    operations = [
        migrations.CreateModel(
            name='Reconciliation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('schema', models.CharField(max_length=100, verbose_name='entity type')),
                ('status', models.CharField(choices=[('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='running', max_length=20, verbose_name='status')),
                ('started_at', models.DateTimeField(verbose_name='started')),
                ('finished_at', models.DateTimeField(blank=True, null=True, verbose_name='finished')),
                ('epilot_count', models.PositiveIntegerField(default=0, verbose_name='entities in epilot')),
                ('mirror_count', models.PositiveIntegerField(default=0, verbose_name='entities in the mirror')),
                ('deleted_found', models.PositiveIntegerField(default=0, verbose_name='purged in epilot, marked deleted')),
                ('missing_found', models.PositiveIntegerField(default=0, verbose_name='missing in the mirror, fetched')),
                ('newer_found', models.PositiveIntegerField(default=0, verbose_name='newer in epilot, fetched')),
                ('webhook_gaps', models.PositiveIntegerField(default=0, verbose_name='changes no webhook delivered')),
                ('requests', models.PositiveIntegerField(default=0, verbose_name='requests to epilot')),
                ('error', models.TextField(blank=True, verbose_name='error')),
            ],
            options={
                'verbose_name': 'reconciliation',
                'verbose_name_plural': 'reconciliations',
                'ordering': ['-started_at'],
                'indexes': [models.Index(fields=['schema', '-started_at'], name='reconciliation_latest')],
            },
        ),
        migrations.CreateModel(
            name='SchemaAttribute',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('schema', models.CharField(max_length=100, verbose_name='entity type')),
                ('name', models.CharField(max_length=200, verbose_name='attribute')),
                ('kind', models.CharField(max_length=20, verbose_name='JSON type')),
                ('previous_kind', models.CharField(blank=True, max_length=20, verbose_name='JSON type before')),
                ('first_seen', models.DateTimeField(verbose_name='first seen')),
                ('kind_changed_at', models.DateTimeField(blank=True, null=True, verbose_name='type changed')),
                ('baseline', models.BooleanField(default=False, verbose_name='known from the first sync')),
                ('acknowledged_at', models.DateTimeField(blank=True, null=True, verbose_name='acknowledged')),
            ],
            options={
                'verbose_name': 'schema attribute',
                'verbose_name_plural': 'schema attributes',
                'ordering': ['schema', 'name'],
                'constraints': [models.UniqueConstraint(fields=('schema', 'name'), name='schema_attribute_once')],
            },
        ),
        migrations.RunPython(schedule, unschedule),
    ]
