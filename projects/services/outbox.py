"""The outbox: work recorded in the database whose Celery message may never have reached the broker.

Step jobs, workflow-start jobs and queued sync runs are committed first and their task is queued
once the transaction commits. When the broker is down at that moment the row stays queued; the
sweep (every minute, `projects.outbox_sweep`) sends the task again for rows queued longer than
RESEND_AFTER. Running a job or a run twice is harmless (items are claimed one by one, runs take a
lease), so a message that did arrive after all costs nothing but a no-op.
"""
from __future__ import annotations

import datetime as dt
import logging

from django.utils import timezone

from projects.models import StepJob, SyncRun, WorkflowStartJob
from projects.services.webhook_subscriptions import webhook_secrets_reseal
from projects.services.webhooks import webhook_sweep

logger = logging.getLogger("projects.outbox")

RESEND_AFTER = dt.timedelta(minutes=5)


def outbox_sweep() -> dict[str, int]:
    """Process webhook events left waiting and send again the tasks of jobs and runs still queued after RESEND_AFTER;
    returns how many of each. Raises what the broker raises when it is still down (the next sweep tries again)."""
    from projects.tasks import step_job_task, sync_epilot_task, workflow_start_job_task

    before = timezone.now() - RESEND_AFTER
    webhook_secrets_reseal()  # after a change of SECRET_KEY: a moment's work, then the fallback key may go
    resent = {"webhook_events": webhook_sweep()}
    step_jobs = list(StepJob.objects.filter(status=StepJob.Status.QUEUED, created_at__lt=before).values_list("pk", flat=True))
    for pk in step_jobs:
        step_job_task.delay(job_id=pk)
    start_jobs = list(WorkflowStartJob.objects.filter(status=WorkflowStartJob.Status.QUEUED, created_at__lt=before)
                      .values_list("pk", flat=True))
    for pk in start_jobs:
        workflow_start_job_task.delay(job_id=pk)
    runs = list(SyncRun.objects.filter(status=SyncRun.Status.QUEUED, started_at__lt=before)
                .values_list("pk", "schemas", "full"))
    for pk, schemas, full in runs:
        sync_epilot_task.delay(run_id=pk, schemas=schemas or None, full=full)
    resent.update(step_jobs=len(step_jobs), workflow_start_jobs=len(start_jobs), sync_runs=len(runs))
    if any(resent.values()):
        logger.warning("outbox: processed or sent again what waited: %s", resent, extra={"resent": resent})
    return resent
