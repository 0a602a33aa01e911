"""epilot webhooks: signatures, the receiver's answers, exactly-once recording, and processing by re-reading epilot."""
from __future__ import annotations

import base64
import datetime as dt
import json
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient
from integrations.epilot.webhook_signing import WebhookSignatureError, sign, verify
from integrations.epilot_sandbox import SandboxApp, demo_id
from integrations.epilot_sandbox.app import FaultConfig
from projects.mirror.changes import EntitiesChanged, entities_changed
from projects.models import Opportunity, WebhookEvent
from projects.services.webhooks import webhook_event_process, webhook_events_process, webhook_pending_process, webhook_sweep

SECRET = "whsec_" + base64.b64encode(b"stadtwerke-wuelfrath-webhook-key").decode()
OTHER = "whsec_" + base64.b64encode(b"a-rotated-out-key-of-last-year").decode()
URL = "/webhooks/epilot/"


def delivery(body: bytes, *, message_id: str = "msg_1", secret: str = SECRET, at: int | None = None,
             version: str = "v1") -> dict[str, str]:
    timestamp = int(time.time()) if at is None else at
    signature = sign(secret, message_id, timestamp, body).replace("v1,", f"{version},", 1)
    return {"HTTP_WEBHOOK_ID": message_id, "HTTP_WEBHOOK_TIMESTAMP": str(timestamp), "HTTP_WEBHOOK_SIGNATURE": signature}


def payload(entity_id: str, schema: str = "opportunity", **entity) -> bytes:
    return json.dumps({"metadata": {"organization_id": "739224", "webhook_id": "cfg-1", "automation_name": "Ausbau mirror"},
                       "entity": {"_id": entity_id, "_schema": schema, **entity}}).encode()


# ------------------------------------------------------------------ signatures

@pytest.mark.parametrize("version", ["v1", "v1s"])
def test_a_valid_signature_of_either_name_is_accepted(version) -> None:
    body = b'{"entity": {}}'
    headers = delivery(body, version=version)
    assert verify([SECRET], message_id="msg_1", timestamp=headers["HTTP_WEBHOOK_TIMESTAMP"],
                  signature=headers["HTTP_WEBHOOK_SIGNATURE"], body=body, now=time.time()) == version


def test_one_valid_entry_among_several_and_several_secrets_during_a_rotation() -> None:
    body = b"{}"
    now = int(time.time())
    signature = "v1a,bm90LWNoZWNrZWQ= " + sign(SECRET, "m", now, body)
    assert verify([OTHER, SECRET], message_id="m", timestamp=str(now), signature=signature, body=body, now=now) == "v1"


@pytest.mark.parametrize("change, reason", [
    ({"secrets": [OTHER]}, "no signature matches"),
    ({"body": b'{"entity": {"_id": "x"}}'}, "no signature matches"),
    ({"timestamp_shift": -301}, "more than 300 s"),
    ({"timestamp_shift": 301}, "more than 300 s"),
    ({"secrets": []}, "no webhook secret"),
    ({"signature": ""}, "headers are required"),
])
def test_forged_stale_future_or_unsigned_deliveries_are_refused(change, reason) -> None:
    body, now = b'{"entity": {}}', int(time.time())
    signature = sign(SECRET, "m", now, body)
    with pytest.raises(WebhookSignatureError, match=reason):
        verify(change.get("secrets", [SECRET]), message_id="m", timestamp=str(now + change.get("timestamp_shift", 0)),
               signature=change.get("signature", signature), body=change.get("body", body), now=now)


# ------------------------------------------------------------------ receiver

@pytest.fixture
def receiver(settings, db) -> Client:
    settings.EPILOT_WEBHOOK_SECRETS = [OTHER, SECRET]
    call_command("sync_epilot", stdout=StringIO())
    return Client(enforce_csrf_checks=True)


def post(client: Client, body: bytes, **headers) -> tuple[int, dict]:
    answer = client.post(URL, data=body, content_type="application/json", **headers)
    return answer.status_code, answer.json()


