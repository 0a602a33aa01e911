"""Start epilot workflows (V1 definitions or V2 flow templates) on any mirrored entity, at most once."""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import (
    EpilotClient,
    EpilotClientError,
    EpilotError,
    EpilotRateLimitedError,
    ExecutionContext,
    bulk_writes,
)
from integrations.epilot import WorkflowExecution as RemoteExecution
from projects.mirror.intake import mirror_after_write
from projects.models import AusbauProject, EpilotWrite, WorkflowDefinition, WorkflowStart, WorkflowStartJob
from projects.services.audit import audited_write, stored_user
from projects.services.errors import InProgress, NotAllowed, RemoteFailure

logger = logging.getLogger("projects.workflows")


def running_executions(
    client: EpilotClient, definition: WorkflowDefinition, schema: str, entity_id: str
) -> list[RemoteExecution]:
    """Executions of `definition` that run on the entity now, asked of epilot (not the mirror)."""
    if definition.engine == WorkflowDefinition.Engine.V2:
        executions = client.search_flow_executions(entity_id=entity_id, entity_schema=schema)
    else:
        executions = client.get_executions(context=entity_id, schema=schema)
    return [e for e in executions if e.definition_id == definition.epilot_id and e.status == "STARTED"]


def workflow_start(*, definition: WorkflowDefinition, schema: str, entity_id: str, entity_title: str = "", user: Any = None,
                   actor: str = "admin", allow_duplicate: bool = False, client: EpilotClient | None = None) -> WorkflowStart:
    """Start `definition` on one entity and record it.

    Raises NotAllowed (already running, definition gone), InProgress (a start of the same
    definition on the entity is under way) or RemoteFailure (epilot refused or failed).
    """
    start = workflow_start_request(definition=definition, schema=schema, entity_id=entity_id, entity_title=entity_title,
                                   user=user, actor=actor)
    return workflow_start_execute(start, allow_duplicate=allow_duplicate, client=client)


# How long one attempt may carry out a pending start before another attempt may adopt it. Longer
# than gunicorn's --timeout (150 s in the Procfile) and than the gateway's retry budget of one call.
START_LEASE_SECONDS = 300


def workflow_start_request(
    *,
    definition: WorkflowDefinition,
    schema: str,
    entity_id: str,
    entity_title: str = "",
    user: Any = None,
    actor: str = "admin",
    job: WorkflowStartJob | None = None,
) -> WorkflowStart:
    """Record a pending start, or adopt one whose attempt died (its lease ran out).

    Raises NotAllowed for a definition gone from epilot, InProgress when a live attempt (or a
    queued job) is starting the same definition on the entity.
    """
    if definition.removed_in_epilot or not definition.enabled:
        raise NotAllowed(_("The workflow '%(name)s' is no longer available in epilot.") % {"name": definition.name})
    now = timezone.now()
    lease = dt.timedelta(seconds=START_LEASE_SECONDS)
    try:
        with transaction.atomic():
            return WorkflowStart.objects.create(definition=definition, entity_schema=schema, entity_epilot_id=entity_id,
                                                entity_title=entity_title[:500], requested_by=stored_user(user),
                                                actor=actor, job=job, claimed_until=None if job else now + lease)
    except IntegrityError:
        pass
    pending = WorkflowStart.objects.filter(
        entity_epilot_id=entity_id, definition=definition, status=WorkflowStart.Status.PENDING
    ).first()
    if pending is not None and job is None:
        # A start whose attempt died mid-call (killed worker, timed-out request) is adopted: carrying
        # it out first asks epilot whether that attempt got through, so nothing starts twice.
        stale = Q(claimed_until__lt=now) | Q(claimed_until__isnull=True, job__isnull=True, updated_at__lt=now - lease)
        if WorkflowStart.objects.filter(Q(pk=pending.pk, status=WorkflowStart.Status.PENDING) & stale).update(
            claimed_until=now + lease
        ):
            logger.warning("workflow start %s: adopting a pending start whose attempt stopped", pending.pk)
            pending.refresh_from_db()
            return pending
    raise InProgress(
        _("'%(name)s' is being started on %(entity)s right now.") % {"name": definition.name, "entity": entity_title or entity_id}
    )


