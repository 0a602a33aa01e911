"""Writing pages of epilot entities into the mirror: rows prepared off the database, then stored in bulk; quarantine.

`prepare_page` is pure (no database), so the sync builds a page's rows in its prefetch thread
while the page before is being written; `store_page` writes them inside the caller's transaction
with the watermark. Nothing here calls epilot.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from integrations.epilot import Entity, MalformedEntity
from integrations.epilot.types import MalformedPayload, relation_ids, system_attributes
from projects.mirror.bulk import adapt_ahead, among, bulk_upsert, column_in, json_key, values_read_at_once
from projects.mirror.changes import EntitiesChanged
from projects.mirror.drift import add_attribute_types, named_attributes, record_drift
from projects.mirror.rows import (
    COMMON_FIELDS,
    EXTRA_FIELDS,
    MAX_PAYLOAD_BYTES,
    QuarantineReason,
    document_row,
    dumps_payload,
    has_nul,
)
from projects.mirror.schemas import CORE_SCHEMAS, mirrored_rows, model_for
from projects.models import (
    MirroredEntity,
    Opportunity,
    OpportunityItem,
    Order,
    PendingExecutionRead,
    QuarantinedEntity,
    SyncRun,
    SyncState,
    WorkflowExecution,
)

logger = logging.getLogger("projects.sync")


@dataclass
class MirrorChanges:
    """What a run or a refresh changed: counts for the ledger, and what rules and project refreshes look at.

    A full pass (`full_pass`) rewrites every row it reads and is announced whole: it records no
    entity one by one, which would hold an id, a tuple and an entry for each mirrored entity until
    its end. It may be announced whole before its end (`whole_so_far`); from then on it names what
    changes after, as any other change set does.
    """

    full_pass: bool = False
    announced_whole: bool = False
    created: int = 0
    updated: int = 0
    deleted: int = 0
    quarantined: int = 0
    pages: int = 0
    touched_opportunities: set[str] = field(default_factory=set)
    touched_orders: set[str] = field(default_factory=set)
    workflow_changes: list[tuple[str, str, Any]] = field(default_factory=list)
    changed_refs: list[tuple[str, str]] = field(default_factory=list)
    kinds: dict[tuple[str, str], str] = field(default_factory=dict)  # (schema, id) -> created, updated or deleted
    previous_owners: set[int] = field(default_factory=set)  # opportunities (pks) changed orders belonged to before
    previous_address_keys: set[str] = field(default_factory=set)  # address keys changed opportunities had before
    relinked_orders: set[str] = field(default_factory=set)  # orders whose opportunity changed through items
    executions_stored: set[tuple[str, str]] = field(default_factory=set)  # entities whose executions were stored
    # Entities pages named whose rows were not written: quarantined, or the mirror holds a newer version.
    not_written: set[tuple[str, str]] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def touch(self, schema: str, epilot_id: str) -> None:
        """Record that what is derived from this entity may have changed (its executions, its deletion)."""
        if schema == "opportunity":
            self.touched_opportunities.add(epilot_id)
        elif schema == "order":
            self.touched_orders.add(epilot_id)

    def as_event(self) -> EntitiesChanged:
        """The change set as the mirror announces it: every entity whose row (or executions, or order link) changed.

        Built from this record's own `kinds` (not a copy): call it once the change set is complete. A full
        pass announces a full change, also when its run ended early, unless it was announced whole before
        (`whole_so_far`): then what changed since.
        """
        if self.full_pass and not self.announced_whole:
            return EntitiesChanged(refs=(), kinds={}, full=True)
        kinds = self.kinds
        for ref in self.executions_stored:
            kinds.setdefault(ref, "workflows")
        for epilot_id in self.relinked_orders:
            kinds.setdefault(("order", epilot_id), "linked")
        return EntitiesChanged(refs=tuple(kinds), kinds=kinds, opportunities=frozenset(self.touched_opportunities),
                               orders=frozenset(self.touched_orders), previous_owners=frozenset(self.previous_owners),
                               previous_address_keys=frozenset(self.previous_address_keys))

    def whole_so_far(self) -> EntitiesChanged:
        """A full pass's change so far, announced whole (everything derived is recomputed from what it committed);
        from now on `as_event` names only the entities whose executions or order links change after."""
        whole = self.as_event()
        self.announced_whole = True
        for recorded in (self.executions_stored, self.relinked_orders, self.touched_opportunities, self.touched_orders):
            recorded.clear()
        return whole

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Add the time the block takes to `seconds[phase]` (fetch wait, rows, write, relations, executions, projects)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


# A prepared row carries its payload as JSON text in UTF-8 bytes ("payload__json") and, under this key, the parts of it that
# `store_page` reads: a page of whole documents would be held (and, built in another process, sent) twice.
PAYLOAD_PARTS = "payload_parts"
PARTS_STORE_READS = ("workflows", "items")


@dataclass
class PreparedPage:
    """A page's rows, built without the database: what `store_page` writes."""

    schema: str
    rows: dict[str, dict[str, Any]]  # epilot id -> model fields, the payload as UTF-8 JSON text and PAYLOAD_PARTS
    quarantined: list[tuple[str, str, Any]]  # (epilot id, reason, payload)
    ids: list[str]  # every id the page named, mirrored or not
    last: tuple[dt.datetime, str] | None  # (_updated_at, _id) of the page's last entity: the watermark it reaches
    seconds: float  # time spent building the rows
    attributes: set[tuple[str, str]] = field(default_factory=set)  # (attribute, JSON type) pairs the page carries


