"""Promise dates: from the order's attribute, from staff (written to epilot, refused when stale), from an area's
rule; forecasts from a known history and their back-test; one task per slip; the API. Through the services, the
sandbox and the API."""
from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id
from projects.models import (
    AreaAddress,
    EpilotWrite,
    ForecastCurve,
    FunnelSettings,
    Order,
    Promise,
    PromiseAlert,
    RolloutArea,
    SyncRun,
    WorkflowDefinition,
    WorkflowExecution,
)
from projects.services.api_clients import api_client_create
from projects.services.areas import area_addresses_import
from projects.services.errors import Conflict
from projects.services.forecasts import (
    conditional_days,
    curve_of,
    forecast,
    forecast_curves_recompute,
    leave_one_out_p90_held,
)
from projects.services.funnel import milestone_rules_replace
from projects.services.promises import promise_alerts_send, promise_set, promises_nightly, promises_recompute
from projects.services.steps import COMPLETE, StepChange, step_change
from projects.services.sync import sync_run
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db
CONNECTED = {"key": "connected", "definition": AUSBAU_DEFINITION_ID, "step": "Hausanschluss setzen"}
FLEHENBERG = demo_id("order:flehenberg")  # the demo's order at Flehenberger Weg 7
SCHULZENTRUM = demo_id("order:schulzentrum")  # at Fliethe 20


@pytest.fixture
def mirrored() -> None:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=get_epilot_client())
    area_addresses_import([(line, {"area": "Flehenberg", "postal_code": "42489", "street": street,
                                   "house_number": number, "units": "2"})
                           for line, (street, number) in enumerate([("Flehenberger Weg", "7"), ("Fliethe", "20")], start=2)])
    milestone_rules_replace([CONNECTED], actor="test")


def set_in_epilot(order_id: str, **attributes: str) -> None:
    """A promise set in epilot by someone else, then mirrored."""
    get_epilot_client().patch_entity("order", order_id, attributes)
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=get_epilot_client())


def slow_history(area: RolloutArea) -> None:
    """25 finished buildings of the area that took 3,000 days from contract to connection."""
    start = timezone.now() - dt.timedelta(days=4000)
    AreaAddress.objects.bulk_create([
        AreaAddress(area=area, postal_code="42489", street="Historie", house_number=str(n), units=1, key=f"h|{n}",
                    signed_at=start, connected_at=start + dt.timedelta(days=3000)) for n in range(25)])


def promise_of(order_id: str, milestone: str = "connected") -> Promise:
    return Promise.objects.get(order__epilot_id=order_id, milestone=milestone)


def test_a_promise_from_the_orders_attribute_date_or_date_time(mirrored) -> None:
    ahead = timezone.localdate() + dt.timedelta(days=40)
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin=ahead.isoformat(),
                  zugesagte_aktivierung="2026-01-31T23:30:00Z")  # a date-time: its local date (1 February)
    connected, activated = promise_of(FLEHENBERG), promise_of(FLEHENBERG, "activated")
    assert (connected.promised_on, connected.source, connected.state) == (ahead, "attribute", "open")
    assert activated.promised_on == dt.date(2026, 2, 1) and activated.state == "breached" and activated.days_late > 0
    assert connected.area == RolloutArea.objects.get(name="Flehenberg")
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin="bald")  # unreadable: no promise, the order stays mirrored
    assert not Promise.objects.filter(order__epilot_id=FLEHENBERG, milestone="connected").exists()


def test_a_milestone_reached_in_time_keeps_the_promise_and_late_breaks_it(mirrored) -> None:
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin=(timezone.localdate() + dt.timedelta(days=3)).isoformat())
    set_in_epilot(SCHULZENTRUM, zugesagter_anschlusstermin=(timezone.localdate() - dt.timedelta(days=3)).isoformat())
    for order_id in (FLEHENBERG, SCHULZENTRUM):
        definition = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID, engine="v1")
        started = workflow_start(definition=definition, schema="order", entity_id=order_id, actor="test")
        execution = WorkflowExecution.objects.get(epilot_id=started.execution_epilot_id)
        for step in execution.steps.order_by("position"):
            step_change(execution_epilot_id=execution.epilot_id, step_epilot_id=step.epilot_id,
                        change=StepChange(COMPLETE), actor="test")
            if step.name == "Hausanschluss setzen":
                break
    kept, late = promise_of(FLEHENBERG), promise_of(SCHULZENTRUM)
    assert kept.state == "kept" and kept.reached_at is not None
    assert late.state == "breached" and late.days_late == 3 and late.reached_at is not None


