"""Celery tasks: thin adapters over services."""
from celery import shared_task

from projects.models import SyncRun


@shared_task(name="projects.sync_epilot", ignore_result=True)
def sync_epilot_task(*, trigger: str = SyncRun.Trigger.SCHEDULE, schemas: list[str] | None = None, full: bool = False) -> int:
    """Run a sync; returns the SyncRun id. Overlapping runs are refused by the sync lock, not by Celery."""
    from projects.services.sync import sync_run

    return sync_run(trigger=trigger, schemas=schemas, full=full).pk