def prepare_page(schema: str, documents: Sequence[Any]) -> PreparedPage:
    """Build the rows of a page of one schema from its documents as epilot sent them (`documents_of` gives those of
    entities); what cannot be mirrored is set aside with its reason. The rows hold the documents themselves: the
    caller hands them over. Touches no database (`adapt_ahead` converts the rows' date-times, where the caller wants
    that done before the write)."""
    started = time.perf_counter()
    now = timezone.now()
    max_id = SyncState._meta.get_field("watermark_id").max_length
    rows: dict[str, dict[str, Any]] = {}
    quarantined: list[tuple[str, str, Any]] = []
    ids: list[str] = []
    last: tuple[dt.datetime, str] | None = None
    attribute_types: set[tuple[str, type]] = set()
    for document in documents:
        try:
            entity = system_attributes(document)
        except MalformedPayload as malformed:
            named = document.get("_id") if isinstance(document, Mapping) else None
            if isinstance(named, str) and named:
                ids.append(named)
            quarantined.append((named if isinstance(named, str) else "", str(malformed), document))
            continue
        ids.append(entity.id)
        # The watermark passes every entity read, mirrored or quarantined.
        if entity.updated_at and len(entity.id) <= max_id and (last is None or (entity.updated_at, entity.id) > last):
            last = (entity.updated_at, entity.id)
        try:
            row = document_row(schema, entity, document, now)
        except QuarantineReason as reason:
            quarantined.append((entity.id, str(reason), document))
            continue
        # The document is written as its JSON text; the store reads these parts of it.
        payload = row.pop("payload")
        add_attribute_types(attribute_types, payload)
        row[PAYLOAD_PARTS] = {key: payload[key] for key in PARTS_STORE_READS if key in payload}
        rows[entity.id] = row
    return PreparedPage(schema=schema, rows=rows, quarantined=quarantined, ids=ids, last=last,
                        seconds=time.perf_counter() - started, attributes=named_attributes(attribute_types))


def adapted(page: PreparedPage) -> PreparedPage:
    """`page` with its rows' date-times converted for the database ahead of the write (`adapt_ahead`); returns it."""
    adapt_ahead(model_for(page.schema), page.rows.values())
    return page


def documents_of(items: Iterable[Entity | MalformedEntity]) -> list[Any]:
    """The documents of entities as the client read them (a dict each, for `prepare_page` to keep)."""
    return [dict(item.data) if isinstance(item, Entity) else item.data for item in items]