def test_staff_set_a_promise_written_to_epilot_and_a_stale_version_is_refused(mirrored, django_user_model) -> None:
    clerk = django_user_model.objects.create_user("clerk")
    order = Order.objects.get(epilot_id=FLEHENBERG)
    seen = order.payload["_updated_at"]
    promised = timezone.localdate() + dt.timedelta(days=60)
    promise = promise_set(order=order, milestone="connected", promised_on=promised, user=clerk)
    assert get_epilot_client().get_entity("order", FLEHENBERG).data["zugesagter_anschlusstermin"] == promised.isoformat()
    assert (promise.promised_on, promise.source, promise.set_by) == (promised, "staff", clerk)
    assert EpilotWrite.objects.filter(action="write_promise", target_epilot_id=FLEHENBERG, result="succeeded").count() == 1
    with pytest.raises(Conflict):  # the version staff saw before the first write is stale now
        promise_set(order=order, milestone="connected", promised_on=promised + dt.timedelta(days=7), user=clerk,
                    expected_updated_at=seen)
    assert get_epilot_client().get_entity("order", FLEHENBERG).data["zugesagter_anschlusstermin"] == promised.isoformat()
    assert promise_of(FLEHENBERG).promised_on == promised


def test_an_areas_rule_promises_contract_date_plus_weeks(mirrored) -> None:
    RolloutArea.objects.filter(name="Flehenberg").update(promise_connected_weeks=12)
    set_in_epilot(FLEHENBERG, note="changed")  # any change of the order applies the rule
    order = Order.objects.get(epilot_id=FLEHENBERG)
    promise = promise_of(FLEHENBERG)
    assert promise.source == "rule"
    assert promise.promised_on == timezone.localdate(order.epilot_created_at) + dt.timedelta(weeks=12)
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin="2027-03-01")  # the attribute wins over the rule
    assert (promise_of(FLEHENBERG).promised_on, promise_of(FLEHENBERG).source) == (dt.date(2027, 3, 1), "attribute")


def test_quantiles_of_a_known_history() -> None:
    days = [float(day) for day in range(1, 101)]  # 1 … 100 days
    curve = curve_of(days)
    assert curve[50] == 50.5 and curve[90] == pytest.approx(90.1) and curve[0] == 1 and curve[100] == 100
    assert conditional_days(curve, 0, 0.5) == pytest.approx(50.5)
    assert conditional_days(curve, 80.5, 0.5) == pytest.approx(90.5, abs=0.6)  # the median of those past 80 days
    assert conditional_days(curve, 120, 0.9) == 120  # waited longer than anyone: not before today
    # Left out, 1 … 89 lie at or below the P90 of the other 99 (90.2), 90 … 100 above theirs (89.2).
    assert leave_one_out_p90_held(days) == 0.89


def test_forecasts_per_area_with_enough_history_and_the_back_test(mirrored) -> None:
    area = RolloutArea.objects.get(name="Flehenberg")
    start = timezone.now() - dt.timedelta(days=400)
    AreaAddress.objects.bulk_create([
        AreaAddress(area=area, postal_code="42489", street="Historie", house_number=str(n), units=1, key=f"h|{n}",
                    signed_at=start, connected_at=start + dt.timedelta(days=10 * (n % 10) + 10))
        for n in range(40)])  # 10 … 100 days to connected, four buildings each
    forecast_curves_recompute()
    curve = ForecastCurve.objects.get(area=area, start="signed", target="connected")
    assert curve.finished == 40 and curve.quantiles[50] == pytest.approx(55) and curve.p90_held == pytest.approx(0.9)
    assert ForecastCurve.objects.filter(area=None, start="signed", target="connected").exists()
    today = timezone.localdate()
    curves = {(c.area_id, c.start, c.target): c for c in ForecastCurve.objects.all()}
    outlook = forecast(curves, area=area.pk, reached={"signed": today}, target="connected", today=today)
    assert outlook.p50 == today + dt.timedelta(days=55) and outlook.p90 == today + dt.timedelta(days=91)
    assert outlook.p90_held == pytest.approx(0.9)


def test_at_risk_and_breached_each_make_one_task(mirrored) -> None:
    area = RolloutArea.objects.get(name="Flehenberg")
    slow_history(area)
    FunnelSettings.objects.update_or_create(pk=1, defaults={"promise_task_workflow": AUSBAU_DEFINITION_ID})
    promised = timezone.localdate() + dt.timedelta(days=20)
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin=promised.isoformat())
    promises_nightly()  # the history says 3,000 days from the contract: at risk
    assert promise_of(FLEHENBERG).state == "at_risk"
    promises_nightly()
    promise_alerts_send()
    promise_alerts_send()
    assert list(PromiseAlert.objects.values_list("state", flat=True)) == ["at_risk"]
    order = Order.objects.get(epilot_id=FLEHENBERG)
    executions = get_epilot_client().get_executions(context=FLEHENBERG, schema="order")
    assert len(executions) == 1  # the task, started once
    later = timezone.now() + dt.timedelta(days=25)
    promises_recompute(order_ids=[order.pk], now=later)
    promises_recompute(order_ids=[order.pk], now=later)
    assert promise_of(FLEHENBERG).state == "breached"
    assert sorted(PromiseAlert.objects.values_list("state", flat=True)) == ["at_risk", "breached"]


