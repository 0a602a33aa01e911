"""Working workflow steps against the sandbox, every request and answer checked against epilot's specs (V1 and V2)."""
from __future__ import annotations

import datetime as dt

import httpx
import pytest
from django.core import mail
from django.utils import timezone

from integrations.epilot import EpilotClient, EpilotValidationError, ServiceURLs
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, HAUSANSCHLUSS_TEMPLATE_ID, demo_id
from projects.models import (
    AusbauProject,
    EpilotWrite,
    MirroredStep,
    Opportunity,
    StaffProfile,
    StepJob,
    StepJobItem,
    SyncRun,
    WorkflowDefinition,
    WorkflowExecution,
)
from projects.services.digest import task_digest_send
from projects.services.errors import Conflict, NotAllowed, NotFound
from projects.services.steps import (
    ASSIGN,
    COMPLETE,
    REOPEN,
    SET_DUE,
    SKIP,
    StepChange,
    closing_reasons,
    execution_close,
    step_change,
    step_job_create,
    step_job_run,
)
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(checked_client: EpilotClient) -> EpilotClient:
    """The gateway client of these tests: its traffic is checked against the specs (`recorder`)."""
    return checked_client


def start(client: EpilotClient, engine: str, key: str) -> WorkflowExecution:
    """Start Ausbau Glasfaser (V1) or the Hausanschluss flow (V2) on a demo opportunity; returns the mirrored execution."""
    epilot_id = AUSBAU_DEFINITION_ID if engine == "v1" else HAUSANSCHLUSS_TEMPLATE_ID
    definition = WorkflowDefinition.objects.get(epilot_id=epilot_id, engine=engine)
    started = workflow_start(definition=definition, schema="opportunity", entity_id=demo_id(f"opportunity:{key}"),
                             entity_title=key, client=client)
    return WorkflowExecution.objects.get(epilot_id=started.execution_epilot_id)


@pytest.fixture
def v1(client: EpilotClient) -> WorkflowExecution:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
    return start(client, "v1", "rohdenhaus")


@pytest.fixture
def v2(client: EpilotClient, v1) -> WorkflowExecution:
    return start(client, "v2", "duessel")


def remote_step(client: EpilotClient, execution: WorkflowExecution, step_id: str):
    remote = client.get_flow_execution(execution.epilot_id) if execution.engine == "v2" else client.get_execution(
        execution.epilot_id)
    return next(step for step in remote.steps if step.id == step_id), remote


def first_step(execution: WorkflowExecution) -> MirroredStep:
    return execution.steps.order_by("position").first()


def first_sync_through(transport: httpx.BaseTransport, clock) -> SyncRun:
    """A first full sync (the mirror's executions and opportunities emptied) through `transport` in front of the sandbox."""
    client = EpilotClient(token="steps-test", urls=ServiceURLs.single_origin("http://epilot-sandbox.invalid"),
                          transport=transport, sleep=clock.sleep, clock=clock)
    WorkflowExecution.objects.all().delete()
    Opportunity.objects.all().delete()  # every entity's workflows are new
    return sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=client)


def test_steps_are_mirrored_as_rows_with_sections_in_order(v1, v2) -> None:
    assert [(s.section, s.name, s.status) for s in v1.steps.order_by("position")][:3] == [
        ("Planung", "Trassenplanung erstellen", "PENDING"), ("Planung", "Genehmigungen einholen", "PENDING"),
        ("Tiefbau", "Tiefbau beauftragen", "PENDING")]
    assert v1.steps.count() == 8
    assert [(s.section, s.name) for s in v2.steps.order_by("position")] == [
        ("Terminierung", "Termin mit Eigentümer vereinbaren"), ("Montage", "Glasfaser-Modem montieren"),
        ("Montage", "Anschluss aktivieren")]


@pytest.mark.parametrize("engine", ["v1", "v2"])
def test_completing_a_step_writes_epilot_audits_and_mirrors_at_once(engine, client, recorder, sandbox, v1, v2) -> None:
    execution = v1 if engine == "v1" else v2
    step = first_step(execution)

    result = step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                         change=StepChange(COMPLETE, expected_status="PENDING"), actor="test", client=client)

    assert result.changed
    assert remote_step(client, execution, step.epilot_id)[0].status == "COMPLETED"
    step.refresh_from_db()
    assert step.status == "COMPLETED" and step.completed_at is not None
    execution.refresh_from_db()
    assert execution.completed_steps == 1
    project = AusbauProject.objects.get(opportunity__epilot_id=execution.entity_epilot_id)
    assert project.progress_percent == round(100 / execution.total_steps)
    write = EpilotWrite.objects.get(action=EpilotWrite.Action.UPDATE_STEP)
    assert write.result == EpilotWrite.Result.SUCCEEDED and write.request_summary["step"] == step.epilot_id
    assert recorder.violations == [], "\n".join(recorder.violations)


