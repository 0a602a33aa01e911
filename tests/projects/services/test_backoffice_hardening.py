"""Back-office writes after a crash and against odd state: leased starts, conversions that cannot finish, human status changes."""
from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django.utils import timezone

from integrations.epilot import EpilotClient, ExecutionContext
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id
from projects.models import (
    AutomationRule,
    Conversion,
    EpilotWrite,
    Opportunity,
    RuleFiring,
    SyncRun,
    WorkflowDefinition,
    WorkflowStart,
)
from projects.services.conversion import opportunity_convert
from projects.services.errors import Conflict, InProgress, NotAllowed, RemoteFailure
from projects.services.status import opportunity_set_status
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start, workflow_start_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def ausbau(epilot: EpilotClient) -> WorkflowDefinition:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    return WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID, engine="v1")


def opportunity(key: str) -> Opportunity:
    return Opportunity.objects.get(epilot_id=demo_id(f"opportunity:{key}"))


def running(epilot: EpilotClient, schema: str, entity_id: str, definition_id: str = AUSBAU_DEFINITION_ID) -> list:
    return [e for e in epilot.get_executions(context=entity_id, schema=schema)
            if e.definition_id == definition_id and e.status == "STARTED"]


def let_lease_run_out(start: WorkflowStart) -> None:
    """What five minutes after a killed worker look like: its lease is in the past."""
    WorkflowStart.objects.filter(pk=start.pk).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))


# ------------------------------------------------------------------ leased starts

def test_a_start_whose_worker_died_before_the_call_is_retried_after_its_lease(epilot, ausbau) -> None:
    nord = opportunity("nordstrasse")
    dead = workflow_start_request(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, entity_title=nord.title)
    with pytest.raises(InProgress):  # its attempt may still be running
        workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    let_lease_run_out(dead)
    start = workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    assert start.pk == dead.pk and start.status == WorkflowStart.Status.STARTED
    assert [e.id for e in running(epilot, "opportunity", nord.epilot_id)] == [start.execution_epilot_id]


def test_a_start_whose_worker_died_after_epilot_started_it_is_adopted_not_repeated(epilot, ausbau) -> None:
    nord = opportunity("nordstrasse")
    dead = workflow_start_request(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, entity_title=nord.title)
    made = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(entity_id=nord.epilot_id, schema="opportunity",
                                                                           title=nord.title, is_primary=True)])
    let_lease_run_out(dead)
    start = workflow_start(definition=ausbau, schema="opportunity", entity_id=nord.epilot_id, client=epilot)
    assert (start.pk, start.status, start.execution_epilot_id) == (dead.pk, WorkflowStart.Status.STARTED, made.id)
    assert len(running(epilot, "opportunity", nord.epilot_id)) == 1


# ------------------------------------------------------------------ conversions

def test_a_conversion_with_a_disabled_workflow_is_refused_before_anything_is_written(epilot, ausbau, sandbox: SandboxApp) -> None:
    ausbau.enabled = False
    ausbau.save()
    entities = sandbox.store.count_entities()
    with pytest.raises(NotAllowed, match="nicht verfügbar"):
        opportunity_convert(opportunity=opportunity("nordstrasse"), definition=ausbau, client=epilot)
    assert sandbox.store.count_entities() == entities
    assert not Conversion.objects.exists() and not EpilotWrite.objects.exists()


def test_a_stuck_conversion_is_resumed_with_another_workflow(epilot, ausbau, sandbox: SandboxApp) -> None:
    nord = opportunity("nordstrasse")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("createExecution",)))
    with pytest.raises(RemoteFailure):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    sandbox.set_faults(FaultConfig())
    ausbau.removed_in_epilot = True  # the workflow was removed in epilot meanwhile
    ausbau.save()
    with pytest.raises(NotAllowed):
        opportunity_convert(opportunity=opportunity("nordstrasse"), definition=None, client=epilot)
    other = WorkflowDefinition.objects.exclude(pk=ausbau.pk).filter(engine="v1", enabled=True).first()
    done = opportunity_convert(opportunity=opportunity("nordstrasse"), definition=other, client=epilot)
    assert done.status == Conversion.Status.DONE and done.definition == other
    assert len(running(epilot, "order", done.order_epilot_id, other.epilot_id)) == 1


def test_the_conversion_never_overrides_a_status_a_human_set_meanwhile(epilot, ausbau, sandbox: SandboxApp) -> None:
    nord = opportunity("nordstrasse")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("createExecution",)))
    with pytest.raises(RemoteFailure):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    sandbox.set_faults(FaultConfig())
    epilot.patch_entity("opportunity", nord.epilot_id, {"status": "abgebrochen"})  # a colleague, in the portal
    with pytest.raises(Conflict, match="abgebrochen"):
        opportunity_convert(opportunity=nord, definition=ausbau, client=epilot)
    assert epilot.get_entity("opportunity", nord.epilot_id).data["status"] == "abgebrochen"
    conversion = Conversion.objects.get()
    assert conversion.status == Conversion.Status.FAILED and "abgebrochen" in conversion.error
    refused = EpilotWrite.objects.get(action=EpilotWrite.Action.CLOSE_OPPORTUNITY)
    assert refused.result == EpilotWrite.Result.CONFLICT and refused.finished_at is not None


# ------------------------------------------------------------------ status writes and rules

def test_a_tampered_expected_version_is_refused_and_leaves_no_pending_audit_row(epilot, ausbau, client) -> None:
    kalk = opportunity("kalkstrasse")
    with pytest.raises(NotAllowed):
        opportunity_set_status(opportunity=kalk, status="bearbeitung", expected_updated_at="gestern", client=epilot)
    user = User.objects.create_user("bo", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name="Backoffice"))
    client.force_login(user)
    for tampered in ("gestern", "2026-13-45T99:00:00Z", "²", "0001-01-01T00:00:00+14:00"):
        page = client.post(reverse("admin:projects_opportunity_status", args=[kalk.pk]),
                           {"status": "bearbeitung", "expected_updated_at": tampered})
        assert page.status_code == 200 and "neu laden" in page.content.decode()
    assert not EpilotWrite.objects.filter(result=EpilotWrite.Result.PENDING).exists()
    assert epilot.get_entity("opportunity", kalk.epilot_id).data["status"] == kalk.status


def test_a_rule_whose_start_failed_in_epilot_fires_again_on_the_next_change(epilot, ausbau, sandbox: SandboxApp, caplog) -> None:
    rule = AutomationRule.objects.create(
        name="Bearbeitung → Ausbau", schema="opportunity", attribute="status", value="bearbeitung", definition=ausbau
    )
    kalk = opportunity("kalkstrasse")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("createExecution",)))
    opportunity_set_status(opportunity=kalk, status="bearbeitung", client=epilot)
    assert not RuleFiring.objects.filter(rule=rule).exists()
    assert "will retry on the next change" in caplog.text
    assert WorkflowStart.objects.get(actor=f"rule:{rule.pk}").status == WorkflowStart.Status.FAILED
    assert EpilotWrite.objects.get(action=EpilotWrite.Action.START_WORKFLOW).result == EpilotWrite.Result.FAILED
    sandbox.set_faults(FaultConfig())
    epilot.patch_entity("opportunity", kalk.epilot_id, {"beschreibung": "Trasse geklärt"})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    assert len(running(epilot, "opportunity", kalk.epilot_id)) == 1
    assert RuleFiring.objects.get(rule=rule).workflow_start.status == WorkflowStart.Status.STARTED
