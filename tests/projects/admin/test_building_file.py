"""The building file (Hausakte) and the header search in the admin: what staff see, and who may see it."""
from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.urls import reverse

from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, demo_id
from projects.admin.search import building_file_url
from projects.models import AreaAddress, EpilotWrite, WorkflowDefinition
from projects.services.areas import area_addresses_import
from projects.services.workflows import workflow_start

pytestmark = pytest.mark.django_db
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def viewer(client):
    call_command("migrate", verbosity=0, stdout=StringIO())  # the roles
    call_command("sync_epilot", stdout=StringIO())
    area_addresses_import([(2, {"area": "Tiefenbach", "postal_code": "42489", "street": "Tiefenbacher Weg",
                                "house_number": "15", "units": "3"})])
    definition = WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID, engine="v1")
    workflow_start(definition=definition, schema="opportunity", entity_id=demo_id("opportunity:tiefenbach"), actor="test")
    user = User.objects.create_user("leser", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Viewer"))
    client.force_login(user)
    return user


def test_the_header_search_finds_the_building_file_of_a_street(client, viewer) -> None:
    index = client.get(reverse("admin:index")).content.decode()
    assert 'id="header-search"' in index
    page = client.get(reverse("admin:search"), {"q": "tiefenbacher w. 15"}).content.decode()
    building = AreaAddress.objects.get()
    assert building_file_url(building.key) in page
    assert page.index('id="search-buildings"') < page.index('id="search-customers"') < page.index('id="search-opportunities"')


def test_the_building_file_shows_everything_at_the_address(client, viewer) -> None:
    building = AreaAddress.objects.get()
    response = client.get(building_file_url(building.key))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Tiefenbacher Weg 15" in page and "Tiefenbach" in page
    assert "Klaus Hoffmann" in page  # the customer
    assert "Glasfaser Tiefenbach Höfe" in page and "38.000,00\u00a0€" in page  # the opportunity, its budget as money
    workflows = page[page.index('id="building-workflows"'):page.index('id="building-open-steps"')]
    assert "Ausbau Glasfaser" in workflows and "Trassenplanung erstellen" in workflows  # the workflow started there
    open_steps = page[page.index('id="building-open-steps"'):page.index('id="building-audit"')]
    assert open_steps.count("Ausbau Glasfaser") == 8 and "Tiefbau beauftragen" in open_steps  # and its open steps
    assert EpilotWrite.objects.filter(target_epilot_id=demo_id("opportunity:tiefenbach")).exists()
    assert 'id="building-audit"' in page and "Workflow starten" in page  # our write, from the audit trail
    assert "/app/opportunities/" in page  # and the link into epilot
    assert not UUID.search(re.sub(r'(href|title)="[^"]*"', "", page))


def test_an_address_no_area_lists_has_a_file_too_and_an_unknown_one_is_404(client, viewer) -> None:
    response = client.get(reverse("admin:building_file"), {"key": "42489|kalkstrasse|58"})
    assert response.status_code == 200 and "Glasfaser Kalkstraße" in response.content.decode()
    assert client.get(reverse("admin:building_file"), {"key": "00000|nowhere|1"}).status_code == 404
    assert client.get(reverse("admin:building_file")).status_code == 404


def test_a_viewer_sees_but_finds_nothing_to_change(client, viewer) -> None:
    page = client.get(building_file_url(AreaAddress.objects.get().key)).content.decode()
    forms = re.findall(r'<form[^>]*method="post"[^>]*>', page, flags=re.IGNORECASE)
    assert all("logout" in form or "language" in form or "i18n" in form for form in forms), forms


def test_staff_without_the_view_permission_are_refused(client, viewer) -> None:
    nobody = User.objects.create_user("niemand", password="pw", is_staff=True)
    client.force_login(nobody)
    assert client.get(reverse("admin:search"), {"q": "Tiefenbacher"}).status_code == 403
    assert client.get(building_file_url(AreaAddress.objects.get().key)).status_code == 403


def test_pages_naming_an_entity_at_the_address_link_its_file(client, viewer) -> None:
    from projects.models import Opportunity

    opportunity = Opportunity.objects.get(epilot_id=demo_id("opportunity:tiefenbach"))
    url = building_file_url(opportunity.address_key).replace("&", "&amp;")
    for page in (reverse("admin:projects_opportunity_change", args=[opportunity.pk]),
                 reverse("admin:projects_opportunity_changelist"),
                 reverse("admin:projects_workflowexecution_changelist"),
                 reverse("admin:projects_mirroredstep_changelist") + "?state=all",
                 reverse("admin:projects_areaaddress_changelist")):
        assert url in client.get(page).content.decode(), page