@pytest.mark.parametrize("engine", ["v1", "v2"])
def test_a_repeated_complete_writes_nothing_more(engine, client, sandbox, v1, v2) -> None:
    execution = v1 if engine == "v1" else v2
    step = first_step(execution)
    change = StepChange(COMPLETE)
    step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id, change=change, client=client)
    writes = sandbox.stats["op:updateStep"] + sandbox.stats["op:patchTask"]

    again = step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id, change=change, client=client)

    assert not again.changed
    assert sandbox.stats["op:updateStep"] + sandbox.stats["op:patchTask"] == writes
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.UPDATE_STEP).count() == 1


@pytest.mark.parametrize("engine", ["v1", "v2"])
def test_a_step_changed_in_epilot_meanwhile_is_a_conflict(engine, client, v1, v2) -> None:
    execution = v1 if engine == "v1" else v2
    step = first_step(execution)
    if engine == "v1":
        client.update_step(execution.epilot_id, step.epilot_id, {"status": "SKIPPED"})
    else:
        client.patch_task(execution.epilot_id, step.epilot_id, {"status": "SKIPPED"})

    with pytest.raises(Conflict, match="SKIPPED"):
        step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                    change=StepChange(COMPLETE, expected_status="PENDING"), client=client)

    assert remote_step(client, execution, step.epilot_id)[0].status == "SKIPPED"
    refused = EpilotWrite.objects.get(action=EpilotWrite.Action.UPDATE_STEP)
    assert refused.result == EpilotWrite.Result.CONFLICT


@pytest.mark.parametrize("engine", ["v1", "v2"])
def test_assigning_and_scheduling_a_step(engine, client, recorder, v1, v2) -> None:
    execution = v1 if engine == "v1" else v2
    step = first_step(execution)
    due = dt.datetime(2027, 3, 31, 8, 0, tzinfo=dt.UTC)

    step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                change=StepChange(ASSIGN, assignees=("u-tiefbau", "u-planung")), client=client)
    step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                change=StepChange(SET_DUE, due_date=due), client=client)

    remote, _ = remote_step(client, execution, step.epilot_id)
    assert set(remote.assigned_to) == {"u-tiefbau", "u-planung"} and remote.due_date == due
    step.refresh_from_db()
    assert set(step.assigned_to) == {"u-tiefbau", "u-planung"} and step.due_date == due and step.assigned_at is not None
    assert ",u-tiefbau," in step.assignees

    step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                change=StepChange(SET_DUE, due_date=None), client=client)
    step.refresh_from_db()
    assert step.due_date is None
    assert recorder.violations == [], "\n".join(recorder.violations)


def test_reopening_a_v2_task_reverts_and_epilot_refuses_it_without(client, v2) -> None:
    step = first_step(v2)
    step_change(execution_epilot_id=v2.epilot_id, step_epilot_id=step.epilot_id, change=StepChange(SKIP), client=client)
    with pytest.raises(EpilotValidationError, match="Invalid status transition"):
        client.patch_task(v2.epilot_id, step.epilot_id, {"status": "PENDING"})

    step_change(execution_epilot_id=v2.epilot_id, step_epilot_id=step.epilot_id, change=StepChange(REOPEN), client=client)

    assert remote_step(client, v2, step.epilot_id)[0].status == "PENDING"
    step.refresh_from_db()
    assert step.status == "PENDING"


def test_an_unknown_step_or_execution_is_not_found(client, v1) -> None:
    with pytest.raises(NotFound):
        step_change(execution_epilot_id=v1.epilot_id, step_epilot_id="nope", change=StepChange(COMPLETE), client=client)
    with pytest.raises(NotFound):
        step_change(execution_epilot_id="nope", step_epilot_id="nope", change=StepChange(COMPLETE), client=client)


@pytest.mark.parametrize("engine", ["v1", "v2"])
def test_closing_an_execution_with_epilots_reasons(engine, client, recorder, v1, v2) -> None:
    execution = v1 if engine == "v1" else v2
    offered = closing_reasons(execution.epilot_id, client=client)
    assert {reason["id"] for reason in offered} == {"crKeinInteresse", "crTechnisch", "crDoppelt"}
    with pytest.raises(NotAllowed):
        execution_close(execution_epilot_id=execution.epilot_id, reason_ids=["erfunden"], client=client)

    closed = execution_close(execution_epilot_id=execution.epilot_id, reason_ids=["crTechnisch"],
                             description="Felsgestein", client=client)

    assert closed.status == "CLOSED"
    remote = client.get_flow_execution(execution.epilot_id) if engine == "v2" else client.get_execution(execution.epilot_id)
    assert remote.status == "CLOSED"
    with pytest.raises(Conflict):
        execution_close(execution_epilot_id=execution.epilot_id, client=client)
    with pytest.raises(Conflict):
        step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=first_step(execution).epilot_id,
                    change=StepChange(COMPLETE), client=client)
    assert recorder.violations == [], "\n".join(recorder.violations)


