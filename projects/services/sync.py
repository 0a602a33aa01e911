"""Incremental, resumable pull of epilot entities, workflow definitions and executions into the mirror.

Per schema the watermark `(_updated_at, _id)` advances in the same transaction as the page's rows,
so a crash anywhere loses nothing and a re-run converges. No transaction is open while epilot is
called: each page is fetched first, then written in one short transaction.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from integrations.epilot import Entity, EpilotClient, EpilotError, MalformedEntity, WorkflowExecution as RemoteExecution
from integrations.epilot.factory import get_epilot_client
from integrations.epilot.types import relation_ids
from projects.models import (
    Contact,
    GenericEntity,
    Opportunity,
    Order,
    QuarantinedEntity,
    SyncRun,
    SyncState,
    WorkflowDefinition,
    WorkflowExecution,
)
from projects.services.bulk import bulk_upsert
from projects.services.projects import projects_refresh

logger = logging.getLogger("projects.sync")
T = TypeVar("T")

CORE_SCHEMAS = ("contact", "opportunity", "order")
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_TITLE = 500
COMMON_FIELDS = ["title", "status", "tags", "epilot_created_at", "epilot_updated_at", "epilot_deleted_at", "payload", "synced_at"]
EXTRA_FIELDS: dict[str, list[str]] = {
    "contact": ["email"],
    "opportunity": ["customer_epilot_id", "street", "postal_code", "city", "budget"],
    "order": ["amount_total", "currency", "opportunity_epilot_id"],
}


class SyncAlreadyRunning(Exception):
    """Another process holds the lock of every requested schema."""


class QuarantineReason(ValueError):
    """An entity is readable but cannot be mirrored; the message says why."""


@dataclass
class Progress:
    """What a progress display needs after each page."""

    schema: str
    pages: int
    entities: int
    total: int | None
    elapsed: float


@dataclass
class _RunCounts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    pages: int = 0
    touched_opportunities: set[str] = field(default_factory=set)
    touched_orders: set[str] = field(default_factory=set)
    workflow_changes: list[tuple[str, str, Any]] = field(default_factory=list)
    changed_refs: list[tuple[str, str]] = field(default_factory=list)


def model_for(schema: str) -> type[models.Model]:
    return {"contact": Contact, "opportunity": Opportunity, "order": Order}.get(schema, GenericEntity)


def configured_schemas() -> list[str]:
    return [*CORE_SCHEMAS, *(s for s in settings.SYNC_EXTRA_SCHEMAS if s not in CORE_SCHEMAS)]


# ------------------------------------------------------------------ the run


def sync_run(
    *,
    trigger: str,
    schemas: Iterable[str] | None = None,
    full: bool = False,
    dry_run: bool = False,
    client: EpilotClient | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    run: SyncRun | None = None,
) -> SyncRun:
    """Sync the given schemas (default: all configured) and record the run (a queued `run` if given).

    Returns the SyncRun (status succeeded, failed or skipped). Raises nothing for epilot
    failures: they end the run as failed with the watermark at the last committed page.
    """
    client = client or get_epilot_client()
    wanted = list(dict.fromkeys(schemas or configured_schemas()))
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if run is None:
        run = SyncRun.objects.create(trigger=trigger, schemas=wanted, full=full, started_at=timezone.now(), owner=owner)
    else:
        run.status, run.started_at, run.schemas, run.full, run.owner = SyncRun.Status.RUNNING, timezone.now(), wanted, full, owner
        run.save(update_fields=["status", "started_at", "schemas", "full", "owner"])
    counts = _RunCounts()
    locked: list[str] = []
    try:
        if dry_run:
            _dry_run(client, wanted, full, on_progress)
            return _finish(run, counts, SyncRun.Status.SUCCEEDED)
        for schema in wanted:
            if acquire_lock(schema, owner):
                locked.append(schema)
            else:
                logger.warning("sync %s: another run holds the lock; skipped", schema)
        if not locked:
            return _finish(run, counts, SyncRun.Status.SKIPPED, "another sync is running for " + ", ".join(wanted))
        sync_definitions(client)
        for schema in locked:
            _sync_schema(client, schema, full=full, owner=owner, counts=counts, run=run, on_progress=on_progress)
        _link_orders_from_items()
        resolve_relations()
        _refresh_executions(client, counts)
        _refresh_projects(counts, full=full)
        _evaluate_rules(counts, client)
        skipped = [schema for schema in wanted if schema not in locked]
        return _finish(run, counts, SyncRun.Status.SUCCEEDED, f"skipped (locked elsewhere): {', '.join(skipped)}" if skipped else "")
    except EpilotError as exc:
        logger.error("sync failed: %s", exc.message)
        return _finish(run, counts, SyncRun.Status.FAILED, exc.message)
    except Exception as exc:
        _finish(run, counts, SyncRun.Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        for schema in locked:
            release_lock(schema, owner)


def sync_entities(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None) -> None:
    """Bring the named entities (schema, epilot id) into the mirror now, after a write; watermarks stay as they are."""
    client = client or get_epilot_client()
    by_schema: dict[str, list[str]] = {}
    for schema, epilot_id in refs:
        by_schema.setdefault(schema, []).append(epilot_id)
    counts = _RunCounts()
    for schema, ids in by_schema.items():
        items: list[Entity | MalformedEntity] = []
        for page in client.iter_list_entities([{"term": {"_schema": schema}}, {"ids": {"values": ids}}], include_deleted="true",
                                               stable_for=0):
            items.extend(page.results)
        with transaction.atomic():
            _store_page(schema, items, counts, None, None, rewrite=False)
    _link_orders_from_items()
    resolve_relations()
    _refresh_executions(client, counts)
    _refresh_projects(counts, full=False)
    _evaluate_rules(counts, client)


def _evaluate_rules(counts: _RunCounts, client: EpilotClient) -> None:
    if not counts.changed_refs:
        return
    from projects.services.rules import rules_evaluate

    try:
        rules_evaluate(refs=counts.changed_refs, client=client)
    except Exception:  # a rule must never make the mirror fail; the failure is in the audit trail and the log
        logger.exception("local rules could not be evaluated")


def sync_enqueue(*, trigger: str, schemas: list[str] | None = None, full: bool = False) -> SyncRun:
    """Record a queued run and hand it to a worker once the record is committed."""
    from projects.tasks import sync_epilot_task

    run = SyncRun.objects.create(trigger=trigger, schemas=schemas or configured_schemas(), full=full,
                                 status=SyncRun.Status.QUEUED, started_at=timezone.now())
    transaction.on_commit(lambda: sync_epilot_task.delay(run_id=run.pk, schemas=schemas, full=full))
    return run


def sync_run_resume(run: SyncRun, *, client: EpilotClient | None = None) -> SyncRun:
    """Carry out a run handed over by the broker: a queued one now, one whose worker died as a new run.

    A redelivered message of a run that is still alive elsewhere (its worker holds a live lock)
    does nothing, so a task runs at most once at a time.
    """
    if run.status == SyncRun.Status.QUEUED:
        return sync_run(trigger=run.trigger, schemas=run.schemas or None, full=run.full, run=run, client=client)
    if run.status != SyncRun.Status.RUNNING:
        return run
    alive = SyncState.objects.filter(lock_owner=run.owner, lock_expires_at__gte=timezone.now()).exists()
    if alive:
        return run
    SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
        status=SyncRun.Status.FAILED, finished_at=timezone.now(), error="abandoned: the process running it stopped; run again")
    return sync_run(trigger=run.trigger, schemas=run.schemas or None, full=run.full, client=client)


def _finish(run: SyncRun, counts: _RunCounts, status: str, error: str = "") -> SyncRun:
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    for name in ("created", "updated", "deleted", "quarantined", "pages"):
        setattr(run, name, getattr(counts, name))
    run.save()
    logger.info("sync run %s %s: %d created, %d updated, %d deleted, %d quarantined in %.1f s",
                run.pk, status, run.created, run.updated, run.deleted, run.quarantined, run.duration_seconds or 0)
    return run


def _dry_run(client: EpilotClient, schemas: list[str], full: bool, on_progress: Callable[[Progress], None] | None) -> None:
    for schema in schemas:
        state = SyncState.objects.filter(schema=schema).first()
        page = client.search_entities({"q": _query(schema, None if full else state), "size": 0, "include_deleted": "true"})
        if on_progress:
            on_progress(Progress(schema=schema, pages=0, entities=0, total=page.hits, elapsed=0.0))


# ------------------------------------------------------------------ single flight


def acquire_lock(schema: str, owner: str) -> bool:
    """Take the schema's lock unless a live holder has it; an expired holder (a crashed run) loses it."""
    try:
        SyncState.objects.get_or_create(schema=schema)
    except IntegrityError:
        pass  # created by a concurrent run a moment ago
    now = timezone.now()
    previous = SyncState.objects.filter(schema=schema).values_list("lock_owner", flat=True).first()
    taken = SyncState.objects.filter(schema=schema).filter(Q(lock_owner="") | Q(lock_expires_at__lt=now)).update(
        lock_owner=owner, lock_expires_at=now + dt.timedelta(seconds=settings.SYNC_LOCK_SECONDS)
    )
    if taken and previous:
        # The previous holder let its lock expire without releasing it: its process died mid-run.
        SyncRun.objects.filter(owner=previous, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, finished_at=now, error="abandoned: the process running it stopped (lock expired)")
        logger.warning("sync %s: took over the expired lock of %s", schema, previous)
    return taken == 1


