"""Incremental, resumable pull of epilot entities, workflow definitions and executions into the mirror.

Per schema the watermark `(_updated_at, _id)` advances in the same transaction as the page's rows,
so a crash anywhere loses nothing and a re-run converges. No transaction is open while epilot is
called: each page is fetched first, then written in one short transaction.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, IntegrityError, models, transaction
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


class UnknownSchema(ValueError):
    """A schema name that is not one the mirror is configured for (or not a slug at all)."""


class LeaseLost(RuntimeError):
    """Another run took over a schema's lock: this run's lease ran out while it was still working."""


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


SCHEMA_SLUG = re.compile(r"[a-z][a-z0-9_]{0,99}")


def validate_schemas(schemas: Iterable[str]) -> list[str]:
    """The given schema names, de-duplicated, if each is a configured schema slug.

    Schema names end up in search queries, so nothing else may pass. Raises UnknownSchema.
    """
    wanted = list(dict.fromkeys(schemas))
    allowed = set(configured_schemas())
    for schema in wanted:
        if not isinstance(schema, str) or not SCHEMA_SLUG.fullmatch(schema):
            raise UnknownSchema(f"Unknown schema {str(schema)[:100]!r}: not a schema slug")
        if schema not in allowed:
            raise UnknownSchema(f"Unknown schema {schema!r}: not mirrored (configured: {', '.join(sorted(allowed))}; "
                                "add more with SYNC_EXTRA_SCHEMAS)")
    return wanted


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
    wait_for_lock_seconds: float = 0.0,
) -> SyncRun:
    """Sync the given schemas (default: all configured) and record the run (a queued `run` if given).

    A schema locked by another run is waited for up to `wait_for_lock_seconds` (a crashed
    holder's lease runs out within SYNC_LOCK_SECONDS), then skipped. Returns the SyncRun (status
    succeeded, failed or skipped). Raises UnknownSchema for a schema that is not configured;
    nothing for epilot failures: they end the run as failed with the watermark at the last
    committed page.
    """
    wanted = validate_schemas(schemas) if schemas else configured_schemas()
    client = client or get_epilot_client()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if run is None:
        run = SyncRun.objects.create(trigger=trigger, schemas=wanted, full=full, started_at=timezone.now(), owner=owner)
    else:
        run.status, run.started_at, run.schemas, run.full, run.owner = SyncRun.Status.RUNNING, timezone.now(), wanted, full, owner
        run.save(update_fields=["status", "started_at", "schemas", "full", "owner"])
    counts = _RunCounts()
    lease = SyncLease(owner)
    try:
        if dry_run:
            _dry_run(client, wanted, full, on_progress)
            return _finish(run, counts, SyncRun.Status.SUCCEEDED)
        locked = lease.acquire(wanted, wait_seconds=wait_for_lock_seconds)
        if not locked:
            return _finish(run, counts, SyncRun.Status.SKIPPED, "another sync is running for " + ", ".join(wanted))
        run.started_at = timezone.now()  # the run starts once it holds its locks, not while it waits for them
        SyncRun.objects.filter(pk=run.pk).update(started_at=run.started_at)
        sync_definitions(client)
        for schema in locked:
            _sync_schema(client, schema, full=full, lease=lease, counts=counts, run=run, on_progress=on_progress)
        lease.check()
        _link_orders_from_items()
        resolve_relations()
        _refresh_executions(client, counts, lease)
        lease.check()
        _refresh_projects(counts, full=full)
        _evaluate_rules(counts, client)
        skipped = [schema for schema in wanted if schema not in locked]
        return _finish(run, counts, SyncRun.Status.SUCCEEDED, f"skipped (locked elsewhere): {', '.join(skipped)}" if skipped else "")
    except EpilotError as exc:
        logger.error("sync failed: %s", exc.message)
        return _finish(run, counts, SyncRun.Status.FAILED, exc.message)
    except LeaseLost as exc:
        logger.error("sync stopped: %s", exc)
        return _finish(run, counts, SyncRun.Status.FAILED, str(exc))
    except Exception as exc:
        _finish(run, counts, SyncRun.Status.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        lease.release()


def sync_entities(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None) -> None:
    """Bring the named entities (schema, epilot id) into the mirror now, after a write; watermarks stay as they are."""
    by_schema: dict[str, list[str]] = {}
    for schema, epilot_id in refs:
        by_schema.setdefault(schema, []).append(epilot_id)
    validate_schemas(by_schema)
    client = client or get_epilot_client()
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
    _refresh_executions(client, counts, None)
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

    schemas = validate_schemas(schemas) if schemas else None
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
        return sync_run(trigger=run.trigger, schemas=run.schemas or None, full=run.full, run=run, client=client,
                        wait_for_lock_seconds=lease_seconds() + 2)
    if run.status != SyncRun.Status.RUNNING:
        return run
    alive = SyncState.objects.filter(lock_owner=run.owner, lock_expires_at__gte=timezone.now()).exists()
    if alive:
        return run
    SyncRun.objects.filter(pk=run.pk, status=SyncRun.Status.RUNNING).update(
        status=SyncRun.Status.FAILED, finished_at=timezone.now(), error="abandoned: the process running it stopped; run again")
    return sync_run(trigger=run.trigger, schemas=run.schemas or None, full=run.full, client=client,
                    wait_for_lock_seconds=lease_seconds() + 2)


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


def lease_seconds() -> int:
    return max(3, settings.SYNC_LOCK_SECONDS)


def acquire_lock(schema: str, owner: str) -> bool:
    """Take the schema's lock unless a live holder has it; an expired holder (a crashed run) loses it."""
    try:
        SyncState.objects.get_or_create(schema=schema)
    except IntegrityError:
        pass  # created by a concurrent run a moment ago
    now = timezone.now()
    previous = SyncState.objects.filter(schema=schema).values_list("lock_owner", flat=True).first()
    taken = SyncState.objects.filter(schema=schema).filter(Q(lock_owner="") | Q(lock_expires_at__lt=now)).update(
        lock_owner=owner, lock_expires_at=now + dt.timedelta(seconds=lease_seconds())
    )
    if taken and previous:
        # The previous holder let its lease run out without releasing it: its process died mid-run.
        SyncRun.objects.filter(owner=previous, status=SyncRun.Status.RUNNING).update(
            status=SyncRun.Status.FAILED, finished_at=now, error="abandoned: the process running it stopped (lock expired)")
        logger.warning("sync %s: took over the expired lock of %s", schema, previous)
    return taken == 1