def test_a_bulk_job_interrupted_and_resumed_writes_each_step_once(client, sandbox, v1) -> None:
    executions = [v1, start(client, "v1", "nordstrasse"), start(client, "v1", "kalkstrasse")]
    steps = [first_step(execution) for execution in executions]
    job = step_job_create(operation=COMPLETE, steps=steps, actor="test")
    items = list(job.items.order_by("id"))
    # The first worker died: it wrote the first step and never marked it; the third it still holds.
    client.update_step(items[0].execution_epilot_id, items[0].step_epilot_id, {"status": "COMPLETED"})
    StepJobItem.objects.filter(pk=items[0].pk).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))
    StepJobItem.objects.filter(pk=items[2].pk).update(claimed_until=timezone.now() + dt.timedelta(minutes=5))
    before = sandbox.stats["op:updateStep"]

    job = step_job_run(job, client=client)

    assert job.status == StepJob.Status.RUNNING  # the held item is left to its worker
    assert dict(job.items.values_list("step_epilot_id", "status")) == {
        items[0].step_epilot_id: "unchanged", items[1].step_epilot_id: "done", items[2].step_epilot_id: "pending"}
    StepJobItem.objects.filter(pk=items[2].pk).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))

    job = step_job_run(job, client=client)
    step_job_run(job, client=client)  # a redelivered message

    assert job.status == StepJob.Status.DONE
    assert sandbox.stats["op:updateStep"] - before == 2
    assert all(remote_step(client, e, s.epilot_id)[0].status == "COMPLETED" for e, s in zip(executions, steps, strict=True))
    assert set(MirroredStep.objects.filter(pk__in=[s.pk for s in steps]).values_list("status", flat=True)) == {"COMPLETED"}


def test_a_bulk_job_reports_steps_changed_meanwhile_as_conflicts(client, v1) -> None:
    steps = list(v1.steps.order_by("position")[:2])
    job = step_job_create(operation=COMPLETE, steps=steps, actor="test")
    client.update_step(v1.epilot_id, steps[1].epilot_id, {"status": "SKIPPED"})

    job = step_job_run(job, client=client)

    assert dict(job.items.values_list("step_epilot_id", "status")) == {steps[0].epilot_id: "done",
                                                                      steps[1].epilot_id: "conflict"}
    assert remote_step(client, v1, steps[1].epilot_id)[0].status == "SKIPPED"


def test_the_digest_mails_overdue_and_newly_assigned_steps(client, v1, django_user_model, settings) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    steps = list(v1.steps.order_by("position")[:2])
    step_change(execution_epilot_id=v1.epilot_id, step_epilot_id=steps[0].epilot_id,
                change=StepChange(ASSIGN, assignees=("u-anna",)), client=client)
    step_change(execution_epilot_id=v1.epilot_id, step_epilot_id=steps[0].epilot_id,
                change=StepChange(SET_DUE, due_date=timezone.now() - dt.timedelta(days=2)), client=client)
    anna = django_user_model.objects.create_user("anna", email="anna@stadtwerke-wuelfrath.example", password="x",
                                                 first_name="Anna", last_name="Kabel & Söhne <GmbH>")
    StaffProfile.objects.create(user=anna, epilot_user_id="u-anna")
    bob = django_user_model.objects.create_user("bob", email="bob@stadtwerke-wuelfrath.example", password="x")
    StaffProfile.objects.create(user=bob, epilot_user_id="u-bob", task_digest=False)
    step_change(execution_epilot_id=v1.epilot_id, step_epilot_id=steps[1].epilot_id,
                change=StepChange(ASSIGN, assignees=("u-bob",)), client=client)

    assert task_digest_send() == 1

    (message,) = mail.outbox
    assert message.to == ["anna@stadtwerke-wuelfrath.example"]
    assert "1 überfällig" in message.subject
    assert steps[0].name in message.body and steps[1].name not in message.body
    assert "Anna Kabel & Söhne <GmbH>" in message.body and "&amp;" not in message.body  # plain text, not HTML
    # The next day: still overdue, nothing newly assigned.
    assert task_digest_send(now=timezone.now() + dt.timedelta(days=1)) == 1
    assert "0 neu" in mail.outbox[1].subject


