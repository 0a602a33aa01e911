"""`make run`'s demo tells the story: every phase, running workflows in several sections, tasks, a conversion, quarantine."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from projects.models import (
    AusbauProject,
    Conversion,
    EpilotWrite,
    QuarantinedEntity,
    RolloutArea,
    SyncRun,
    WorkflowExecution,
)
from projects.selectors import task_counts
from projects.services.campaign import forecast_error_days
from projects.services.funnel import area_funnel

pytestmark = pytest.mark.django_db


def test_the_demo_story_fills_every_card_and_list(admin_client) -> None:
    call_command("seed_sandbox", stdout=StringIO())
    call_command("demo_story", stdout=StringIO())
    call_command("demo_story", stdout=StringIO())  # a second run changes nothing

    phases = set(AusbauProject.objects.values_list("phase", flat=True))
    assert {"planning", "approved", "construction", "completed", "cancelled"} <= phases
    running = WorkflowExecution.objects.filter(status="STARTED")
    assert running.count() >= 3 and len(set(running.values_list("current_section", flat=True))) >= 2
    counts = task_counts()
    assert counts.overdue >= 2 and counts.open > counts.unassigned
    assert Conversion.objects.filter(status=Conversion.Status.DONE).count() == 1
    assert QuarantinedEntity.objects.filter(reason__contains="amount_total").exists()
    assert SyncRun.objects.filter(status=SyncRun.Status.SUCCEEDED).count() == 2
    assert EpilotWrite.objects.filter(actor="demo").count() >= 10

    # Flandersbach is mid-build: buildings at every stage, some stuck, on the map with epilot's coordinates.
    flandersbach = RolloutArea.objects.get(name="Flandersbach")
    assert set(flandersbach.addresses.values_list("stage", flat=True)) == {"in_scope", "signed", "passed", "connected",
                                                                           "activated"}
    funnel = area_funnel(flandersbach.pk)
    assert all(count > 0 for count in funnel.stuck.values()), funnel.stuck
    assert not flandersbach.addresses.exclude(stage="in_scope").filter(latitude__isnull=True).exists()

    # Pre-marketing: Rohdenhaus's finished campaign measures the forecast; Düssel runs with a public gauge.
    assert [area.name for area, _days in forecast_error_days()] == ["Rohdenhaus"]
    dussel = RolloutArea.objects.get(name="Düssel Ortskern")
    assert dussel.campaign_start is not None and dussel.public_token
    assert admin_client.get(f"/public/areas/{dussel.public_token}/gauge.json").json()["units_signed"] == 0

    rohdenhaus = RolloutArea.objects.get(name="Rohdenhaus")
    assert rohdenhaus.units_signed > 0 and RolloutArea.objects.get(name="Düssel Ortskern").units_signed == 0
    page = admin_client.get(f"/admin/projects/rolloutarea/{rohdenhaus.pk}/change/").content.decode()
    assert 'id="section-board"' in page and "Tiefbau" in page
    assert 'id="area-rows"' in admin_client.get("/admin/").content.decode()
    inbox = admin_client.get(f"/admin/projects/mirroredstep/?area={rohdenhaus.pk}")
    steps = inbox.context["cl"].result_list
    assert steps and {step.execution.entity_epilot_id for step in steps} <= {
        execution.entity_epilot_id for execution in WorkflowExecution.objects.filter(name="Ausbau Glasfaser")}
    assert all(step.section for step in steps)
    dussel = RolloutArea.objects.get(name="Düssel Ortskern")
    names = {step.execution.entity_epilot_id for step in
             admin_client.get(f"/admin/projects/mirroredstep/?area={dussel.pk}").context["cl"].result_list}
    assert names and names.isdisjoint({step.execution.entity_epilot_id for step in steps})

    # Eight weeks of history: each area's chart has a point a day, Flandersbach's funnel growing as its buildings did.
    for area in RolloutArea.objects.all():
        assert area.snapshots.count() >= 56, area.name
    days = list(flandersbach.snapshots.order_by("day"))
    connected = [snapshot.funnel["connected"][0] for snapshot in days]
    assert connected == sorted(connected) and connected[0] < connected[-1]
    assert days[-1].funnel["connected"][0] == next(s["buildings"] for s in area_funnel(flandersbach.pk).stages
                                                   if s["key"] == "connected")
    # The colleagues the demo assigns to have names.
    assert "Tobias Krämer" in admin_client.get("/admin/projects/mirroredstep/?state=all").content.decode()
    # Promises: Flandersbach's orders carry promised dates; kept, breached, at risk and open ones, with forecasts.
    from projects.models import ForecastCurve, Promise

    states = set(Promise.objects.values_list("state", flat=True))
    assert {"kept", "breached", "at_risk", "open"} <= states, states
    assert Promise.objects.exclude(state="kept").exclude(forecast_p50=None).exists()
    assert ForecastCurve.objects.filter(area=None, start="signed", target="connected").get().p90_held is not None
