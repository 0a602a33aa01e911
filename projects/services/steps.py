"""Working workflow steps in epilot: complete, skip, reopen, assign, schedule, and close executions.

Every write re-reads the execution from epilot first and refuses with Conflict when the step is
no longer in the state the caller saw; it is audited, and the mirror is brought up to date right
after it. V1 steps and V2 tasks share one vocabulary here; the gateway speaks each engine's dialect.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from integrations.connection import get_epilot_client
from integrations.epilot import (
    EpilotClient,
    EpilotClientError,
    EpilotError,
    EpilotNotFoundError,
    EpilotRateLimitedError,
    bulk_writes,
)
from integrations.epilot import WorkflowExecution as RemoteExecution
from integrations.epilot.types import STEP_DONE_STATUSES, WorkflowStep
from projects.mirror.intake import mirror_after_write, mirror_executions
from projects.models import EpilotWrite, MirroredStep, StepJob, StepJobItem, WorkflowDefinition, WorkflowExecution
from projects.services.audit import audited_write, record_refused_write, stored_user
from projects.services.errors import TRANSIENT_EPILOT_ERRORS, Conflict, NotAllowed, NotFound, RemoteFailure

logger = logging.getLogger("projects.steps")

COMPLETE, SKIP, REOPEN, ASSIGN, SET_DUE = "complete", "skip", "reopen", "assign", "set_due"
OPERATIONS = (COMPLETE, SKIP, REOPEN, ASSIGN, SET_DUE)
TARGET_STATUS = {COMPLETE: "COMPLETED", SKIP: "SKIPPED", REOPEN: "PENDING"}


@dataclass(frozen=True)
class StepChange:
    """What to do to one step: an operation, its value (assignees or due date), and the status the caller saw."""

    operation: str
    assignees: tuple[str, ...] = ()
    due_date: dt.datetime | None = None
    expected_status: str | None = None
    # A step already as asked counts as done even if its status is not the one seen (a job resumed
    # after its worker wrote the step and died); a single request reports that as a conflict.
    already_done_is_success: bool = False


@dataclass(frozen=True)
class StepResult:
    """The outcome: `changed` is False when epilot already had what was asked (nothing was written)."""

    execution: WorkflowExecution | None
    step: MirroredStep | None
    changed: bool


def mirrored_execution(execution_epilot_id: str) -> WorkflowExecution:
    """The mirrored execution with this epilot id; raises NotFound."""
    execution = WorkflowExecution.objects.filter(epilot_id=execution_epilot_id).first()
    if execution is None:
        raise NotFound(_("No workflow execution %(id)s in the mirror.") % {"id": execution_epilot_id})
    return execution


def step_change(*, execution_epilot_id: str, step_epilot_id: str, change: StepChange, user: Any = None, actor: str = "admin",
                client: EpilotClient | None = None, refresh: bool = True) -> StepResult:
    """Apply `change` to one step of one execution in epilot, then mirror the execution (unless not `refresh`).

    Raises NotFound (no such execution or step), Conflict (the step's status is not the one the
    caller saw, or the execution no longer runs), NotAllowed (epilot refused the change, e.g. an
    invalid transition) or RemoteFailure (epilot failed; nothing changed locally).
    """
    if change.operation not in OPERATIONS:
        raise NotAllowed(_("Unknown step operation '%(operation)s'.") % {"operation": change.operation})
    local = mirrored_execution(execution_epilot_id)
    client = client or get_epilot_client()
    remote = _read(client, local)
    step = next((s for s in remote.steps if s.id == step_epilot_id), None)
    if step is None:
        raise NotFound(_("The step %(step)s is not part of execution %(execution)s in epilot.")
                       % {"step": step_epilot_id, "execution": execution_epilot_id})
    summary = {"execution": execution_epilot_id, "engine": local.engine, "step": step_epilot_id, "step_name": step.name,
               "operation": change.operation, "status_seen": change.expected_status or "", "status_in_epilot": step.status or ""}
    body = _body(local.engine, change, step)
    if body is None and change.already_done_is_success:
        return StepResult(local, _mirrored_step(local, step_epilot_id), changed=False)
    if change.expected_status and change.expected_status != step.status:
        reason = (_("'%(step)s' is '%(theirs)s' in epilot now, not '%(seen)s' as you saw it; nothing was changed.")
                  % {"step": step.name, "theirs": step.status or "-", "seen": change.expected_status})
        _refuse(local, summary, reason, user, actor)
    if remote.status != "STARTED":
        _refuse(local, summary, _("The workflow '%(name)s' is %(status)s in epilot; its steps can no longer be changed.")
                % {"name": remote.name or local.name, "status": remote.status or "-"}, user, actor)
    if body is None:  # epilot has it so already: a repeated request writes nothing
        if refresh:
            _store_one(local, remote)
        return StepResult(local, _mirrored_step(local, step_epilot_id), changed=False)
    summary["body"] = body
    with _epilot_write_errors(), audited_write(
            action=EpilotWrite.Action.UPDATE_STEP, target_schema=local.entity_schema, target_epilot_id=local.entity_epilot_id,
            summary=summary, user=user, actor=actor) as outcome:
        if local.engine == WorkflowDefinition.Engine.V2:
            client.patch_task(execution_epilot_id, step_epilot_id, body)
        else:
            client.update_step(execution_epilot_id, step_epilot_id, body)
        outcome.epilot_ids = [execution_epilot_id]
    if refresh:
        _refresh_after_write(client, local)
    return StepResult(local, _mirrored_step(local, step_epilot_id), changed=True)


def closing_reasons(execution_epilot_id: str, *, client: EpilotClient | None = None) -> list[dict[str, str]]:
    """The closing reasons ({id, title}) epilot offers for this execution; raises NotFound or RemoteFailure."""
    local = mirrored_execution(execution_epilot_id)
    client = client or get_epilot_client()
    try:
        if local.engine == WorkflowDefinition.Engine.V2:
            remote = client.get_flow_execution(execution_epilot_id)
            configured = (remote.data.get("closing_reason") or {}).get("configured_reasons") or []
            return [{"id": str(r["id"]), "title": str(r.get("title") or r["id"])}
                    for r in configured if isinstance(r, dict) and r.get("id")]
        return client.get_closing_reasons(execution_epilot_id)
    except EpilotNotFoundError as exc:
        raise NotFound(_("The execution %(id)s no longer exists in epilot.") % {"id": execution_epilot_id}) from exc
    except EpilotError as exc:
        raise RemoteFailure(_("epilot could not be reached or failed: %(error)s") % {"error": exc.message}) from exc


def execution_close(*, execution_epilot_id: str, reason_ids: Sequence[str] = (), description: str = "", user: Any = None,
                    actor: str = "admin", client: EpilotClient | None = None) -> WorkflowExecution:
    """Close (cancel) a running execution with closing reasons from epilot's list, then mirror it.

    Raises NotFound, Conflict (it no longer runs), NotAllowed (a reason epilot does not offer, or
    epilot refused) or RemoteFailure.
    """
    local = mirrored_execution(execution_epilot_id)
    client = client or get_epilot_client()
    remote = _read(client, local)
    summary = {"execution": execution_epilot_id, "engine": local.engine, "reasons": list(reason_ids),
               "description": description[:500]}
    if remote.status != "STARTED":
        _refuse(local, summary, _("The workflow '%(name)s' is %(status)s in epilot already.")
                % {"name": remote.name or local.name, "status": remote.status or "-"}, user, actor)
    offered = {reason["id"]: reason for reason in closing_reasons(execution_epilot_id, client=client)}
    unknown = [reason_id for reason_id in reason_ids if reason_id not in offered]
    if unknown:
        raise NotAllowed(_("epilot offers no closing reason %(ids)s for this workflow.") % {"ids": ", ".join(unknown)})
    selected = [offered[reason_id] for reason_id in reason_ids]
    with _epilot_write_errors(), audited_write(
            action=EpilotWrite.Action.CLOSE_EXECUTION, target_schema=local.entity_schema,
            target_epilot_id=local.entity_epilot_id, summary=summary, user=user, actor=actor) as outcome:
        if local.engine == WorkflowDefinition.Engine.V2:
            closing: dict[str, Any] = {"selected_reasons": selected}
            if description:
                closing["extra_description"] = description
            client.patch_flow_execution(execution_epilot_id, {"status": "CLOSED", "closing_reason": closing})
        else:
            client.close_execution(execution_epilot_id, reasons=selected, description=description)
        outcome.epilot_ids = [execution_epilot_id]
    _refresh_after_write(client, local)
    local.refresh_from_db()
    return local


@contextmanager
def _epilot_write_errors() -> Iterator[None]:
    """An epilot write's failure as a service error: slow down or failed (RemoteFailure), refused (NotAllowed)."""
    try:
        yield
    except EpilotRateLimitedError as exc:
        raise RemoteFailure(_("epilot asks to slow down; try again shortly: %(error)s") % {"error": exc.message}) from exc
    except EpilotClientError as exc:
        raise NotAllowed(_("epilot refused the change: %(error)s") % {"error": exc.message}) from exc
    except EpilotError as exc:
        raise RemoteFailure(_("epilot could not be reached or failed: %(error)s") % {"error": exc.message}) from exc


