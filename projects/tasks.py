"""Celery tasks: thin adapters over services."""
from celery import shared_task

from integrations.connection import get_epilot_client
from projects.mirror.lease import lease_seconds
from projects.models import StepJob, StepJobItem, SyncRun, WorkflowStartJob
from projects.services.areas import areas_snapshot
from projects.services.campaign import late_signups_find, late_signups_flag
from projects.services.digest import task_digest_send
from projects.services.errors import TRANSIENT_EPILOT_ERRORS, RemoteFailure
from projects.services.outbox import outbox_sweep
from projects.services.reconcile import reconcile
from projects.services.steps import step_job_run
from projects.services.sync import sync_run, sync_run_resume
from projects.services.webhook_subscriptions import webhook_public_key_refresh, webhook_reconcile
from projects.services.webhooks import webhook_pending_process
from projects.services.workflows import workflow_start_job_run

STEP_JOB_RETRIES = 5


@shared_task(name="projects.sync_epilot", ignore_result=True, acks_late=True)
def sync_epilot_task(*, run_id: int | None = None, trigger: str = SyncRun.Trigger.SCHEDULE, schemas: list[str] | None = None,
                     full: bool = False) -> int:
    """Run a sync (the recorded SyncRun when `run_id` is given); returns the id of the run that ran.

    A redelivered message (its worker died) runs the sync again; overlapping runs are refused by
    the sync's own lock, not by Celery.
    """
    if run_id is None:
        # A schedule that names an unknown schema fails here with UnknownSchema, before any query is built.
        return sync_run(trigger=trigger, schemas=schemas, full=full, wait_for_lock_seconds=lease_seconds() + 2).pk
    run = SyncRun.objects.filter(pk=run_id).first()
    return sync_run_resume(run).pk if run else run_id


@shared_task(name="projects.workflow_start_job", ignore_result=True, acks_late=True)
def workflow_start_job_task(*, job_id: int) -> None:
    """Work through a workflow-start job; starts already done are skipped, so a redelivery is harmless."""
    job = WorkflowStartJob.objects.filter(pk=job_id).first()
    if job is not None:
        workflow_start_job_run(job)


@shared_task(name="projects.step_job", ignore_result=True, acks_late=True, bind=True, max_retries=STEP_JOB_RETRIES)
def step_job_task(self, *, job_id: int) -> None:
    """Work through a step job; items already done are skipped, so a redelivery is harmless. Items epilot could not
    take while it was down or busy are tried again with back-off, up to STEP_JOB_RETRIES times, then failed."""
    job = StepJob.objects.filter(pk=job_id).first()
    if job is None:
        return
    job = step_job_run(job, last_attempt=self.request.retries >= STEP_JOB_RETRIES)
    if job.status != StepJob.Status.DONE and job.items.filter(status=StepJobItem.Status.PENDING).exists():
        raise self.retry(countdown=min(600, 30 * 2 ** self.request.retries))


@shared_task(name="projects.task_digest", ignore_result=True)
def task_digest_task() -> int:
    """Send the daily e-mail digest of overdue and newly assigned steps; returns how many e-mails went out."""
    return task_digest_send()


@shared_task(name="projects.webhook_event", ignore_result=True, acks_late=True)
def webhook_event_task(*, event_id: int) -> int:
    """Bring a received webhook's entity into the mirror, with the events that queued up meanwhile; returns how many.

    A message whose event another task took already does nothing; a redelivered one re-reads, which is harmless.
    """
    return webhook_pending_process(event_id=event_id)


@shared_task(name="projects.webhook_public_key_refresh", ignore_result=True)
def webhook_public_key_refresh_task() -> bool:
    """Read the organisation's key for `v1a` signatures from epilot into the cache; returns whether it is known."""
    return webhook_public_key_refresh()


@shared_task(name="projects.reconcile_epilot", ignore_result=True)
def reconcile_epilot_task(*, schemas: list[str] | None = None) -> int:
    """Reconcile the mirror with epilot's ids (hourly); returns how many entities it fixed."""
    return sum(r.deleted_found + r.missing_found + r.newer_found for r in reconcile(schemas=schemas))


@shared_task(name="projects.areas_snapshot", ignore_result=True)
def areas_snapshot_task() -> int:
    """Today's snapshot of every rollout area's take-up and funnel (daily); returns how many areas."""
    return areas_snapshot()


@shared_task(name="projects.late_signups", ignore_result=True)
def late_signups_task() -> int:
    """Record contracts signed after their area's deadline and flag them on the order in epilot (every 15 minutes);
    returns how many were flagged."""
    late_signups_find()
    return late_signups_flag(get_epilot_client())


@shared_task(name="projects.promises_nightly", ignore_result=True)
def promises_nightly_task() -> int:
    """The forecasts from the day's history and every promise's state (nightly); returns how many promises."""
    from projects.services.promises import promise_alerts_send, promises_nightly

    count = promises_nightly()
    promise_alerts_send()
    return count


@shared_task(name="projects.promise_alerts", ignore_result=True)
def promise_alerts() -> int:
    """Start the task workflow for promises that became at risk or breached (queued when one does; swept every
    15 minutes); returns how many were started."""
    from projects.services.promises import promise_alerts_send

    return promise_alerts_send()


@shared_task(name="projects.outbox_sweep", ignore_result=True)
def outbox_sweep_task() -> dict[str, int]:
    """Process webhook events left waiting and send again the tasks of jobs still queued (the broker was down when
    they were recorded); returns how many of each."""
    return outbox_sweep()


@shared_task(name="projects.webhook_reconcile", ignore_result=True, bind=True, max_retries=5)
def webhook_reconcile_task(self) -> int:
    """Ask epilot to deliver failed webhook deliveries again; returns how many were replayed. While epilot is down or
    busy the task is retried with back-off (replaying twice is harmless: the receiver records a delivery once)."""
    try:
        return webhook_reconcile()
    except RemoteFailure as exc:
        if isinstance(exc.__cause__, TRANSIENT_EPILOT_ERRORS):
            raise self.retry(exc=exc, countdown=min(600, 30 * 2 ** self.request.retries)) from exc
        raise