def _extend_lock(schema: str, owner: str) -> None:
    expires = timezone.now() + dt.timedelta(seconds=settings.SYNC_LOCK_SECONDS)
    if not SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_expires_at=expires):
        raise RuntimeError(f"sync lock for {schema} was lost (expired and taken by another run)")


def release_lock(schema: str, owner: str) -> None:
    SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


# ------------------------------------------------------------------ entities


def _query(schema: str, state: SyncState | None) -> str:
    query = f"_schema:{schema}"
    if state and state.watermark_updated_at:
        # Re-read a short window before the watermark: epilot's search index is near-real-time, so an
        # entity saved just before the last run may have become searchable only after it.
        since = state.watermark_updated_at - dt.timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
        stamp = since.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        query += f' AND _updated_at:["{stamp}" TO *]'
    return query


def _sync_schema(client: EpilotClient, schema: str, *, full: bool, owner: str, counts: _RunCounts, run: SyncRun,
                 on_progress: Callable[[Progress], None] | None) -> None:
    state = SyncState.objects.get(schema=schema)
    started = time.monotonic()
    seen: set[str] = set()
    pages = entities = 0
    for page in prefetched(client.iter_search_entities(_query(schema, None if full else state), include_deleted="true")):
        page_started = time.monotonic()
        with transaction.atomic():
            written = _store_page(schema, list(page.results), counts, run, state, rewrite=full)
        _extend_lock(schema, owner)
        seen.update(item.id for item in page.results if item.id)
        pages += 1
        entities += len(page.results)
        counts.pages += 1
        logger.info("sync run=%s schema=%s page=%d entities=%d written=%d store_ms=%.0f", run.pk, schema, pages, len(page.results),
                    written, (time.monotonic() - page_started) * 1000)
        if on_progress:
            on_progress(Progress(schema=schema, pages=pages, entities=entities, total=page.hits, elapsed=time.monotonic() - started))
    if full:
        counts.deleted += _mark_purged(schema, seen)
    SyncState.objects.filter(pk=state.pk).update(last_success_at=timezone.now())


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetched(pages: Iterator[T]) -> Iterator[T]:
    """Yield the pages of `pages` while the next one is already being fetched in a thread.

    epilot's answer time then overlaps the writing of the page before; an error of the fetch is
    raised here, in order, after the pages before it.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not hand_over(page):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            hand_over(_Failed(exc))
            return
        hand_over(_END)

    threading.Thread(target=fetch, name="epilot-prefetch", daemon=True).start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()


def _store_page(schema: str, items: list[Entity | MalformedEntity], counts: _RunCounts, run: SyncRun | None,
                state: SyncState | None, *, rewrite: bool) -> int:
    """Write one page in bulk and advance the watermark (called inside a transaction); returns rows written.

    Rows epilot has not changed since the mirror last saw them are skipped unless `rewrite`.
    """
    model = model_for(schema)
    now = timezone.now()
    rows: dict[str, dict[str, Any]] = {}
    quarantined: list[tuple[str, str, Any]] = []
    for item in items:
        if isinstance(item, MalformedEntity):
            quarantined.append((item.id or "", item.reason, item.data))
            continue
        try:
            rows[item.id] = _row(schema, item, now)
        except QuarantineReason as reason:
            quarantined.append((item.id, str(reason), dict(item.data)))
    existing = {
        epilot_id: (updated_at, deleted_at, workflows)
        for epilot_id, updated_at, deleted_at, workflows in model.objects.filter(epilot_id__in=list(rows)).values_list(
            "epilot_id", "epilot_updated_at", "epilot_deleted_at", "payload__workflows")
    }
    changed: dict[str, dict[str, Any]] = {}
    for epilot_id, row in rows.items():
        before = existing.get(epilot_id)
        if before is None:
            counts.created += 1
        elif row["epilot_updated_at"] == before[0] and (row["epilot_deleted_at"] is None) == (before[1] is None):
            if rewrite:
                changed[epilot_id] = row
            continue
        elif row["epilot_deleted_at"] is not None and before[1] is None:
            counts.deleted += 1
        else:
            counts.updated += 1
        changed[epilot_id] = row
        workflows = row["payload"].get("workflows")
        if workflows and workflows != (before[2] if before else None):
            counts.workflow_changes.append((schema, epilot_id, workflows))
    counts.changed_refs.extend((schema, epilot_id) for epilot_id in changed)
    if schema == "opportunity":
        counts.touched_opportunities.update(changed)
    elif schema == "order":
        counts.touched_orders.update(changed)
    update_fields = COMMON_FIELDS + EXTRA_FIELDS.get(schema, ["schema"] if schema not in CORE_SCHEMAS else [])
    if schema not in CORE_SCHEMAS:
        for row in changed.values():
            row["schema"] = schema
    bulk_upsert(model, ({"epilot_id": epilot_id, **row} for epilot_id, row in changed.items()),
                unique_field="epilot_id", update_fields=update_fields, newer_by="epilot_updated_at")
    if rows:
        QuarantinedEntity.objects.filter(schema=schema, epilot_id__in=list(rows)).delete()  # repaired in epilot
    counts.quarantined += sum(_quarantine(schema, epilot_id, reason, payload, run, now) for epilot_id, reason, payload in quarantined)
    last = max((item for item in items if isinstance(item, Entity) and item.updated_at), key=lambda e: (e.updated_at, e.id), default=None)
    if state is not None and last and (not state.watermark_updated_at or (last.updated_at, last.id) > (state.watermark_updated_at, state.watermark_id)):
        state.watermark_updated_at, state.watermark_id = last.updated_at, last.id
        SyncState.objects.filter(pk=state.pk).update(watermark_updated_at=last.updated_at, watermark_id=last.id)
    return len(changed)


def _quarantine(schema: str, epilot_id: str, reason: str, payload: Any, run: SyncRun | None, now: dt.datetime) -> bool:
    """Record a malformed entity; returns True when it is newly quarantined (not seen again unchanged)."""
    safe_payload = payload if _json_size(payload) <= MAX_PAYLOAD_BYTES else {"truncated": json.dumps(payload, default=str)[:MAX_PAYLOAD_BYTES]}
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


def _json_size(payload: Any) -> int:
    return len(json.dumps(payload, default=str, ensure_ascii=False).encode())


def _row(schema: str, entity: Entity, now: dt.datetime) -> dict[str, Any]:
    """The model fields of one entity; raises QuarantineReason for what cannot be mirrored."""
    payload = dict(entity.data)
    if entity.updated_at is None:
        raise QuarantineReason("_updated_at is missing")
    if _json_size(payload) > MAX_PAYLOAD_BYTES:
        raise QuarantineReason(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB")
    title = entity.title or ""
    if len(title) > MAX_TITLE:
        raise QuarantineReason(f"_title is longer than {MAX_TITLE} characters")
    status = payload.get("status")
    if status is not None and not isinstance(status, str):
        raise QuarantineReason(f"status is {type(status).__name__}, not a string")
    row: dict[str, Any] = {
        "title": title, "status": status or "", "tags": list(entity.tags), "epilot_created_at": entity.created_at,
        "epilot_updated_at": entity.updated_at, "epilot_deleted_at": entity.deleted_at, "payload": payload, "synced_at": now,
    }
    if schema == "contact":
        emails = payload.get("email")
        first = emails[0] if isinstance(emails, list) and emails else None
        row["email"] = str(first.get("email", ""))[:254] if isinstance(first, dict) else ""
    elif schema == "opportunity":
        row["customer_epilot_id"] = _single_relation(payload, "customer")
        address = payload.get("address")
        address = address[0] if isinstance(address, list) and address else address
        address = address if isinstance(address, dict) else {}
        row["street"] = " ".join(str(address.get(key, "")) for key in ("street", "street_number")).strip()[:200]
        row["postal_code"] = str(address.get("postal_code", ""))[:20]
        row["city"] = str(address.get("city", ""))[:100]
        row["budget"] = _decimal(payload.get("budget"), "budget")
    elif schema == "order":
        amount = payload.get("amount_total")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float))):
            raise QuarantineReason(f"amount_total is {type(amount).__name__}, not a number")
        row["amount_total"] = int(amount) if amount is not None else None
        row["currency"] = str(payload.get("currency") or "")[:3]
        row["opportunity_epilot_id"] = _single_relation(payload, "opportunity")
    return row


def _single_relation(payload: dict[str, Any], attribute: str) -> str:
    value = payload.get(attribute)
    if value is None:
        return ""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and "$relation" in item:
            refs = item["$relation"]
            if not isinstance(refs, list) or not all(isinstance(ref, dict) and isinstance(ref.get("entity_id"), str) for ref in refs):
                raise QuarantineReason(f"relation {attribute} is broken: $relation must be a list of {{entity_id}}")
    ids = relation_ids(value)
    return ids[0][:64] if ids else ""


def _decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise QuarantineReason(f"{name} is a boolean, not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise QuarantineReason(f"{name} is not a number: {str(value)[:40]!r}") from None
    if not number.is_finite() or abs(number) >= Decimal("1e12"):
        raise QuarantineReason(f"{name} is out of range")
    return number.quantize(Decimal("0.01"))


def _mark_purged(schema: str, seen: set[str]) -> int:
    """After a full pass: entities we mirror that epilot no longer returns at all were purged there."""
    model = model_for(schema)
    queryset = model.objects.filter(epilot_deleted_at__isnull=True)
    if schema not in CORE_SCHEMAS:
        queryset = queryset.filter(schema=schema)
    missing = [pk for pk, epilot_id in queryset.values_list("pk", "epilot_id").iterator(chunk_size=5000) if epilot_id not in seen]
    now = timezone.now()
    for start in range(0, len(missing), 1000):
        model.objects.filter(pk__in=missing[start:start + 1000]).update(epilot_deleted_at=now, synced_at=now)
    if missing:
        logger.info("sync %s: %d entities purged in epilot marked deleted", schema, len(missing))
    return len(missing)


# ------------------------------------------------------------------ relations


def _link_orders_from_items() -> None:
    """Orders named in an opportunity's `items` relation belong to it, when the order does not say otherwise."""
    unlinked = set(Order.objects.filter(opportunity_epilot_id="").values_list("epilot_id", flat=True))
    if not unlinked:
        return
    links: dict[str, str] = {}
    for epilot_id, items in Opportunity.objects.filter(payload__has_key="items").values_list("epilot_id", "payload__items"):
        for order_id in relation_ids(items):
            if order_id in unlinked:
                links[order_id] = epilot_id
    for order_id, opportunity_id in links.items():
        Order.objects.filter(epilot_id=order_id, opportunity_epilot_id="").update(opportunity_epilot_id=opportunity_id)