def _claim(start: WorkflowStart) -> bool:
    """Take the lease of a pending start for this attempt (its own fresh claim, an unclaimed job item or an expired one)."""
    now = timezone.now()
    claimable = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    if start.claimed_until is not None:
        claimable |= Q(claimed_until=start.claimed_until)
    until = now + dt.timedelta(seconds=START_LEASE_SECONDS)
    if not WorkflowStart.objects.filter(Q(pk=start.pk, status=WorkflowStart.Status.PENDING) & claimable).update(
        claimed_until=until
    ):
        return False
    start.claimed_until = until
    return True


def workflow_start_execute(
    start: WorkflowStart, *, allow_duplicate: bool = False, client: EpilotClient | None = None
) -> WorkflowStart:
    """Carry out a pending start; a retry after a lost answer adopts the execution epilot made instead of starting another."""
    client = client or get_epilot_client()
    definition = start.definition
    if not _claim(start):
        raise InProgress(_("'%(name)s' is being started on %(entity)s right now.")
                         % {"name": definition.name, "entity": start.entity_title or start.entity_epilot_id})
    try:
        before = running_executions(client, definition, start.entity_schema, start.entity_epilot_id)
    except EpilotError as exc:
        return _fail(start, _("Could not ask epilot whether the workflow runs already: %(error)s") % {"error": exc.message})
    ours = _started_by_this_request(before, start)
    if ours is not None:
        # An earlier attempt of this very request started it (the worker died before recording it).
        _finish(start, WorkflowStart.Status.STARTED, execution_id=ours.id)
        _mirror_after_start(client, start)
        return start
    if before and not allow_duplicate:
        _finish(
            start,
            WorkflowStart.Status.REFUSED,
            execution_id=before[0].id,
            error=_("'%(name)s' runs already (execution %(execution)s).") % {"name": definition.name, "execution": before[0].id},
        )
        raise NotAllowed(
            _("'%(name)s' runs on %(entity)s already (execution %(execution)s). Confirm explicitly to start it again.")
            % {"name": definition.name, "entity": start.entity_title or start.entity_epilot_id, "execution": before[0].id}
        )
    context = ExecutionContext(entity_id=start.entity_epilot_id, schema=start.entity_schema,
                               title=start.entity_title or start.entity_epilot_id, is_primary=True)
    summary = {"definition": definition.epilot_id, "engine": definition.engine, "entity": start.entity_epilot_id,
               "schema": start.entity_schema, "allow_duplicate": allow_duplicate}
    try:
        with audited_write(
            action=EpilotWrite.Action.START_WORKFLOW,
            target_schema=start.entity_schema,
            target_epilot_id=start.entity_epilot_id,
            summary=summary,
            user=start.requested_by,
            actor=start.actor,
        ) as outcome:
            try:
                execution = _create(client, definition, context)
            except (EpilotClientError, EpilotRateLimitedError):
                raise
            except EpilotError:
                # The request may have been carried out with its answer lost: look before failing.
                known = {e.id for e in before}
                adopted = [e for e in running_executions(client, definition, start.entity_schema, start.entity_epilot_id)
                           if e.id not in known]
                if not adopted:
                    raise
                execution = adopted[0]
            outcome.epilot_ids = [execution.id]
    except EpilotError as exc:
        return _fail(start, _("epilot refused the start or cannot be reached: %(error)s") % {"error": exc.message})
    _finish(start, WorkflowStart.Status.STARTED, execution_id=execution.id)
    _mirror_after_start(client, start)
    return start


def _started_by_this_request(running: list[RemoteExecution], start: WorkflowStart) -> RemoteExecution | None:
    """A running execution created after this pending start was requested, and claimed by no other start."""
    claimed = set(WorkflowStart.objects.exclude(pk=start.pk).exclude(execution_epilot_id="").filter(
        execution_epilot_id__in=[e.id for e in running]).values_list("execution_epilot_id", flat=True))
    threshold = start.created_at - dt.timedelta(seconds=5)  # epilot's clock and ours are not the same clock
    return next((e for e in running if e.id not in claimed and e.created_at and e.created_at >= threshold), None)


