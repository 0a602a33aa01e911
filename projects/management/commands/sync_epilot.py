"""`manage.py sync_epilot [--schema S ...] [--full] [--dry-run]`: pull epilot into the mirror."""
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.tuning import tune_process
from projects.mirror.lease import lease_seconds
from projects.mirror.schemas import UnknownSchema
from projects.models import SyncRun
from projects.services.sync import Progress, sync_run


class Command(BaseCommand):
    help = "Sync epilot entities, workflow definitions and executions into the mirror (incremental by default)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--schema", action="append", dest="schemas", help="Schema to sync (repeatable; default: all).")
        parser.add_argument("--full", action="store_true", help="Read everything and mark entities purged in epilot as deleted.")
        parser.add_argument("--dry-run", action="store_true", help="Only count what a run would read.")
        parser.add_argument("--wait-for-lock", type=float, default=None, metavar="SECONDS",
                            help="Wait this long for a schema another run holds (default: one lock lease, so a crashed "
                                 "run's lock is waited out); 0 skips at once.")

    def handle(self, *args: Any, **options: Any) -> None:
        tune_process()  # this process writes the mirror, as a worker does
        wait = options["wait_for_lock"]
        try:
            run = sync_run(trigger=SyncRun.Trigger.COMMAND, schemas=options["schemas"], full=options["full"],
                           dry_run=options["dry_run"], on_progress=self._progress,
                           wait_for_lock_seconds=lease_seconds() + 2 if wait is None else max(0.0, wait))
        except UnknownSchema as exc:
            raise CommandError(f"{exc}") from None
        if options["dry_run"]:
            return
        summary = (f"{run.get_status_display()}: {run.created} created, {run.updated} updated, {run.deleted} deleted, "
                   f"{run.quarantined} quarantined, {run.pages} pages in {run.duration_seconds or 0:.1f} s")
        if run.status == SyncRun.Status.FAILED:
            raise CommandError(f"Sync failed: {run.error} ({summary})")
        if run.status == SyncRun.Status.SKIPPED:
            raise CommandError(f"Not started: {run.error}")
        self.stdout.write(self.style.SUCCESS(summary) + (f" ({run.error})" if run.error else ""))

    def _progress(self, progress: Progress) -> None:
        if progress.pages == 0:
            self.stdout.write(f"{progress.schema}: {progress.total} entities would be read")
            return
        rate = progress.entities / progress.elapsed if progress.elapsed else 0.0
        eta = ""
        if progress.total and rate:
            eta = f", ETA {max(0.0, (progress.total - progress.entities) / rate):.0f} s"
        self.stdout.write(f"{progress.schema}: page {progress.pages}, {progress.entities}/{progress.total or '?'} "
                          f"entities, {rate:,.0f}/s{eta}")
