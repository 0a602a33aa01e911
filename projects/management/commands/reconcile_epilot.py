"""`manage.py reconcile_epilot [--schema S ...]`: compare epilot's ids with the mirror and fix what differs."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from projects.mirror.schemas import UnknownSchema
from projects.models import Reconciliation
from projects.services.reconcile import reconcile


class Command(BaseCommand):
    help = ("Page through epilot's ids of each schema, mark what epilot no longer has as deleted, fetch what is missing "
            "or newer, and record the counts.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", action="append", dest="schemas", help="Schema to reconcile (repeatable; default: all).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            records = reconcile(schemas=options["schemas"])
        except UnknownSchema as exc:
            raise CommandError(str(exc)) from None
        for record in records:
            self.stdout.write(f"{record.schema}: {record.status}; epilot {record.epilot_count}, mirror {record.mirror_count}; "
                              f"{record.deleted_found} purged, {record.missing_found} missing, {record.newer_found} newer, "
                              f"{record.webhook_gaps} without a webhook; {record.requests} requests in "
                              f"{record.duration_seconds or 0:.1f} s" + (f"; {record.error}" if record.error else ""))
        if any(record.status == Reconciliation.Status.FAILED for record in records):
            raise CommandError("reconciliation failed for " + ", ".join(r.schema for r in records if r.error))
