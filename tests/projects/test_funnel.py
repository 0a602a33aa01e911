"""The funnel: milestone rules (V1, V2, several per milestone), buildings kept current by the change event, stuck
lists, the API contract and the admin's pages; everything through the back-office's services and the sandbox."""
from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, HAUSANSCHLUSS_TEMPLATE_ID, demo_id
from integrations.epilot_sandbox.store import SandboxStore
from projects.models import AreaAddress, AreaSnapshot, RolloutArea, SyncRun, WorkflowDefinition, WorkflowExecution
from projects.services.api_clients import api_client_create
from projects.services.areas import area_addresses_import, areas_snapshot
from projects.services.funnel import RulesRejected, area_funnel, milestone_rules_replace, rule_preview
from projects.services.milestones import Rule
from projects.services.steps import COMPLETE, StepChange, step_change
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db

PASSED = {"key": "passed", "definition": AUSBAU_DEFINITION_ID, "step": "Tiefbau durchführen"}
CONNECTED_V1 = {"key": "connected", "definition": AUSBAU_DEFINITION_ID, "step": "Hausanschluss setzen"}
CONNECTED_V2 = {"key": "connected", "definition": HAUSANSCHLUSS_TEMPLATE_ID, "step": "Glasfaser-Modem montieren"}
ACTIVATED = {"key": "activated", "definition": HAUSANSCHLUSS_TEMPLATE_ID, "step": "Anschluss aktivieren"}
RULES = [PASSED, CONNECTED_V1, CONNECTED_V2, ACTIVATED]
# Demo opportunities (seed): rohdenhaus Rohdenhauser Straße 40 (no order), flehenberg Flehenberger Weg 7 (order
# completed), schulzentrum Fliethe 20 (order placed), nordstrasse Nordstraße 12 (no order).
ROWS = [("Rohdenhauser Straße", "40", 6), ("Flehenberger Weg", "7", 4), ("Fliethe", "20", 10), ("Nordstraße", "12", 2),
        ("Dorfstraße", "3", 8)]


@pytest.fixture
def area() -> RolloutArea:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=get_epilot_client())
    area_addresses_import([(line, {"area": "Rohdenhaus", "postal_code": "42489", "street": street, "house_number": number,
                                   "units": str(units)}) for line, (street, number, units) in enumerate(ROWS, start=2)])
    return RolloutArea.objects.get(name="Rohdenhaus")


def building(street: str) -> AreaAddress:
    return AreaAddress.objects.get(street=street)


def start(engine: str, schema: str, entity_id: str) -> WorkflowExecution:
    definition = WorkflowDefinition.objects.get(
        epilot_id=AUSBAU_DEFINITION_ID if engine == "v1" else HAUSANSCHLUSS_TEMPLATE_ID, engine=engine)
    begun = workflow_start(definition=definition, schema=schema, entity_id=entity_id, actor="test")
    return WorkflowExecution.objects.get(epilot_id=begun.execution_epilot_id)


def complete_through(execution: WorkflowExecution, step_name: str) -> None:
    """Complete the execution's steps in order up to and including `step_name`, as a field crew would."""
    for step in execution.steps.order_by("position"):
        step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id, change=StepChange(COMPLETE),
                    actor="test")
        if step.name == step_name:
            return
    raise AssertionError(f"no step {step_name}")


def stages() -> dict[str, str]:
    return dict(AreaAddress.objects.values_list("street", "stage"))


def test_a_v1_step_marks_passed_with_epilots_completion_time(area) -> None:
    milestone_rules_replace([PASSED], actor="test")
    execution = start("v1", "opportunity", demo_id("opportunity:rohdenhaus"))
    complete_through(execution, "Tiefbau beauftragen")
    assert building("Rohdenhauser Straße").passed_at is None  # the change event recomputed it: not yet
    complete_through(WorkflowExecution.objects.get(pk=execution.pk), "Tiefbau durchführen")
    passed = building("Rohdenhauser Straße")
    step = execution.steps.get(name="Tiefbau durchführen")
    assert passed.stage == "passed" and passed.passed_at == step.completed_at is not None
    assert passed.waiting_on == "Hausanschluss setzen"  # the workflow's current step
    assert stages()["Flehenberger Weg"] == "signed" and stages()["Dorfstraße"] == "in_scope"