def resolve_relations() -> None:
    """Point foreign keys at mirrored rows; references to entities not mirrored yet stay open for a later run."""
    Opportunity.objects.exclude(customer_epilot_id="").filter(customer__isnull=True).update(
        customer_id=Subquery(Contact.objects.filter(epilot_id=OuterRef("customer_epilot_id")).values("id")[:1]))
    Order.objects.exclude(opportunity_epilot_id="").filter(opportunity__isnull=True).update(
        opportunity_id=Subquery(Opportunity.objects.filter(epilot_id=OuterRef("opportunity_epilot_id")).values("id")[:1]))
    for schema, field_name, model in (("opportunity", "opportunity", Opportunity), ("order", "order", Order), ("contact", "contact", Contact)):
        WorkflowExecution.objects.filter(entity_schema=schema, **{f"{field_name}__isnull": True}).update(
            **{f"{field_name}_id": Subquery(model.objects.filter(epilot_id=OuterRef("entity_epilot_id")).values("id")[:1])})
    WorkflowExecution.objects.filter(definition__isnull=True).update(
        definition_id=Subquery(WorkflowDefinition.objects.filter(epilot_id=OuterRef("definition_epilot_id")).values("id")[:1]))


# ------------------------------------------------------------------ workflows


def sync_definitions(client: EpilotClient) -> int:
    """Mirror every V1 definition and V2 flow template; ones gone from epilot are flagged, not deleted."""
    remote = [*client.get_definitions(), *client.list_flow_templates()]
    now = timezone.now()
    objects = [
        WorkflowDefinition(epilot_id=d.id, engine=d.engine, name=d.name[:300], enabled=d.enabled, sections=d.sections,
                           step_count=len(d.steps), payload=dict(d.data), removed_in_epilot=False, synced_at=now)
        for d in remote
    ]
    with transaction.atomic():
        WorkflowDefinition.objects.bulk_create(objects, update_conflicts=True, unique_fields=["epilot_id"],
                                               update_fields=["engine", "name", "enabled", "sections", "step_count", "payload",
                                                              "removed_in_epilot", "synced_at"])
        WorkflowDefinition.objects.exclude(epilot_id__in=[d.id for d in remote]).update(removed_in_epilot=True)
    return len(objects)


