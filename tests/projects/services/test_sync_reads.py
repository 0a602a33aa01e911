"""Reads of the sync engine that must not wait on other threads: long results in one step."""
from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import F

from integrations.epilot import EpilotClient
from projects.models import Contact, Opportunity, Order, SyncRun
from projects.services.bulk import values_read_at_once
from projects.services.pages import mark_purged
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirrored(epilot: EpilotClient) -> None:
    assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot).status == SyncRun.Status.SUCCEEDED


@pytest.mark.parametrize(("model", "fields"), [
    (Opportunity, ("pk", "epilot_id", "epilot_updated_at", "epilot_deleted_at", "customer", "title", "customer_epilot_id")),
    (Order, ("id", "opportunity", "amount_total", "epilot_created_at", "currency")),
    (Contact, ("epilot_id",)),
])
def test_a_result_read_at_once_is_what_values_list_reads(mirrored, model, fields) -> None:
    first, last = Opportunity.objects.order_by("pk")[0], Opportunity.objects.order_by("-pk")[0]
    Opportunity.objects.filter(pk=first.pk).update(epilot_deleted_at=F("epilot_updated_at"))
    Opportunity.objects.filter(pk=last.pk).update(epilot_deleted_at=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC))
    expected = sorted(model.objects.values_list(*fields), key=repr)

    assert len(expected) >= 2
    assert sorted(values_read_at_once(model.objects.order_by(), *fields), key=repr) == expected


def test_a_sliced_and_filtered_result_read_at_once_keeps_its_slice(mirrored) -> None:
    queryset = Opportunity.objects.filter(pk__gt=Opportunity.objects.order_by("pk").first().pk).order_by("pk")

    assert sorted(values_read_at_once(queryset[:2], "pk")) == list(queryset.values_list("pk")[:2])
    assert values_read_at_once(Opportunity.objects.filter(epilot_id="none such"), "pk", "epilot_id") == []


def test_reading_a_json_field_at_once_is_refused() -> None:
    with pytest.raises(TypeError, match="payload"):
        values_read_at_once(Opportunity.objects.all(), "epilot_id", "payload")


def test_entities_no_longer_seen_are_marked_purged_chunk_by_chunk(mirrored) -> None:
    contacts = list(Contact.objects.order_by("pk").values_list("epilot_id", flat=True))
    kept = set(contacts[::3])

    assert mark_purged("contact", kept, chunk=2) == len(contacts) - len(kept)
    assert set(Contact.objects.filter(epilot_deleted_at__isnull=True).values_list("epilot_id", flat=True)) == kept
    assert mark_purged("contact", kept, chunk=2) == 0