def test_the_date_is_epilots_even_when_the_mirror_learns_it_late(area) -> None:
    milestone_rules_replace([PASSED], actor="test")
    execution = start("v1", "opportunity", demo_id("opportunity:rohdenhaus"))
    # A crew completed the steps in epilot (weeks ago, as epilot's record says); the mirror hears of it only now.
    client = get_epilot_client()
    for step in execution.steps.order_by("position")[:4]:
        client.update_step(execution.epilot_id, step.epilot_id, {"status": "COMPLETED"})
    store = SandboxStore(settings.EPILOT_SANDBOX_DB)
    document = store.get_document("execution", execution.epilot_id)
    for section in document["flow"]:
        for step in section.get("steps", []):
            if step["name"] == "Tiefbau durchführen":
                step["completedTime"] = "2026-09-01T08:30:00.000Z"
    with store.write() as conn:
        store.put_document(conn, "execution", execution.epilot_id, document)
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
    assert building("Rohdenhauser Straße").passed_at == dt.datetime(2026, 9, 1, 8, 30, tzinfo=dt.UTC)


def test_a_v2_task_on_an_order_named_only_by_its_opportunitys_items_marks_activated(area) -> None:
    milestone_rules_replace([ACTIVATED], actor="test")
    client = get_epilot_client()
    # An order with no `opportunity` relation of its own: only the opportunity's items name it.
    order = client.create_entity("order", {"_title": "Hausanschluss Nordstraße 12", "status": "placed", "currency": "EUR"})
    client.patch_entity("opportunity", demo_id("opportunity:nordstrasse"),
                        {"items": {"$relation": [{"entity_id": order.id}]}})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
    assert stages()["Nordstraße"] == "signed"
    execution = start("v2", "order", order.id)
    complete_through(execution, "Anschluss aktivieren")
    activated = building("Nordstraße")
    assert activated.stage == "activated" and activated.activated_at is not None and activated.waiting_on == ""
    assert activated.passed_at is None  # no rule marked passed: the stage is the furthest milestone reached


def test_any_of_several_rules_reaches_a_milestone(area) -> None:
    milestone_rules_replace([CONNECTED_V1, CONNECTED_V2], actor="test")
    v2 = start("v2", "opportunity", demo_id("opportunity:flehenberg"))
    complete_through(v2, "Glasfaser-Modem montieren")
    v1 = start("v1", "opportunity", demo_id("opportunity:schulzentrum"))
    complete_through(v1, "Hausanschluss setzen")
    assert stages()["Flehenberger Weg"] == "connected" and stages()["Fliethe"] == "connected"
    assert stages()["Rohdenhauser Straße"] == "in_scope"
    # The area's units connected follow the milestone once a rule marks it (4 + 10 units), not completed projects.
    assert RolloutArea.objects.get(pk=area.pk).units_connected == 14


def test_a_building_with_two_opportunities(area) -> None:
    milestone_rules_replace([PASSED], actor="test")
    client = get_epilot_client()
    second = client.create_entity("opportunity", {
        "_title": "Zweite Wohnung Flehenberger Weg 7", "status": "ausstehend",
        "address": {"street": "Flehenberger Weg", "street_number": "7", "postal_code": "42489", "city": "Wülfrath",
                    "coordinates": {"lat": 51.2861, "lng": 7.0412}}})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
    complete_through(start("v1", "opportunity", second.id), "Tiefbau durchführen")
    both = building("Flehenberger Weg")
    # Signed through the first opportunity's order, passed through the second's workflow, placed where the first
    # opportunity's address says.
    assert both.signed and both.stage == "passed" and (both.latitude, both.longitude) == (51.2895, 7.0518)
    funnel = area_funnel(area.pk)
    assert [(s["key"], s["buildings"], s["units"]) for s in funnel.stages] == [
        ("in_scope", 5, 30), ("signed", 2, 14), ("passed", 1, 4), ("connected", 0, 0), ("activated", 0, 0)]
    assert funnel.stages[1]["conversion_percent"] == 40.0