def test_the_api_lists_promises_by_state(mirrored) -> None:
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin=(timezone.localdate() - dt.timedelta(days=5)).isoformat())
    set_in_epilot(SCHULZENTRUM, zugesagter_anschlusstermin=(timezone.localdate() + dt.timedelta(days=50)).isoformat())
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='Portal', scopes=['read'])[1]}")
    breached = api.get("/api/v1/promises/", {"state": "breached", "milestone": "connected"})
    assert breached.status_code == 200
    items = breached.json()["results"]
    assert [item["order"]["epilot_id"] for item in items] == [FLEHENBERG]
    assert items[0]["days_late"] == 5 and items[0]["promised_date"] == str(timezone.localdate() - dt.timedelta(days=5))
    assert items[0]["building"]["address"].startswith("Flehenberger Weg 7")
    assert set(items[0]) >= {"milestone", "forecast_p50", "forecast_p90", "state", "source"}
    assert api.get("/api/v1/promises/", {"state": "open"}).json()["results"][0]["order"]["epilot_id"] == SCHULZENTRUM
    assert api.get("/api/v1/promises/", {"state": "sometimes"}).status_code == 400
    csv = api.get("/api/v1/promises/", {"state": "breached", "format": "csv"})
    assert csv.status_code == 200 and FLEHENBERG in csv.content.decode()
    area = RolloutArea.objects.get(name="Flehenberg")
    assert len(api.get("/api/v1/promises/", {"area": area.pk}).json()["results"]) == 2
    one = api.get(f"/api/v1/promises/{items[0]['id']}/")
    assert one.status_code == 200 and one.json()["order"]["epilot_id"] == FLEHENBERG
    assert api.get("/api/v1/promises/999999/").status_code == 404
    nobody = APIClient()
    assert nobody.get("/api/v1/promises/").status_code in (401, 403)


def test_the_nightly_command_path_runs_on_an_empty_mirror() -> None:
    call_command("migrate", verbosity=0, stdout=StringIO())
    assert promises_nightly() == 0


def test_one_orders_change_costs_the_same_whatever_the_number_of_promises(mirrored) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from projects.services.promises import promises_sync

    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin="2027-01-15")
    order = Order.objects.get(epilot_id=FLEHENBERG)

    def statements() -> int:
        with CaptureQueriesContext(connection) as queries:
            promises_sync([order.pk])
        return len(queries)

    few = statements()
    now = timezone.now()
    others = Order.objects.bulk_create([Order(epilot_id=f"other-{n}", title=f"Anderer {n}", synced_at=now,
                                              epilot_created_at=now) for n in range(300)])
    Promise.objects.bulk_create([Promise(order=other, milestone="connected", promised_on=dt.date(2027, 1, 1),
                                         source="attribute", state_since=now) for other in others])
    assert statements() == few


def test_a_promise_already_broken_when_first_seen_is_listed_not_alerted(mirrored) -> None:
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin="2025-01-01")
    assert promise_of(FLEHENBERG).state == "breached"
    assert not PromiseAlert.objects.exists()  # a first import of old promises starts no flood of tasks


def test_an_area_that_tells_customers_gets_promise_state_written_once(mirrored) -> None:
    area = RolloutArea.objects.get(name="Flehenberg")
    slow_history(area)
    set_in_epilot(FLEHENBERG, zugesagter_anschlusstermin=(timezone.localdate() + dt.timedelta(days=20)).isoformat())
    promises_nightly()
    assert promise_of(FLEHENBERG).state == "at_risk"
    promise_alerts_send()  # the area does not tell its customers (the default): nothing written
    assert "promise_state" not in get_epilot_client().get_entity("order", FLEHENBERG).data
    area.promise_notice = True
    area.save(update_fields=["promise_notice"])
    promise_alerts_send()
    promise_alerts_send()
    assert get_epilot_client().get_entity("order", FLEHENBERG).data["promise_state"] == "at_risk"
    assert EpilotWrite.objects.filter(action="write_promise_state", target_epilot_id=FLEHENBERG).count() == 1