def _read(client: EpilotClient, local: WorkflowExecution) -> RemoteExecution:
    try:
        if local.engine == WorkflowDefinition.Engine.V2:
            return client.get_flow_execution(local.epilot_id)
        return client.get_execution(local.epilot_id)
    except EpilotNotFoundError as exc:
        raise NotFound(_("The execution %(id)s no longer exists in epilot.") % {"id": local.epilot_id}) from exc
    except EpilotError as exc:
        raise RemoteFailure(_("Could not read the workflow from epilot: %(error)s") % {"error": exc.message}) from exc


def _refuse(local: WorkflowExecution, summary: dict[str, Any], reason: str, user: Any, actor: str) -> None:
    record_refused_write(action=EpilotWrite.Action.UPDATE_STEP, target_schema=local.entity_schema,
                         target_epilot_id=local.entity_epilot_id, summary=summary, reason=reason, user=user, actor=actor)
    raise Conflict(reason)


def _body(engine: str, change: StepChange, step: WorkflowStep) -> dict[str, Any] | None:
    """The PATCH body in the engine's dialect, or None when the step is already as asked."""
    v2 = engine == WorkflowDefinition.Engine.V2
    if change.operation in TARGET_STATUS:
        target = TARGET_STATUS[change.operation]
        if change.operation == REOPEN:
            if step.status not in STEP_DONE_STATUSES:
                return None
            return {"status": target, "revert_execution": True} if v2 else {"status": target}
        if step.status == target:
            return None
        return {"status": target}
    if change.operation == ASSIGN:
        if set(change.assignees) == set(step.assigned_to):
            return None
        return {"assigned_to" if v2 else "assignedTo": list(change.assignees)}
    due = _due_text(change.due_date, v2=v2)
    if (change.due_date is None and step.due_date is None) or (change.due_date and step.due_date == change.due_date):
        return None
    return {"due_date" if v2 else "dueDate": due}


