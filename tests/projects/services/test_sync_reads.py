"""Reads of the sync engine that must not wait on other threads: long results in one step, execution reads paced."""
from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from django.db.models import F
from django.utils import timezone

from integrations.epilot import EpilotClient
from projects.mirror.bulk import column_in, values_read_at_once
from projects.mirror.pacing import GateClosed, ReadGate
from projects.mirror.pages import mark_purged
from projects.models import AreaSnapshot, AusbauProject, Contact, Opportunity, Order, SyncRun
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def mirrored(epilot: EpilotClient) -> None:
    assert sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot).status == SyncRun.Status.SUCCEEDED


@pytest.mark.parametrize(("model", "fields"), [
    (Opportunity, ("pk", "epilot_id", "epilot_updated_at", "epilot_deleted_at", "title", "customer_epilot_id")),
    (Opportunity, ("pk", "budget", "tags", "latitude", "longitude", "payload")),
    (Order, ("id", "opportunity", "amount_total", "epilot_created_at", "currency")),
    (Contact, ("epilot_id",)),
])
def test_a_result_read_at_once_is_what_values_list_reads(mirrored, model, fields) -> None:
    first, last = Opportunity.objects.order_by("pk")[0], Opportunity.objects.order_by("-pk")[0]
    Opportunity.objects.filter(pk=first.pk).update(epilot_deleted_at=F("epilot_updated_at"), budget=Decimal("0.10"),
                                                   tags=["a,b", "Straße", {"nested": [1, 2.5, None]}])
    Opportunity.objects.filter(pk=last.pk).update(epilot_deleted_at=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC),
                                                  budget=Decimal("999999999999.99"), tags=[], latitude=7.0,
                                                  longitude=6.123456789012345)
    expected = sorted(model.objects.values_list(*fields), key=repr)

    assert len(expected) >= 2
    assert sorted(values_read_at_once(model.objects.order_by(), *fields), key=repr) == expected


@pytest.mark.parametrize("field", ["pk", "epilot_updated_at", "epilot_id"])
def test_one_field_read_at_once_flat_is_what_values_list_reads_flat(mirrored, field) -> None:
    assert sorted(values_read_at_once(Opportunity.objects.order_by(), field, flat=True)) == sorted(
        Opportunity.objects.values_list(field, flat=True))


def test_a_sliced_and_filtered_result_read_at_once_keeps_its_slice(mirrored) -> None:
    queryset = Opportunity.objects.filter(pk__gt=Opportunity.objects.order_by("pk").first().pk).order_by("pk")

    assert sorted(values_read_at_once(queryset[:2], "pk")) == list(queryset.values_list("pk")[:2])
    assert values_read_at_once(Opportunity.objects.filter(epilot_id="none such"), "pk", "epilot_id") == []


def test_booleans_read_at_once_are_what_values_list_reads(mirrored) -> None:
    first, last = AusbauProject.objects.order_by("pk")[0], AusbauProject.objects.order_by("-pk")[0]
    AusbauProject.objects.filter(pk=first.pk).update(has_running_workflow=True)
    AusbauProject.objects.filter(pk=last.pk).update(has_running_workflow=False)
    expected = sorted(AusbauProject.objects.values_list("pk", "has_running_workflow", "phase"))

    read = sorted(values_read_at_once(AusbauProject.objects.order_by(), "pk", "has_running_workflow", "phase"))
    assert read == expected
    assert {type(running) for _pk, running, _phase in read} == {bool}


def test_reading_a_field_of_another_type_at_once_is_refused() -> None:
    with pytest.raises(TypeError, match="day"):
        values_read_at_once(AreaSnapshot.objects.all(), "pk", "day")


AWKWARD_IDS = ['quote"d', "back\\slash", "{braced,comma}", "it's", "Straße ü", "", "NULL", "  spaced  "]


def test_a_column_among_values_matches_exactly_those_values() -> None:
    opportunities = [Opportunity.objects.create(epilot_id=epilot_id, title=epilot_id, payload={}, synced_at=timezone.now())
                     for epilot_id in [*AWKWARD_IDS, "not-asked-for"]]
    pks = [opportunity.pk for opportunity in opportunities[:3]]

    assert sorted(Opportunity.objects.filter(column_in(Opportunity, "epilot_id", AWKWARD_IDS)).values_list(
        "epilot_id", flat=True)) == sorted(AWKWARD_IDS)
    assert sorted(Opportunity.objects.filter(column_in(Opportunity, "id", pks)).values_list("pk", flat=True)) == sorted(pks)
    assert not Opportunity.objects.filter(column_in(Opportunity, "epilot_id", [])).exists()
    assert not Opportunity.objects.filter(column_in(Opportunity, "id", [])).exists()


