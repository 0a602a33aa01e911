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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from config import metrics
from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError, EpilotNotFoundError
from integrations.epilot.webhook_signing import ED25519_VERSION, WebhookSignatureError, public_key, secret_key, verify
from projects.mirror.intake import mirror_entities, mirror_purged
from projects.mirror.schemas import configured_schemas, model_for
from projects.models import WebhookEvent
from projects.services.errors import TRANSIENT_EPILOT_ERRORS
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
    """Every secret a delivery may be signed with: the well-formed entries of EPILOT_WEBHOOK_SECRETS (a malformed one
    is skipped; the system check `projects.W002` names it at start-up) and those provisioning stored."""
    return [*configured_webhook_secrets(), *subscription_secrets()]


def configured_webhook_secrets() -> list[str]:
    """The entries of EPILOT_WEBHOOK_SECRETS that are `whsec_` and base64."""
    return [secret for secret in (entry.strip() for entry in settings.EPILOT_WEBHOOK_SECRETS) if secret
            and _well_formed(secret)]


def malformed_webhook_secrets() -> list[int]:
    """The positions (from 1) of EPILOT_WEBHOOK_SECRETS entries that are not `whsec_` and base64."""
    return [number for number, entry in enumerate(settings.EPILOT_WEBHOOK_SECRETS, start=1)
            if entry.strip() and not _well_formed(entry.strip())]


def _well_formed(secret: str) -> bool:
    try:
        secret_key(secret)
    except WebhookSignatureError:
        return False
    return secret.startswith("whsec_")


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
        # The reason is for the operator's log; the sender learns nothing about this installation's configuration.
        logger.warning("webhook refused: %s", exc)
        return Receipt(401, "the signature could not be verified")
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

            # robust: with the broker down the event stays recorded and waiting; the sweep processes it.
            transaction.on_commit(lambda: webhook_event_task.delay(event_id=event.pk), robust=True)
    except IntegrityError:
        return Receipt(200, "already received", WebhookEvent.objects.filter(webhook_id=headers["webhook-id"][:200]).first())
    metrics.webhook_events.labels("received").inc()
    return Receipt(202, "accepted", event)


def webhook_event_process(event: WebhookEvent, *, client: EpilotClient | None = None) -> WebhookEvent:
    """Process one event now (see `webhook_events_process`); returns it with its outcome."""
    return webhook_events_process([event], client=client)[0]


def webhook_events_process(events: Sequence[WebhookEvent], *, client: EpilotClient | None = None) -> list[WebhookEvent]:
    """Re-read the events' entities into the mirror in one change set (and their executions), evaluate local rules once;
    record each event's outcome. Returns the events as recorded.

    An entity of a schema this installation does not mirror is recorded as processed with nothing to
    do. When epilot cannot be read the events are recorded as failed (the poll heals the mirror;
    staff can process them again): staff asked now, so nothing is put off.
    """
    WebhookEvent.objects.filter(pk__in=[event.pk for event in events]).update(attempts=F("attempts") + 1)
    _process(events, client or get_epilot_client(), may_wait=False)
    return list(WebhookEvent.objects.filter(pk__in=[event.pk for event in events]).order_by("received_at", "pk"))


def _process(events: Sequence[WebhookEvent], client: EpilotClient, *, may_wait: bool) -> None:
    """Mirror the events' entities as one change set and record each event's outcome.

    With `may_wait`, events whose entities epilot could not give while down or busy (timeouts, 5xx,
    429) stay waiting and are taken again after a back-off, up to WEBHOOK_MAX_ATTEMPTS attempts; then,
    and for any other epilot error, they are failed.
    """
    outcomes: dict[tuple[str, str], list[int]] = defaultdict(list)
    waiting: list[WebhookEvent] = []
    mirrored = set(configured_schemas())
    wanted = [event for event in events if event.schema in mirrored]
    for event in events:
        if event.schema not in mirrored:
            outcomes[(WebhookEvent.Outcome.PROCESSED, f"schema {event.schema} is not mirrored")].append(event.pk)
    refs = list(dict.fromkeys((event.schema, event.entity_epilot_id) for event in wanted))
    try:
        changes = mirror_entities(refs=refs, client=client) if refs else None
    except TRANSIENT_EPILOT_ERRORS as exc:
        waiting = [event for event in wanted if may_wait and event.attempts < WEBHOOK_MAX_ATTEMPTS]
        for event in waiting:
            WebhookEvent.objects.filter(pk=event.pk).update(error=exc.message[:2000], claimed_until=timezone.now() + (
                dt.timedelta(seconds=WEBHOOK_RETRY_SECONDS * 2 ** max(0, event.attempts - 1))))
        outcomes[(WebhookEvent.Outcome.FAILED, exc.message)] += [event.pk for event in wanted if event not in waiting]
    except EpilotError as exc:
        outcomes[(WebhookEvent.Outcome.FAILED, exc.message)] += [event.pk for event in wanted]
    else:
        changed = set(changes.changed_refs) if changes else set()
        gone = {ref for ref in refs if ref not in changed and _mark_purged(*ref, client)}
        if changes:
            rules_evaluate_safely(refs=changes.changed_refs, client=client)
        for event in wanted:
            note = "the entity is gone in epilot; marked deleted" if (event.schema, event.entity_epilot_id) in gone else ""
            outcomes[(WebhookEvent.Outcome.PROCESSED, note)].append(event.pk)
    now = timezone.now()
    for (outcome, error), pks in outcomes.items():
        WebhookEvent.objects.filter(pk__in=pks).update(outcome=outcome, error=error[:2000], processed_at=now,
                                                       claimed_until=None)
    processed = _outcomes_of(outcomes, WebhookEvent.Outcome.PROCESSED)
    failed = _outcomes_of(outcomes, WebhookEvent.Outcome.FAILED)
    metrics.webhook_events.labels("processed").inc(len(processed))
    metrics.webhook_events.labels("failed").inc(len(failed))
    for event in events:
        if event.pk in processed:
            metrics.webhook_latency.observe(max(0.0, (now - event.received_at).total_seconds()))
    logger.info("webhook events processed: %d, failed: %d, waiting for epilot: %d", len(processed), len(failed),
                len(waiting), extra={"events": [event.pk for event in events], "failed": len(failed)})


