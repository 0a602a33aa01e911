"""Back-office services against the sandbox: workflow starts, conversion saga, status writes, rules, automation."""
from __future__ import annotations

import pytest

from integrations.epilot import EpilotClient, RetryPolicy
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id
from projects.models import (
    AusbauProject,
    AutomationRule,
    Conversion,
    EpilotWrite,
    Opportunity,
    Order,
    RuleFiring,
    SyncRun,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowStart,
)
from projects.services.conversion import opportunity_convert
from projects.services.errors import InProgress, NotAllowed, RemoteFailure, StatusConflict
from projects.services.rules import rules_evaluate
from projects.services.status import opportunity_set_status
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start, workflow_start_job_run, workflow_start_many

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirror(epilot: EpilotClient) -> SyncRun:
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)


@pytest.fixture
def ausbau(mirror) -> WorkflowDefinition:
    return WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID)


def opportunity(key: str) -> Opportunity:
    return Opportunity.objects.get(epilot_id=demo_id(f"opportunity:{key}"))


def executions_in_epilot(epilot: EpilotClient, schema: str, entity_id: str) -> list:
    return [e for e in epilot.get_executions(context=entity_id, schema=schema) if e.definition_id == AUSBAU_DEFINITION_ID]


def orders_for(sandbox: SandboxApp, opportunity_id: str) -> list[str]:
    rows = sandbox.store.conn.execute(
        "SELECT id FROM entities WHERE schema = 'order' AND json_extract(body, '$.opportunity.\"$relation\"[0].entity_id') = ?",
        (opportunity_id,))
    return [row["id"] for row in rows]


# ------------------------------------------------------------------ workflow starts

def test_starting_a_workflow_records_it_everywhere(epilot, ausbau, admin_user) -> None:
    nord = opportunity("nordstrasse")
    start = workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, entity_title=nord.title,
                           user=admin_user, client=epilot)
    assert start.status == WorkflowStart.Status.STARTED
    assert [e.id for e in executions_in_epilot(epilot, "opportunity", nord.epilot_id)] == [start.execution_epilot_id]
    mirrored = WorkflowExecution.objects.get(epilot_id=start.execution_epilot_id)
    assert mirrored.opportunity == nord and mirrored.current_section == "Planung"
    write = EpilotWrite.objects.get(action=EpilotWrite.Action.START_WORKFLOW)
    assert (write.result, write.user, write.epilot_ids) == ("succeeded", admin_user, [start.execution_epilot_id])


def test_a_running_definition_is_refused_unless_confirmed(epilot, ausbau) -> None:
    nord = opportunity("nordstrasse")
    workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    with pytest.raises(NotAllowed, match="bereits"):
        workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    assert len(executions_in_epilot(epilot, "opportunity", nord.epilot_id)) == 1
    workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, allow_duplicate=True, client=epilot)
    assert len(executions_in_epilot(epilot, "opportunity", nord.epilot_id)) == 2


def test_a_lost_answer_adopts_the_execution_instead_of_starting_another(epilot, ausbau, sandbox) -> None:
    nord = opportunity("nordstrasse")
    sandbox.set_faults(FaultConfig(rate_drop=1.0, operations=("createExecution",)))
    start = workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    assert start.status == WorkflowStart.Status.STARTED and sandbox.stats["injected_drop"] == 1
    assert [e.id for e in executions_in_epilot(epilot, "opportunity", nord.epilot_id)] == [start.execution_epilot_id]


def test_failures_leave_a_clear_message_and_consistent_state(epilot, ausbau, sandbox) -> None:
    kalk = opportunity("kalkstrasse")
    epilot.delete_entity("opportunity", kalk.epilot_id)
    with pytest.raises(RemoteFailure, match="not found"):
        workflow_start(definition=ausbau, schema="opportunity", entity_id=kalk.epilot_id, client=epilot)
    assert WorkflowStart.objects.get().status == WorkflowStart.Status.FAILED
    assert EpilotWrite.objects.get().result == EpilotWrite.Result.FAILED
    ausbau.removed_in_epilot = True
    ausbau.save()
    with pytest.raises(NotAllowed, match="nicht mehr verfügbar"):
        workflow_start(definition=ausbau, schema="opportunity", entity_id=opportunity("nordstrasse").epilot_id, client=epilot)


def test_a_v2_flow_template_starts_through_the_flows_api(epilot, mirror) -> None:
    template = WorkflowDefinition.objects.get(engine="v2")
    contact_id = demo_id("contact:meier")
    start = workflow_start(definition=template, schema="contact", entity_id=contact_id, entity_title="Anna Meier", client=epilot)
    assert [e.id for e in epilot.search_flow_executions(entity_id=contact_id, entity_schema="contact")] == [
        start.execution_epilot_id
    ]
    assert WorkflowExecution.objects.get(epilot_id=start.execution_epilot_id).contact.epilot_id == contact_id


