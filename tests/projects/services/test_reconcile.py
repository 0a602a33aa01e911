"""Reconciliation by ids: purges, gaps and newer entities found without a full sync, within a request budget; drift
of attributes recorded once; the sync status the API reports."""
from __future__ import annotations

import math
from collections import Counter

import pytest
from rest_framework.test import APIClient

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import SandboxApp, demo_id, seed_bulk
from projects.mirror.intake import mirror_entities
from projects.models import Contact, Opportunity, Reconciliation, SchemaAttribute, SyncRun
from projects.services.api_clients import api_client_create
from projects.services.reconcile import reconcile
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db


class CountingApp:
    """The sandbox behind a counter of requests by operation path; `after_id_search` runs once, after the first id
    search a reconciliation sends (a change made in epilot while it runs)."""

    def __init__(self, app: SandboxApp, after_id_search=None) -> None:
        self.app, self.after_id_search = app, after_id_search
        self.requests: Counter[str] = Counter()

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        from io import BytesIO

        environ["wsgi.input"] = BytesIO(body)
        self.requests[path] += 1
        answer = self.app(environ, start_response)
        if self.after_id_search and path.endswith("entity:search") and b'"fields"' in body:
            hook, self.after_id_search = self.after_id_search, None
            hook()
        return answer


def counting_client(sandbox: SandboxApp, clock, after_id_search=None) -> tuple[EpilotClient, CountingApp]:
    app = CountingApp(sandbox, after_id_search)
    return EpilotClient.for_wsgi_app(app, sleep=clock.sleep, clock=clock, seed=1), app


def test_purges_gaps_and_newer_entities_are_found_without_a_full_sync(epilot, sandbox, clock) -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    purged = [demo_id("opportunity:tiefenbach"), demo_id("opportunity:duessel")]
    for epilot_id in purged:
        epilot.delete_entity("opportunity", epilot_id, purge=True)
    nord = demo_id("opportunity:nordstrasse")
    epilot.patch_entity("opportunity", nord, {"status": "bearbeitung"})  # no webhook, no poll
    gone_locally = Contact.objects.order_by("pk").first()
    Contact.objects.filter(pk=gone_locally.pk).delete()  # a row the mirror lost

    client, app = counting_client(sandbox, clock)
    records = {record.schema: record for record in reconcile(client=client)}

    opportunity = records["opportunity"]
    assert (opportunity.deleted_found, opportunity.newer_found, opportunity.missing_found) == (2, 1, 0)
    assert set(Opportunity.objects.filter(epilot_id__in=purged).values_list("epilot_deleted_at", flat=True)) != {None}
    assert Opportunity.objects.get(epilot_id=nord).status == "bearbeitung"
    assert records["contact"].missing_found == 1 and Contact.objects.filter(epilot_id=gone_locally.epilot_id).exists()
    assert all(record.status == Reconciliation.Status.SUCCEEDED and record.epilot_count == record.mirror_count
               for record in records.values())
    assert sum(record.requests for record in records.values()) == sum(app.requests.values())

    again = reconcile(client=client)  # nothing left to fix
    assert [(r.deleted_found, r.missing_found, r.newer_found) for r in again] == [(0, 0, 0)] * len(again)


def test_an_entity_created_while_it_runs_is_not_marked_deleted(epilot, sandbox, clock) -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    created = []

    def create_and_deliver() -> None:  # after epilot's ids were read: a new contact, mirrored by a webhook meanwhile
        contact = epilot.create_entity("contact", {"_title": "Neu", "first_name": "Neu"})
        mirror_entities(refs=[("contact", contact.id)], client=epilot)
        created.append(contact.id)

    client, _app = counting_client(sandbox, clock, after_id_search=create_and_deliver)
    reconcile(schemas=["contact"], client=client)
    assert created and Contact.objects.get(epilot_id=created[0]).epilot_deleted_at is None


def test_the_request_budget_is_a_search_per_thousand_ids_and_a_list_per_batch(epilot, sandbox, clock) -> None:
    seed_bulk(sandbox.store, contacts=2500, opportunities=0, orders=0, seed=7)
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    for contact in Contact.objects.order_by("pk")[:3]:
        epilot.delete_entity("contact", contact.epilot_id, purge=True)

    client, app = counting_client(sandbox, clock)
    (record,) = reconcile(schemas=["contact"], client=client)
    searches = sum(count for path, count in app.requests.items() if path.endswith("entity:search"))
    assert searches <= math.ceil(record.epilot_count / 1000) + 1
    assert sum(app.requests.values()) == searches  # nothing missing or newer: no other request
    assert record.deleted_found == 3 and record.epilot_count == record.mirror_count > 2500