def test_entities_no_longer_seen_are_marked_purged_chunk_by_chunk(mirrored) -> None:
    contacts = list(Contact.objects.order_by("pk").values_list("epilot_id", flat=True))
    kept = set(contacts[::3])

    now = timezone.now()
    assert sorted(mark_purged("contact", kept, pass_started=now, chunk=2)) == sorted(set(contacts) - kept)
    assert set(Contact.objects.filter(epilot_deleted_at__isnull=True).values_list("epilot_id", flat=True)) == kept
    assert mark_purged("contact", kept, pass_started=now, chunk=2) == []


def test_a_full_pass_never_marks_deleted_what_a_webhook_brought_in_meanwhile(mirrored, epilot) -> None:
    from projects.mirror.intake import mirror_entities
    from projects.models import SyncRun
    from projects.services.sync import sync_run

    brought_in = []

    def after_each_page(progress) -> None:
        if progress.schema == "contact" and progress.total is not None and progress.entities >= progress.total \
                and not brought_in:
            # Created after the pass paged past it: not among its pages, mirrored by a webhook meanwhile.
            created = epilot.create_entity("contact", {"_title": "Neu während des Laufs", "first_name": "Neu"})
            mirror_entities(refs=[("contact", created.id)], client=epilot)
            brought_in.append(created.id)

    run = sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, full=True, on_progress=after_each_page)
    assert run.status == SyncRun.Status.SUCCEEDED and brought_in
    assert Contact.objects.get(epilot_id=brought_in[0]).epilot_deleted_at is None


class ScriptedClocks:
    """Wall and CPU clocks for a gate: each read takes `wall` seconds of which `cpu` on the processor."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall, self.cpu = wall, cpu
        self.wall_now = self.cpu_now = 0.0
        self.ticks = 0

    def clock(self) -> float:
        self.ticks += 1
        if self.ticks % 2 == 0:  # every second reading ends a read
            self.wall_now += self.wall
        return self.wall_now

    def cpu_clock(self) -> float:
        if self.ticks % 2 == 0:
            self.cpu_now += self.cpu
        return self.cpu_now


def read(gate: ReadGate, times: int) -> None:
    for _ in range(times):
        with gate.slot():
            pass


@pytest.mark.parametrize(("wall", "cpu", "limit"), [
    (0.002, 0.001, 1),   # epilot on loopback: reading is mostly CPU time, one reader at a time
    (0.010, 0.001, 5),   # half the time of ten readers' worth
    (0.100, 0.001, 16),  # a distant epilot: as many as allowed
])
def test_the_gate_lets_as_many_read_at_once_as_the_answer_time_needs(wall, cpu, limit) -> None:
    clocks = ScriptedClocks(wall, cpu)
    gate = ReadGate(most=16, clock=clocks.clock, cpu_clock=clocks.cpu_clock)

    read(gate, 3)

    assert gate.limit == limit


def test_the_gate_counts_the_shortest_recent_read_as_the_answer_time() -> None:
    clocks = ScriptedClocks(0.002, 0.001)
    gate = ReadGate(most=16, clock=clocks.clock, cpu_clock=clocks.cpu_clock)
    read(gate, 1)
    clocks.wall = 0.100  # slowed by waits for the GIL, not by epilot

    read(gate, ReadGate.WINDOW - 1)
    assert gate.limit == 1
    read(gate, 1)  # the fast read has left the window: epilot itself is slower now
    assert gate.limit == 16


def test_no_more_threads_read_at_once_than_the_gate_allows() -> None:
    gate = ReadGate(most=2, start=2)
    inside, most_inside, lock = [0], [0], threading.Lock()

    def reader() -> None:
        with gate.slot():
            with lock:
                inside[0] += 1
                most_inside[0] = max(most_inside[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert 1 <= most_inside[0] <= 2


def test_a_closed_gate_turns_waiting_readers_away() -> None:
    gate = ReadGate(most=1, start=1)
    outcome: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate.slot():
            holding.set()
            release.wait(timeout=10)

    def waiter() -> None:
        try:
            with gate.slot():
                outcome.append("read")
        except GateClosed:
            outcome.append("turned away")

    first = threading.Thread(target=holder)
    first.start()
    assert holding.wait(timeout=10)
    second = threading.Thread(target=waiter)
    second.start()
    time.sleep(0.05)
    gate.close()
    second.join(timeout=10)
    release.set()
    first.join(timeout=10)

    assert outcome == ["turned away"]
