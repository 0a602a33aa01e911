"""`manage.py import_area_addresses FILE`: load the households in scope of rollout areas from CSV or XLSX."""
import datetime as dt
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import translation

from projects.services.areas import ImportRejected, area_addresses_import, read_address_file


class Command(BaseCommand):
    help = ("Import addresses in scope (columns area,postal_code,street,house_number,units; header row; ',' or ';'; or an "
            "XLSX sheet). Re-importing an area replaces its list; a file with bad rows imports nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file")
        parser.add_argument("--quota", help="Pre-marketing quota in percent for the areas in the file (default 40).")
        parser.add_argument("--deadline", help="Pre-marketing deadline, YYYY-MM-DD.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            quota = Decimal(options["quota"]) if options["quota"] else None
            if quota is not None and not 0 < quota <= 100:
                raise InvalidOperation
        except InvalidOperation:
            raise CommandError("--quota must be a number above 0 and at most 100.") from None
        try:
            deadline = dt.date.fromisoformat(options["deadline"]) if options["deadline"] else None
        except ValueError:
            raise CommandError("--deadline must be a date as YYYY-MM-DD.") from None
        try:
            with translation.override("en"):  # the command's own output is English; so are the reasons
                result = area_addresses_import(read_address_file(path.name, _head(path)), quota_percent=quota,
                                               deadline=deadline)
        except ImportRejected as exc:
            raise CommandError("\n".join(["Nothing was imported:", *exc.errors])) from None
        for name, count in result.areas.items():
            self.stdout.write(f"{name}: {count} addresses")
        self.stdout.write(self.style.SUCCESS(f"{len(result.areas)} areas imported; figures recomputed."))


def _head(path) -> bytes:
    """The file's first AREA_IMPORT_MAX_BYTES + 1 bytes: enough for the service to refuse a larger one."""
    from django.conf import settings

    with open(path, "rb") as handle:
        return handle.read(settings.AREA_IMPORT_MAX_BYTES + 1)
