"""Reconciliation: prove the mirror whole without a full sync.

epilot's ids and `_updated_at` of a schema are paged through (a thousand per search, nothing else
of the documents), compared with the mirror set-based, and what differs is fixed: entities epilot
no longer has are marked deleted (at the time found), missing and newer ones are fetched through
the mirror's one way in. Each run is recorded per schema with epilot's and the mirror's counts.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

from django.db.models import Max
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError
from projects.mirror.bulk import column_in, json_key, values_read_at_once
from projects.mirror.drift import forget_known_attributes
from projects.mirror.intake import mirror_entities, mirror_purged_among
from projects.mirror.schemas import configured_schemas, mirrored_rows, validate_schemas
from projects.models import QuarantinedEntity, Reconciliation, SchemaAttribute, WebhookEvent, WebhookSubscription

logger = logging.getLogger("projects.reconcile")

FETCH_BATCH = 500  # entities fetched per list request


def reconcile(*, schemas: Iterable[str] | None = None, client: EpilotClient | None = None) -> list[Reconciliation]:
    """Reconcile the given schemas (default: all mirrored); returns one record per schema.

    Raises UnknownSchema for a schema that is not mirrored; epilot failures end that schema's
    record as failed (what was fixed before stays fixed) and the next schema is reconciled.
    """
    wanted = validate_schemas(schemas) if schemas else configured_schemas()
    client = client or get_epilot_client()
    return [_reconcile_schema(client, schema) for schema in wanted]


def _reconcile_schema(client: EpilotClient, schema: str) -> Reconciliation:
    record = Reconciliation.objects.create(schema=schema, started_at=timezone.now())
    sent_before = client.requests_sent
    try:
        in_epilot, live = _epilot_ids(client, schema)
        mirrored = _mirror_ids(schema)
        set_aside = _quarantined(schema)
        # A quarantined entity is known: it is fetched again only once epilot changed it (perhaps repaired).
        missing = [epilot_id for epilot_id, updated_at in in_epilot.items() if epilot_id not in mirrored and not (
            epilot_id in set_aside and (updated_at is None or set_aside[epilot_id] is None
                                        or updated_at <= set_aside[epilot_id]))]
        newer = [epilot_id for epilot_id, updated_at in in_epilot.items()
                 if epilot_id in mirrored and updated_at and (mirrored[epilot_id] is None or mirrored[epilot_id] < updated_at)]
        gone = [epilot_id for epilot_id in mirrored if epilot_id not in in_epilot]
        record.deleted_found = len(mirror_purged_among(schema, gone, record.started_at))
        to_fetch = missing + newer
        for start in range(0, len(to_fetch), FETCH_BATCH):
            mirror_entities(refs=[(schema, epilot_id) for epilot_id in to_fetch[start:start + FETCH_BATCH]], client=client)
        record.missing_found, record.newer_found = len(missing), len(newer)
        record.webhook_gaps = _webhook_gaps(to_fetch, in_epilot)
        record.epilot_count = live
        record.status = Reconciliation.Status.SUCCEEDED
    except EpilotError as exc:
        record.status, record.error = Reconciliation.Status.FAILED, exc.message[:2000]
        logger.error("reconciliation of %s failed: %s", schema, exc.message)
    record.mirror_count = _live_in_mirror(schema)
    record.requests = client.requests_sent - sent_before
    record.finished_at = timezone.now()
    record.save()
    logger.info("reconciliation of %s: epilot %d, mirror %d, %d purged, %d missing, %d newer, %d without webhook, "
                "%d requests in %.1f s", schema, record.epilot_count, record.mirror_count, record.deleted_found,
                record.missing_found, record.newer_found, record.webhook_gaps, record.requests,
                record.duration_seconds or 0.0)
    return record


def _epilot_ids(client: EpilotClient, schema: str) -> tuple[dict[str, dt.datetime | None], int]:
    """Every id of `schema` epilot has, soft-deleted ones included, with its `_updated_at`; and how many are live."""
    found: dict[str, dt.datetime | None] = {}
    live = 0
    for stamps in client.iter_entity_stamps(schema):
        for stamp in stamps:
            found[stamp.id] = stamp.updated_at
            live += not stamp.deleted
    return found, live


def _mirror_ids(schema: str) -> dict[str, dt.datetime | None]:
    return dict(values_read_at_once(mirrored_rows(schema).order_by(), "epilot_id", "epilot_updated_at"))


def _quarantined(schema: str) -> dict[str, dt.datetime | None]:
    """The schema's quarantined entities: epilot id → the `_updated_at` of the version set aside."""
    stamps = {}
    for epilot_id, updated_at in QuarantinedEntity.objects.filter(schema=schema).values_list(
            "epilot_id", json_key("payload", "_updated_at")):
        try:
            stamps[epilot_id] = dt.datetime.fromisoformat(updated_at) if isinstance(updated_at, str) else None
        except ValueError:
            stamps[epilot_id] = None
    return stamps


def _live_in_mirror(schema: str) -> int:
    return mirrored_rows(schema).filter(epilot_deleted_at__isnull=True).count()


def _webhook_gaps(fetched: list[str], in_epilot: dict[str, dt.datetime | None]) -> int:
    """Of the changes this run fetched, those no webhook delivered (no event since the change); 0 without a webhook."""
    if not fetched or not WebhookSubscription.objects.exclude(config_id="").exists():
        return 0
    last_event: dict[str, dt.datetime] = {}
    for start in range(0, len(fetched), 1000):
        chunk = fetched[start:start + 1000]
        last_event.update(WebhookEvent.objects.filter(column_in(WebhookEvent, "entity_epilot_id", chunk)).order_by()
                          .values_list("entity_epilot_id").annotate(last=Max("received_at")))
    return sum(1 for epilot_id in fetched
               if epilot_id not in last_event or (in_epilot[epilot_id] and last_event[epilot_id] < in_epilot[epilot_id]))


def schema_attributes_acknowledge(attributes: Iterable[SchemaAttribute]) -> int:
    """Stop announcing these attributes (their new name or type is known now); returns how many."""
    pks = [attribute.pk for attribute in attributes]
    count = SchemaAttribute.objects.filter(pk__in=pks, acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
    forget_known_attributes()  # this process counts them no more
    return count
