"""Pre-marketing: the forecast, the frozen threshold with four-eyes changes, the walk list, late sign-ups flagged once,
the public gauge; through the services, the API, the admin and the public URLs against the sandbox."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import demo_id
from projects.models import AreaSnapshot, EpilotWrite, LateSignup, QuotaChange, RolloutArea, SyncRun
from projects.services.api_clients import api_client_create
from projects.services.areas import ImportRejected, area_addresses_import
from projects.services.campaign import (
    ThresholdFrozen,
    area_terms_change,
    forecast_error_days,
    forecast_from,
    late_signups_find,
    late_signups_flag,
    public_gauge_enable,
    public_gauge_revoke,
    quota_change_decide,
    quota_change_propose,
    walk_list,
)
from projects.services.errors import NotAllowed
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db

ROWS = [("Flehenberger Weg", "7", 4), ("Fliethe", "20", 10), ("Nordstraße", "12", 2), ("Nordstraße", "4", 3),
        ("Nordstraße", "10", 1), ("Dorfstraße", "3", 8)]


@pytest.fixture
def area() -> RolloutArea:
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=get_epilot_client())
    area_addresses_import([(line, {"area": "Rohdenhaus", "postal_code": "42489", "street": street, "house_number": number,
                                   "units": str(units)}) for line, (street, number, units) in enumerate(ROWS, start=2)],
                          quota_percent=Decimal(40))
    return RolloutArea.objects.get(name="Rohdenhaus")


def test_the_forecast_on_a_hand_made_series() -> None:
    today = dt.date(2027, 3, 1)
    # 2, 4, 2, 4 units a day over the last four days: 3 a day, spread 1; 70 of 100 needed signed.
    series = [(today - dt.timedelta(days=4), 60), (today - dt.timedelta(days=3), 62), (today - dt.timedelta(days=2), 66),
              (today - dt.timedelta(days=1), 68), (today, 72)]
    forecast = forecast_from(series, needed_units=100, today=today, deadline=today + dt.timedelta(days=14))
    assert (forecast.rate_per_day, forecast.spread_per_day, forecast.needed_per_day) == (3.0, 1.0, 2.0)
    assert forecast.reached_on == today + dt.timedelta(days=10)  # 28 missing at 3 a day
    assert (forecast.earliest, forecast.latest) == (today + dt.timedelta(days=7), today + dt.timedelta(days=14))
    # Points older than 14 days do not count; a reached quota is reached today.
    old = [(today - dt.timedelta(days=30), 0), (today - dt.timedelta(days=20), 50)]
    assert forecast_from(old, needed_units=100, today=today, deadline=None).rate_per_day is None
    assert forecast_from(series, needed_units=50, today=today, deadline=None).reached_on == today


def test_the_forecasts_error_is_measured_on_a_campaign_that_reached_its_quota(area) -> None:
    area.refresh_from_db()  # 28 units in scope, quota 40 %: 12 needed; 2 units a day from day 0 reach it on day 6 ...
    start = timezone.localdate() - dt.timedelta(days=40)
    # ... on a steady series it would be exact; here the first 10 days go slowly, then faster: 12 reached on day 20.
    units = [day // 2 if day < 10 else 5 + (day - 10) * 7 // 10 for day in range(41)]
    AreaSnapshot.objects.filter(area=area).delete()
    AreaSnapshot.objects.bulk_create([AreaSnapshot(area=area, day=start + dt.timedelta(days=day), units_signed=count)
                                      for day, count in enumerate(units)])
    reached = start + dt.timedelta(days=next(day for day, count in enumerate(units) if count >= 12))
    errors = dict(forecast_error_days([area]))
    # Halfway (day 10) the last 14 days showed 0.5 a day: 7 more units forecast 14 days later than they came.
    halfway = start + (reached - start) / 2
    expected = forecast_from([(start + dt.timedelta(days=d), c) for d, c in enumerate(units)
                              if start + dt.timedelta(days=d) <= halfway], needed_units=12, today=halfway,
                             deadline=None).reached_on
    assert errors[area] == (expected - reached).days and errors[area] > 0


def test_the_threshold_freezes_when_the_campaign_starts_and_changes_by_four_eyes(area) -> None:
    area_terms_change(area, quota_percent=Decimal(35), deadline=dt.date(2027, 6, 30))  # before the start: free
    area_terms_change(area, campaign_start=timezone.localdate())
    with pytest.raises(ThresholdFrozen, match="quota-changes"):
        area_terms_change(area, quota_percent=Decimal(30))
    with pytest.raises(ImportRejected):
        area_addresses_import([(2, {"area": "Rohdenhaus", "postal_code": "42489", "street": "Fliethe", "house_number": "20",
                                    "units": "10"})], quota_percent=Decimal(25))
    anna, ben = User.objects.create_user("anna"), User.objects.create_user("ben")
    change = quota_change_propose(area, quota_percent=Decimal(30), deadline=None, reason="Gewerbe fällt weg", user=anna,
                                  actor="anna")
    with pytest.raises(NotAllowed):
        quota_change_decide(change, approve=True, user=anna)  # not by the person who proposed it
    assert RolloutArea.objects.get(pk=area.pk).quota_percent == Decimal(35)
    quota_change_decide(change, approve=True, user=ben)
    area.refresh_from_db()
    assert area.quota_percent == Decimal(30) and area.deadline == dt.date(2027, 6, 30)
    change.refresh_from_db()
    assert (change.status, change.proposed_by, change.decided_by, change.previous_quota_percent) == (
        "approved", anna, ben, Decimal(35))
    with pytest.raises(NotAllowed):
        quota_change_decide(change, approve=False, user=ben)  # decided already


def test_the_api_answers_409_after_the_start_and_takes_a_proposal(area) -> None:
    _client, token = api_client_create(name="kampagne", scopes=["configuration"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    url = f"/api/v1/areas/{area.pk}/"
    assert api.patch(url, {"quota_percent": "35.0"}, format="json").status_code == 200
    today = timezone.localdate().isoformat()
    started = api.patch(url, {"campaign_start": today}, format="json")
    assert started.status_code == 200 and started.json()["campaign_start"] == today
    refused = api.patch(url, {"quota_percent": "30.0"}, format="json")
    assert refused.status_code == 409 and f"/api/v1/areas/{area.pk}/quota-changes/" in refused.json()["error"]["message"]
    assert RolloutArea.objects.get(pk=area.pk).quota_percent == Decimal(35)
    proposed = api.post(f"{url}quota-changes/", {"quota_percent": "30.0", "reason": "Gewerbe fällt weg"}, format="json")
    assert proposed.status_code == 201 and proposed.json()["status"] == "proposed"
    assert QuotaChange.objects.get().proposed_by_name == "api:kampagne"
    assert api.post(f"{url}quota-changes/", {"quota_percent": "30.0"}, format="json").status_code == 400  # no reason
    _reader, read_token = api_client_create(name="leser", scopes=["read", "areas"])
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert reader.patch(url, {"campaign_start": today}, format="json").status_code == 403
    assert reader.get(url).json()["public_gauge_url"] == ""


def test_the_walk_list_names_the_households_without_a_contract_by_street(area) -> None:
    streets = {street.name: street for street in walk_list(area)}
    # Flehenberger Weg 7 and Fliethe 20 are signed (the demo's orders); Nordstraße has three open houses.
    assert [a.house_number for a in streets["Nordstraße"].addresses] == ["4", "10", "12"]
    assert streets["Nordstraße"].units_in_scope == 6 and streets["Nordstraße"].signed_percent == 0.0
    assert streets["Fliethe"].addresses == [] and streets["Fliethe"].signed_percent == 100.0


def test_a_late_sign_up_is_flagged_in_epilot_once(area, settings) -> None:
    settings.LATE_SIGNUP_ATTRIBUTE = "baukostenzuschuss"
    RolloutArea.objects.filter(pk=area.pk).update(deadline=timezone.localdate() - dt.timedelta(days=3))
    client = get_epilot_client()
    order = client.create_entity("order", {"_title": "Spät: Nordstraße 12", "status": "placed", "currency": "EUR",
                                           "opportunity": {"$relation": [{"entity_id": demo_id("opportunity:nordstrasse")}]}})
    sync_run(trigger=SyncRun.Trigger.COMMAND, client=client)
    assert late_signups_find() == 1 and late_signups_find() == 0
    assert late_signups_flag(client) == 1 and late_signups_flag(client) == 0
    assert client.get_entity("order", order.id).data["baukostenzuschuss"] is True
    assert EpilotWrite.objects.filter(action="late_signup.flag").count() == 1
    late = LateSignup.objects.get()
    assert late.order_epilot_id == order.id and late.flagged_at is not None  # the demo's earlier orders are not late


def test_the_public_gauge_without_login_nor_personal_data(area, client) -> None:
    assert client.get("/public/areas/" + "x" * 32 + "/").status_code == 404
    token = public_gauge_enable(area)
    page = client.get(f"/public/areas/{token}/")
    text = page.content.decode()
    assert page.status_code == 200 and "Rohdenhaus" in text and "Haushalten unterschrieben" in text
    assert page["Cache-Control"] == "public, max-age=300" and "X-Frame-Options" not in page
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    data = client.get(f"/public/areas/{token}/gauge.json").json()
    assert data["units_signed"] == 14 and data["units_in_scope"] == 28 and data["quota_percent"] == 40.0
    assert not any(street in str(data) for street, _n, _u in ROWS)  # no address, no name
    svg = client.get(f"/public/areas/{token}/gauge.svg?lang=en")
    assert svg["Content-Type"].startswith("image/svg+xml") and "signed" in svg.content.decode()
    reader = APIClient()
    _c, read_token = api_client_create(name="gauge", scopes=["areas"])
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert reader.get(f"/api/v1/areas/{area.pk}/").json()["public_gauge_url"].endswith(f"/public/areas/{token}/")
    public_gauge_revoke(area)
    assert client.get(f"/public/areas/{token}/gauge.json").status_code == 404


def staff(name: str, group: str) -> User:
    call_command("migrate", verbosity=0, stdout=StringIO())
    user = User.objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def test_in_the_admin_one_proposes_and_another_approves_a_viewer_neither(area, client) -> None:
    area_terms_change(area, campaign_start=timezone.localdate() - dt.timedelta(days=1))
    client.force_login(staff("viewer", "Viewer"))
    assert client.get(reverse("admin:projects_rolloutarea_change", args=[area.pk])).status_code == 200
    assert client.post(reverse("admin:projects_rolloutarea_propose", args=[area.pk]),
                       {"quota_percent": "30", "reason": "x"}).status_code == 403
    assert client.post(reverse("admin:projects_rolloutarea_gauge", args=[area.pk])).status_code == 403
    anna = staff("anna", "Backoffice")
    client.force_login(anna)
    page = client.get(reverse("admin:projects_rolloutarea_change", args=[area.pk])).content.decode()
    assert 'id="campaign-panel"' in page and 'name="quota_percent"' not in page  # frozen: shown, not editable
    assert client.post(reverse("admin:projects_rolloutarea_propose", args=[area.pk]),
                       {"quota_percent": "30", "reason": "Gewerbe fällt weg"}).status_code == 302
    change = QuotaChange.objects.get()
    approve = {"action": "approve", "_selected_action": [change.pk]}
    client.post(reverse("admin:projects_quotachange_changelist"), approve)
    assert QuotaChange.objects.get().status == "proposed"  # not by the one who proposed it
    client.force_login(staff("ben", "Backoffice"))
    client.post(reverse("admin:projects_quotachange_changelist"), approve)
    assert QuotaChange.objects.get().status == "approved" and RolloutArea.objects.get().quota_percent == Decimal(30)
    walk = client.get(reverse("admin:projects_rolloutarea_walk", args=[area.pk, "csv"])).content.decode().splitlines()
    assert walk[0] == "street,house_number,postal_code,units,street_signed_percent" and len(walk) == 5