def _due_text(due: dt.datetime | None, *, v2: bool) -> str:
    """epilot's due date text: ISO 8601 in UTC (V2 keeps day dates as 'floating' times; a time in UTC is read alike)."""
    if due is None:
        return ""
    return due.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{due.microsecond // 1000:03d}Z"


def _store_one(local: WorkflowExecution, remote: RemoteExecution) -> None:
    mirror_executions([(local.entity_schema, local.entity_epilot_id, remote)])


def _refresh_after_write(client: EpilotClient, local: WorkflowExecution) -> None:
    """Mirror the execution, its entity and its project after a write; a failed refresh is logged, the next sync catches up."""
    _refresh_many(client, [local])


def _mirrored_step(local: WorkflowExecution, step_epilot_id: str) -> MirroredStep | None:
    return MirroredStep.objects.filter(execution__epilot_id=local.epilot_id, epilot_id=step_epilot_id).first()


# ---------------------------------------------------------------------------------------- bulk

JOB_LEASE_SECONDS = 300  # how long one worker may hold an item before another may take it over
JOB_REFRESH_EVERY = 25  # items written between two refreshes of the mirror


def step_job_create(*, operation: str, steps: Sequence[MirroredStep], assignees: Sequence[str] = (),
                    due_date: dt.datetime | None = None, user: Any = None, actor: str = "admin") -> StepJob:
    """Queue `operation` on many steps as a background job with progress; a step is listed once.

    Each item keeps the status the user saw, so a step changed in epilot since is reported as a
    conflict instead of being overwritten. Raises NotAllowed for an unknown operation or no steps.
    """
    from projects.tasks import step_job_task

    if operation not in OPERATIONS:
        raise NotAllowed(_("Unknown step operation '%(operation)s'.") % {"operation": operation})
    if not steps:
        raise NotAllowed(_("No steps selected."))
    parameters = {"assignees": list(assignees), "due_date": due_date.isoformat() if due_date else None}
    with transaction.atomic():
        job = StepJob.objects.create(operation=operation, parameters=parameters, requested_by=stored_user(user), actor=actor)
        items = {}
        for step in steps:
            key = (step.execution.epilot_id, step.epilot_id)
            items.setdefault(key, StepJobItem(job=job, execution_epilot_id=key[0], step_epilot_id=key[1],
                                              label=f"{step.name} – {step.execution.name}"[:500], expected_status=step.status))
        StepJobItem.objects.bulk_create(items.values())
        # robust: with the broker down the job stays queued and the outbox sweep sends it later.
        transaction.on_commit(lambda: step_job_task.delay(job_id=job.pk), robust=True)
    return job


def step_job_run(job: StepJob, *, client: EpilotClient | None = None, last_attempt: bool = True) -> StepJob:
    """Work through a job's pending items (see `_step_job_run`); its writes yield to interactive ones (`bulk_writes`).

    Unless `last_attempt`, an item epilot could not take because it was down or busy stays pending
    for the caller to run the job again later (the task does, with back-off); on the last attempt it fails.
    """
    with bulk_writes():
        return _step_job_run(job, client=client, last_attempt=last_attempt)


def _step_job_run(job: StepJob, *, client: EpilotClient | None = None, last_attempt: bool = True) -> StepJob:
    """Work through a job's pending items; each is claimed, written at most once, and marked right after.

    A redelivered or resumed job skips what is done; an item whose worker died is taken over after
    its lease and re-read from epilot first, so it is never written twice. The client's write budget
    keeps the pace; the mirror is refreshed every JOB_REFRESH_EVERY items and at the end.
    """
    client = client or get_epilot_client()
    StepJob.objects.filter(pk=job.pk).update(status=StepJob.Status.RUNNING)
    due = job.parameters.get("due_date")
    change_base = StepChange(operation=job.operation, assignees=tuple(job.parameters.get("assignees") or ()),
                             due_date=dt.datetime.fromisoformat(due) if due else None)
    written: list[WorkflowExecution] = []
    for item in job.items.filter(status=StepJobItem.Status.PENDING).order_by("id"):
        if not _claim_item(item):
            continue
        change = StepChange(operation=change_base.operation, assignees=change_base.assignees, due_date=change_base.due_date,
                            expected_status=item.expected_status or None, already_done_is_success=True)
        try:
            result = step_change(execution_epilot_id=item.execution_epilot_id, step_epilot_id=item.step_epilot_id,
                                 change=change, user=job.requested_by, actor=job.actor, client=client, refresh=False)
        except Conflict as exc:
            _finish_item(item, StepJobItem.Status.CONFLICT, exc.message)
        except RemoteFailure as exc:
            if not last_attempt and isinstance(exc.__cause__, TRANSIENT_EPILOT_ERRORS):
                # Safe to try again: each attempt re-reads the step and writes only what is still to do.
                StepJobItem.objects.filter(pk=item.pk).update(claimed_until=None, error=exc.message[:2000])
            else:
                _finish_item(item, StepJobItem.Status.FAILED, exc.message)
        except (NotAllowed, NotFound) as exc:
            _finish_item(item, StepJobItem.Status.FAILED, exc.message)
        else:
            _finish_item(item, StepJobItem.Status.DONE if result.changed else StepJobItem.Status.UNCHANGED, "")
            written.append(result.execution)
        if len(written) >= JOB_REFRESH_EVERY:
            _refresh_many(client, written)
            written = []
    _refresh_many(client, written)
    if not job.items.filter(status=StepJobItem.Status.PENDING).exists():
        StepJob.objects.filter(pk=job.pk).update(status=StepJob.Status.DONE, finished_at=timezone.now())
    job.refresh_from_db()
    return job


def _claim_item(item: StepJobItem) -> bool:
    now = timezone.now()
    claimable = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    return bool(StepJobItem.objects.filter(Q(pk=item.pk, status=StepJobItem.Status.PENDING) & claimable).update(
        claimed_until=now + dt.timedelta(seconds=JOB_LEASE_SECONDS)))


def _finish_item(item: StepJobItem, status: str, error: str) -> None:
    StepJobItem.objects.filter(pk=item.pk).update(status=status, error=error[:2000], claimed_until=None,
                                                  updated_at=timezone.now())


def _refresh_many(client: EpilotClient, executions: list[WorkflowExecution]) -> None:
    unique = {execution.epilot_id: execution for execution in executions}
    re_read = []
    for execution in unique.values():
        try:
            re_read.append((execution.entity_schema, execution.entity_epilot_id, _read(client, execution)))
        except (NotFound, RemoteFailure) as exc:
            logger.warning("execution %s: mirror refresh after a write failed: %s", execution.epilot_id, exc.message)
    if unique:
        mirror_after_write(refs={(e.entity_schema, e.entity_epilot_id) for e in unique.values()}, client=client,
                           executions=re_read)


def step_job_progress(job: StepJob) -> dict[str, int]:
    """Items per status, and the total."""
    counts = dict(job.items.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    return {"total": sum(counts.values()), **{status: counts.get(status, 0) for status in StepJobItem.Status.values}}
