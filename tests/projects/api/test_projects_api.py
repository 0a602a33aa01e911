"""The project status API as a consumer sees it."""
from __future__ import annotations

import datetime as dt
import re
from io import StringIO

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, SandboxStore, demo_id, seed_bulk
from projects.models import AusbauProject, Opportunity, SyncRun
from projects.services.api_clients import api_client_create, api_client_revoke
from projects.services.sync import sync_run
from tests.projects.api.paging import walk

pytestmark = pytest.mark.django_db
PROJECTS = "/api/v1/projects/"


def project_id(key: str) -> int:
    return AusbauProject.objects.get(opportunity__epilot_id=demo_id(f"opportunity:{key}")).pk


# ------------------------------------------------------------------ auth

def test_requests_without_a_valid_token_get_401_with_an_error_document(mirror, read_token) -> None:
    anonymous = APIClient()
    answer = anonymous.get(PROJECTS)
    assert answer.status_code == 401 and answer["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"]["status"] == 401 and answer.json()["error"]["message"]
    anonymous.credentials(HTTP_AUTHORIZATION="Bearer abo_0000_wrong")
    assert anonymous.get(PROJECTS).status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {read_token}")
    assert anonymous.get(PROJECTS).status_code == 401


def test_a_revoked_token_stops_working(mirror) -> None:
    client, token = api_client_create(name="Alt", scopes=["read"])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get(PROJECTS).status_code == 200
    client.refresh_from_db()
    assert client.last_used_at is not None and client.token_hash != token and token not in str(client.__dict__)
    api_client_revoke(client)
    assert api.get(PROJECTS).status_code == 401


def test_starting_a_workflow_needs_the_workflows_scope(api, mirror) -> None:
    answer = api.post(
        f"{PROJECTS}{project_id('nordstrasse')}/start-workflow/", {"definition": AUSBAU_DEFINITION_ID}, format="json"
    )
    assert answer.status_code == 403 and "'workflows'" in answer.json()["error"]["message"]


