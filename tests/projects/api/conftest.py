"""Fixtures of the REST API tests: a synced mirror, API clients with scopes, a request helper."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from projects.services.api_clients import api_client_create


@pytest.fixture
def mirror(db) -> None:
    call_command("sync_epilot", stdout=StringIO())


@pytest.fixture
def read_token(db) -> str:
    return api_client_create(name="GIS Wülfrath", scopes=["read"])[1]


@pytest.fixture
def write_token(db) -> str:
    return api_client_create(name="Planungstool", scopes=["read", "write"])[1]


@pytest.fixture
def api(read_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_token}")
    return client