def renew_lock(schema: str, owner: str) -> bool:
    """Extend the lease of a lock `owner` holds; False when it is no longer the holder."""
    expires = timezone.now() + dt.timedelta(seconds=lease_seconds())
    return SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_expires_at=expires) == 1


def release_lock(schema: str, owner: str) -> None:
    SyncState.objects.filter(schema=schema, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


class SyncLease:
    """The locks of one run, as short leases kept alive by a heartbeat thread in every phase.

    A live run renews its leases every third of SYNC_LOCK_SECONDS, also while it waits for
    epilot or refreshes projects, so it is never taken over; a run killed with SIGKILL stops
    renewing, and its locks are free within SYNC_LOCK_SECONDS. The main thread renews at page
    boundaries as well, so short runs never need the heartbeat's own database connection.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.schemas: list[str] = []
        self._renewed_at = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._mutex = threading.Lock()
        self._thread: threading.Thread | None = None

    def acquire(self, schemas: list[str], *, wait_seconds: float = 0.0) -> list[str]:
        """Lock every schema, waiting up to `wait_seconds` while another run holds one; returns the locked ones.

        Nothing is held while waiting (all or none, so two waiting runs cannot split the schemas
        between them); once the wait is over, the schemas that are free are taken and the rest skipped.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            locked = [schema for schema in schemas if acquire_lock(schema, self.owner)]
            if len(locked) == len(schemas) or time.monotonic() >= deadline:
                break
            for schema in locked:
                release_lock(schema, self.owner)
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        for schema in schemas:
            if schema not in locked:
                logger.warning("sync %s: another run holds the lock; skipped", schema)
        self.schemas = locked
        self._renewed_at = time.monotonic()
        if self.schemas:
            self._start_heartbeat()
        return list(self.schemas)

    def renew_if_due(self) -> None:
        """Renew from the calling thread when a sixth of the lease has passed; raises LeaseLost."""
        self.check()
        if time.monotonic() - self._renewed_at >= lease_seconds() / 6:
            self._renew()
            self.check()

    def check(self) -> None:
        """Raise LeaseLost when the heartbeat found a lock taken over."""
        if self._lost:
            raise LeaseLost(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=lease_seconds())
        for schema in self.schemas:
            release_lock(schema, self.owner)

    def _renew(self) -> None:
        with self._mutex:
            for schema in self.schemas:
                if not renew_lock(schema, self.owner):
                    self._lost = f"sync lock for {schema} was lost (lease expired and taken by another run)"
            self._renewed_at = time.monotonic()

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat, name="sync-lease-heartbeat", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(1.0):
                if time.monotonic() - self._renewed_at < lease_seconds() / 3:
                    continue
                try:
                    self._renew()
                except Exception:  # a failed renewal is tried again a second later; expiry is the only judge
                    logger.exception("sync lease renewal failed")
        finally:
            connection.close()


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


def _sync_schema(client: EpilotClient, schema: str, *, full: bool, lease: SyncLease, counts: _RunCounts, run: SyncRun,
                 on_progress: Callable[[Progress], None] | None) -> None:
    state = SyncState.objects.get(schema=schema)
    started = time.monotonic()
    seen: set[str] = set()
    pages = entities = 0
    for page in prefetched(client.iter_search_entities(_query(schema, None if full else state), include_deleted="true")):
        page_started = time.monotonic()
        with transaction.atomic():
            written = _store_page(schema, list(page.results), counts, run, state, rewrite=full)
        lease.renew_if_due()
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
    if schema not in CORE_SCHEMAS:
        for row in changed.values():
            row["schema"] = schema
    refused = write_isolating_failures(
        lambda batch: bulk_upsert(model, batch, unique_field="epilot_id", update_fields=update_fields, newer_by="epilot_updated_at"),
        [{"epilot_id": epilot_id, **row} for epilot_id, row in changed.items()])
    for row, reason in refused:
        changed.pop(row["epilot_id"])
        rows.pop(row["epilot_id"])
        kinds.pop(row["epilot_id"], None)
        quarantined.append((row["epilot_id"], reason, row["payload"]))
    for kind in kinds.values():
        setattr(counts, kind, getattr(counts, kind) + 1)
    for epilot_id in kinds:
        workflows = changed[epilot_id]["payload"].get("workflows")
        before = existing.get(epilot_id)
        if workflows and workflows != (before[2] if before else None):
            counts.workflow_changes.append((schema, epilot_id, workflows))
    counts.changed_refs.extend((schema, epilot_id) for epilot_id in changed)
    if schema == "opportunity":
        counts.touched_opportunities.update(changed)
    elif schema == "order":
        counts.touched_orders.update(changed)
    if rows:
        QuarantinedEntity.objects.filter(schema=schema, epilot_id__in=list(rows)).delete()  # repaired in epilot
    counts.quarantined += sum(_quarantine(schema, epilot_id, reason, payload, run, now) for epilot_id, reason, payload in quarantined)
    max_id = SyncState._meta.get_field("watermark_id").max_length
    last = max((item for item in items if isinstance(item, Entity) and item.updated_at and len(item.id) <= max_id),
               key=lambda e: (e.updated_at, e.id), default=None)
    if state is not None and last and (not state.watermark_updated_at or (last.updated_at, last.id) > (state.watermark_updated_at, state.watermark_id)):
        state.watermark_updated_at, state.watermark_id = last.updated_at, last.id
        SyncState.objects.filter(pk=state.pk).update(watermark_updated_at=last.updated_at, watermark_id=last.id)
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


def _quarantine(schema: str, epilot_id: str, reason: str, payload: Any, run: SyncRun | None, now: dt.datetime) -> bool:
    """Record a malformed entity; returns True when it is newly quarantined (not seen again unchanged).

    The record itself must be storable whatever the entity holds: an over-long id is shortened
    (the payload keeps it whole) and a payload PostgreSQL cannot take is kept as JSON text.
    """
    encoded = _json(payload)
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        safe_payload: Any = {"truncated": encoded[:MAX_PAYLOAD_BYTES // 4]}
    elif ESCAPED_NUL.search(encoded):
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


# A NUL in any string of a document, as json.dumps writes it (an escaped backslash before "u0000" is text).
ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _json(payload: Any) -> str:
    return json.dumps(payload, default=str, ensure_ascii=False)


def _row(schema: str, entity: Entity, now: dt.datetime) -> dict[str, Any]:
    """The model fields of one entity; raises QuarantineReason for what cannot be mirrored."""
    payload = dict(entity.data)
    if entity.updated_at is None:
        raise QuarantineReason("_updated_at is missing")
    encoded = _json(payload)
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        raise QuarantineReason(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB")
    if ESCAPED_NUL.search(encoded):
        raise QuarantineReason("the payload contains a NUL character (\\u0000), which PostgreSQL cannot store")
    title = entity.title or ""
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
        row["email"] = str(first.get("email", "")) if isinstance(first, dict) else ""
    elif schema == "opportunity":
        row["customer_epilot_id"] = _single_relation(payload, "customer")
        address = payload.get("address")
        address = address[0] if isinstance(address, list) and address else address
        address = address if isinstance(address, dict) else {}
        row["street"] = " ".join(_text(address.get(key)) for key in ("street", "street_number")).strip()
        row["postal_code"] = _text(address.get("postal_code"))
        row["city"] = _text(address.get("city"))
        row["budget"] = _decimal(payload.get("budget"), "budget")
    elif schema == "order":
        amount = payload.get("amount_total")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float))):
            raise QuarantineReason(f"amount_total is {type(amount).__name__}, not a number")
        if isinstance(amount, float) and not math.isfinite(amount):
            raise QuarantineReason("amount_total is not a finite number")
        row["amount_total"] = int(amount) if amount is not None else None
        row["currency"] = _text(payload.get("currency"))
        row["opportunity_epilot_id"] = _single_relation(payload, "opportunity")
    check_fits(model_for(schema), {"epilot_id": entity.id, **row})
    return row


def _text(value: Any) -> str:
    return "" if value is None else str(value)


INTEGER_RANGES = {
    "BigIntegerField": (-(2**63), 2**63 - 1),
    "IntegerField": (-(2**31), 2**31 - 1),
    "PositiveIntegerField": (0, 2**31 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
}


# The epilot attribute each mirrored column comes from, to name it in a quarantine reason.
SOURCE_ATTRIBUTES = {
    "epilot_id": "_id", "title": "_title", "email": "email[0].email", "customer_epilot_id": "customer ($relation entity_id)",
    "street": "address street + street_number", "postal_code": "address postal_code", "city": "address city",
    "opportunity_epilot_id": "opportunity ($relation entity_id)", "definition_epilot_id": "definition id",
}


def check_fits(model: type[models.Model], row: dict[str, Any]) -> None:
    """Raise QuarantineReason when a value does not fit its column whole (length, range, NUL).

    PostgreSQL refuses such values and SQLite would keep them; a mirrored value is either
    whole or quarantined, never cut.
    """
    for name, value in row.items():
        if value is None or name == "payload":
            continue
        field = model._meta.get_field(name)
        name = SOURCE_ATTRIBUTES.get(name, name)
        if isinstance(value, str):
            if field.max_length is not None and len(value) > field.max_length:
                raise QuarantineReason(f"{name} is {len(value)} characters long; the mirror keeps at most {field.max_length}")
            if "\x00" in value:
                raise QuarantineReason(f"{name} contains a NUL character, which PostgreSQL cannot store")
        elif isinstance(value, int) and not isinstance(value, bool):
            low, high = INTEGER_RANGES.get(field.get_internal_type(), (None, None))
            if low is not None and not low <= value <= high:
                raise QuarantineReason(f"{name} is out of range ({value})")


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
    return ids[0] if ids else ""


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
        definition_id=Subquery(WorkflowDefinition.objects.filter(epilot_id=OuterRef("definition_epilot_id"), engine=OuterRef("engine"))
                               .values("id")[:1]))


# ------------------------------------------------------------------ workflows


def sync_definitions(client: EpilotClient) -> int:
    """Mirror every V1 definition and V2 flow template; ones gone from epilot are flagged, not deleted.

    A definition is identified by engine and id: epilot lists V1 definitions as flow templates
    too, so one id may come back once per engine (and an answer may repeat an entry).
    """
    now = timezone.now()
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for d in [*client.get_definitions(), *client.list_flow_templates()]:
        row = {"epilot_id": d.id, "engine": d.engine, "name": d.name, "enabled": d.enabled, "sections": d.sections,
               "step_count": len(d.steps), "payload": dict(d.data), "removed_in_epilot": False, "synced_at": now}
        try:
            check_fits(WorkflowDefinition, {key: value for key, value in row.items() if key not in ("sections", "payload")})
        except QuarantineReason as reason:
            _quarantine("workflow_definition", d.id, str(reason), dict(d.data), None, now)
            continue
        unique[(d.engine, d.id)] = row
    objects = [WorkflowDefinition(**row) for row in unique.values()]
    with transaction.atomic():
        WorkflowDefinition.objects.bulk_create(objects, update_conflicts=True, unique_fields=["engine", "epilot_id"],
                                               update_fields=["name", "enabled", "sections", "step_count", "payload",
                                                              "removed_in_epilot", "synced_at"])
        gone = WorkflowDefinition.objects.all()
        for engine in {engine for engine, _ in unique}:
            gone = gone.exclude(engine=engine, epilot_id__in=[epilot_id for known, epilot_id in unique if known == engine])
        gone.update(removed_in_epilot=True)
    return len(objects)


def _refresh_executions(client: EpilotClient, counts: _RunCounts, lease: SyncLease | None) -> None:
    """Fetch executions only for entities whose `workflows` attribute changed."""
    v2_ids = set(WorkflowDefinition.objects.filter(engine="v2").values_list("epilot_id", flat=True))
    for schema, epilot_id, workflows in counts.workflow_changes:
        read_at = timezone.now()
        executions = client.get_executions(context=epilot_id, schema=schema)
        if isinstance(workflows, dict) and v2_ids & set(workflows):
            executions += client.search_flow_executions(entity_id=epilot_id, entity_schema=schema)
        store_executions(schema, epilot_id, executions, read_at=read_at)
        if schema == "opportunity":
            counts.touched_opportunities.add(epilot_id)
        elif schema == "order":
            counts.touched_orders.add(epilot_id)
        if lease:
            lease.renew_if_due()
    if counts.workflow_changes:
        resolve_relations()


EXECUTION_FIELDS = ["engine", "definition_epilot_id", "name", "entity_schema", "entity_epilot_id", "status", "current_section",
                    "current_step", "completed_steps", "total_steps", "flow", "started_at", "epilot_updated_at", "completed_at",
                    "synced_at"]


def store_executions(schema: str, entity_id: str, executions: list[RemoteExecution], *, read_at: dt.datetime | None = None) -> None:
    """Bring the mirrored executions of one entity to what epilot returned when read at `read_at`.

    An older version never overwrites a newer one, and an execution another writer stored after
    `read_at` is kept even if this answer lacks it. Executions that do not fit the mirror are
    quarantined (schema `workflow_execution`).
    """
    now = timezone.now()
    read_at = read_at or now
    rows = []
    for e in executions:
        row = {"epilot_id": e.id, "engine": e.engine, "definition_epilot_id": e.definition_id or "", "name": e.name or "",
               "entity_schema": schema, "entity_epilot_id": entity_id, "status": e.status or "",
               "current_section": (e.current_step.section or "") if e.current_step else "",
               "current_step": e.current_step.name if e.current_step else "",
               "completed_steps": e.completed_steps, "total_steps": len(e.steps), "flow": dict(e.data),
               "started_at": e.created_at, "epilot_updated_at": e.updated_at, "completed_at": e.completed_at, "synced_at": now}
        try:
            check_fits(WorkflowExecution, {key: value for key, value in row.items() if key != "flow"})
        except QuarantineReason as reason:
            _quarantine("workflow_execution", e.id, str(reason), dict(e.data), None, now)
            continue
        rows.append(row)
    with transaction.atomic():
        bulk_upsert(WorkflowExecution, rows, unique_field="epilot_id", update_fields=EXECUTION_FIELDS, newer_by="epilot_updated_at")
        WorkflowExecution.objects.filter(entity_schema=schema, entity_epilot_id=entity_id, synced_at__lt=read_at).exclude(
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
