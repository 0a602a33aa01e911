"""Provisioning the live-mirror webhook, its secret, the sandbox's signed deliveries and the replay of failed ones."""
from __future__ import annotations

import json
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from integrations.connection import reset_epilot_client
from integrations.epilot import EpilotClient
from integrations.epilot.webhook_signing import public_key, verify
from integrations.epilot_sandbox import SandboxApp, demo_id
from integrations.epilot_sandbox.webhook_outbox import WebhookDeliverer
from projects.models import EpilotWrite, WebhookEvent, WebhookSubscription
from projects.services.errors import NotAllowed
from projects.services.webhook_subscriptions import SUBSCRIPTION_NAME, webhook_provision, webhook_reconcile
from projects.services.webhooks import webhook_receive

URL = "https://backoffice.example/webhooks/epilot/"


@pytest.fixture
def same_sandbox(settings, sandbox_store) -> None:
    """Django's own client (the embedded sandbox) and the `epilot` fixture share one sandbox file."""
    settings.EPILOT_SANDBOX_DB = sandbox_store.path
    reset_epilot_client()


def our_configs(client: EpilotClient):
    return [config for config in client.get_configs() if config.name == SUBSCRIPTION_NAME]


def webhook_flows(client: EpilotClient):
    return [flow for flow in client.iter_flows() if "[webhook:" in flow.name]


@pytest.mark.django_db
def test_provisioning_is_idempotent_and_keeps_to_the_specs(checked_client, recorder) -> None:
    first = webhook_provision(url=URL, client=checked_client)
    assert first.config_created and sorted(first.flows_created) == ["contact", "opportunity", "order"]
    second = webhook_provision(url=URL, client=checked_client)
    assert not second.changed

    assert len(our_configs(checked_client)) == 1
    flows = webhook_flows(checked_client)
    assert sorted(flow.data["entity_schema"] for flow in flows) == ["contact", "opportunity", "order"]
    config_id = first.subscription.config_id
    assert all(flow.data["actions"][0]["config"]["target_webhook_id"] == config_id for flow in flows)
    assert all(set(flow.data["triggers"][0]["configuration"]["operations"]) >= {"createEntity", "deleteEntity"}
               for flow in flows)
    assert recorder.violations == []


@pytest.mark.django_db
def test_the_secret_is_stored_encrypted_and_never_shown(same_sandbox, epilot: EpilotClient) -> None:
    out = StringIO()
    call_command("provision_webhook", "--url", URL, stdout=out)
    subscription = WebhookSubscription.objects.get()
    secret = epilot.get_config(subscription.config_id)
    assert secret.signing_secret is None  # epilot shows it only once
    assert "whsec_" not in subscription.encrypted_secret
    assert subscription.secret_hint.startswith("whsec_…") and len(subscription.secret_hint) == len("whsec_…") + 4
    assert subscription.secret_hint in out.getvalue()
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.PROVISION_WEBHOOK, result="succeeded").count() == 4


@pytest.mark.django_db
def test_a_narrower_schema_list_and_a_new_url_update_what_exists(epilot: EpilotClient) -> None:
    webhook_provision(url=URL, client=epilot)
    report = webhook_provision(url="https://other.example/webhooks/epilot/", schemas=["opportunity"], client=epilot)
    assert report.config_updated and not report.secret_rotated
    assert sorted(report.flows_deleted) == ["contact", "order"]
    assert [config.url for config in our_configs(epilot)] == ["https://other.example/webhooks/epilot/"]
    assert [flow.data["entity_schema"] for flow in webhook_flows(epilot)] == ["opportunity"]


@pytest.mark.django_db
def test_rotation_replaces_the_config_and_keeps_the_old_secret_for_an_hour(epilot: EpilotClient, settings) -> None:
    settings.EPILOT_WEBHOOK_SECRETS = []
    first = webhook_provision(url=URL, client=epilot)
    old_config = first.subscription.config_id
    rotated = webhook_provision(url=URL, rotate=True, client=epilot)
    assert rotated.secret_rotated and rotated.subscription.config_id != old_config
    assert [config.id for config in our_configs(epilot)] == [rotated.subscription.config_id]
    flows = webhook_flows(epilot)
    assert {flow.data["actions"][0]["config"]["target_webhook_id"] for flow in flows} == {rotated.subscription.config_id}
    assert rotated.subscription.previous_valid_until is not None