def test_a_signed_delivery_is_recorded_once(receiver) -> None:
    body = payload(demo_id("opportunity:kalkstrasse"))
    assert post(receiver, body, **delivery(body, message_id="msg_a"))[0] == 202
    assert post(receiver, body, **delivery(body, message_id="msg_a"))[0] == 200  # epilot's retry of the same delivery
    event = WebhookEvent.objects.get()
    assert (event.schema, event.entity_epilot_id, event.automation) == (
        "opportunity", demo_id("opportunity:kalkstrasse"), "Ausbau mirror")


def test_forged_unsigned_stale_and_malformed_deliveries_change_nothing(receiver) -> None:
    body = payload(demo_id("opportunity:kalkstrasse"))
    assert post(receiver, body)[0] == 401
    assert post(receiver, body, **delivery(body, secret="whsec_" + base64.b64encode(b"forged").decode()))[0] == 401
    assert post(receiver, body, **delivery(body, at=int(time.time()) - 3600))[0] == 401
    tampered = body.replace(b"kalk", b"KALK") if b"kalk" in body else body + b" "
    status, answer = post(receiver, tampered, **delivery(body))
    assert status == 401 and SECRET not in json.dumps(answer)
    assert post(receiver, b"[1, 2]", **delivery(b"[1, 2]"))[0] == 400
    big = b'{"entity": {"_id": "x", "_schema": "opportunity", "pad": "' + b"x" * (1024 * 1024) + b'"}}'
    assert post(receiver, big, **delivery(big))[0] == 413
    assert not WebhookEvent.objects.exists()


def test_a_burst_of_1000_deliveries_loses_nothing_and_retries_add_nothing(receiver) -> None:
    entities = [demo_id(f"opportunity:{key}") for key in ("nordstrasse", "rohdenhaus", "duessel", "kalkstrasse")]
    for round_ in range(2):  # the second round is epilot retrying every delivery
        for n in range(1000):
            body = payload(entities[n % 4])
            assert post(receiver, body, **delivery(body, message_id=f"msg_{n}"))[0] == (202 if round_ == 0 else 200)
    assert WebhookEvent.objects.count() == 1000


def test_processing_re_reads_epilot_so_late_and_duplicate_events_are_harmless(receiver) -> None:
    kalk = demo_id("opportunity:kalkstrasse")
    client = get_epilot_client()
    client.patch_entity("opportunity", kalk, {"status": "bearbeitung"})
    first = payload(kalk, status="bearbeitung")
    post(receiver, first, **delivery(first, message_id="msg_new"))
    client.patch_entity("opportunity", kalk, {"status": "geschlossen"})
    stale = payload(kalk, status="ausstehend")  # an older delivery arriving last says something old
    post(receiver, stale, **delivery(stale, message_id="msg_old"))

    for event in WebhookEvent.objects.order_by("id"):
        assert webhook_event_process(event).outcome == WebhookEvent.Outcome.PROCESSED

    assert Opportunity.objects.get(epilot_id=kalk).status == "geschlossen"
    assert all(event.processed_at and event.latency_seconds >= 0 for event in WebhookEvent.objects.all())


def test_a_purged_entity_is_marked_deleted(receiver) -> None:
    tiefen = demo_id("opportunity:tiefenbach")
    get_epilot_client().delete_entity("opportunity", tiefen, purge=True)
    body = payload(tiefen)
    post(receiver, body, **delivery(body, message_id="msg_gone"))

    event = webhook_event_process(WebhookEvent.objects.get())

    assert event.outcome == WebhookEvent.Outcome.PROCESSED
    assert Opportunity.objects.get(epilot_id=tiefen).epilot_deleted_at is not None


def received(receiver, entity_ids: list[str], prefix: str = "msg") -> list[WebhookEvent]:
    for n, entity_id in enumerate(entity_ids):
        body = payload(entity_id)
        assert post(receiver, body, **delivery(body, message_id=f"{prefix}_{n}"))[0] == 202
    return list(WebhookEvent.objects.filter(webhook_id__startswith=f"{prefix}_").order_by("received_at", "pk"))