def test_each_client_is_throttled_with_retry_after(mirror) -> None:
    _, token = api_client_create(name="Zu schnell", scopes=["read"], throttle_rate="3/min")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert [api.get(PROJECTS).status_code for _ in range(3)] == [200, 200, 200]
    limited = api.get(PROJECTS)
    assert limited.status_code == 429 and 0 < int(limited["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "throttled"


# ------------------------------------------------------------------ list, filters, search

def test_list_filters_search_and_order(api, mirror) -> None:
    everything = walk(api, PROJECTS)
    assert len(everything) == 8 and [p["id"] for p in everything] == sorted(p["id"] for p in everything)
    first = everything[0]
    assert {"id", "epilot_id", "phase", "progress_percent", "current_section", "opportunity_status", "address", "portal_url",
            "updated_at"} <= set(first)
    assert first["portal_url"] == f"https://portal.epilot.cloud/app/opportunities/{first['epilot_id']}"
    assert dt.datetime.fromisoformat(first["updated_at"]).tzinfo is not None
    by = lambda query: {p["title"] for p in walk(api, f"{PROJECTS}?{query}")}  # noqa: E731
    assert by("phase=cancelled") == {"Glasfaser Wohnpark Angerbach"}
    assert by("opportunity_status=ausstehend") == {
        "Glasfaser Neubaugebiet Nordstraße",
        "Glasfaser Kalkstraße",
        "Glasfaser Tiefenbach Höfe",
    }
    assert by("tag=gewerbe") == {"Glasfaser Gewerbegebiet Rohdenhaus"}
    assert by("search=Kalkstraße") == {"Glasfaser Kalkstraße"}
    assert by("search=Fliethe") == {"Anbindung Schulzentrum Wülfrath"}  # by address
    assert by("has_running_workflow=true") == set()
    future = (timezone.now() + dt.timedelta(days=1)).isoformat()
    assert walk(api, f"{PROJECTS}?updated_since={future.replace('+', '%2B')}") == []
    titles = [p["title"] for p in walk(api, f"{PROJECTS}?ordering=-title")]
    assert titles == sorted(titles, reverse=True)


@pytest.mark.parametrize(("query", "parameter"), [
    ("phase=building", "phase"), ("updated_since=yesterday", "updated_since"), ("page_size=100000", "page_size"),
    ("page_size=-1", "page_size"), ("cursor=not-a-cursor", "cursor"), ("ordering=budget_secret", "ordering"),
    ("has_running_workflow=perhaps", "has_running_workflow"),
])
def test_bad_parameters_get_400_naming_the_parameter(api, mirror, query, parameter) -> None:
    answer = api.get(f"{PROJECTS}?{query}")
    assert answer.status_code == 400
    assert parameter in answer.json()["error"]["fields"]


def test_a_cursor_walk_sees_every_project_once_while_projects_change(api, mirror, settings) -> None:
    seed_bulk(SandboxStore(settings.EPILOT_SANDBOX_DB), contacts=0, opportunities=150, orders=0, seed=21)
    sync_run(trigger=SyncRun.Trigger.COMMAND)
    before = set(AusbauProject.objects.values_list("id", flat=True))
    seen: list[int] = []
    url = f"{PROJECTS}?page_size=25"
    pages = 0
    while url:
        page = api.get(url).json()
        seen += [p["id"] for p in page["results"]]
        url = page["next"]
        pages += 1
        if pages == 2:  # data changes under the consumer: updates, a deletion in epilot, new projects
            epilot = get_epilot_client()
            for opportunity in Opportunity.objects.order_by("id")[:30]:
                epilot.patch_entity("opportunity", opportunity.epilot_id, {"status": "bearbeitung"})
            seed_bulk(SandboxStore(settings.EPILOT_SANDBOX_DB), contacts=0, opportunities=10, orders=0, seed=22)
            sync_run(trigger=SyncRun.Trigger.COMMAND)
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


def test_the_list_costs_the_same_queries_for_any_page_size(api, mirror, settings) -> None:
    seed_bulk(SandboxStore(settings.EPILOT_SANDBOX_DB), contacts=0, opportunities=60, orders=30, seed=5)
    sync_run(trigger=SyncRun.Trigger.COMMAND)
    api.get(PROJECTS)  # the first call of a client notes its use; measure the ones after
    counts = []
    for size in (5, 60):
        with CaptureQueriesContext(connection) as queries:
            assert len(api.get(f"{PROJECTS}?page_size={size}").json()["results"]) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


# ------------------------------------------------------------------ detail and status

def test_detail_shows_opportunity_orders_and_workflows(api, mirror) -> None:
    pk = project_id("schulzentrum")
    from django.core.management import call_command

    call_command("start_workflow", schema="order", entity=demo_id("order:schulzentrum"), definition=AUSBAU_DEFINITION_ID,
                 stdout=StringIO())
    detail = api.get(f"{PROJECTS}{pk}/").json()
    assert detail["phase"] == "construction" and detail["opportunity"]["customer"] == "Sabine Hartmann"
    assert [o["amount_total"] for o in detail["orders"]] == [9_000_000]
    execution = detail["workflow_executions"][0]
    assert execution["definition_epilot_id"] == AUSBAU_DEFINITION_ID and execution["current_section"] == "Planung"
    assert [step["section"] for step in execution["steps"]][:2] == ["Planung", "Planung"] and len(execution["steps"]) == 8
    assert execution["entity_portal_url"].endswith(f"/app/orders/{demo_id('order:schulzentrum')}")
    assert detail["last_synced_at"]


def test_detail_costs_the_same_queries_with_more_orders_and_workflows(api, mirror) -> None:
    from django.core.management import call_command

    rich = project_id("schulzentrum")
    api.get(PROJECTS)  # the first call of a client notes its use; measure the ones after
    counts = []
    for starts in (1, 3):  # one workflow with its steps, then four
        for _ in range(starts):
            call_command("start_workflow", schema="order", entity=demo_id("order:schulzentrum"),
                         definition=AUSBAU_DEFINITION_ID, force=True, stdout=StringIO())
        with CaptureQueriesContext(connection) as queries:
            detail = api.get(f"{PROJECTS}{rich}/").json()
        counts.append(len(queries))
    assert len(detail["workflow_executions"]) == 4 and all(len(e["steps"]) == 8 for e in detail["workflow_executions"])
    assert counts[0] == counts[1]


def test_status_document_supports_conditional_get(api, mirror) -> None:
    url = f"{PROJECTS}{project_id('kalkstrasse')}/status/"
    first = api.get(url)
    assert first.status_code == 200 and set(first.json()) == {
        "id",
        "phase",
        "progress_percent",
        "current_section",
        "current_step",
        "updated_at",
    }
    assert api.get(url, HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    assert api.get(url, HTTP_IF_MODIFIED_SINCE=first["Last-Modified"]).status_code == 304
    get_epilot_client().patch_entity("opportunity", demo_id("opportunity:kalkstrasse"), {"status": "abgebrochen"})
    sync_run(trigger=SyncRun.Trigger.COMMAND)
    changed = api.get(url, HTTP_IF_NONE_MATCH=first["ETag"])
    assert changed.status_code == 200 and changed.json()["phase"] == "cancelled" and changed["ETag"] != first["ETag"]
    assert api.get(f"{PROJECTS}999999/status/").status_code == 404


# ------------------------------------------------------------------ other resources and writes

def test_opportunities_orders_and_executions_are_listed(api, mirror) -> None:
    assert len(walk(api, "/api/v1/opportunities/?status=geschlossen")) == 2
    orders = walk(api, f"/api/v1/orders/?opportunity={demo_id('opportunity:flehenberg')}")
    assert [o["epilot_id"] for o in orders] == [demo_id("order:flehenberg")]
    assert walk(api, "/api/v1/workflow-executions/?status=STARTED") == []
    assert api.get("/api/v1/workflow-executions/?status=RUNNING").status_code == 400


def test_writes_go_through_the_back_office_services(mirror, write_token) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {write_token}")
    pk = project_id("nordstrasse")
    started = api.post(f"{PROJECTS}{pk}/start-workflow/", {"definition": AUSBAU_DEFINITION_ID}, format="json")
    assert started.status_code == 201 and started.json()["execution_epilot_id"]
    again = api.post(f"{PROJECTS}{pk}/start-workflow/", {"definition": AUSBAU_DEFINITION_ID}, format="json")
    assert again.status_code == 409 and "already" in again.json()["error"]["message"]  # the API answers in English
    unknown = api.post(f"{PROJECTS}{pk}/start-workflow/", {"definition": "nope"}, format="json")
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    converted = api.post(f"{PROJECTS}{project_id('kalkstrasse')}/convert/", {}, format="json")
    twice = api.post(f"{PROJECTS}{project_id('kalkstrasse')}/convert/", {}, format="json")
    assert converted.status_code == twice.status_code == 201
    assert converted.json()["order_epilot_id"] == twice.json()["order_epilot_id"]
    from projects.models import EpilotWrite

    assert EpilotWrite.objects.filter(actor="api:Planungstool").exists()


def test_docs_and_schema_are_public(client) -> None:
    assert client.get(reverse("api-schema")).status_code == 200
    docs = client.get(reverse("api-docs"))
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    # Swagger UI is served from our static files, not a CDN. (The page also holds a random CSRF token,
    # so a search for "cdn" anywhere in it failed now and then.)
    assets = re.findall(rb'(?:src|href)="([^"]*)"', docs.content)
    assert assets and all(url.startswith(b"/static/") for url in assets)


def test_api_clients_are_managed_in_the_admin_with_the_token_shown_once(admin_client) -> None:
    from projects.models import ApiClient

    created = admin_client.post(reverse("admin:projects_apiclient_add"),
                                {"name": "Kundenportal", "scopes": ["read"], "throttle_rate": "600/min"}, follow=True)
    page = created.content.decode()
    token = page.split("id='new-api-token'>")[1].split("<")[0]
    assert token.startswith("abo_")
    client = ApiClient.objects.get(name="Kundenportal")
    assert token not in (client.token_hash, client.token_prefix)
    detail = admin_client.get(reverse("admin:projects_apiclient_change", args=[client.pk])).content.decode()
    assert token not in detail
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get(PROJECTS).status_code == 200
    admin_client.post(
        reverse("admin:projects_apiclient_changelist"), {"action": "revoke_action", "_selected_action": [client.pk]}
    )
    assert api.get(PROJECTS).status_code == 401
    bad_rate = admin_client.post(
        reverse("admin:projects_apiclient_add"), {"name": "x", "scopes": ["read"], "throttle_rate": "viel"}
    )
    assert "Format" in bad_rate.content.decode()


def test_operators_provision_clients_by_script(db) -> None:
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("create_api_client", "Leitstelle", "--scopes", "read,write", "--rate", "600/min", stdout=out)
    token = out.getvalue().strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/projects/").status_code == 200
    for bad in (["Leitstelle"], ["Neu", "--scopes", "admin"], ["Neu", "--rate", "viel"], ["Neu", "--rate", "0/min"]):
        with pytest.raises(CommandError):
            call_command("create_api_client", *bad, stdout=StringIO())
