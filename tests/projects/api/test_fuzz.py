"""A hostile fuzz of every REST operation: wrong types, huge numbers, Unicode digits, crafted cursors, non-JSON bodies.

Every operation comes from the published schema, so a new one is fuzzed without a change here.
The one promise: a 4xx that names the problem, never a 5xx.
"""
from __future__ import annotations

import base64
import json
import re
from io import StringIO
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from django.core.management import call_command
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from projects.models import AusbauProject
from projects.services.api_clients import api_client_create

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[3] / "docs" / "openapi.yaml").read_text())
OPERATIONS = [(path, method, operation) for path, item in SCHEMA["paths"].items() for method, operation in item.items()
              if method in ("get", "post", "put", "patch", "delete")]

HOSTILE = ["²", "٣", "１２", "1e3", "-1", "0", "10" * 12, str(2**63), str(2**64), "NaN", "Infinity", "true", "null", "",
           " ", "%00", "\x00", "a\x00b", "../../etc", "' OR 1=1 --", "{}", "[]", "😀", "\u202e", "9" * 400, "2026-13-45",
           "2026-11-01T00:00:00-17:19", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]


def crafted_cursor(position: str, offset: str = "0", reverse: str = "0") -> str:
    return base64.b64encode(urlencode({"o": offset, "r": reverse, "p": position}).encode()).decode()


CURSORS = [
    crafted_cursor(value) for value in ("²", str(2**70), "-" + str(2**70), "x\x00", "2026-13-45", "0001-01-01 00:00:00+14:00")
]
CURSORS += [
    crafted_cursor("1", offset=str(10**20)),
    crafted_cursor("1", reverse="²"),
    "not-base64!",
    base64.b64encode(b"\xff\xfe").decode(),
]

hostile_text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
hostile_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False),
              hostile_text),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["definition", "target", "allow_duplicate", "amount_total", "x"]), children, max_size=5),
    max_leaves=10)


@pytest.fixture
def fuzz_setup(db) -> tuple[str, int]:
    call_command("sync_epilot", stdout=StringIO())
    _, token = api_client_create(name="fuzz", scopes=["read", "write"], throttle_rate="1000000/min")
    return token, AusbauProject.objects.order_by("id").values_list("id", flat=True).first()


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m, _ in OPERATIONS])
def test_no_hostile_request_gets_a_server_error(path, method, operation, fuzz_setup) -> None:
    token, project_id = fuzz_setup
    names = [parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "query"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    @hypothesis_settings(max_examples=40, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(path_id=st.one_of(st.just(str(project_id)), hostile_text),
           query=st.dictionaries(st.sampled_from(names or ["x"]), hostile_text, max_size=3),
           cursor=st.one_of(st.none(), st.sampled_from(CURSORS)),
           body=st.one_of(hostile_json, st.binary(max_size=30)))
    def call(path_id: str, query: dict, cursor: str | None, body) -> None:
        # Every path parameter ({id}, {step_id}, ...) gets the hostile value.
        url = re.sub(r"\{[^}]+\}", lambda _: path_id.replace("/", "%2F").replace("?", "%3F").replace("#", "%23") or "0",
                     path)
        if cursor is not None:
            query = {**query, "cursor": cursor}
        if method == "get":
            response = client.get(url, query)
        elif isinstance(body, bytes):
            response = getattr(client, method)(url + "?" + urlencode(query), body, content_type="application/json")
        else:
            response = getattr(client, method)(url + "?" + urlencode(query), json.dumps(body), content_type="application/json")
        assert (
            response.status_code < 500
        ), f"{method.upper()} {url} {query} {body!r}: {response.status_code} {response.content[:300]!r}"
        if response.status_code >= 400 and response["Content-Type"].startswith("application/json"):
            error = response.json()["error"]
            assert error["status"] == response.status_code and error["message"]

    call()


def test_the_reported_inputs_answer_4xx_naming_the_problem(fuzz_setup) -> None:
    token, project_id = fuzz_setup
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/projects/", {"page_size": "²"}).json()["error"]["fields"].keys() == {"page_size"}
    assert client.get("/api/v1/projects/²/status/").status_code == 404
    assert client.get(f"/api/v1/projects/{2**70}/status/").status_code == 404
    for cursor in CURSORS:
        if cursor == crafted_cursor("1", offset=str(10**20)):
            continue  # DRF caps the offset: a valid page, not an error
        answer = client.get("/api/v1/projects/", {"cursor": cursor})
        assert answer.status_code == 400 and "cursor" in answer.json()["error"]["fields"], cursor
    answer = client.post(f"/api/v1/projects/{project_id}/convert/", {"amount_total": 10**20}, format="json")
    assert answer.status_code == 400 and "amount_total" in answer.json()["error"]["fields"]
    answer = client.post(f"/api/v1/projects/{project_id}/start-workflow/", "definition=x", content_type="text/plain")
    assert answer.status_code == 415
    answer = client.post(f"/api/v1/projects/{project_id}/start-workflow/", "{not json", content_type="application/json")
    assert answer.status_code == 400