@pytest.mark.django_db
def test_a_config_whose_secret_was_lost_is_replaced_not_duplicated(epilot: EpilotClient) -> None:
    webhook_provision(url=URL, client=epilot)
    WebhookSubscription.objects.all().delete()  # e.g. a restored database without the secret
    report = webhook_provision(url=URL, client=epilot)
    assert report.secret_rotated
    assert len(our_configs(epilot)) == 1 and len(webhook_flows(epilot)) == 3


@pytest.mark.django_db
def test_a_bad_url_or_schema_is_refused_before_epilot_is_asked(same_sandbox, epilot: EpilotClient) -> None:
    with pytest.raises(NotAllowed):
        webhook_provision(url="ftp://example/", client=epilot)
    with pytest.raises(NotAllowed):
        webhook_provision(url=URL, schemas=["nope"], client=epilot)
    with pytest.raises(CommandError):
        call_command("provision_webhook", stdout=StringIO())
    assert our_configs(epilot) == []


# ------------------------------------------------------------------ the sandbox delivers, the receiver accepts

@pytest.mark.django_db
def test_deliveries_carry_a_valid_ed25519_signature(sandbox: SandboxApp, epilot: EpilotClient) -> None:
    import http.server
    import threading

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert self.headers["Transfer-Encoding"] == "chunked"
            chunks = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    break
                chunks += chunk
            received.append((dict(self.headers), chunks))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    webhook_provision(url=f"http://127.0.0.1:{server.server_port}/hook", schemas=["contact"], client=epilot)
    contact = epilot.create_entity("contact", {"first_name": "Eva", "last_name": "Kunz"})
    assert sandbox.deliverer.deliver_due() == 1
    server.server_close()
    headers, body = received[0]
    assert json.loads(body)["entity"]["_id"] == contact.id
    pem = epilot.get_public_key("739224")
    only_ed25519 = " ".join(part for part in headers["webhook-signature"].split() if part.startswith("v1a,"))
    assert verify([], public_keys=[public_key(pem)], message_id=headers["webhook-id"],
                  timestamp=headers["webhook-timestamp"], signature=only_ed25519, body=body, now=time.time()) == "v1a"


@pytest.mark.django_db
def test_failed_deliveries_are_retried_then_replayed_by_reconciliation(sandbox_store, epilot: EpilotClient) -> None:
    # Nothing listens on this port: every attempt fails with a connection error.
    webhook_provision(url="http://127.0.0.1:9/webhooks/epilot/", schemas=["contact"], client=epilot)
    epilot.create_entity("contact", {"first_name": "Nina", "last_name": "Roth"})
    deliverer = WebhookDeliverer(sandbox_store, retry_scale=0, timeout_seconds=1)
    attempts = 0
    while deliverer.deliver_due():
        attempts += 1
    assert attempts == 6  # the first try and five retries (retryPolicy.maxAttempts = 5)
    config_id = WebhookSubscription.objects.get().config_id
    assert [d.status for d in epilot.iter_webhook_events(config_id)] == ["failed"]

    assert webhook_reconcile(client=epilot) == 1
    assert [d.status for d in epilot.iter_webhook_events(config_id)] == ["in_progress"]
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.REPLAY_WEBHOOKS, result="succeeded").count() == 1


@pytest.mark.django_db
def test_a_replay_with_a_new_webhook_id_of_an_event_already_received_is_a_no_op(settings) -> None:
    from tests.projects.test_webhooks import SECRET, delivery

    settings.EPILOT_WEBHOOK_SECRETS = [SECRET]
    body = json.dumps({"metadata": {"organization_id": "739224"}, "_webhook_event_id": "evt-1",
                       "entity": {"_id": demo_id("opportunity:nordstrasse"), "_schema": "opportunity"}}).encode()
    client = Client()
    statuses = []
    for message_id in ("msg_a", "msg_b"):
        headers = delivery(body, message_id=message_id)
        statuses.append(client.post("/webhooks/epilot/", data=body, content_type="application/json", **headers).status_code)
    assert statuses == [202, 200]
    assert WebhookEvent.objects.count() == 1