def store_page(page: PreparedPage, counts: MirrorChanges, run: SyncRun | None, state: SyncState | None) -> int:
    """Write a prepared page in bulk and advance the watermark (call inside a transaction); returns rows written.

    Rows epilot has not changed since the mirror last saw them are skipped, except in a full pass
    (`counts.full_pass`), which rewrites every row it reads (its purge check relies on that).
    """
    schema, rows, quarantined = page.schema, dict(page.rows), list(page.quarantined)
    model = model_for(schema)
    now = timezone.now()
    counts.seconds["rows"] += page.seconds
    record_drift(schema, page.attributes, now)
    known = model.objects.filter(column_in(model, "epilot_id", list(rows)))
    before_column = BEFORE_COLUMNS.get(schema)
    existing = {
        epilot_id: (updated_at, deleted_at, workflows, before) for epilot_id, updated_at, deleted_at, workflows, before
        in known.values_list("epilot_id", "epilot_updated_at", "epilot_deleted_at", json_key("payload", "workflows"),
                             before_column or "epilot_id")
    }
    changed: dict[str, dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    for epilot_id, row in rows.items():
        before = existing.get(epilot_id)
        if before is None:
            kinds[epilot_id] = "created"
        elif before[0] is not None and row["epilot_updated_at"] < before[0]:
            # The mirror holds a newer version (a webhook was quicker than epilot's search index): keep it.
            counts.not_written.add((schema, epilot_id))
            continue
        elif row["epilot_updated_at"] == before[0] and (row["epilot_deleted_at"] is None) == (before[1] is None):
            if counts.full_pass:
                changed[epilot_id] = row
            continue
        elif row["epilot_deleted_at"] is not None and before[1] is None:
            kinds[epilot_id] = "deleted"
        else:
            kinds[epilot_id] = "updated"
        changed[epilot_id] = row
    update_fields = COMMON_FIELDS + EXTRA_FIELDS.get(schema, ["schema"] if schema not in CORE_SCHEMAS else [])
    extra: dict[str, Any] = {"schema": schema} if schema not in CORE_SCHEMAS else {}
    batch = [{**row, **extra} for row in changed.values()]
    if schema == "order" and batch:
        # An order without a relation of its own belongs to the opportunity whose items name it (a row each).
        named = items_naming([row["epilot_id"] for row in batch if not row["opportunity_epilot_id"]])
        for row in batch:
            row["opportunity_epilot_id"] = row["opportunity_epilot_id"] or named.get(row["epilot_id"], "")
    # The order's foreign key is looked up now (opportunities are synced before orders): writing it with
    # the row spares PostgreSQL a second version of every row. (An opportunity's customer is a join.)
    link = FOREIGN_KEYS.get(schema)
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
                    believed_new=not existing)

    with counts.timed("write"):
        refused = write_isolating_failures(write, batch)
    for row, reason in refused:
        changed.pop(row["epilot_id"])
        rows.pop(row["epilot_id"])
        kinds.pop(row["epilot_id"], None)
        quarantined.append((row["epilot_id"], reason, json.loads(row["payload__json"])))  # exact: orjson rounds huge integers
    for kind in kinds.values():
        setattr(counts, kind, getattr(counts, kind) + 1)
    to_read = []
    for epilot_id in kinds:
        workflows = changed[epilot_id][PAYLOAD_PARTS].get("workflows")
        before = existing.get(epilot_id)
        if workflows and workflows != (before[2] if before else None):
            counts.workflow_changes.append((schema, epilot_id, workflows))
            to_read.append({"epilot_id": epilot_id, "schema": schema, "workflows": workflows, "since": now})
    # Recorded with the entity: should its executions not be read now, the next sync reads them.
    bulk_upsert(PendingExecutionRead, to_read, unique_field="epilot_id", update_fields=["schema", "workflows", "since"])
    if not counts.full_pass:
        refs = {epilot_id: (schema, epilot_id) for epilot_id in changed}  # one tuple each, shared by both
        counts.changed_refs.extend(refs.values())
        counts.kinds.update((refs[epilot_id], kind) for epilot_id, kind in kinds.items())
    created = [epilot_id for epilot_id, kind in kinds.items() if kind == "created"]
    if created:
        link_waiting_for(schema, created)
    if schema == "opportunity":
        if not counts.full_pass:
            counts.touched_opportunities.update(changed)
            counts.previous_address_keys.update(existing[epilot_id][3] for epilot_id in changed
                                                if epilot_id in existing and existing[epilot_id][3])
        store_items(changed, known=[epilot_id for epilot_id in changed if epilot_id in existing], counts=counts)
    elif schema == "order" and not counts.full_pass:
        counts.touched_orders.update(changed)
        counts.previous_owners.update(existing[epilot_id][3] for epilot_id in changed
                                      if epilot_id in existing and existing[epilot_id][3])
    if rows and QuarantinedEntity.objects.filter(schema=schema).exists():  # (the common case needs no id list)
        QuarantinedEntity.objects.filter(schema=schema, epilot_id__in=list(rows)).delete()  # repaired in epilot
    counts.quarantined += sum(
        quarantine(schema, epilot_id, reason, payload, run, now) for epilot_id, reason, payload in quarantined
    )
    counts.not_written.update((schema, epilot_id) for epilot_id, _reason, _payload in quarantined if epilot_id)
    if state is not None and page.last and (
            not state.watermark_updated_at or page.last > (state.watermark_updated_at, state.watermark_id)):
        state.watermark_updated_at, state.watermark_id = page.last
        SyncState.objects.filter(pk=state.pk).update(watermark_updated_at=page.last[0], watermark_id=page.last[1])
    return len(changed)