def test_new_attributes_and_type_changes_are_recorded_once_and_reported(epilot) -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)  # the baseline
    assert not [a for a in SchemaAttribute.objects.filter(schema="opportunity") if a.announced]
    ids = [demo_id(f"opportunity:{key}") for key in ("nordstrasse", "kalkstrasse", "rohdenhaus")]
    for epilot_id in ids[:2]:
        epilot.patch_entity("opportunity", epilot_id, {"glasfaser_tarif": "FTTH 1000", "title": "Hausanschluss"})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    epilot.patch_entity("opportunity", ids[2], {"glasfaser_tarif": "FTTH 500", "title": 4711})  # title was a string
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)

    tarif = SchemaAttribute.objects.get(schema="opportunity", name="glasfaser_tarif")
    assert (tarif.kind, tarif.baseline, tarif.announced) == ("string", False, True)
    title = SchemaAttribute.objects.get(schema="opportunity", name="title")
    assert (title.previous_kind, title.kind, title.announced) == ("string", "number,string", True)
    assert SchemaAttribute.objects.filter(schema="opportunity", name="glasfaser_tarif").count() == 1

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='Monitor', scopes=['read'])[1]}")
    reconcile(schemas=["opportunity"], client=epilot)
    answer = api.get("/api/v1/sync/status/")
    assert answer.status_code == 200
    opportunity = next(item for item in answer.json()["schemas"] if item["schema"] == "opportunity")
    assert set(opportunity) >= {"schema", "epilot_count", "mirror_count", "last_reconciled_at", "deleted_found",
                                "missing_found", "new_attributes"}
    assert opportunity["epilot_count"] == opportunity["mirror_count"] == Opportunity.objects.filter(
        epilot_deleted_at__isnull=True).count()
    assert [(a["name"], a["entities"]) for a in opportunity["new_attributes"]] == [("glasfaser_tarif", 3)]
    assert [a["name"] for a in opportunity["changed_attributes"]] == ["title"] and not opportunity["alert"]


def test_a_page_records_its_new_attributes_in_one_statement(epilot) -> None:
    """Tenants add custom attributes by the dozen: what a page brings new costs statements per page, not per attribute."""
    from django.db import connection

    statements: list[str] = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    epilot.patch_entity("opportunity", demo_id("opportunity:nordstrasse"), {f"eigenes_feld_{n}": n for n in range(40)})
    with connection.execute_wrapper(record):
        sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    writes = [sql for sql in statements if "schemaattribute" in sql.lower() and not sql.startswith("SELECT")]
    assert len(writes) == 1
    assert SchemaAttribute.objects.filter(schema="opportunity", name__startswith="eigenes_feld_", kind="number",
                                          baseline=False).count() == 40


def test_changes_no_webhook_delivered_are_counted_when_a_webhook_is_provisioned(epilot, sandbox, clock) -> None:
    from django.utils import timezone

    from projects.models import WebhookEvent
    from projects.services.webhook_subscriptions import webhook_provision

    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    webhook_provision(url="https://backoffice.example/webhooks/epilot/", client=epilot)
    delivered, lost = demo_id("opportunity:nordstrasse"), demo_id("opportunity:kalkstrasse")
    for epilot_id in (delivered, lost):
        epilot.patch_entity("opportunity", epilot_id, {"status": "bearbeitung"})
    # The delivery of one change arrived (and its processing failed); the other's never did.
    WebhookEvent.objects.create(webhook_id="msg_1", schema="opportunity", entity_epilot_id=delivered,
                                received_at=timezone.now(), outcome=WebhookEvent.Outcome.FAILED)

    client, _app = counting_client(sandbox, clock)
    (record,) = reconcile(schemas=["opportunity"], client=client)
    assert (record.newer_found, record.webhook_gaps) == (2, 1)


def test_the_dashboard_shows_completeness_red_when_counts_differ(admin_client, epilot, sandbox, clock) -> None:
    from django.urls import reverse

    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    client, _app = counting_client(sandbox, clock)
    reconcile(schemas=["contact"], client=client)

    def row() -> str:
        page = admin_client.get(reverse("admin:index")).content.decode()
        return page.split('id="completeness-contact"', 1)[1].split("</tr>", 1)[0]

    assert 'class="n bad"' not in row()
    Reconciliation.objects.filter(schema="contact").update(epilot_count=999)  # epilot reported more than we mirror
    assert 'class="n bad"' in row()


def test_a_quarantined_entity_is_not_fetched_again_until_epilot_changes_it(epilot, sandbox, clock) -> None:
    from projects.models import Order, QuarantinedEntity
    from projects.selectors import sync_status

    order = epilot.create_entity("order", {"_title": "Import", "amount_total": "zwölf Euro"})  # text where cents belong
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot)
    assert QuarantinedEntity.objects.filter(epilot_id=order.id).exists()

    client, app = counting_client(sandbox, clock)
    (record,) = reconcile(schemas=["order"], client=client)
    assert (record.missing_found, record.epilot_count - record.mirror_count) == (0, 1)
    assert not any(path.endswith("entity:list") for path in app.requests)  # nothing fetched again
    assert not next(item for item in sync_status() if item["schema"] == "order")["alert"]  # the quarantine explains it

    epilot.patch_entity("order", order.id, {"amount_total": 1200})  # repaired in epilot, no webhook
    (record,) = reconcile(schemas=["order"], client=client)
    assert record.missing_found == 1 and record.epilot_count == record.mirror_count
    assert Order.objects.get(epilot_id=order.id).amount_total == 1200
