"""The live mirror end to end: a provisioned webhook, changes in the sandbox, signed chunked deliveries through
gunicorn, Redis and a Celery worker, and the entities re-read into the mirror within seconds."""
from __future__ import annotations

import pytest

from integrations.epilot import EpilotClient, ServiceURLs
from integrations.epilot_sandbox import SandboxApp
from projects.models import Opportunity, WebhookEvent
from tests.integration.conftest import Topology, wait_until

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_changes_deletes_and_purges_reach_the_mirror_through_the_webhook(topology: Topology, sandbox: SandboxApp) -> None:
    topology.start_worker("w1")
    port = topology.start_web()
    assert topology.manage("sync_epilot").returncode == 0
    provisioned = topology.manage("provision_webhook", "--url", f"http://127.0.0.1:{port}/webhooks/epilot/")
    assert provisioned.returncode == 0, provisioned.stderr
    assert "whsec_" not in provisioned.stdout.replace("whsec_…", "")
    sandbox.deliverer.start()
    try:
        client = EpilotClient(token="t", urls=ServiceURLs.single_origin(topology.env["EPILOT_API_URL"]))
        opportunities = list(Opportunity.objects.filter(epilot_deleted_at=None).order_by("epilot_id")[:6])
        for number, opportunity in enumerate(opportunities[:4]):
            client.patch_entity("opportunity", opportunity.epilot_id, {"status": ["bearbeitung", "geschlossen"][number % 2]})
        soft, purged = opportunities[4], opportunities[5]
        client.delete_entity("opportunity", soft.epilot_id)
        client.delete_entity("opportunity", purged.epilot_id, purge=True)

        def mirrored() -> bool:
            rows = {row.epilot_id: row for row in Opportunity.objects.filter(pk__in=[o.pk for o in opportunities])}
            wanted = ["bearbeitung", "geschlossen"]
            return (all(rows[o.epilot_id].status == wanted[n % 2] for n, o in enumerate(opportunities[:4]))
                    and rows[soft.epilot_id].epilot_deleted_at is not None
                    and rows[purged.epilot_id].epilot_deleted_at is not None)

        wait_until(mirrored, timeout=60, what="the changes in the mirror (see web.log and w1.log)")
        # An event is recorded as processed after its change is in the mirror (and what depends on it is recomputed).
        wait_until(lambda: WebhookEvent.objects.filter(outcome=WebhookEvent.Outcome.PROCESSED).count() >= 6, timeout=30,
                   what="six events processed")
    finally:
        sandbox.deliverer.stop()
    assert not WebhookEvent.objects.filter(outcome=WebhookEvent.Outcome.FAILED).exists()
