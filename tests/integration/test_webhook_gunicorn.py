"""A chunked webhook delivery through a real gunicorn, as epilot sends them (Transfer-Encoding: chunked)."""
from __future__ import annotations

import http.client
import os
import subprocess
import sys

import pytest

from integrations.epilot_sandbox import free_loopback_port
from projects.models import WebhookEvent
from tests.integration.conftest import ROOT, _port_open, database_url, wait_until
from tests.projects.test_webhooks import SECRET, delivery, payload

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)  # the groups come from data migrations


@pytest.fixture
def gunicorn_url(tmp_path):
    port = free_loopback_port()
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": database_url(),
           "EPILOT_WEBHOOK_SECRETS": SECRET, "CELERY_BROKER_URL": "memory://", "EPILOT_API_TOKEN": "", "EPILOT_API_URL": "",
           "EPILOT_SANDBOX_DB": str(tmp_path / "sandbox.sqlite3"), "LOG_LEVEL": "WARNING"}
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
