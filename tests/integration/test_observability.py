"""What the operator sees of one webhook delivery: JSON log lines joined by its request id from gunicorn into the
Celery task, the metrics of web and worker processes in one scrape, and no secret in any log of the run."""
from __future__ import annotations

import http.client
import json

import pytest

from integrations.epilot_sandbox import demo_id
from projects.models import WebhookEvent
from tests.integration.conftest import Topology, wait_until
from tests.projects.test_webhooks import SECRET, delivery, payload

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

TOKEN = "epilot-token-never-logged-4711"


def json_lines(text: str) -> list[dict]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_a_delivery_is_followed_by_its_request_id_into_the_task_and_no_secret_is_logged(topology: Topology) -> None:
    topology.env.update({"LOG_FORMAT": "json", "EPILOT_API_TOKEN": TOKEN, "EPILOT_WEBHOOK_SECRETS": SECRET,
                         "PROMETHEUS_MULTIPROC_DIR": str(topology.logs / "metrics")})
    topology.start_worker("w1")
    port = topology.start_web()
    assert topology.manage("sync_epilot").returncode == 0
    body = payload(demo_id("opportunity:kalkstrasse"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {name.removeprefix("HTTP_").replace("_", "-").lower(): value
               for name, value in delivery(body, message_id="msg_traced").items()}
    connection.request("POST", "/webhooks/epilot/", body=body,
                       headers={**headers, "Content-Type": "application/json", "X-Request-ID": "trace-me-42"})
    answer = connection.getresponse()
    answer.read()
    assert (answer.status, answer.getheader("X-Request-ID")) == (202, "trace-me-42")
    connection.request("GET", "/health/live", headers={"X-Request-ID": "no spaces allowed"})
    live = connection.getresponse()
    live.read()
    made = live.getheader("X-Request-ID")
    assert made and made != "no spaces allowed" and len(made) == 32
    wait_until(lambda: WebhookEvent.objects.filter(webhook_id="msg_traced", outcome="processed").exists(), timeout=60,
               what="the delivery processed (see w1.log)")

    web = json_lines((topology.logs / "web.log").read_text())
    assert {"method": "POST", "path": "/webhooks/epilot/", "status": 202} in [
        {key: line.get(key) for key in ("method", "path", "status")} for line in web if line.get("request_id") == "trace-me-42"]
    traced = wait_until(lambda: [line for line in json_lines((topology.logs / "w1.log").read_text())
                                 if line.get("request_id") == "trace-me-42" and line.get("task_id")], timeout=10,
                        what="the task's log lines with the request id")
    assert any(line["message"].startswith("webhook events processed") for line in traced)
    assert {line["task_id"] for line in traced} and all(line["level"] for line in traced)

    # The worker counted the processed event in its own process; gunicorn's scrape sums every process of the host.
    connection.request("GET", "/metrics")
    scraped = connection.getresponse().read().decode()
    assert 'ausbau_webhook_events_total{outcome="received"} 1.0' in scraped
    assert 'ausbau_webhook_events_total{outcome="processed"} 1.0' in scraped
    assert 'ausbau_epilot_calls_total{operation="listEntities",service="entity",status="200"}' in scraped

    every_log = "".join(path.read_text() for path in topology.logs.glob("*.log"))
    assert TOKEN not in every_log and SECRET not in every_log and SECRET.removeprefix("whsec_") not in every_log