def _outcomes_of(outcomes: dict[tuple[str, str], list[int]], wanted: str) -> set[int]:
    return {pk for (outcome, _error), pks in outcomes.items() if outcome == wanted for pk in pks}


WEBHOOK_BATCH = 50  # events per change set: one epilot list request per schema reads them all
WEBHOOK_CLAIM_SECONDS = 120
WEBHOOK_MAX_ATTEMPTS = 5  # then the event is failed: the poll heals the mirror, staff can process it again
WEBHOOK_RETRY_SECONDS = 30  # before the second attempt; doubled for each further one


def webhook_pending_process(*, event_id: int | None = None, client: EpilotClient | None = None,
                            limit: int = WEBHOOK_BATCH) -> int:
    """Claim the event `event_id` (when still waiting) and up to `limit` waiting events in all, oldest first, and
    process them as one change set; returns how many were processed.

    Under a burst each task takes what queued up meanwhile, so a backlog drains in a few change
    sets instead of one per delivery, and the messages of events already taken do nothing. The
    sweep calls it without an event to catch what no message names (the broker was down). A claim
    lapses after WEBHOOK_CLAIM_SECONDS, so the events of a worker that died are taken again.
    """
    claimed = _claim(event_id, limit)
    if claimed:
        _process(claimed, client or get_epilot_client(), may_wait=True)
    return len(claimed)


def webhook_sweep(*, batches: int = 20, client: EpilotClient | None = None) -> int:
    """Process events left waiting (their message was never queued, or its worker died), up to `batches` change sets;
    returns how many were processed."""
    done = 0
    for _ in range(batches):
        processed = webhook_pending_process(client=client)
        if not processed:
            break
        done += processed
    return done


def _claim(event_id: int | None, limit: int) -> list[WebhookEvent]:
    """Mark up to `limit` waiting, unclaimed events as taken (`event_id` first) and return them.

    On PostgreSQL rows another worker is claiming are skipped, not waited for; SQLite runs one
    writing transaction at a time anyway.
    """
    now = timezone.now()
    waiting = WebhookEvent.objects.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
                                          outcome=WebhookEvent.Outcome.RECEIVED)
    if not waiting.exists():  # the common case of a message whose event a batch took: no writing transaction
        return []
    with transaction.atomic():
        lock = (lambda rows: rows.select_for_update(skip_locked=True)) if connection.features.has_select_for_update_skip_locked \
            else (lambda rows: rows)
        first = list(lock(waiting.filter(pk=event_id)).values_list("pk", flat=True)) if event_id is not None else []
        others = list(lock(waiting.exclude(pk__in=first).order_by("received_at", "pk")).values_list("pk", flat=True)
                      [:limit - len(first)])
        pks = first + others
        if pks:
            WebhookEvent.objects.filter(pk__in=pks).update(
                claimed_until=now + dt.timedelta(seconds=WEBHOOK_CLAIM_SECONDS), attempts=F("attempts") + 1)
    return list(WebhookEvent.objects.filter(pk__in=pks).order_by("received_at", "pk")) if pks else []


def _mark_purged(schema: str, epilot_id: str, client: EpilotClient) -> bool:
    """Mark the mirrored entity deleted when epilot no longer has it at all (purged); returns whether one was marked."""
    model = model_for(schema)
    if not model.objects.filter(epilot_id=epilot_id, epilot_deleted_at__isnull=True).exists():
        return False
    try:
        client.get_entity(schema, epilot_id)
    except EpilotNotFoundError:
        return mirror_purged(schema, epilot_id)
    except EpilotError:
        return False
    return False


def webhook_health() -> dict[str, Any]:
    """Last event, failures in the last 24 hours and the p95 latency to the mirror, for the dashboard (events left
    waiting: `health.waiting_work`)."""
    since = timezone.now() - dt.timedelta(hours=24)
    recent = WebhookEvent.objects.filter(received_at__gte=since)
    latencies = sorted(event.latency_seconds for event in recent.exclude(processed_at=None).only("received_at", "processed_at")
                       [:5000])
    return {"last": WebhookEvent.objects.order_by("-received_at").first(),
            "failed_24h": recent.filter(outcome=WebhookEvent.Outcome.FAILED).count(),
            "p95_seconds": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None}
