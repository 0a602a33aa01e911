"""A building's figures are updated in place on PostgreSQL (a HOT update): no index of the row names a figure any more
(the stage's indexes go), and its pages keep room for the row's next version (fill factor 70, for pages written from
now on). Every index of a row moved to another page, its trigram index among them, was written again at each change
of its figures (docs/benchmarks.md)."""
from django.db import migrations, models

FILL_FACTOR = 70


def leave_room(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE projects_areaaddress SET (fillfactor = {FILL_FACTOR})")


def fill_pages(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("ALTER TABLE projects_areaaddress RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("projects", "0031_trigram_pending_list")]
    operations = [
        migrations.AlterField(
            model_name="areaaddress",
            name="stage",
            field=models.CharField(choices=[("in_scope", "in scope"), ("signed", "signed"), ("passed", "passed"),
                                            ("connected", "connected"), ("activated", "activated")],
                                   default="in_scope", max_length=12, verbose_name="stage"),
        ),
        migrations.RunPython(leave_room, fill_pages, elidable=False),
    ]