# What a changed row's previous version tells the listeners: the address an opportunity had, the opportunity an order had.
BEFORE_COLUMNS = {"opportunity": "address_key", "order": "opportunity"}
# Foreign keys written with the row: the field, and the model its `<field>_epilot_id` names.
FOREIGN_KEYS: dict[str, tuple[str, type[MirroredEntity]]] = {"order": ("opportunity", Opportunity)}
# Rows that name an entity of this schema by epilot id, and the foreign key they get once it is mirrored.
WAITING_FOR: dict[str, list[tuple[type[models.Model], dict[str, Any], str, str]]] = {
    "contact": [(WorkflowExecution, {"entity_schema": "contact"}, "entity_epilot_id", "contact")],
    "opportunity": [(Order, {}, "opportunity_epilot_id", "opportunity"),
                    (WorkflowExecution, {"entity_schema": "opportunity"}, "entity_epilot_id", "opportunity")],
    "order": [(WorkflowExecution, {"entity_schema": "order"}, "entity_epilot_id", "order")],
}


def link_waiting_for(schema: str, created: list[str]) -> None:
    """Point the foreign keys of rows that named these newly mirrored entities before they were mirrored at them.

    Found by the indexed epilot id the rows keep, so the cost follows the entities created, not the
    tables. One plain statement per relation: a first sync runs them for every page, mostly to find nothing.
    """
    quote = connection.ops.quote_name
    target = model_for(schema)
    for model, condition, reference, field_name in WAITING_FOR.get(schema, []):
        table, column = quote(model._meta.db_table), quote(model._meta.get_field(reference).column)
        foreign_key = quote(model._meta.get_field(field_name).column)
        among_created, params = among(f"{table}.{column}", created)
        narrowed = "".join(f" AND {table}.{quote(model._meta.get_field(name).column)} = %s" for name in condition)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {foreign_key} = (SELECT target.id FROM {quote(target._meta.db_table)} AS target "
                f"WHERE target.{quote(target._meta.get_field('epilot_id').column)} = {table}.{column}) "
                f"WHERE {among_created} AND {table}.{foreign_key} IS NULL{narrowed}", [*params, *condition.values()])


def items_naming(order_ids: list[str]) -> dict[str, str]:
    """order id -> the opportunity whose `items` name it (the smallest id, should several name it)."""
    if not order_ids:
        return {}
    named: dict[str, str] = {}
    for order_id, opportunity_id in values_read_at_once(
            OpportunityItem.objects.filter(column_in(OpportunityItem, "order_epilot_id", order_ids)).order_by(),
            "order_epilot_id", "opportunity_epilot_id"):
        if order_id not in named or opportunity_id < named[order_id]:
            named[order_id] = opportunity_id
    return named


def item_ids(payload: dict[str, Any]) -> set[str]:
    """The order ids an opportunity's `items` relation names (ids no order can have are left out)."""
    return {str(order_id) for order_id in relation_ids(payload.get("items")) if len(str(order_id)) <= ITEM_ID_LENGTH}


ITEM_ID_LENGTH = OpportunityItem._meta.get_field("order_epilot_id").max_length


