"""The outbox: step jobs, workflow-start jobs and sync runs whose task never reached the broker are sent again."""
from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from config.celery import app
from projects.models import Opportunity, StepJob, SyncRun, WorkflowDefinition, WorkflowStartJob
from projects.services.outbox import outbox_sweep
from projects.services.steps import step_job_create
from projects.services.sync import sync_enqueue, sync_run
from projects.services.workflows import workflow_start_many
from tests.projects.services.test_steps import first_step, start

pytestmark = pytest.mark.django_db


def waiting_messages(queue: str) -> int:
    with app.connection_for_read() as connection:
        return connection.default_channel.queue_declare(queue=queue).message_count


def test_work_whose_task_never_reached_the_broker_is_sent_again_by_the_sweep(epilot) -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    steps = [first_step(start(epilot, "v1", "rohdenhaus"))]
    definition = WorkflowDefinition.objects.filter(enabled=True, removed_in_epilot=False).first()
    opportunity = Opportunity.objects.first()
    # In a test the transaction never commits, so no task is queued: as if the broker had been down.
    run = sync_enqueue(trigger=SyncRun.Trigger.ADMIN)
    start_job = workflow_start_many(definition=definition, entities=[("opportunity", opportunity.epilot_id, "x")])
    step_job = step_job_create(operation=StepJob.Operation.COMPLETE, steps=steps)
    live, bulk = waiting_messages("live"), waiting_messages("bulk")

    assert outbox_sweep() == {"webhook_events": 0, "step_jobs": 0, "workflow_start_jobs": 0, "sync_runs": 0}  # too soon
    long_ago = timezone.now() - dt.timedelta(minutes=6)
    SyncRun.objects.filter(pk=run.pk).update(started_at=long_ago)
    WorkflowStartJob.objects.filter(pk=start_job.pk).update(created_at=long_ago)
    StepJob.objects.filter(pk=step_job.pk).update(created_at=long_ago)
    assert outbox_sweep() == {"webhook_events": 0, "step_jobs": 1, "workflow_start_jobs": 1, "sync_runs": 1}
    assert (waiting_messages("live") - live, waiting_messages("bulk") - bulk) == (2, 1)

    StepJob.objects.filter(pk=step_job.pk).update(status=StepJob.Status.DONE)  # a worker took it meanwhile
    assert outbox_sweep()["step_jobs"] == 0