def _create(client: EpilotClient, definition: WorkflowDefinition, context: ExecutionContext) -> RemoteExecution:
    if definition.engine == WorkflowDefinition.Engine.V2:
        return client.start_flow_execution(definition.epilot_id, [context])
    return client.create_execution(definition.epilot_id, [context])


def _finish(start: WorkflowStart, status: str, *, execution_id: str = "", error: str = "") -> None:
    start.status, start.execution_epilot_id, start.error, start.claimed_until = status, execution_id, error, None
    start.save(update_fields=["status", "execution_epilot_id", "error", "claimed_until", "updated_at"])


def _fail(start: WorkflowStart, message: str) -> WorkflowStart:
    _finish(start, WorkflowStart.Status.FAILED, error=message)
    raise RemoteFailure(message)


def _mirror_after_start(client: EpilotClient, start: WorkflowStart) -> None:
    mirror_after_write(refs=[(start.entity_schema, start.entity_epilot_id)], client=client)


def workflow_start_many(*, definition: WorkflowDefinition, entities: Iterable[tuple[str, str, str]], user: Any = None,
                        allow_duplicate: bool = False) -> WorkflowStartJob:
    """Queue starts of `definition` on (schema, id, title) entities as a background job with progress."""
    from projects.tasks import workflow_start_job_task

    if definition.removed_in_epilot or not definition.enabled:
        raise NotAllowed(_("The workflow '%(name)s' is no longer available in epilot.") % {"name": definition.name})
    job = WorkflowStartJob.objects.create(definition=definition, requested_by=stored_user(user),
                                          allow_duplicate=allow_duplicate)
    for schema, entity_id, title in entities:
        try:
            workflow_start_request(
                definition=definition, schema=schema, entity_id=entity_id, entity_title=title, user=user, job=job
            )
        except InProgress as exc:
            WorkflowStart.objects.create(job=job, definition=definition, entity_schema=schema, entity_epilot_id=entity_id,
                                         entity_title=title[:500], status=WorkflowStart.Status.REFUSED, error=exc.message)
    # robust: with the broker down the job stays queued and the outbox sweep sends it later.
    transaction.on_commit(lambda: workflow_start_job_task.delay(job_id=job.pk), robust=True)
    return job


def workflow_start_job_run(job: WorkflowStartJob, *, client: EpilotClient | None = None) -> WorkflowStartJob:
    """Work through a job's pending starts one by one (the shared write budget keeps the pace; its writes leave the
    budget's reserve to interactive ones)."""
    WorkflowStartJob.objects.filter(pk=job.pk).update(status=WorkflowStartJob.Status.RUNNING)
    with bulk_writes():
        for start in job.items.filter(status=WorkflowStart.Status.PENDING).select_related("definition", "requested_by"):
            try:
                workflow_start_execute(start, allow_duplicate=job.allow_duplicate, client=client)
            except (NotAllowed, RemoteFailure, InProgress) as exc:
                logger.info("workflow start %s: %s", start.pk, exc.message)
    WorkflowStartJob.objects.filter(pk=job.pk).update(status=WorkflowStartJob.Status.DONE, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def project_workflow_target(project: AusbauProject, target: str) -> tuple[str, str, str]:
    """(schema, epilot id, title) a workflow started "on a project" runs on: its opportunity, or its first live order.

    Raises NotAllowed when the order is asked for and the project has none.
    """
    opportunity = project.opportunity
    if target != "order":
        return "opportunity", opportunity.epilot_id, opportunity.title
    order = opportunity.orders.filter(epilot_deleted_at__isnull=True).order_by("id").first()
    if order is None:
        raise NotAllowed(_("This project has no order yet."))
    return "order", order.epilot_id, order.title