def store_items(changed: dict[str, dict[str, Any]], *, known: list[str], counts: MirrorChanges) -> None:
    """Replace the item rows of these opportunities (`known`: those mirrored before) and relink the orders that
    gained or lost a naming opportunity. Call inside the transaction that wrote the opportunities."""
    wanted = {(opportunity_id, order_id) for opportunity_id, row in changed.items() if row[PAYLOAD_PARTS].get("items")
              for order_id in item_ids(row[PAYLOAD_PARTS])}
    had: dict[tuple[str, str], int] = {}
    if known:
        had = {(opportunity_id, order_id): pk for pk, opportunity_id, order_id in values_read_at_once(
            OpportunityItem.objects.filter(column_in(OpportunityItem, "opportunity_epilot_id", known)).order_by(),
            "pk", "opportunity_epilot_id", "order_epilot_id")}
    gone = [pk for pair, pk in had.items() if pair not in wanted]
    new = [pair for pair in wanted if pair not in had]
    if gone:
        OpportunityItem.objects.filter(pk__in=gone).delete()
    bulk_upsert(OpportunityItem, [{"opportunity_epilot_id": opportunity_id, "order_epilot_id": order_id}
                                  for opportunity_id, order_id in new],
                unique_field=("opportunity_epilot_id", "order_epilot_id"), update_fields=[])
    affected = {order_id for _opportunity_id, order_id in new} | {pair[1] for pair in had if pair not in wanted}
    if affected:
        relink_orders(sorted(affected), counts)


def relink_orders(order_ids: list[str], counts: MirrorChanges) -> None:
    """Point mirrored orders without a relation of their own at the opportunity whose items name them now."""
    mirrored = Order.objects.filter(column_in(Order, "epilot_id", order_ids)).order_by()
    rows = [(pk, epilot_id, reference, owner) for pk, epilot_id, reference, owner, own in mirrored.values_list(
        "pk", "epilot_id", "opportunity_epilot_id", "opportunity", json_key("payload", "opportunity"))
        if not relation_ids(own)]
    named = items_naming([epilot_id for _pk, epilot_id, _reference, _owner in rows])
    moved = [(pk, epilot_id, named.get(epilot_id, ""), owner) for pk, epilot_id, reference, owner in rows
             if named.get(epilot_id, "") != reference]
    if not moved:
        return
    wanted = list({new for _pk, _id, new, _owner in moved if new})
    owners = dict(Opportunity.objects.filter(column_in(Opportunity, "epilot_id", wanted)).values_list("epilot_id", "pk"))
    Order.objects.bulk_update([Order(pk=pk, opportunity_epilot_id=new, opportunity_id=owners.get(new))
                               for pk, _epilot_id, new, _owner in moved], ["opportunity_epilot_id", "opportunity"],
                              batch_size=500)
    counts.previous_owners.update(owner for _pk, _id, _new, owner in moved if owner)
    counts.relinked_orders.update(epilot_id for _pk, epilot_id, _new, _owner in moved)
    counts.touched_orders.update(counts.relinked_orders)


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


def mark_purged_among(schema: str, candidates: list[str], *, pass_started: dt.datetime) -> list[str]:
    """Mark deleted those of `candidates` (epilot ids epilot no longer returns) that are live in the mirror and were
    mirrored before `pass_started`; returns their epilot ids."""
    model = model_for(schema)
    now = timezone.now()
    purged: list[str] = []
    for start in range(0, len(candidates), 1000):
        chunk = model.objects.filter(column_in(model, "epilot_id", candidates[start:start + 1000]),
                                     epilot_deleted_at__isnull=True, synced_at__lt=pass_started)
        found = values_read_at_once(chunk.order_by(), "epilot_id", flat=True)
        if found:
            model.objects.filter(column_in(model, "epilot_id", found)).update(epilot_deleted_at=now, synced_at=now)
            purged += found
    if purged:
        logger.info("%s: %d entities purged in epilot marked deleted", schema, len(purged))
    return purged


def mark_purged(schema: str, named: set[str], *, pass_started: dt.datetime, chunk: int = PURGE_CHUNK) -> list[str]:
    """After a full pass: entities we mirror that epilot no longer returns at all were purged there; marks them
    deleted (see `mark_purged_among`) and returns their epilot ids.

    A pass writes every row it reads, so the rows it did not write since `pass_started` are those
    epilot did not return, and those in `named`: returned, but not written (quarantined, or newer in
    the mirror). The mirror's live ids are read `chunk` at a time, each chunk at once (values_read_at_once).
    """
    queryset = mirrored_rows(schema).filter(epilot_deleted_at__isnull=True, synced_at__lt=pass_started)
    missing: list[str] = []
    after = 0
    while rows := values_read_at_once(queryset.filter(pk__gt=after).order_by("pk")[:chunk], "pk", "epilot_id"):
        missing += [epilot_id for _pk, epilot_id in rows if epilot_id not in named]
        after = max(pk for pk, _epilot_id in rows)
    return mark_purged_among(schema, missing, pass_started=pass_started)
