"""A NUL character in an id or a filter is a clear 400 at the edge, for the admin and the API, on either database."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from projects.services.api_clients import api_client_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    call_command("sync_epilot", stdout=StringIO())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_client_create(name='t', scopes=['read', 'write'])[1]}")
    return client


@pytest.mark.parametrize("path", ["/api/v1/workflow-executions/ab%00c/close/",
                                  "/api/v1/workflow-executions/ab\x00c/steps/s%001/complete/"])
def test_the_api_refuses_a_nul_in_a_path_id(api, path) -> None:
    answer = api.post(path, {}, format="json")
    assert answer.status_code == 400 and answer.json()["error"]["status"] == 400 and "NUL" in answer.json()["error"]["message"]


@pytest.mark.parametrize("url", ["/admin/projects/opportunity/?q=a%00b", "/admin/projects/mirroredstep/?section=a%00",
                                 "/admin/projects/mirroredstep/?assignee=%00", "/admin/projects/opportunity/a%00/change/",
                                 "/api/v1/projects/?phase=%00"])
def test_the_admin_and_api_filters_refuse_a_nul(admin_client, api, url) -> None:
    client = api if url.startswith("/api/") else admin_client
    answer = client.get(url)
    assert answer.status_code == 400


def test_an_ordinary_filter_still_works(admin_client) -> None:
    assert admin_client.get("/admin/projects/opportunity/?q=Nord").status_code == 200