def test_a_rule_change_recomputes_every_building(area) -> None:
    complete_through(start("v1", "opportunity", demo_id("opportunity:rohdenhaus")), "Hausanschluss setzen")
    assert stages()["Rohdenhauser Straße"] == "in_scope"  # no rules yet: nothing marks a milestone
    milestone_rules_replace([PASSED, CONNECTED_V1], actor="test")
    assert stages()["Rohdenhauser Straße"] == "connected"
    milestone_rules_replace([{**PASSED, "definition": ""}], actor="test")  # no definition: any workflow's step
    assert stages()["Rohdenhauser Straße"] == "passed"
    milestone_rules_replace([{**PASSED, "definition": "another-definition"}], actor="test")
    assert stages()["Rohdenhauser Straße"] == "in_scope"


def test_rules_are_checked_whole(area) -> None:
    milestone_rules_replace([PASSED], actor="test")
    with pytest.raises(RulesRejected) as refused:
        milestone_rules_replace([CONNECTED_V1, {"key": "built", "step": ""}], stuck_days={"signed_not_passed": 0},
                                actor="test")
    assert len(refused.value.errors) == 2 and "Regel 2" in refused.value.errors[0]  # German, the staff's language
    from projects.services.milestones import milestone_rules
    assert milestone_rules() == [Rule("passed", AUSBAU_DEFINITION_ID, "Tiefbau durchführen")]  # nothing changed


def test_stuck_lists_count_from_the_milestone(area) -> None:
    milestone_rules_replace([PASSED, CONNECTED_V1, ACTIVATED], actor="test")
    complete_through(start("v1", "opportunity", demo_id("opportunity:flehenberg")), "Hausanschluss setzen")
    now = timezone.now()
    assert area_funnel(area.pk, now=now).stuck["connected_not_activated"] == 0
    later = area_funnel(area.pk, now=now + dt.timedelta(days=15))
    assert later.stuck["connected_not_activated"] == 1 and later.stuck_after_days["connected_not_activated"] == 14
    # Fliethe is signed (its order's creation in epilot) and nothing was built: stuck once 90 days passed.
    signed = building("Fliethe").signed_at
    assert area_funnel(area.pk, now=signed + dt.timedelta(days=89)).stuck["signed_not_passed"] == 0
    assert area_funnel(area.pk, now=signed + dt.timedelta(days=91)).stuck["signed_not_passed"] == 1
    milestone_rules_replace([PASSED, CONNECTED_V1, ACTIVATED], stuck_days={"connected_not_activated": 30}, actor="test")
    assert area_funnel(area.pk, now=now + dt.timedelta(days=15)).stuck["connected_not_activated"] == 0


def test_one_change_touches_only_its_building(area) -> None:
    milestone_rules_replace(RULES, actor="test")
    execution = start("v1", "opportunity", demo_id("opportunity:rohdenhaus"))
    with CaptureQueriesContext(connection) as queries:
        complete_through(execution, "Trassenplanung erstellen")
    reads = [q["sql"] for q in queries.captured_queries
             if "projects_areaaddress" in q["sql"] and q["sql"].lstrip().upper().startswith("SELECT")]
    # The buildings are read by their address keys or their area, never all of them.
    assert reads and all("WHERE" in sql for sql in reads)


def test_a_preview_counts_the_buildings_a_rule_marks(area) -> None:
    complete_through(start("v1", "opportunity", demo_id("opportunity:rohdenhaus")), "Tiefbau durchführen")
    assert rule_preview(Rule("passed", AUSBAU_DEFINITION_ID, "Tiefbau durchführen")) == 1
    assert rule_preview(Rule("passed", "", "Tiefbau durchführen")) == 1
    assert rule_preview(Rule("passed", AUSBAU_DEFINITION_ID, "Abnahme und Messprotokoll")) == 0


