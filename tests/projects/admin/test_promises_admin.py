"""Promises in the admin: staff with the permission set a date (written to epilot), a Viewer sees and changes nothing,
the list shows states, forecasts and the back-test."""
from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import demo_id
from projects.models import Order, Promise

pytestmark = pytest.mark.django_db
FLEHENBERG = demo_id("order:flehenberg")


def staff(client, group: str) -> User:
    user = User.objects.create_user(group.lower(), password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return user


@pytest.fixture
def order() -> Order:
    call_command("migrate", verbosity=0, stdout=StringIO())
    call_command("sync_epilot", stdout=StringIO())
    return Order.objects.get(epilot_id=FLEHENBERG)


def test_backoffice_sets_a_promised_date_in_epilot(client, order) -> None:
    staff(client, "Backoffice")
    page = client.get(reverse("admin:projects_order_change", args=[order.pk])).content.decode()
    url = reverse("admin:projects_order_promise", args=[order.pk])
    assert url in page
    promised = timezone.localdate() + dt.timedelta(days=30)
    response = client.post(url, {"milestone": "connected", "promised_on": promised.isoformat(),
                                 "expected_updated_at": order.payload["_updated_at"]})
    assert response.status_code == 302
    assert get_epilot_client().get_entity("order", FLEHENBERG).data["zugesagter_anschlusstermin"] == promised.isoformat()
    assert Promise.objects.get(order=order).source == "staff"
    stale = client.post(url, {"milestone": "connected", "promised_on": (promised + dt.timedelta(days=1)).isoformat(),
                              "expected_updated_at": order.payload["_updated_at"]})
    assert stale.status_code == 200 and 'class="error"' in stale.content.decode()  # refused: epilot has a newer version
    assert get_epilot_client().get_entity("order", FLEHENBERG).data["zugesagter_anschlusstermin"] == promised.isoformat()
    listing = client.get(reverse("admin:projects_promise_changelist")).content.decode()
    assert "Flehenberg" in listing and "offen" in listing


def test_a_viewer_sees_promises_but_sets_none(client, order) -> None:
    staff(client, "Viewer")
    assert reverse("admin:projects_order_promise", args=[order.pk]) not in client.get(
        reverse("admin:projects_order_change", args=[order.pk])).content.decode()
    response = client.post(reverse("admin:projects_order_promise", args=[order.pk]),
                           {"milestone": "connected", "promised_on": "2030-01-01",
                            "expected_updated_at": order.payload["_updated_at"]})
    assert response.status_code == 403
    assert "zugesagter_anschlusstermin" not in get_epilot_client().get_entity("order", FLEHENBERG).data
    assert client.get(reverse("admin:projects_promise_changelist")).status_code == 200
