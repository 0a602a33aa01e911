"""Two staff members convert the same opportunity at the same moment: exactly one order."""
from __future__ import annotations

import threading

import pytest
from django.db import connection

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id
from projects.models import Conversion, Opportunity, SyncRun, WorkflowDefinition
from projects.services.conversion import opportunity_convert
from projects.services.errors import InProgress
from projects.services.sync import sync_run


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_conversions_make_exactly_one_order(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    definition = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID)
    opportunity_id = Opportunity.objects.get(epilot_id=demo_id("opportunity:nordstrasse")).pk
    sandbox.set_faults(FaultConfig(latency_ms=50))
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def convert() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(opportunity_convert(opportunity=Opportunity.objects.get(pk=opportunity_id), definition=definition,
                                                client=epilot))
        except InProgress as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == 2
    assert sum(isinstance(outcome, Conversion) for outcome in outcomes) >= 1
    orders = sandbox.store.conn.execute(
        "SELECT COUNT(*) FROM entities WHERE schema = 'order' AND body LIKE '%backoffice_conversion_key%'"
    )
    assert orders.fetchone()[0] == 1
    assert Conversion.objects.get().status == Conversion.Status.DONE