def test_the_days_snapshot_keeps_the_funnel(area) -> None:
    milestone_rules_replace([PASSED], actor="test")
    complete_through(start("v1", "opportunity", demo_id("opportunity:rohdenhaus")), "Tiefbau durchführen")
    snapshot = AreaSnapshot.objects.get(area=area, day=timezone.localdate())
    assert snapshot.funnel["passed"] == [1, 6] and snapshot.funnel["in_scope"] == [5, 30]


def test_the_daily_snapshot_keeps_a_point_without_changes(area) -> None:
    AreaSnapshot.objects.all().delete()
    assert areas_snapshot() == 1
    assert AreaSnapshot.objects.get(area=area, day=timezone.localdate()).funnel["signed"] == [2, 14]


def test_coordinates_and_an_outline_come_with_the_import() -> None:
    outline = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"area": "Rohdenhaus"},
               "geometry": {"type": "Polygon", "coordinates": [[[7.0, 51.2], [7.1, 51.2], [7.1, 51.3], [7.0, 51.2]]]}}]}
    area_addresses_import([(2, {"area": "Rohdenhaus", "postal_code": "42489", "street": "Fliethe", "house_number": "20",
                                "units": "3", "lat": "51,2801", "lon": "7.0433"})],
                          outline=json.dumps(outline).encode())
    imported = AreaAddress.objects.get()
    assert (imported.latitude, imported.longitude, imported.located_by_import) == (51.2801, 7.0433, True)
    assert RolloutArea.objects.get().outline["type"] == "Polygon"
    from projects.services.areas import ImportRejected
    with pytest.raises(ImportRejected, match="lat und lon"):
        area_addresses_import([(2, {"area": "X", "postal_code": "42489", "street": "A", "house_number": "1", "units": "1",
                                    "lat": "91", "lon": "7"})])
    with pytest.raises(ImportRejected, match="Elsewhere"):
        area_addresses_import([(2, {"area": "X", "postal_code": "42489", "street": "A", "house_number": "1", "units": "1"})],
                              outline=json.dumps({**outline, "features": [{**outline["features"][0],
                                                                          "properties": {"area": "Elsewhere"}}]}).encode())


# --- API ---------------------------------------------------------------------------------------------------------------