def _refresh_executions(client: EpilotClient, counts: _RunCounts) -> None:
    """Fetch executions only for entities whose `workflows` attribute changed."""
    v2_ids = set(WorkflowDefinition.objects.filter(engine="v2").values_list("epilot_id", flat=True))
    for schema, epilot_id, workflows in counts.workflow_changes:
        executions = client.get_executions(context=epilot_id, schema=schema)
        if isinstance(workflows, dict) and v2_ids & set(workflows):
            executions += client.search_flow_executions(entity_id=epilot_id, entity_schema=schema)
        store_executions(schema, epilot_id, executions)
        if schema == "opportunity":
            counts.touched_opportunities.add(epilot_id)
        elif schema == "order":
            counts.touched_orders.add(epilot_id)
    if counts.workflow_changes:
        resolve_relations()


def store_executions(schema: str, entity_id: str, executions: list[RemoteExecution]) -> None:
    """Replace the mirrored executions of one entity with what epilot returned."""
    now = timezone.now()
    objects = [
        WorkflowExecution(
            epilot_id=e.id, engine=e.engine, definition_epilot_id=e.definition_id or "", name=(e.name or "")[:300],
            entity_schema=schema, entity_epilot_id=entity_id, status=e.status or "",
            current_section=(e.current_step.section or "")[:300] if e.current_step else "",
            current_step=e.current_step.name[:300] if e.current_step else "",
            completed_steps=e.completed_steps, total_steps=len(e.steps), flow=dict(e.data),
            started_at=e.created_at, epilot_updated_at=e.updated_at, completed_at=e.completed_at, synced_at=now,
        )
        for e in executions
    ]
    with transaction.atomic():
        WorkflowExecution.objects.bulk_create(
            objects, update_conflicts=True, unique_fields=["epilot_id"],
            update_fields=["engine", "definition_epilot_id", "name", "entity_schema", "entity_epilot_id", "status", "current_section",
                           "current_step", "completed_steps", "total_steps", "flow", "started_at", "epilot_updated_at",
                           "completed_at", "synced_at"])
        WorkflowExecution.objects.filter(entity_schema=schema, entity_epilot_id=entity_id).exclude(
            epilot_id__in=[e.id for e in executions]).delete()


def _refresh_projects(counts: _RunCounts, *, full: bool) -> None:
    if full:
        projects_refresh()
        return
    ids = set(Opportunity.objects.filter(epilot_id__in=list(counts.touched_opportunities)).values_list("id", flat=True))
    ids |= set(Order.objects.filter(epilot_id__in=list(counts.touched_orders), opportunity__isnull=False)
               .values_list("opportunity_id", flat=True))
    if ids:
        projects_refresh(opportunity_ids=ids)
