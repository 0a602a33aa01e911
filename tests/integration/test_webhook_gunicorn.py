"""A chunked webhook delivery through a real gunicorn, as epilot sends them (Transfer-Encoding: chunked)."""
from __future__ import annotations

import http.client
import os
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command

from integrations.connection import get_epilot_client, reset_epilot_client
from integrations.epilot_sandbox import demo_id, free_loopback_port
from projects.models import Opportunity, WebhookEvent, WebhookSubscription
from projects.services.webhook_subscriptions import webhook_provision
from projects.services.webhooks import webhook_event_process, webhook_sweep
from tests.integration.conftest import ROOT, _port_open, database_url, wait_until
from tests.projects.test_webhooks import SECRET, delivery, payload

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the groups come from data migrations


@pytest.fixture
def gunicorn_url(request, tmp_path, sandbox_store):
    """gunicorn on a free port, its embedded sandbox the `sandbox_store` file, its broker `request.param` (default an
    in-memory one); yields the port."""
    port = free_loopback_port()
    broker = getattr(request, "param", "memory://")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": database_url(),
           "EPILOT_WEBHOOK_SECRETS": SECRET, "CELERY_BROKER_URL": broker, "EPILOT_API_TOKEN": "", "EPILOT_API_URL": "",
           "EPILOT_SANDBOX_DB": str(sandbox_store.path), "LOG_LEVEL": "WARNING",
           "SECRET_KEY": settings.SECRET_KEY}  # stored webhook secrets are encrypted with it
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - gunicorn writes to it until it stops
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                               "--workers", "1", "--timeout", "30"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _port_open(port), timeout=30, what="gunicorn")
        yield port
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def send_chunked(port: int, body: bytes, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    http_headers = {name.removeprefix("HTTP_").replace("_", "-").lower(): value for name, value in headers.items()}
    connection.request("POST", "/webhooks/epilot/", body=iter([body[:17], body[17:]]), encode_chunked=True,
                       headers={**http_headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    status = connection.getresponse().status
    connection.close()
    return status


def test_a_chunked_delivery_is_read_whole_verified_and_recorded(gunicorn_url) -> None:
    body = payload("3f0c1a52-0000-4000-8000-00000000c0de")
    assert send_chunked(gunicorn_url, body, delivery(body, message_id="msg_chunked")) == 202
    assert WebhookEvent.objects.filter(webhook_id="msg_chunked").exists()
    forged = body.replace(b"c0de", b"beef")
    assert send_chunked(gunicorn_url, forged, delivery(body, message_id="msg_forged")) == 401
    assert not WebhookEvent.objects.filter(webhook_id="msg_forged").exists()


def test_the_sandbox_delivers_a_change_that_the_mirror_takes_in(gunicorn_url, sandbox, settings) -> None:
    """Provisioned webhook, a change in the sandbox, its signed chunked delivery, and the entity re-read into the mirror."""
    settings.EPILOT_SANDBOX_DB = sandbox.store.path
    reset_epilot_client()
    client = get_epilot_client()
    call_command("sync_epilot", stdout=StringIO())
    webhook_provision(url=f"http://127.0.0.1:{gunicorn_url}/webhooks/epilot/", schemas=["opportunity"], client=client)
    opportunity_id = demo_id("opportunity:nordstrasse")
    entity = client.get_entity("opportunity", opportunity_id)
    client.patch_entity("opportunity", opportunity_id, {"status": "bearbeitung"},
                        updated_at=entity.data["_updated_at"])

    assert sandbox.deliverer.deliver_due() == 1
    event = WebhookEvent.objects.get(entity_epilot_id=opportunity_id)  # signed with the provisioned secret, not SECRET
    assert event.event_id
    webhook_event_process(event, client=client)
    assert Opportunity.objects.get(epilot_id=opportunity_id).status == "bearbeitung"
    deliveries = list(client.iter_webhook_events(WebhookSubscription.objects.get().config_id))
    assert [(delivery.status, delivery.status_code) for delivery in deliveries] == [("succeeded", 202)]


@pytest.mark.parametrize("gunicorn_url", [f"redis://127.0.0.1:{free_loopback_port()}/0"], indirect=True)  # nothing listens
def test_a_delivery_accepted_while_the_broker_is_down_is_processed_by_the_sweep(gunicorn_url, settings) -> None:
    kalk = demo_id("opportunity:kalkstrasse")
    get_epilot_client().patch_entity("opportunity", kalk, {"status": "bearbeitung"})
    body = payload(kalk)

    assert send_chunked(gunicorn_url, body, delivery(body, message_id="msg_no_broker")) == 202
    event = WebhookEvent.objects.get(webhook_id="msg_no_broker")
    assert event.outcome == WebhookEvent.Outcome.RECEIVED
    assert send_chunked(gunicorn_url, body, delivery(body, message_id="msg_no_broker")) == 200  # epilot's retry: no twin

    assert webhook_sweep() == 1
    event.refresh_from_db()
    assert event.outcome == WebhookEvent.Outcome.PROCESSED
    assert Opportunity.objects.get(epilot_id=kalk).status == "bearbeitung"
    assert webhook_sweep() == 0