def api(*scopes: str) -> APIClient:
    _client, token = api_client_create(name="-".join(scopes) or "none", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_the_api_contract(area) -> None:
    configure, reader, areas = api("configuration"), api("read"), api("areas")
    url = "/api/v1/funnel/milestones/"
    assert reader.put(url, {"milestones": [PASSED]}, format="json").status_code == 403
    bad = configure.put(url, {"milestones": [{"key": "built", "step": "x"}]}, format="json")
    assert bad.status_code == 400 and "milestones" in bad.json()["error"]["fields"]
    done = configure.put(url, {"milestones": [PASSED, ACTIVATED], "stuck_after_days": {"signed_not_passed": 30}},
                         format="json")
    assert done.status_code == 200, done.content
    assert reader.get(url).json() == done.json() == {
        "milestones": [{"key": "activated", "definition": HAUSANSCHLUSS_TEMPLATE_ID, "step": "Anschluss aktivieren"},
                       {"key": "passed", "definition": AUSBAU_DEFINITION_ID, "step": "Tiefbau durchführen"}],
        "stuck_after_days": {"signed_not_passed": 30, "passed_not_connected": 60, "connected_not_activated": 14}}
    complete_through(start("v1", "opportunity", demo_id("opportunity:rohdenhaus")), "Tiefbau durchführen")

    funnel = reader.get(f"/api/v1/areas/{area.pk}/funnel/").json()
    assert [(s["key"], s["buildings"], s["units"]) for s in funnel["stages"]] == [
        ("in_scope", 5, 30), ("signed", 2, 14), ("passed", 1, 6), ("connected", 0, 0), ("activated", 0, 0)]
    assert set(funnel["stuck"]) == {"signed_not_passed", "passed_not_connected", "connected_not_activated"}
    assert reader.get("/api/v1/funnel/").json()["stages"] == funnel["stages"]
    assert reader.get("/api/v1/areas/999999/funnel/").status_code == 404

    assert reader.get(f"/api/v1/areas/{area.pk}/buildings/").status_code == 403  # addresses need the areas scope
    page = areas.get(f"/api/v1/areas/{area.pk}/buildings/?stage=passed").json()
    assert [(b["street"], b["stage"], b["waiting_on"], b["stuck"]) for b in page["results"]] == [
        ("Rohdenhauser Straße", "passed", "Hausanschluss setzen", False)]
    assert page["results"][0]["passed_at"] is not None and "next" in page
    signed_long_ago = {b.street for b in AreaAddress.objects.filter(stage="signed")
                       if b.signed_at < timezone.now() - dt.timedelta(days=30)}
    assert signed_long_ago  # the demo's orders were created in epilot long ago
    stuck = areas.get(f"/api/v1/areas/{area.pk}/buildings/?stage=signed&stuck=true").json()["results"]
    assert {b["street"] for b in stuck} == signed_long_ago and all(b["stuck"] for b in stuck)
    assert areas.get(f"/api/v1/areas/{area.pk}/buildings/?stage=built").status_code == 400
    assert areas.get(f"/api/v1/areas/{area.pk}/buildings/?stuck=yes").status_code == 400
    first = areas.get(f"/api/v1/areas/{area.pk}/buildings/?page_size=2").json()
    rest = areas.get(first["next"]).json()
    assert len(first["results"]) == 2 and {b["id"] for b in first["results"]}.isdisjoint(b["id"] for b in rest["results"])
    csv = areas.get(f"/api/v1/areas/{area.pk}/buildings/?format=csv")
    assert csv["Content-Type"].startswith("text/csv") and csv.content.decode().splitlines()[0].startswith("id,postal_code")
    assert len(csv.content.decode().splitlines()) == 6


# --- admin -------------------------------------------------------------------------------------------------------------

def staff(group: str) -> User:
    call_command("migrate", verbosity=0, stdout=StringIO())
    user = User.objects.create_user(f"{group.lower()}-user", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_the_area_page_shows_the_funnel_and_a_map_served_by_us(area, client) -> None:
    milestone_rules_replace([PASSED], actor="test")
    complete_through(start("v1", "opportunity", demo_id("opportunity:rohdenhaus")), "Tiefbau durchführen")
    client.force_login(staff("Viewer"))
    page = client.get(reverse("admin:projects_rolloutarea_change", args=[area.pk]))
    text = page.content.decode()
    assert page.status_code == 200 and 'id="area-funnel"' in text and 'id="area-map"' in text
    assert "/static/leaflet/leaflet.js" in text and "https://" not in text.split('id="area-map"')[1].split("</script>")[0]
    points = client.get(reverse("admin:projects_rolloutarea_buildings_geojson", args=[area.pk])).json()
    located = {f["properties"]["label"].split(" · ")[0]: (f["properties"]["stage"], f["geometry"]["coordinates"])
               for f in points["features"]}
    # epilot's coordinates of the demo's addresses ("lat,lng" text); Dorfstraße 3's opportunity lies elsewhere.
    assert located["Rohdenhauser Straße 40"] == ("passed", [7.0556, 51.2758]) and len(located) == 5
    assert points["unlocated"] == [] and points["outline"]["type"] == "Polygon"  # the hull of the five points
    stuck = client.get(reverse("admin:projects_rolloutarea_stuck", args=[area.pk, "csv"]))
    assert stuck.status_code == 200 and stuck.content.decode().splitlines()[0].startswith("stuck,")


def test_a_viewer_sees_the_rules_but_changes_nothing(area, client) -> None:
    client.force_login(staff("Viewer"))
    assert client.get(reverse("admin:projects_milestonerule_changelist")).status_code == 200
    response = client.post(reverse("admin:projects_milestonerule_add"),
                           {"milestone": "passed", "definition": "", "step": "Tiefbau durchführen"})
    assert response.status_code == 403
    client.force_login(staff("Backoffice"))
    response = client.post(reverse("admin:projects_milestonerule_add"),
                           {"milestone": "passed", "definition": AUSBAU_DEFINITION_ID, "step": "Tiefbau durchführen"})
    assert response.status_code == 302