def test_many_entities_run_as_a_job_without_duplicates(epilot, ausbau, django_capture_on_commit_callbacks) -> None:
    targets = [("opportunity", o.epilot_id, o.title) for o in Opportunity.objects.exclude(status="abgebrochen")[:4]]
    with django_capture_on_commit_callbacks() as callbacks:
        job = workflow_start_many(definition=ausbau, entities=targets)
    assert len(callbacks) == 1 and job.items.filter(status="pending").count() == 4
    workflow_start_job_run(job, client=epilot)
    workflow_start_job_run(job, client=epilot)  # a redelivered task finds nothing pending
    assert job.items.filter(status="started").count() == 4 and job.status == "done"
    for _, entity_id, _ in targets:
        assert len(executions_in_epilot(epilot, "opportunity", entity_id)) == 1


# ------------------------------------------------------------------ conversion

def test_conversion_creates_links_starts_and_closes(epilot, ausbau, sandbox, admin_user) -> None:
    nord = opportunity("nordstrasse")
    conversion = opportunity_convert(opportunity=nord, definition=ausbau, user=admin_user, client=epilot)
    assert conversion.status == Conversion.Status.DONE and conversion.step == Conversion.Step.DONE
    assert orders_for(sandbox, nord.epilot_id) == [conversion.order_epilot_id]
    order = epilot.get_entity("order", conversion.order_epilot_id)
    assert order.title == "Ausbau: Glasfaser Neubaugebiet Nordstraße" and order.data["amount_total"] == 4_500_000
    assert order.relation_ids("customer") == [demo_id("contact:meier")] and "ausbau" in order.tags
    fresh = epilot.get_entity("opportunity", nord.epilot_id)
    assert fresh.relation_ids("items") == [order.id] and fresh.data["status"] == "geschlossen"
    assert [e.id for e in executions_in_epilot(epilot, "order", order.id)] == [conversion.execution_epilot_id]
    mirrored = Order.objects.get(epilot_id=order.id)
    assert mirrored.opportunity == nord
    assert AusbauProject.objects.get(opportunity=nord).phase == "construction"
    assert list(EpilotWrite.objects.filter(conversion=conversion).order_by("started_at").values_list("action", flat=True)) == [
        "create_order", "link_order", "close_opportunity"]
    assert EpilotWrite.objects.filter(action="start_workflow", target_epilot_id=order.id, result="succeeded").count() == 1


def test_converting_twice_yields_one_order(epilot, ausbau, sandbox) -> None:
    nord = opportunity("nordstrasse")
    first = opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    second = opportunity_convert(opportunity=opportunity("nordstrasse"), definition=ausbau, client=epilot)
    assert first.pk == second.pk
    assert len(orders_for(sandbox, nord.epilot_id)) == 1
    assert len(executions_in_epilot(epilot, "order", first.order_epilot_id)) == 1


def test_a_conversion_claimed_elsewhere_is_refused(epilot, ausbau) -> None:
    from django.utils import timezone

    nord = opportunity("nordstrasse")
    Conversion.objects.create(opportunity=nord, key="k-1", order_title="x", status=Conversion.Status.RUNNING,
                              claimed_until=timezone.now() + timezone.timedelta(minutes=5))
    with pytest.raises(InProgress):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)


def test_a_lost_answer_after_the_order_was_created_never_makes_a_second_order(epilot, ausbau, sandbox) -> None:
    nord = opportunity("nordstrasse")
    epilot.retry = RetryPolicy(max_attempts=3)
    sandbox.set_faults(FaultConfig(rate_drop=1.0, operations=("upsertEntity",)))
    with pytest.raises(RemoteFailure, match="fortgesetzt"):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    conversion = Conversion.objects.get()
    assert (conversion.status, conversion.step) == (Conversion.Status.FAILED, Conversion.Step.REQUESTED)
    assert len(orders_for(sandbox, nord.epilot_id)) == 1  # epilot made it; every answer was lost
    sandbox.set_faults(FaultConfig())
    done = opportunity_convert(opportunity=opportunity("nordstrasse"), definition=ausbau, client=epilot)
    assert done.status == Conversion.Status.DONE
    assert orders_for(sandbox, nord.epilot_id) == [done.order_epilot_id]


def test_a_failed_step_is_resumed_where_it_stopped(epilot, ausbau, sandbox) -> None:
    nord = opportunity("nordstrasse")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("createExecution",)))
    with pytest.raises(RemoteFailure):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    failed = Conversion.objects.get()
    assert (failed.status, failed.step) == (Conversion.Status.FAILED, Conversion.Step.LINKED) and failed.order_epilot_id
    assert epilot.get_entity("opportunity", nord.epilot_id).data["status"] == "ausstehend"  # nothing half-closed
    sandbox.set_faults(FaultConfig())
    done = opportunity_convert(opportunity=opportunity("nordstrasse"), definition=ausbau, client=epilot)
    assert done.status == Conversion.Status.DONE and done.order_epilot_id == failed.order_epilot_id
    assert len(orders_for(sandbox, nord.epilot_id)) == 1
    assert len(executions_in_epilot(epilot, "order", done.order_epilot_id)) == 1