@pytest.mark.django_db
def test_a_burst_of_a_thousand_deliveries_loses_nothing(settings) -> None:
    from tests.projects.test_webhooks import SECRET, delivery

    settings.EPILOT_WEBHOOK_SECRETS = [SECRET]
    accepted = 0
    for number in range(1000):
        body = json.dumps({"metadata": {"organization_id": "739224"}, "_webhook_event_id": f"evt-{number}",
                           "entity": {"_id": f"id-{number % 50}", "_schema": "opportunity"}}).encode()
        headers = {key[5:].lower().replace("_", "-"): value
                   for key, value in delivery(body, message_id=f"msg_{number}").items()}
        accepted += webhook_receive(headers=headers, body=body).status == 202
        if number % 10 == 0:  # and a retry of every tenth
            assert webhook_receive(headers=headers, body=body).status == 200
    assert accepted == 1000
    assert WebhookEvent.objects.count() == 1000


@pytest.mark.django_db
def test_backoffice_staff_provision_from_the_admin_and_a_viewer_may_not(same_sandbox, epilot, client) -> None:
    from django.contrib.auth.models import Group, User
    from django.urls import reverse

    def staff(group: str) -> User:
        user = User.objects.create_user(f"{group}-user", password="pw-123456", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        return user

    page = reverse("admin:projects_webhooksubscription_provision")
    client.force_login(staff("Viewer"))
    assert client.get(page).status_code == 403
    assert client.post(page, {"url": URL, "schemas": ["opportunity"]}).status_code == 403
    assert client.post(reverse("admin:projects_webhooksubscription_replay")).status_code == 403
    assert our_configs(epilot) == []

    client.force_login(staff("Backoffice"))
    form = client.get(page)
    assert form.status_code == 200 and "/webhooks/epilot/" in form.content.decode()
    answer = client.post(page, {"url": URL, "schemas": ["opportunity", "order"]}, follow=True)
    assert "Webhook ist eingerichtet" in answer.content.decode()
    assert "whsec_…" in answer.content.decode()
    assert sorted(flow.data["entity_schema"] for flow in webhook_flows(epilot)) == ["opportunity", "order"]
    replay = client.post(reverse("admin:projects_webhooksubscription_replay"), follow=True)
    assert "0 fehlgeschlagene Zustellungen" in replay.content.decode()
    assert EpilotWrite.objects.filter(action=EpilotWrite.Action.PROVISION_WEBHOOK, user__username="Backoffice-user").exists()


@pytest.mark.django_db
def test_a_config_deleted_in_epilot_makes_the_replay_a_logged_no_op_and_provisioning_recreates_it(epilot) -> None:
    report = webhook_provision(url=URL, schemas=["contact"], client=epilot)
    epilot.delete_config(report.subscription.config_id)
    assert webhook_reconcile(client=epilot) == 0
    again = webhook_provision(url=URL, schemas=["contact"], client=epilot)
    assert again.config_created and len(our_configs(epilot)) == 1
    flow = webhook_flows(epilot)[0]
    assert flow.data["actions"][0]["config"]["target_webhook_id"] == again.subscription.config_id


@pytest.mark.django_db
def test_the_schedule_has_a_nightly_full_sync_and_an_hourly_replay() -> None:
    from django_celery_beat.models import PeriodicTask

    nightly = PeriodicTask.objects.get(name="epilot sync (full, nightly)")
    assert json.loads(nightly.kwargs) == {"trigger": "schedule", "full": True}
    assert (nightly.crontab.hour, nightly.crontab.minute, nightly.crontab.timezone.key) == ("2", "30", "Europe/Berlin")
    assert PeriodicTask.objects.get(task="projects.webhook_reconcile").enabled


@pytest.mark.django_db
def test_reconciliation_is_retried_while_epilot_is_busy_and_not_for_good(settings) -> None:
    import respx

    from projects.tasks import webhook_reconcile_task

    WebhookSubscription.objects.create(name=SUBSCRIPTION_NAME, config_id="cfg-1", url="https://backoffice.example/webhooks/")
    settings.EPILOT_API_URL, settings.EPILOT_API_TOKEN = "http://epilot.test", "t"
    reset_epilot_client()
    with respx.mock() as mock:
        busy = mock.route().respond(429, headers={"Retry-After": "0"})
        assert webhook_reconcile_task.apply().state == "FAILURE"
        tries = busy.call_count
        busy.respond(403, json={"message": "forbidden"})
        assert webhook_reconcile_task.apply().state == "FAILURE"
    assert tries == 6 * 5  # six runs of the task (five retries), each with the gateway's five attempts
    assert busy.call_count == tries + 1  # a refusal is not retried, neither by the gateway nor by the task
    reset_epilot_client()


@pytest.mark.django_db
@pytest.mark.parametrize(("url", "allowed"), [
    ("http://backoffice.example/webhooks/epilot/", False),
    ("http://10.0.0.5:8000/webhooks/epilot/", False),
    ("https://backoffice.example/webhooks/epilot/", True),
    ("http://127.0.0.1:8000/webhooks/epilot/", True),
    ("http://[::1]:8000/webhooks/epilot/", True),
    ("http://localhost:8000/webhooks/epilot/", True),
])
def test_where_https_is_required_a_receiver_url_must_use_it_except_on_loopback(settings, epilot, url, allowed) -> None:
    settings.EPILOT_WEBHOOK_REQUIRE_HTTPS = True
    if allowed:
        assert webhook_provision(url=url, client=epilot).subscription.url == url
    else:
        with pytest.raises(NotAllowed, match="https"):
            webhook_provision(url=url, client=epilot)
        assert not WebhookSubscription.objects.exists()


@pytest.mark.django_db
def test_a_changed_secret_key_with_the_old_one_as_fallback_keeps_the_webhook_and_reseals_its_secret(
        epilot: EpilotClient, settings) -> None:
    from projects.services.secret_box import sealed_with_current_key, unseal
    from projects.services.webhook_subscriptions import webhook_secrets_reseal
    from tests.projects.test_webhooks import delivery, payload

    secret = webhook_provision(url=URL, client=epilot).subscription
    stored = WebhookSubscription.objects.get().encrypted_secret
    signing_secret = unseal(stored)  # what epilot signs with
    old_key = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "n" * 60, [old_key]

    body = payload(demo_id("opportunity:kalkstrasse"))
    assert webhook_receive(headers=delivery_headers(delivery(body, secret=signing_secret)), body=body).status == 202
    assert not sealed_with_current_key(stored)
    assert webhook_secrets_reseal() == 1 and webhook_secrets_reseal() == 0
    assert sealed_with_current_key(WebhookSubscription.objects.get().encrypted_secret)
    settings.SECRET_KEY_FALLBACKS = []  # the fallback can go now
    assert not webhook_provision(url=URL, client=epilot).changed  # the secret still opens: nothing to replace
    assert WebhookSubscription.objects.get().config_id == secret.config_id
    assert webhook_receive(headers=delivery_headers(delivery(body, secret=signing_secret, message_id="msg_2")),
                           body=body).status == 202


@pytest.mark.django_db
def test_a_secret_no_key_opens_is_reported_and_replaced_by_provisioning(epilot: EpilotClient, settings, caplog) -> None:
    first = webhook_provision(url=URL, client=epilot).subscription
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "n" * 60, []  # changed without a fallback

    again = webhook_provision(url=URL, client=epilot)
    assert again.changed and again.secret_rotated
    assert again.subscription.config_id != first.config_id
    assert "cannot be decrypted" in caplog.text
    assert len(our_configs(epilot)) == 1


def delivery_headers(django_headers: dict[str, str]) -> dict[str, str]:
    return {name.removeprefix("HTTP_").replace("_", "-").lower(): value for name, value in django_headers.items()}