def test_a_backlog_is_taken_by_one_task_as_one_change_set_and_the_other_messages_do_nothing(receiver) -> None:
    keys = ("nordstrasse", "rohdenhaus", "duessel", "kalkstrasse")
    client = get_epilot_client()
    for key in keys:
        client.patch_entity("opportunity", demo_id(f"opportunity:{key}"), {"status": "bearbeitung"})
    events = received(receiver, [demo_id(f"opportunity:{key}") for key in keys])
    announced: list[EntitiesChanged] = []

    def listen(sender, change: EntitiesChanged, **kwargs) -> None:
        announced.append(change)

    entities_changed.connect(listen, dispatch_uid="test-backlog")
    try:
        assert webhook_pending_process(event_id=events[2].pk) == 4
        with CaptureQueriesContext(connection) as queries:
            assert [webhook_pending_process(event_id=event.pk) for event in events] == [0, 0, 0, 0]
    finally:
        entities_changed.disconnect(dispatch_uid="test-backlog")

    assert len(announced) == 1 and announced[0].opportunities == {demo_id(f"opportunity:{key}") for key in keys}
    assert set(Opportunity.objects.filter(epilot_id__in=announced[0].opportunities).values_list("status", flat=True)) == {
        "bearbeitung"}
    assert [(e.outcome, e.attempts, e.claimed_until) for e in WebhookEvent.objects.order_by("pk")] == [
        (WebhookEvent.Outcome.PROCESSED, 1, None)] * 4
    assert not [query for query in queries.captured_queries if query["sql"].startswith(("UPDATE", "INSERT"))]


def test_an_event_another_worker_holds_is_left_alone_until_its_claim_lapses(receiver) -> None:
    (event,) = received(receiver, [demo_id("opportunity:kalkstrasse")])
    WebhookEvent.objects.filter(pk=event.pk).update(claimed_until=timezone.now() + dt.timedelta(seconds=60))
    assert webhook_pending_process(event_id=event.pk) == 0
    assert webhook_sweep() == 0

    WebhookEvent.objects.filter(pk=event.pk).update(claimed_until=timezone.now() - dt.timedelta(seconds=1))  # it died
    assert webhook_sweep() == 1
    assert WebhookEvent.objects.get().outcome == WebhookEvent.Outcome.PROCESSED


def test_a_batch_takes_at_most_its_limit_oldest_first(receiver) -> None:
    ids = [demo_id(f"opportunity:{key}") for key in ("nordstrasse", "rohdenhaus", "duessel")]
    events = received(receiver, ids)
    assert webhook_pending_process(event_id=events[2].pk, limit=2) == 2
    assert [e.outcome for e in WebhookEvent.objects.order_by("received_at", "pk")] == [
        WebhookEvent.Outcome.PROCESSED, WebhookEvent.Outcome.RECEIVED, WebhookEvent.Outcome.PROCESSED]