def test_cancelled_or_deleted_opportunities_are_not_converted(epilot, ausbau) -> None:
    with pytest.raises(NotAllowed, match="abgebrochen"):
        opportunity_convert(opportunity=opportunity("angerbach"), definition=ausbau, client=epilot)
    assert not Conversion.objects.exists()


# ------------------------------------------------------------------ status writes

def test_status_write_goes_to_epilot_and_the_mirror(epilot, mirror) -> None:
    kalk = opportunity_set_status(opportunity=opportunity("kalkstrasse"), status="bearbeitung", client=epilot)
    assert kalk.status == "bearbeitung"
    assert epilot.get_entity("opportunity", kalk.epilot_id).data["status"] == "bearbeitung"


def test_status_write_on_a_newer_version_shows_the_conflict(epilot, mirror) -> None:
    kalk = opportunity("kalkstrasse")
    epilot.patch_entity("opportunity", kalk.epilot_id, {"status": "abgebrochen"})  # someone else, in epilot
    with pytest.raises(StatusConflict) as caught:
        opportunity_set_status(opportunity=kalk, status="bearbeitung", client=epilot)
    assert (caught.value.ours, caught.value.theirs) == ("bearbeitung", "abgebrochen")
    assert epilot.get_entity("opportunity", kalk.epilot_id).data["status"] == "abgebrochen"
    assert EpilotWrite.objects.get(action="write_status").result == EpilotWrite.Result.CONFLICT
    overwritten = opportunity_set_status(
        opportunity=kalk, status="bearbeitung", expected_updated_at=caught.value.theirs_updated_at, client=epilot
    )
    assert overwritten.status == "bearbeitung"


# ------------------------------------------------------------------ rules and automation

def test_rules_take_as_many_changed_entities_as_a_full_sync_brings(epilot, ausbau) -> None:
    """More ids than one statement takes parameters (SQLite 32,766 or 250,000, as built): the rule still fires."""
    rule = AutomationRule.objects.create(
        name="Ausstehend → Ausbau", schema="opportunity", attribute="status", value="ausstehend", definition=ausbau
    )
    kalk = opportunity("kalkstrasse")
    refs = [("opportunity", f"not-mirrored-{n}") for n in range(260_000)] + [("opportunity", kalk.epilot_id)]
    fired = rules_evaluate(refs=refs, client=epilot)
    assert [firing.entity_epilot_id for firing in fired] == [kalk.epilot_id]
    assert RuleFiring.objects.filter(rule=rule).count() == 1


def test_a_full_sync_fires_a_rule_on_every_matching_entity_once(epilot, ausbau) -> None:
    """A full sync lists no refs: the rule looks at every live entity of its schema, and fires on each once."""
    rule = AutomationRule.objects.create(
        name="Ausstehend → Ausbau", schema="opportunity", attribute="status", value="ausstehend", definition=ausbau
    )
    waiting = set(Opportunity.objects.filter(status="ausstehend", epilot_deleted_at__isnull=True)
                  .values_list("epilot_id", flat=True))
    assert len(waiting) >= 2
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True)
    assert set(RuleFiring.objects.filter(rule=rule).values_list("entity_epilot_id", flat=True)) == waiting
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True)
    assert RuleFiring.objects.filter(rule=rule).count() == len(waiting)
    assert all(len(executions_in_epilot(epilot, "opportunity", epilot_id)) == 1 for epilot_id in waiting)


def test_a_local_rule_fires_once_per_entity(epilot, ausbau) -> None:
    rule = AutomationRule.objects.create(
        name="Bearbeitung → Ausbau", schema="opportunity", attribute="status", value="bearbeitung", definition=ausbau
    )
    kalk = opportunity("kalkstrasse")
    opportunity_set_status(opportunity=kalk, status="bearbeitung", client=epilot)
    assert len(executions_in_epilot(epilot, "opportunity", kalk.epilot_id)) == 1
    firing = RuleFiring.objects.get(rule=rule, entity_epilot_id=kalk.epilot_id)
    assert firing.workflow_start.actor == f"rule:{rule.pk}"
    epilot.patch_entity("opportunity", kalk.epilot_id, {"beschreibung": "geändert"})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True)
    assert len(executions_in_epilot(epilot, "opportunity", kalk.epilot_id)) == 1
    # Opportunities already in `bearbeitung` when the rule was made fire once on their next change.
    rohden = opportunity("rohdenhaus")
    epilot.patch_entity("opportunity", rohden.epilot_id, {"beschreibung": "neu"})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    assert len(executions_in_epilot(epilot, "opportunity", rohden.epilot_id)) == 1