def test_slim_execution_lists_are_read_whole_before_their_steps_are_mirrored(sandbox, clock, v1, client) -> None:
    from tests.integrations.fakes import SlimExecutionList

    step = first_step(v1)
    step_change(execution_epilot_id=v1.epilot_id, step_epilot_id=step.epilot_id, change=StepChange(COMPLETE), client=client)

    first_sync_through(SlimExecutionList(httpx.WSGITransport(app=sandbox)), clock)

    mirrored = WorkflowExecution.objects.get(epilot_id=v1.epilot_id)
    assert mirrored.completed_steps == 1
    assert list(mirrored.steps.order_by("position").values_list("status", flat=True))[:2] == ["COMPLETED", "PENDING"]


def test_a_newer_version_of_an_execution_updates_its_step_rows_in_place(client, v1) -> None:
    from integrations.epilot.types import WorkflowExecution as RemoteExecution
    from projects.mirror.intake import mirror_executions

    rows = {step.epilot_id: step.pk for step in v1.steps.all()}
    newer = client.get_execution(v1.epilot_id).data | {"lastUpdateTime": "2099-01-01T00:00:00.000Z"}
    first_section = newer["flow"][0]
    first_section["steps"] = [first_section["steps"][0] | {"status": "COMPLETED"}]  # the second step is gone
    mirror_executions([("opportunity", demo_id("opportunity:rohdenhaus"), RemoteExecution.from_v1(newer))])
    after = {step.epilot_id: (step.pk, step.status) for step in v1.steps.all()}
    assert len(after) == len(rows) - 1 and all(rows[epilot_id] == pk for epilot_id, (pk, _) in after.items())
    assert after[first_section["steps"][0]["id"]][1] == "COMPLETED"


def test_listed_executions_are_read_whole_even_when_their_steps_carry_a_state(sandbox, clock, v1, client) -> None:
    from tests.integrations.fakes import PartlySlimExecutionList

    step = first_step(v1)
    step_change(execution_epilot_id=v1.epilot_id, step_epilot_id=step.epilot_id,
                change=StepChange(ASSIGN, assignees=("u-tiefbau",)), client=client)

    first_sync_through(PartlySlimExecutionList(httpx.WSGITransport(app=sandbox)), clock)

    mirrored = WorkflowExecution.objects.get(epilot_id=v1.epilot_id)
    assert mirrored.steps.get(epilot_id=step.epilot_id).assigned_to == ["u-tiefbau"]


def test_an_execution_deleted_between_list_and_read_is_not_mirrored(sandbox, clock, v1, client) -> None:
    """getExecution answers an unknown id with an empty 200 (the spec); the run goes on without it."""
    gone = v1.epilot_id

    def deleted_meanwhile(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == f"/v1/workflows/executions/{gone}":
            return httpx.Response(200)
        return inner.handle_request(request)

    inner = httpx.WSGITransport(app=sandbox)
    run = first_sync_through(httpx.MockTransport(deleted_meanwhile), clock)

    assert run.status == SyncRun.Status.SUCCEEDED
    assert not WorkflowExecution.objects.filter(epilot_id=gone).exists()


def test_a_bulk_job_keeps_items_epilot_could_not_take_for_a_later_attempt_then_fails_them(client, sandbox, v1) -> None:
    from integrations.epilot_sandbox import FaultConfig
    from projects.models import StepJobItem

    executions = [v1, start(client, "v1", "nordstrasse")]
    job = step_job_create(operation=COMPLETE, steps=[first_step(execution) for execution in executions], actor="test")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("updateStep",)))  # epilot is down for writes

    step_job_run(job, client=client, last_attempt=False)
    assert set(job.items.values_list("status", flat=True)) == {StepJobItem.Status.PENDING}
    assert all(job.items.values_list("error", flat=True)) and job.status != StepJob.Status.DONE

    sandbox.set_faults(FaultConfig())  # back: the next attempt completes them, each once
    step_job_run(job, client=client, last_attempt=False)
    assert set(job.items.values_list("status", flat=True)) == {StepJobItem.Status.DONE}
    assert job.status == StepJob.Status.DONE

    other = step_job_create(operation=COMPLETE, steps=[first_step(start(client, "v1", "kalkstrasse"))], actor="test")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("updateStep",)))
    step_job_run(other, client=client, last_attempt=True)  # the last attempt gives up
    assert set(other.items.values_list("status", flat=True)) == {StepJobItem.Status.FAILED}
    sandbox.set_faults(FaultConfig())
