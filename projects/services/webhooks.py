"""epilot webhooks: accept a signed delivery once, then bring the named entity into the mirror by re-reading it.

The receiver verifies and records; it never writes the payload into the mirror. Processing re-reads
the entity (and its executions) through the gateway with the sync's newer-wins rule, so a duplicate,
late or out-of-order delivery is harmless; an entity epilot no longer returns is marked deleted.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError, EpilotNotFoundError
from integrations.epilot.webhook_signing import ED25519_VERSION, WebhookSignatureError, public_key, verify
from projects.mirror.intake import mirror_entities, mirror_purged
from projects.mirror.schemas import UnknownSchema, model_for, validate_schemas
from projects.models import WebhookEvent
from projects.services.rules import rules_evaluate_safely
from projects.services.webhook_subscriptions import organisation_public_key, subscription_secrets

logger = logging.getLogger("projects.webhooks")


@dataclass(frozen=True)
class Receipt:
    """The answer to a delivery: HTTP status and a short reason (never the body, never a secret)."""

    status: int
    reason: str
    event: WebhookEvent | None = None


def webhook_secrets() -> list[str]:
    """Every secret a delivery may be signed with: EPILOT_WEBHOOK_SECRETS and those provisioning stored."""
    configured = [secret.strip() for secret in settings.EPILOT_WEBHOOK_SECRETS if secret.strip()]
    return [*configured, *subscription_secrets()]


def _verify(headers: dict[str, str], body: bytes) -> str:
    """The signature version that matched: HMAC first (no I/O), then Ed25519 with the organisation's key."""
    arguments = {"message_id": headers.get("webhook-id", ""), "timestamp": headers.get("webhook-timestamp", ""),
                 "signature": headers.get("webhook-signature", ""), "body": body, "now": time.time(),
                 "tolerance_seconds": settings.EPILOT_WEBHOOK_TOLERANCE_SECONDS}
    try:
        return verify(webhook_secrets(), **arguments)
    except WebhookSignatureError:
        if f"{ED25519_VERSION}," not in arguments["signature"]:
            raise
        pem = organisation_public_key()
        if pem is None:
            raise
        return verify([], public_keys=[public_key(pem)], **arguments)


def webhook_receive(*, headers: dict[str, str], body: bytes) -> Receipt:
    """Verify and record one delivery; a new one is queued for processing, a repeated one is a no-op.

    Returns 401 for a bad or missing signature or timestamp, 400 for a body that is not an epilot
    payload, 403 for another organisation, 202 for a new event and 200 for a repeated one.
    """
    try:
        _verify(headers, body)
    except WebhookSignatureError as exc:
        logger.warning("webhook refused: %s", exc)
        return Receipt(401, str(exc))
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return Receipt(400, "the body is not JSON")
    entity = payload.get("entity") if isinstance(payload, dict) else None
    metadata = payload.get("metadata") if isinstance(payload, dict) and isinstance(payload.get("metadata"), dict) else {}
    if not isinstance(entity, dict) or not isinstance(entity.get("_id"), str) or not isinstance(entity.get("_schema"), str):
        return Receipt(400, "the payload names no entity (entity._id and entity._schema)")
    organization = str(metadata.get("organization_id") or payload.get("_org_id") or "")
    if settings.EPILOT_ORG_ID and organization and organization != settings.EPILOT_ORG_ID:
        logger.warning("webhook refused: organisation %s is not this installation's", organization)
        return Receipt(403, "the delivery is for another organisation")
    fields = {"event_id": str(payload.get("_webhook_event_id") or "")[:200],
              "organization_id": organization[:64], "schema": entity["_schema"][:100], "entity_epilot_id": entity["_id"][:64],
              "automation": str(metadata.get("automation_name") or "")[:300], "received_at": timezone.now()}
    # A replay of an event already received carries a new webhook-id but the same _webhook_event_id.
    earlier = WebhookEvent.objects.filter(event_id=fields["event_id"]).first() if fields["event_id"] else None
    if earlier is not None:
        return Receipt(200, "already received", earlier)
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(webhook_id=headers["webhook-id"][:200], **fields)
            from projects.tasks import webhook_event_task

            transaction.on_commit(lambda: webhook_event_task.delay(event_id=event.pk))
    except IntegrityError:
        return Receipt(200, "already received", WebhookEvent.objects.filter(webhook_id=headers["webhook-id"][:200]).first())
    return Receipt(202, "accepted", event)


def webhook_event_process(event: WebhookEvent, *, client: EpilotClient | None = None) -> WebhookEvent:
    """Re-read the event's entity into the mirror (and its executions), evaluate local rules; record the outcome.

    An entity of a schema this installation does not mirror is recorded as processed with nothing to
    do. epilot failures are recorded as failed (the poll heals it; the admin can reprocess).
    """
    client = client or get_epilot_client()
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=event.attempts + 1)
    try:
        validate_schemas([event.schema])
    except UnknownSchema:
        return _finish(event, WebhookEvent.Outcome.PROCESSED, f"schema {event.schema} is not mirrored")
    try:
        changes = mirror_entities(refs=[(event.schema, event.entity_epilot_id)], client=client)
    except EpilotError as exc:
        return _finish(event, WebhookEvent.Outcome.FAILED, exc.message)
    if not changes.changed_refs and _mark_purged(event, client):
        return _finish(event, WebhookEvent.Outcome.PROCESSED, "the entity is gone in epilot; marked deleted")
    rules_evaluate_safely(refs=changes.changed_refs, client=client)
    return _finish(event, WebhookEvent.Outcome.PROCESSED, "")


def _mark_purged(event: WebhookEvent, client: EpilotClient) -> bool:
    """Mark the mirrored entity deleted when epilot no longer has it at all (purged); returns whether one was marked."""
    model = model_for(event.schema)
    if not model.objects.filter(epilot_id=event.entity_epilot_id, epilot_deleted_at__isnull=True).exists():
        return False
    try:
        client.get_entity(event.schema, event.entity_epilot_id)
    except EpilotNotFoundError:
        return mirror_purged(event.schema, event.entity_epilot_id)
    except EpilotError:
        return False
    return False


def _finish(event: WebhookEvent, outcome: str, error: str) -> WebhookEvent:
    WebhookEvent.objects.filter(pk=event.pk).update(outcome=outcome, error=error[:2000], processed_at=timezone.now())
    event.refresh_from_db()
    return event


def webhook_health() -> dict[str, Any]:
    """Last event, failures in the last 24 hours and the p95 latency to the mirror, for the dashboard."""
    since = timezone.now() - dt.timedelta(hours=24)
    recent = WebhookEvent.objects.filter(received_at__gte=since)
    latencies = sorted(event.latency_seconds for event in recent.exclude(processed_at=None).only("received_at", "processed_at")
                       [:5000])
    return {"last": WebhookEvent.objects.order_by("-received_at").first(),
            "failed_24h": recent.filter(outcome=WebhookEvent.Outcome.FAILED).count(),
            "p95_seconds": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None}
