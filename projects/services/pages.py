"""Writing pages of epilot entities into the mirror: rows prepared off the database, then stored in bulk; quarantine.

`prepare_page` is pure (no database), so the sync builds a page's rows in its prefetch thread
while the page before is being written; `store_page` writes them inside the caller's transaction
with the watermark. Nothing here calls epilot.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from integrations.epilot import Entity, MalformedEntity
from integrations.epilot.types import relation_ids
from projects.models import Contact, Opportunity, PendingExecutionRead, QuarantinedEntity, SyncRun, SyncState
from projects.schemas import CORE_SCHEMAS, model_for
from projects.services.bulk import bulk_upsert, column_in, json_key, values_read_at_once
from projects.services.rows import (
    COMMON_FIELDS,
    EXTRA_FIELDS,
    MAX_PAYLOAD_BYTES,
    QuarantineReason,
    dumps_payload,
    entity_row,
    has_nul,
)

logger = logging.getLogger("projects.sync")


@dataclass
class MirrorChanges:
    """What a run or a refresh changed: counts for the ledger, and what rules and project refreshes look at."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    pages: int = 0
    touched_opportunities: set[str] = field(default_factory=set)
    touched_orders: set[str] = field(default_factory=set)
    workflow_changes: list[tuple[str, str, Any]] = field(default_factory=list)
    changed_refs: list[tuple[str, str]] = field(default_factory=list)
    item_links: dict[str, str] = field(default_factory=dict)  # order id -> opportunity id, from changed opportunities' items
    linked_orders: set[str] = field(default_factory=set)  # orders written with their opportunity's foreign key resolved
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time the block takes to `seconds[phase]` (fetch wait, rows, write, relations, executions, projects)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


@dataclass
class PreparedPage:
    """A page's rows, built without the database: what `store_page` writes."""

    schema: str
    rows: dict[str, dict[str, Any]]  # epilot id -> model fields
    quarantined: list[tuple[str, str, Any]]  # (epilot id, reason, payload)
    ids: list[str]  # every id the page named, mirrored or not (a full pass marks the others purged)
    last: tuple[dt.datetime, str] | None  # (_updated_at, _id) of the page's last entity: the watermark it reaches
    seconds: float  # time spent building the rows


def prepare_page(schema: str, items: tuple[Entity | MalformedEntity, ...] | list[Entity | MalformedEntity]) -> PreparedPage:
    """Build the rows of a page of one schema; what cannot be mirrored is set aside with its reason. Touches no database."""
    started = time.perf_counter()
    now = timezone.now()
    rows: dict[str, dict[str, Any]] = {}
    quarantined: list[tuple[str, str, Any]] = []
    for item in items:
        if isinstance(item, MalformedEntity):
            quarantined.append((item.id or "", item.reason, item.data))
            continue
        try:
            rows[item.id] = entity_row(schema, item, now)
        except QuarantineReason as reason:
            quarantined.append((item.id, str(reason), dict(item.data)))
    max_id = SyncState._meta.get_field("watermark_id").max_length
    last = max(((item.updated_at, item.id) for item in items
                if isinstance(item, Entity) and item.updated_at and len(item.id) <= max_id), default=None)
    return PreparedPage(schema=schema, rows=rows, quarantined=quarantined, ids=[item.id for item in items if item.id],
                        last=last, seconds=time.perf_counter() - started)