def test_while_epilot_is_down_events_wait_with_back_off_then_fail_and_can_be_processed_again(receiver, epilot,
                                                                                            sandbox) -> None:
    kalk, nord = demo_id("opportunity:kalkstrasse"), demo_id("opportunity:nordstrasse")
    events = received(receiver, [kalk, nord, "3f0c1a52-0000-4000-8000-00000000beef"])
    WebhookEvent.objects.filter(pk=events[2].pk).update(schema="invoice")
    epilot.patch_entity("opportunity", kalk, {"status": "bearbeitung"})
    sandbox.set_faults(FaultConfig(rate_5xx=1.0))

    assert webhook_pending_process(event_id=events[0].pk, client=epilot) == 3
    first, second, other = (WebhookEvent.objects.get(pk=event.pk) for event in events)
    assert (other.outcome, other.error) == (WebhookEvent.Outcome.PROCESSED, "schema invoice is not mirrored")
    assert first.outcome == second.outcome == WebhookEvent.Outcome.RECEIVED and first.error  # waiting, with the reason
    assert 20 < (first.claimed_until - timezone.now()).total_seconds() <= 30
    assert webhook_sweep(client=epilot) == 0  # not before its back-off has passed

    for attempt in range(2, 6):  # each time the back-off has passed
        WebhookEvent.objects.filter(outcome=WebhookEvent.Outcome.RECEIVED).update(claimed_until=timezone.now())
        assert webhook_sweep(client=epilot) == 2
        assert set(WebhookEvent.objects.filter(pk__in=[first.pk, second.pk]).values_list("attempts", flat=True)) == {attempt}
    assert [(e.outcome, e.attempts) for e in WebhookEvent.objects.filter(pk__in=[first.pk, second.pk])] == [
        (WebhookEvent.Outcome.FAILED, 5)] * 2
    assert webhook_sweep(client=epilot) == 0  # failed events wait for the poll or for staff, not for the sweep

    sandbox.set_faults(FaultConfig())
    again = webhook_events_process(list(WebhookEvent.objects.filter(outcome=WebhookEvent.Outcome.FAILED)), client=epilot)
    assert [(e.outcome, e.attempts) for e in again] == [(WebhookEvent.Outcome.PROCESSED, 6)] * 2
    assert Opportunity.objects.get(epilot_id=kalk).status == "bearbeitung"


def test_an_epilot_error_that_waiting_cannot_fix_fails_the_events_at_once(receiver, epilot, sandbox) -> None:
    (event,) = received(receiver, [demo_id("opportunity:kalkstrasse")])
    refused = EpilotClient.for_wsgi_app(SandboxApp(sandbox.store, token="the-right-one"), token="a-revoked-one")
    assert webhook_pending_process(event_id=event.pk, client=refused) == 1
    event.refresh_from_db()
    assert (event.outcome, event.attempts) == (WebhookEvent.Outcome.FAILED, 1) and event.error


# ------------------------------------------------------------------ Ed25519 (v1a)

def ed25519_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    return (key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode(),
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode())


def test_an_ed25519_signature_verifies_with_the_public_key_and_fails_when_tampered() -> None:
    from integrations.epilot.webhook_signing import public_key, sign_ed25519

    private, public = ed25519_pair()
    _other_private, other_public = ed25519_pair()
    body, now = b'{"entity": {"_id": "a"}}', int(time.time())
    signature = sign_ed25519(private, "m", now, body)
    assert verify([], message_id="m", timestamp=str(now), signature=signature, body=body, now=now,
                  public_keys=[public_key(public)]) == "v1a"
    for secrets, keys, signed_body in (([], [public_key(other_public)], body), ([], [public_key(public)], body + b" "),
                                       ([SECRET], [], body)):
        with pytest.raises(WebhookSignatureError):
            verify(secrets, message_id="m", timestamp=str(now), signature=signature, body=signed_body, now=now,
                   public_keys=keys)
    with pytest.raises(WebhookSignatureError, match="not PEM"):
        public_key("not a key")


def epilot_calls(operation: str) -> float:
    """How many calls of `operation` the gateway sent, as /metrics counts them."""
    from prometheus_client import REGISTRY

    return sum(sample.value for metric in REGISTRY.collect() if metric.name == "ausbau_epilot_calls"
               for sample in metric.samples if sample.name.endswith("_total") and sample.labels["operation"] == operation)


