"""The task API as a consumer sees it: list steps, complete, assign, schedule, close, and conflicts."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from integrations.connection import get_epilot_client
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, HAUSANSCHLUSS_TEMPLATE_ID, demo_id
from projects.models import AusbauProject, EpilotWrite, WorkflowDefinition
from projects.services.workflows import workflow_start
from tests.projects.api.paging import walk

pytestmark = pytest.mark.django_db
TASKS = "/api/v1/tasks/"


@pytest.fixture
def writer(write_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {write_token}")
    return client


@pytest.fixture
def running(mirror) -> dict[str, str]:
    """A V1 execution on Rohdenhaus and a V2 one on Düssel; returns their epilot ids by engine."""
    ids = {}
    for engine, definition_id, key in (("v1", AUSBAU_DEFINITION_ID, "rohdenhaus"), ("v2", HAUSANSCHLUSS_TEMPLATE_ID, "duessel")):
        definition = WorkflowDefinition.objects.get(epilot_id=definition_id, engine=engine)
        ids[engine] = workflow_start(definition=definition, schema="opportunity", entity_id=demo_id(f"opportunity:{key}"),
                                     entity_title=key).execution_epilot_id
    return ids


def first_task(api: APIClient, execution_id: str) -> dict:
    return walk(api, f"{TASKS}?execution={execution_id}")[0]


def test_the_inbox_lists_open_steps_with_their_project(api, running) -> None:
    tasks = walk(api, f"{TASKS}?page_size=3")
    assert len(tasks) == 8 + 3
    assert len({task["id"] for task in tasks}) == len(tasks)
    rohdenhaus = AusbauProject.objects.get(opportunity__epilot_id=demo_id("opportunity:rohdenhaus")).pk
    v1 = [task for task in tasks if task["execution_id"] == running["v1"]]
    assert {task["project"] for task in v1} == {rohdenhaus}
    assert v1[0]["section"] == "Planung" and v1[0]["status"] == "PENDING" and v1[0]["engine"] == "v1"
    assert {task["name"] for task in walk(api, f"{TASKS}?section=Montage")} == {"Glasfaser-Modem montieren",
                                                                                "Anschluss aktivieren"}
    assert len(walk(api, f"{TASKS}?project={rohdenhaus}")) == 8


def test_completing_a_step_through_the_api_and_the_conflict_when_it_moved(api, writer, running) -> None:
    for engine in ("v1", "v2"):
        task = first_task(api, running[engine])
        url = f"/api/v1/workflow-executions/{running[engine]}/steps/{task['step_id']}/complete/"

        done = writer.post(url, {"if_status": "PENDING"}, format="json")

        assert done.status_code == 200, done.json()
        assert done.json()["changed"] and done.json()["task"]["status"] == "COMPLETED"
        remote = get_epilot_client().get_flow_execution(running[engine]) if engine == "v2" else \
            get_epilot_client().get_execution(running[engine])
        assert next(step for step in remote.steps if step.id == task["step_id"]).status == "COMPLETED"
        assert task["id"] not in {t["id"] for t in walk(api, TASKS)}  # no longer open

        stale = writer.post(url, {"if_status": "PENDING"}, format="json")
        assert stale.status_code == 409 and "COMPLETED" in stale.json()["error"]["message"]
        again = writer.post(url, {}, format="json")
        assert again.status_code == 200 and again.json()["changed"] is False
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.UPDATE_STEP, result=EpilotWrite.Result.SUCCEEDED).count() == 2


def test_assigning_and_scheduling_through_the_api(api, writer, running) -> None:
    task = first_task(api, running["v2"])
    url = f"/api/v1/workflow-executions/{running['v2']}/steps/{task['step_id']}/"

    answer = writer.patch(url, {"assigned_to": ["u-monteur"], "due_date": "2027-01-15T09:00:00+01:00"}, format="json")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["task"]["assigned_to"] == ["u-monteur"]
    assert answer.json()["task"]["due_date"].startswith("2027-01-15T09:00:00")
    assert [t["step_id"] for t in walk(api, f"{TASKS}?assignee=u-monteur")] == [task["step_id"]]
    assert [t["step_id"] for t in walk(api, f"{TASKS}?due_before=2027-02-01T00:00:00Z")] == [task["step_id"]]
    assert writer.patch(url, {"due_date": None}, format="json").json()["task"]["due_date"] is None
    unchanged = writer.patch(url, {}, format="json")
    assert unchanged.status_code == 200 and unchanged.json()["changed"] is False
    assert writer.patch(url, {"due_date": "morgen"}, format="json").status_code == 400


def test_closing_an_execution_through_the_api(writer, running) -> None:
    url = f"/api/v1/workflow-executions/{running['v1']}/close/"

    refused = writer.post(url, {"closing_reasons": ["erfunden"]}, format="json")
    closed = writer.post(url, {"closing_reasons": ["crDoppelt"], "description": "doppelt angelegt"}, format="json")

    assert refused.status_code == 409
    assert closed.status_code == 200 and closed.json()["status"] == "CLOSED"
    assert get_epilot_client().get_execution(running["v1"]).status == "CLOSED"
    assert writer.post(url, {}, format="json").status_code == 409
    assert writer.post("/api/v1/workflow-executions/nope/close/", {}, format="json").status_code == 404


def test_writes_need_the_write_scope(api, running) -> None:
    task = first_task(api, running["v1"])
    answer = api.post(f"/api/v1/workflow-executions/{running['v1']}/steps/{task['step_id']}/complete/", {}, format="json")
    assert answer.status_code == 403 and answer.json()["error"]["status"] == 403
    assert api.post(f"/api/v1/workflow-executions/{running['v1']}/close/", {}, format="json").status_code == 403
    step_writes = [EpilotWrite.Action.UPDATE_STEP, EpilotWrite.Action.CLOSE_EXECUTION]
    assert not EpilotWrite.objects.filter(action__in=step_writes).exists()