def store_page(page: PreparedPage, counts: MirrorChanges, run: SyncRun | None, state: SyncState | None, *,
               rewrite: bool) -> int:
    """Write a prepared page in bulk and advance the watermark (call inside a transaction); returns rows written.

    Rows epilot has not changed since the mirror last saw them are skipped unless `rewrite`.
    """
    schema, rows, quarantined = page.schema, dict(page.rows), list(page.quarantined)
    model = model_for(schema)
    now = timezone.now()
    counts.seconds["rows"] += page.seconds
    known = model.objects.filter(column_in(model, "epilot_id", list(rows)))
    existing = {
        epilot_id: (updated_at, deleted_at, workflows) for epilot_id, updated_at, deleted_at, workflows
        in known.values_list("epilot_id", "epilot_updated_at", "epilot_deleted_at", json_key("payload", "workflows"))
    }
    changed: dict[str, dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    for epilot_id, row in rows.items():
        before = existing.get(epilot_id)
        if before is None:
            kinds[epilot_id] = "created"
        elif row["epilot_updated_at"] == before[0] and (row["epilot_deleted_at"] is None) == (before[1] is None):
            if rewrite:
                changed[epilot_id] = row
            continue
        elif row["epilot_deleted_at"] is not None and before[1] is None:
            kinds[epilot_id] = "deleted"
        else:
            kinds[epilot_id] = "updated"
        changed[epilot_id] = row
    update_fields = COMMON_FIELDS + EXTRA_FIELDS.get(schema, ["schema"] if schema not in CORE_SCHEMAS else [])
    extra: dict[str, Any] = {"schema": schema} if schema not in CORE_SCHEMAS else {}
    # An order linked through its opportunity's items has no relation of its own: a new version of it
    # keeps the link instead of dropping it until an opportunity names it again.
    keep = ["opportunity_epilot_id"] if schema == "order" else []
    batch = [{**row, **extra} for row in changed.values()]
    if schema == "order":
        # Most orders are named only in their opportunity's items; the opportunities of this run are
        # stored already, so the link is written with the order instead of by a second UPDATE later.
        for row in batch:
            row["opportunity_epilot_id"] = row["opportunity_epilot_id"] or counts.item_links.get(row["epilot_id"], "")
        keep.append("opportunity")  # an order whose opportunity is not known yet keeps the link it had
    # The foreign keys are looked up now (contacts are synced before opportunities, opportunities
    # before orders): writing them with the row spares PostgreSQL a second version of every row.
    link = {"opportunity": ("customer", Contact), "order": ("opportunity", Opportunity)}.get(schema)
    if link and batch:
        field_name, target = link
        reference = f"{field_name}_epilot_id"
        wanted = list({row[reference] for row in batch if row[reference]})
        targets = dict(values_read_at_once(target.objects.filter(column_in(target, "epilot_id", wanted)).order_by(),
                                           "epilot_id", "id"))
        for row in batch:
            row[field_name] = targets.get(row[reference])
        update_fields = [*update_fields, field_name]

    def write(batch: list[dict[str, Any]]) -> None:
        bulk_upsert(model, batch, unique_field="epilot_id", update_fields=update_fields, newer_by="epilot_updated_at",
                    keep_when_empty=keep, believed_new=not existing)

    with counts.timed("write"):
        refused = write_isolating_failures(write, batch)
    for row, reason in refused:
        changed.pop(row["epilot_id"])
        rows.pop(row["epilot_id"])
        kinds.pop(row["epilot_id"], None)
        quarantined.append((row["epilot_id"], reason, row["payload"]))
    for kind in kinds.values():
        setattr(counts, kind, getattr(counts, kind) + 1)
    to_read = []
    for epilot_id in kinds:
        workflows = changed[epilot_id]["payload"].get("workflows")
        before = existing.get(epilot_id)
        if workflows and workflows != (before[2] if before else None):
            counts.workflow_changes.append((schema, epilot_id, workflows))
            to_read.append({"epilot_id": epilot_id, "schema": schema, "workflows": workflows, "since": now})
    # Recorded with the entity: should its executions not be read now, the next sync reads them.
    bulk_upsert(PendingExecutionRead, to_read, unique_field="epilot_id", update_fields=["schema", "workflows", "since"])
    counts.changed_refs.extend((schema, epilot_id) for epilot_id in changed)
    if schema == "opportunity":
        counts.touched_opportunities.update(changed)
        for epilot_id in changed:
            for order_id in relation_ids(changed[epilot_id]["payload"].get("items")):
                counts.item_links[order_id] = epilot_id
    elif schema == "order":
        counts.touched_orders.update(changed)
        counts.linked_orders.update(row["epilot_id"] for row in batch if row.get("opportunity") and row["epilot_id"] in changed)
    if rows and QuarantinedEntity.objects.filter(schema=schema).exists():  # (the common case needs no id list)
        QuarantinedEntity.objects.filter(schema=schema, epilot_id__in=list(rows)).delete()  # repaired in epilot
    counts.quarantined += sum(
        quarantine(schema, epilot_id, reason, payload, run, now) for epilot_id, reason, payload in quarantined
    )
    if state is not None and page.last and (
            not state.watermark_updated_at or page.last > (state.watermark_updated_at, state.watermark_id)):
        state.watermark_updated_at, state.watermark_id = page.last
        SyncState.objects.filter(pk=state.pk).update(watermark_updated_at=page.last[0], watermark_id=page.last[1])
    return len(changed)


def write_isolating_failures(write: Callable[[list[dict[str, Any]]], Any],
                             rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Write `rows` with `write`; rows the database refuses are narrowed down by halving and returned with the reason.

    Each attempt runs in a savepoint, so a refused batch leaves the surrounding transaction
    usable and every other row is written. Call inside a transaction.
    """
    if not rows:
        return []
    try:
        with transaction.atomic():
            write(rows)
        return []
    except DatabaseError as exc:
        if len(rows) == 1:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return [(rows[0], f"the database refused the row: {detail[:300]}")]
    middle = len(rows) // 2
    return write_isolating_failures(write, rows[:middle]) + write_isolating_failures(write, rows[middle:])


def quarantine(schema: str, epilot_id: str, reason: str, payload: Any, run: SyncRun | None, now: dt.datetime) -> bool:
    """Record a malformed entity; returns True when it is newly quarantined (not seen again unchanged).

    The record itself must be storable whatever the entity holds: an over-long id is shortened
    (the payload keeps it whole) and a payload PostgreSQL cannot take is kept as JSON text.
    """
    encoded = dumps_payload(payload)
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        safe_payload: Any = {"truncated": encoded[:MAX_PAYLOAD_BYTES // 4]}
    elif has_nul(encoded):
        safe_payload = {"json_text": encoded}
    else:
        safe_payload = payload
    max_id = QuarantinedEntity._meta.get_field("epilot_id").max_length
    if len(epilot_id) > max_id:
        reason = f"{reason} (id of {len(epilot_id)} characters shortened here; the payload has it whole)"
        epilot_id = epilot_id[:max_id]
    known = QuarantinedEntity.objects.filter(schema=schema, epilot_id=epilot_id).first() if epilot_id else None
    if known is not None:
        is_new = known.payload != safe_payload or known.reason != reason
        QuarantinedEntity.objects.filter(pk=known.pk).update(reason=reason, payload=safe_payload, last_seen_at=now, sync_run=run)
    else:
        is_new = True
        QuarantinedEntity.objects.create(schema=schema, epilot_id=epilot_id, reason=reason, payload=safe_payload,
                                         first_seen_at=now, last_seen_at=now, sync_run=run)
    if is_new:
        logger.warning("sync %s: quarantined %s: %s", schema, epilot_id or "(no id)", reason)
    return is_new


PURGE_CHUNK = 10_000


def mark_purged(schema: str, seen: set[str], *, chunk: int = PURGE_CHUNK) -> int:
    """After a full pass: entities we mirror that epilot no longer returns at all were purged there; returns how many.

    The mirror's ids are read `chunk` at a time, each chunk at once (values_read_at_once).
    """
    model = model_for(schema)
    queryset = model.objects.filter(epilot_deleted_at__isnull=True)
    if schema not in CORE_SCHEMAS:
        queryset = queryset.filter(schema=schema)
    missing: list[int] = []
    after = 0
    while rows := values_read_at_once(queryset.filter(pk__gt=after).order_by("pk")[:chunk], "pk", "epilot_id"):
        missing += [pk for pk, epilot_id in rows if epilot_id not in seen]
        after = max(pk for pk, _epilot_id in rows)
    now = timezone.now()
    for start in range(0, len(missing), 1000):
        model.objects.filter(pk__in=missing[start:start + 1000]).update(epilot_deleted_at=now, synced_at=now)
    if missing:
        logger.info("sync %s: %d entities purged in epilot marked deleted", schema, len(missing))
    return len(missing)