def test_the_receiver_accepts_v1a_with_the_organisations_key_read_outside_the_request(receiver: Client, settings) -> None:
    """Only a v1a entry: the key is read by provisioning or the refresh task, never by a delivery."""
    from django.core.cache import cache

    from integrations.epilot.webhook_signing import sign_ed25519
    from integrations.epilot_sandbox import SandboxStore
    from integrations.epilot_sandbox.webhook_outbox import signing_key_pem
    from projects.services.webhook_subscriptions import webhook_provision, webhook_public_key_refresh

    settings.EPILOT_ORG_ID = "739224"
    settings.EPILOT_WEBHOOK_SECRETS = []
    private = signing_key_pem(SandboxStore(settings.EPILOT_SANDBOX_DB))
    body = payload(demo_id("opportunity:nordstrasse"))
    now = int(time.time())

    def signed(message_id: str) -> dict[str, str]:
        return {"HTTP_WEBHOOK_ID": message_id, "HTTP_WEBHOOK_TIMESTAMP": str(now),
                "HTTP_WEBHOOK_SIGNATURE": sign_ed25519(private, message_id, now, body)}

    before = epilot_calls("getPublicKey")
    assert [post(receiver, body, **signed(f"msg_cold_{n}"))[0] for n in range(20)] == [401] * 20  # no key yet
    assert epilot_calls("getPublicKey") == before  # and no delivery asked epilot for it
    assert webhook_public_key_refresh() is True  # the task beat runs (and a cold delivery queues)
    assert post(receiver, body, **signed("msg_ed"))[0] == 202
    forged = body.replace(b"739224", b"000000")
    assert post(receiver, forged, **signed("msg_ed2"))[0] == 401
    settings.EPILOT_ORG_ID = ""  # without an organisation there is no key to check v1a with
    cache.clear()
    assert post(receiver, body, **signed("msg_ed3"))[0] == 401
    # ... until provisioning has learned it from the mirrored entities (`_org`) and read its key.
    assert webhook_provision(url="https://backoffice.example/webhooks/epilot/").subscription.organization_id == "739224"
    assert post(receiver, body, **signed("msg_ed4"))[0] == 202


def test_a_malformed_configured_secret_is_skipped_named_at_start_up_and_never_explained_to_a_sender(receiver,
                                                                                                     settings) -> None:
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.EPILOT_WEBHOOK_SECRETS = ["whsec_not base64!", SECRET]
    body = payload(demo_id("opportunity:kalkstrasse"))
    assert post(receiver, body, **delivery(body, message_id="msg_good"))[0] == 202  # the good entry still verifies
    status, answer = post(receiver, body, **delivery(body, message_id="msg_bad", secret=OTHER))
    assert status == 401 and "EPILOT" not in json.dumps(answer) and "secret" not in json.dumps(answer)
    with pytest.raises(SystemCheckError, match="Entry 1 of EPILOT_WEBHOOK_SECRETS"):
        call_command("check", "--fail-level", "WARNING", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize("sent, limit, expected", [
    (b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n", 100, b"hello world"),
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 5, "too large"),
    (b"zz\r\nhello\r\n", 100, "malformed"),
    (b"-5\r\nhello\r\n0\r\n\r\n", 100, "malformed"),  # a signed size would read the whole stream
    (b"+5\r\nhello\r\n0\r\n\r\n", 100, "malformed"),
    (b"0_5\r\nhello\r\n0\r\n\r\n", 100, "malformed"),
    (b"", 100, b""),
])
def test_a_chunked_body_passed_through_by_the_server_is_decoded_within_the_limit(sent, limit, expected) -> None:
    """Servers that hand the chunks on (not gunicorn, which de-chunks) get them decoded by the view."""
    import io

    from django.core.handlers.wsgi import WSGIRequest

    from projects.views import BadChunk, BodyTooLarge, raw_body

    request = WSGIRequest({"REQUEST_METHOD": "POST", "PATH_INFO": URL, "wsgi.input": io.BytesIO(sent),
                           "HTTP_TRANSFER_ENCODING": "chunked", "SERVER_NAME": "testserver", "SERVER_PORT": "80",
                           "wsgi.url_scheme": "http"})
    if expected == "too large":
        with pytest.raises(BodyTooLarge):
            raw_body(request, limit)
    elif expected == "malformed":
        with pytest.raises(BadChunk):
            raw_body(request, limit)
    else:
        assert raw_body(request, limit) == expected
