"""Celery tasks: thin adapters over services."""
from celery import shared_task

from projects.models import SyncRun


@shared_task(name="projects.sync_epilot", ignore_result=True, acks_late=True)
def sync_epilot_task(*, run_id: int | None = None, trigger: str = SyncRun.Trigger.SCHEDULE, schemas: list[str] | None = None,
                     full: bool = False) -> int:
    """Run a sync (a queued SyncRun when `run_id` is given); returns the SyncRun id.

    Overlapping runs are refused by the sync's own lock, not by Celery.
    """
    from projects.services.sync import sync_run

    run = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.QUEUED).first() if run_id else None
    if run_id and run is None:
        return run_id  # already picked up by another delivery of this message
    return sync_run(trigger=run.trigger if run else trigger, schemas=schemas, full=full, run=run).pk


@shared_task(name="projects.workflow_start_job", ignore_result=True, acks_late=True)
def workflow_start_job_task(*, job_id: int) -> None:
    """Work through a workflow-start job; starts already done are skipped, so a redelivery is harmless."""
    from projects.models import WorkflowStartJob
    from projects.services.workflows import workflow_start_job_run

    job = WorkflowStartJob.objects.filter(pk=job_id).first()
    if job is not None:
        workflow_start_job_run(job)
