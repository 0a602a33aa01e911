"""`manage.py demo_story`: play the Wülfrath story into the sandbox through the back-office's own services.

After it every dashboard card and list has something to show: projects in every phase, running
"Ausbau Glasfaser" workflows in different sections with assigned and overdue steps, a V2 flow, a
converted opportunity with its order, a quarantined entity, a sync history and an audit trail.
Only against a sandbox; a second run changes nothing.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.utils import timezone

from integrations.connection import connection_info, get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, HAUSANSCHLUSS_TEMPLATE_ID, demo_id
from integrations.epilot_sandbox.build_site import area_rows
from projects.models import (
    AreaSnapshot,
    Opportunity,
    RolloutArea,
    StaffProfile,
    SyncRun,
    WorkflowDefinition,
    WorkflowExecution,
    WorkflowStart,
)
from projects.services.areas import area_addresses_import, areas_refresh
from projects.services.campaign import area_terms_change, public_gauge_enable
from projects.services.conversion import opportunity_convert
from projects.services.funnel import milestone_rules_replace, snapshots_backfill
from projects.services.promises import promises_nightly
from projects.services.steps import ASSIGN, COMPLETE, SET_DUE, StepChange, step_change
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start

ACTOR = "demo"
HISTORY_DAYS = 56
# The sandbox's epilot users the demo assigns steps to, as colleagues with a staff profile (they cannot log in).
COLLEAGUES = {"u-tiefbau": ("tkraemer", "Tobias", "Krämer"), "u-planung": ("plange", "Petra", "Lange"),
              "u-montage": ("mdemir", "Murat", "Demir")}
# The sandbox's definitions mark the milestones of the build: these are the funnel's defaults in the demo.
SANDBOX_MILESTONES = [
    {"key": "passed", "definition": AUSBAU_DEFINITION_ID, "step": "Tiefbau durchführen"},
    {"key": "connected", "definition": AUSBAU_DEFINITION_ID, "step": "Hausanschluss setzen"},
    {"key": "connected", "definition": HAUSANSCHLUSS_TEMPLATE_ID, "step": "Glasfaser-Modem montieren"},
    {"key": "activated", "definition": HAUSANSCHLUSS_TEMPLATE_ID, "step": "Anschluss aktivieren"},
]


class Command(BaseCommand):
    help = "Play the Wülfrath demo story into the sandbox (workflows, tasks, a conversion, a quarantined entity)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not connection_info().is_sandbox:
            self.stdout.write("demo_story writes to epilot; it plays only against a sandbox, so nothing was done.")
            return
        if WorkflowStart.objects.filter(actor=ACTOR).exists():
            self.stdout.write("The demo story was played already.")
            return
        client = get_epilot_client()
        client.create_entity("order", {"_title": "Import: Auftrag ohne Betrag", "status": "draft", "amount_total": "viel",
                                       "currency": "EUR"})  # amount_total is text: the sync quarantines it with the reason
        sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
        ausbau = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID, engine="v1")
        hausanschluss = WorkflowDefinition.objects.get(epilot_id=HAUSANSCHLUSS_TEMPLATE_ID, engine="v2")
        now = timezone.now()
        self._colleagues()

        rohdenhaus = self._start(ausbau, "rohdenhaus")
        self._complete(rohdenhaus, 0, 1)  # Planung done: the project is under construction, in Tiefbau
        self._assign(rohdenhaus, 2, "u-tiefbau", due=now - dt.timedelta(days=3))  # overdue
        self._assign(rohdenhaus, 3, "u-tiefbau", due=now + dt.timedelta(days=5))
        duessel = self._start(ausbau, "duessel")
        self._assign(duessel, 0, "u-planung", due=now + dt.timedelta(days=1))
        nordstrasse = self._start(hausanschluss, "nordstrasse")
        self._assign(nordstrasse, 0, "u-montage", due=now - dt.timedelta(days=1))  # overdue
        tiefenbach = Opportunity.objects.get(epilot_id=demo_id("opportunity:tiefenbach"))
        opportunity_convert(opportunity=tiefenbach, definition=ausbau, actor=ACTOR, client=client)
        sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
        self._areas(now)
        self.stdout.write(self.style.SUCCESS(
            "Demo story: 3 workflows started and worked, Tiefenbach converted into an order, one order quarantined, "
            "three rollout areas, Flandersbach mid-build."))

    def _areas(self, now: dt.datetime) -> None:
        """Three areas of Wülfrath: Rohdenhaus over its quota and building, Düssel short of it with the deadline close,
        Flandersbach mid-build (buildings at every stage, some stuck); the funnel's milestones for the sandbox."""
        rows = [("Rohdenhaus", "Rohdenhauser Straße", "40", 6), ("Rohdenhaus", "Fliethe", "20", 24),
                ("Rohdenhaus", "Flehenberger Weg", "7", 8), ("Rohdenhaus", "Tiefenbacher Weg", "15", 4),
                ("Rohdenhaus", "Rohdenhauser Straße", "38", 3), ("Rohdenhaus", "Rohdenhauser Straße", "42", 5),
                ("Rohdenhaus", "Am Angerbach", "1", 2)]
        rows += [("Düssel Ortskern", "Dorfstraße", str(number), units) for number, units in
                 ((1, 2), (3, 6), (5, 4), (7, 8), (9, 3), (11, 2), (13, 5))]
        rows += [("Düssel Ortskern", "Nordstraße", "12", 4), ("Düssel Ortskern", "Kalkstraße", "58", 6)]
        listed = [{"area": area, "postal_code": "42489", "street": street, "house_number": number, "units": str(units)}
                  for area, street, number, units in rows]
        listed += area_rows()  # Flandersbach, mid-build (seed_sandbox wrote its history), with surveyed coordinates
        area_addresses_import(list(enumerate(listed, start=2)))
        RolloutArea.objects.filter(name="Rohdenhaus").update(quota_percent=35,
                                                             deadline=timezone.localdate(now) - dt.timedelta(days=30))
        RolloutArea.objects.filter(name="Düssel Ortskern").update(quota_percent=40,
                                                                  deadline=timezone.localdate(now) + dt.timedelta(days=12))
        milestone_rules_replace(SANDBOX_MILESTONES, actor=ACTOR)
        areas_refresh()
        self._campaigns(now)
        snapshots_backfill(HISTORY_DAYS, now=now)  # eight weeks of each area's way, from its buildings' milestone dates
        promises_nightly(now=now)  # the forecasts from Flandersbach's finished buildings, every promise's state

    def _campaigns(self, now: dt.datetime) -> None:
        """Two pre-marketing campaigns: Rohdenhaus reached its quota (its daily history, on which the forecast's error
        is measured), Düssel runs with its deadline close, nothing signed yet, and a public gauge."""
        today = timezone.localdate(now)
        rohdenhaus = RolloutArea.objects.get(name="Rohdenhaus")
        days = 70
        AreaSnapshot.objects.bulk_create([
            AreaSnapshot(area=rohdenhaus, day=today - dt.timedelta(days=days - index),
                         units_signed=min(rohdenhaus.units_signed, round(rohdenhaus.units_signed * index / (days - 10))))
            for index in range(days)], ignore_conflicts=True)
        area_terms_change(rohdenhaus, campaign_start=today - dt.timedelta(days=days))
        dussel = RolloutArea.objects.get(name="Düssel Ortskern")
        area_terms_change(dussel, campaign_start=today - dt.timedelta(days=30))
        public_gauge_enable(dussel)

    def _colleagues(self) -> None:
        for epilot_user_id, (username, first, last) in COLLEAGUES.items():
            user, created = User.objects.get_or_create(username=username, defaults={
                "first_name": first, "last_name": last, "is_staff": True})
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            StaffProfile.objects.get_or_create(user=user, defaults={"epilot_user_id": epilot_user_id, "task_digest": False})

    def _start(self, definition: WorkflowDefinition, key: str) -> WorkflowExecution:
        opportunity = Opportunity.objects.get(epilot_id=demo_id(f"opportunity:{key}"))
        start = workflow_start(definition=definition, schema="opportunity", entity_id=opportunity.epilot_id,
                               entity_title=opportunity.title, actor=ACTOR)
        return WorkflowExecution.objects.get(epilot_id=start.execution_epilot_id)

    def _step_id(self, execution: WorkflowExecution, position: int) -> str:
        return execution.steps.order_by("position")[position].epilot_id

    def _complete(self, execution: WorkflowExecution, *positions: int) -> None:
        for position in positions:
            step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=self._step_id(execution, position),
                        change=StepChange(COMPLETE), actor=ACTOR)

    def _assign(self, execution: WorkflowExecution, position: int, user: str, *, due: dt.datetime) -> None:
        step_id = self._step_id(execution, position)
        step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step_id,
                    change=StepChange(ASSIGN, assignees=(user,)), actor=ACTOR)
        step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step_id, change=StepChange(SET_DUE, due_date=due),
                    actor=ACTOR)
