"""Keeping the mirror whole around its pages: definitions and executions; `mirror_entities`, the way in for a few entities.

Relations are written with the rows (pages.py); what is derived from the mirror listens to its
change event (changes.py). Nothing here calls epilot except to read entities,
executions and definitions, and nothing evaluates local rules (the use cases do that once, explicitly).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from django.db import transaction
from django.utils import timezone

from integrations.connection import get_epilot_client
from integrations.epilot import Entity, EpilotClient, EpilotError, EpilotNotFoundError, MalformedEntity
from integrations.epilot import WorkflowExecution as RemoteExecution
from projects.mirror.bulk import bulk_upsert, column_in, values_read_at_once
from projects.mirror.changes import announce
from projects.mirror.pacing import ReadGate
from projects.mirror.pages import (
    MirrorChanges,
    documents_of,
    mark_purged_among,
    prepare_page,
    quarantine,
    store_page,
)
from projects.mirror.rows import QuarantineReason, check_fits
from projects.mirror.schemas import model_for, validate_schemas
from projects.models import (
    Contact,
    MirroredStep,
    Opportunity,
    Order,
    PendingExecutionRead,
    WorkflowDefinition,
    WorkflowExecution,
)

logger = logging.getLogger("projects.sync")
EXECUTION_FETCHERS = 16  # executions read at most at once (GETs, which epilot does not rate-limit); see ReadGate
EXECUTION_AHEAD = 100  # entities' executions read ahead of being stored (some 80 KB each in memory)
EXECUTION_BATCH = 100  # entities whose executions are written per transaction


def mirror_entities(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None,
                    executions: Iterable[tuple[str, str, RemoteExecution]] = ()) -> MirrorChanges:
    """Bring the named entities (schema, epilot id) into the mirror now, and announce the change; watermarks stay.

    `executions` (schema, entity id, execution) were re-read after a write and are stored with them.
    Returns what changed, for the caller to evaluate local rules on. Raises UnknownSchema for a
    schema that is not mirrored, EpilotError when epilot cannot be read.
    """
    by_schema: dict[str, list[str]] = {}
    for schema, epilot_id in refs:
        by_schema.setdefault(schema, []).append(epilot_id)
    validate_schemas(by_schema)
    client = client or get_epilot_client()
    counts = MirrorChanges()
    try:
        store_answers(_re_read(executions), counts, complete=False)
        for schema, ids in by_schema.items():
            items: list[Entity | MalformedEntity] = []
            for page in client.iter_list_entities([{"term": {"_schema": schema}}, {"ids": {"values": ids}}],
                                                   include_deleted="true", stable_for=0):
                items.extend(page.results)
            with transaction.atomic():
                store_page(prepare_page(schema, documents_of(items)), counts, None, None)
        # Executions an earlier refresh of these entities stored the entity for but could not read.
        asked = {epilot_id for ids in by_schema.values() for epilot_id in ids} - {e for _s, e, _w in counts.workflow_changes}
        counts.workflow_changes.extend(pending_execution_reads(epilot_ids=asked))
        refresh_executions(client, counts)
    finally:
        announce(counts.as_event())  # what was stored is committed, also when a later read failed
    return counts


def mirror_executions(executions: Iterable[tuple[str, str, RemoteExecution]]) -> MirrorChanges:
    """Store executions (schema, entity id, execution) re-read after a write, and announce the change.

    Each is one execution, not its entity's whole list, so nothing else is removed.
    """
    counts = MirrorChanges()
    store_answers(_re_read(executions), counts, complete=False)
    announce(counts.as_event())
    return counts


def _re_read(executions: Iterable[tuple[str, str, RemoteExecution]]) -> list[Answer]:
    """Executions re-read one by one as answers (each not its entity's whole list: store with complete=False)."""
    return [(schema, entity_id, [execution], timezone.now()) for schema, entity_id, execution in executions]


def mirror_purged(schema: str, epilot_id: str) -> bool:
    """Mark a mirrored entity deleted that epilot no longer has at all, and announce it; False when none was live."""
    model = model_for(schema)
    if not model.objects.filter(epilot_id=epilot_id, epilot_deleted_at__isnull=True).update(epilot_deleted_at=timezone.now()):
        return False
    _announce_purged(schema, [epilot_id])
    return True


def mirror_purged_among(schema: str, candidates: list[str], pass_started: dt.datetime) -> list[str]:
    """Mark deleted those `candidates` (mirrored ids a pass that began at `pass_started` did not find in epilot) that
    are live and older than the pass, and announce it; returns those epilot ids."""
    purged = mark_purged_among(schema, candidates, pass_started=pass_started)
    if purged:
        _announce_purged(schema, purged)
    return purged


def _announce_purged(schema: str, epilot_ids: list[str]) -> None:
    """Announce entities just marked deleted as one change set."""
    counts = MirrorChanges(deleted=len(epilot_ids), kinds={(schema, epilot_id): "deleted" for epilot_id in epilot_ids},
                           changed_refs=[(schema, epilot_id) for epilot_id in epilot_ids])
    for epilot_id in epilot_ids:
        counts.touch(schema, epilot_id)
    announce(counts.as_event())


def mirror_after_write(*, refs: Iterable[tuple[str, str]], client: EpilotClient | None = None,
                       executions: Iterable[tuple[str, str, RemoteExecution]] = ()) -> MirrorChanges:
    """mirror_entities after a write to epilot succeeded: a failed refresh is logged, not raised.

    The write itself is done; the next scheduled sync brings the mirror up to date (and evaluates
    the rules then). Returns what changed (nothing when the refresh failed).
    """
    try:
        return mirror_entities(refs=refs, client=client, executions=executions)
    except EpilotError as exc:
        logger.warning("mirror refresh after a write failed; the next sync catches up: %s", exc.message)
        return MirrorChanges()


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
            check_fits(WorkflowDefinition, row)
        except QuarantineReason as reason:
            quarantine("workflow_definition", d.id, str(reason), dict(d.data), None, now)
            continue
        unique[(d.engine, d.id)] = row
    objects = [WorkflowDefinition(**row) for row in unique.values()]
    mirrored_before = set(WorkflowDefinition.objects.values_list("engine", "epilot_id"))
    with transaction.atomic():
        WorkflowDefinition.objects.bulk_create(objects, update_conflicts=True, unique_fields=["engine", "epilot_id"],
                                               update_fields=["name", "enabled", "sections", "step_count", "payload",
                                                              "removed_in_epilot", "synced_at"])
        gone = WorkflowDefinition.objects.all()
        for engine in {engine for engine, _ in unique}:
            gone = gone.exclude(engine=engine, epilot_id__in=[epilot_id for known, epilot_id in unique if known == engine])
        gone.update(removed_in_epilot=True)
        for engine, epilot_id in set(unique) - mirrored_before:  # executions mirrored before their definition
            WorkflowExecution.objects.filter(engine=engine, definition_epilot_id=epilot_id, definition__isnull=True).update(
                definition=WorkflowDefinition.objects.get(engine=engine, epilot_id=epilot_id))
    return len(objects)


Answer = tuple[str, str, list[RemoteExecution], dt.datetime]  # schema, entity id, its executions, read at


def read_executions(client: EpilotClient, change: tuple[str, str, Any], v2_ids: set[str]) -> Answer:
    """The executions of one entity whose `workflows` changed, read whole. Raises EpilotError."""
    schema, epilot_id, workflows = change
    read_at = timezone.now()
    # The V1 list is light-weight ("steps are not loaded with all information", and which is left
    # out the spec does not say: a state may come without its assignees), so each is read whole.
    executions = []
    for listed in client.get_executions(context=epilot_id, schema=schema):
        try:
            executions.append(client.get_execution(listed.id))
        except EpilotNotFoundError:
            continue  # deleted since it was listed
    if isinstance(workflows, dict) and v2_ids & set(workflows):
        executions += client.search_flow_executions(entity_id=epilot_id, entity_schema=schema)
    return schema, epilot_id, executions, read_at


def v2_definition_ids() -> set[str]:
    return set(WorkflowDefinition.objects.filter(engine="v2").values_list("epilot_id", flat=True))


class ExecutionReader(Protocol):
    """What reads executions for a sync: `ExecutionFetcher` (threads), `ExecutionsReadInChild` (a forked process)."""

    def ready(self, changes: list[tuple[str, str, Any]]) -> list[Answer]: ...

    def answers(self, changes: list[tuple[str, str, Any]]) -> Iterator[list[Answer]]: ...


class ExecutionFetcher:
    """Reads the executions of entities whose `workflows` changed, a few at a time, while the caller goes on.

    A sync feeds it after each page, so epilot answers while later pages are written; at most
    `ahead` answers wait to be stored, so memory stays bounded however many workflows run. Use it
    as a context manager: leaving it cancels what was not started.
    """

    def __init__(self, client: EpilotClient, *, ahead: int = EXECUTION_AHEAD) -> None:
        self.client = client
        self.ahead = ahead
        self.v2_ids = v2_definition_ids()
        self.pool = ThreadPoolExecutor(max_workers=EXECUTION_FETCHERS, thread_name_prefix="epilot-executions")
        self.gate = ReadGate(most=EXECUTION_FETCHERS)
        self.pending: deque[Future[Answer]] = deque()
        self.started = 0

    def __enter__(self) -> ExecutionFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gate.close()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def feed(self, changes: list[tuple[str, str, Any]]) -> None:
        """Start reading the changes not started yet, as far as `ahead` allows."""
        while self.started < len(changes) and len(self.pending) < self.ahead:
            self.pending.append(self.pool.submit(self._fetch, changes[self.started]))
            self.started += 1

    def answers(self, changes: list[tuple[str, str, Any]]) -> Iterator[list[Answer]]:
        """Every change's answer, in order, EXECUTION_BATCH at a time; raises EpilotError as a read did."""
        self.feed(changes)
        while self.pending:
            batch = [self.pending.popleft().result() for _ in range(min(EXECUTION_BATCH, len(self.pending)))]
            self.feed(changes)
            yield batch

    def ready(self, changes: list[tuple[str, str, Any]]) -> list[Answer]:
        """The answers read so far, in order, without waiting for the others; starts reading more.

        A read that failed stays where it is (and the answers after it wait) for `answers` to raise:
        the caller's pages go on, the run fails after them.
        """
        batch = []
        while self.pending and self.pending[0].done() and self.pending[0].exception() is None:
            batch.append(self.pending.popleft().result())
        self.feed(changes)
        return batch

    def _fetch(self, change: tuple[str, str, Any]) -> Answer:
        with self.gate.slot():
            return read_executions(self.client, change, self.v2_ids)


def refresh_executions(client: EpilotClient, counts: MirrorChanges, heartbeat: Callable[[], None] | None = None,
                       fetcher: ExecutionReader | None = None) -> None:
    """Mirror the executions of entities whose `workflows` attribute changed; `heartbeat` is called after each batch.

    A few entities (a webhook, a write) are read here, one after the other; more go through
    `fetcher` (or one started here), which reads EXECUTION_FETCHERS at once, well within epilot's
    limits. The mirror is written by this thread, a batch of entities per transaction. Raises
    EpilotError as a read did.
    """
    if fetcher is None and len(counts.workflow_changes) <= READ_IN_LINE:
        if counts.workflow_changes:
            v2_ids = v2_definition_ids()
            store_answers([read_executions(client, change, v2_ids) for change in counts.workflow_changes], counts)
        return
    with contextlib.nullcontext(fetcher) if fetcher else ExecutionFetcher(client) as reader:
        for fetched in reader.answers(counts.workflow_changes):
            store_answers(fetched, counts)
            if heartbeat:
                heartbeat()


READ_IN_LINE = 4  # entities whose executions are read without starting the fetcher's threads


def store_ready_executions(fetcher: ExecutionReader, counts: MirrorChanges) -> None:
    """Store the executions `fetcher` has read so far, without waiting for the others, and start reading more.

    A sync calls it between pages, so the answers read ahead are stored as they come instead of
    after the last page, and the reads go on (at most `ahead` answers wait to be stored). A failed
    read is not raised here but by `refresh_executions`, after the pages.
    """
    fetched = fetcher.ready(counts.workflow_changes)
    if fetched:
        store_answers(fetched, counts)


def store_answers(fetched: list[Answer], counts: MirrorChanges, *, complete: bool = True) -> None:
    """Store executions as read (see `store_executions_of`) and record their entities in the change set."""
    if not fetched:
        return
    store_executions_of(fetched, complete=complete)
    for schema, epilot_id, _executions, _read_at in fetched:
        counts.executions_stored.add((schema, epilot_id))
        counts.touch(schema, epilot_id)


EXECUTION_FIELDS = ["engine", "definition_epilot_id", "name", "entity_schema", "entity_epilot_id", "status", "current_section",
                    "current_step", "completed_steps", "total_steps", "flow", "started_at", "epilot_updated_at", "completed_at",
                    "synced_at"]


def store_executions_of(answers: list[tuple[str, str, list[RemoteExecution], dt.datetime]], *, complete: bool = True) -> None:
    """Bring the mirrored executions of entities (and their steps) to what epilot returned: (schema, entity id,
    executions, read at) each, a few statements in all.

    An older version never overwrites a newer one, and an execution another writer stored after it
    was read is kept even if this answer lacks it. With `complete=False` an answer is not the entity's
    whole list (one execution re-read after a write), so nothing is removed. Executions that do not fit
    the mirror are quarantined (schema `workflow_execution`). Call through `store_answers`, which records
    the change set.
    """
    now = timezone.now()
    rows, stored = [], []
    for schema, entity_id, executions, _read_at in answers:
        for e in executions:
            row = {"epilot_id": e.id, "engine": e.engine, "definition_epilot_id": e.definition_id or "", "name": e.name or "",
                   "entity_schema": schema, "entity_epilot_id": entity_id, "status": e.status or "",
                   "current_section": (e.current_step.section or "") if e.current_step else "",
                   "current_step": e.current_step.name if e.current_step else "",
                   "completed_steps": e.completed_steps, "total_steps": len(e.steps), "flow": dict(e.data),
                   "started_at": e.created_at, "epilot_updated_at": e.updated_at, "completed_at": e.completed_at,
                   "synced_at": now}
            try:
                check_fits(WorkflowExecution, row)
            except QuarantineReason as reason:
                quarantine("workflow_execution", e.id, str(reason), dict(e.data), None, now)
                continue
            rows.append(row)
            stored.append(e)
    with transaction.atomic():
        if rows:
            _with_foreign_keys(rows)
            bulk_upsert(WorkflowExecution, rows, unique_field="epilot_id", update_fields=[*EXECUTION_FIELDS, *EXECUTION_LINKS],
                        newer_by="epilot_updated_at")
            store_steps(stored, now)
        if complete:
            _delete_vanished_executions(answers)
            _clear_pending_reads(answers)


EXECUTION_LINKS = ["opportunity", "order", "contact", "definition"]
ENTITY_MODELS = {"opportunity": Opportunity, "order": Order, "contact": Contact}


def _with_foreign_keys(rows: list[dict[str, Any]]) -> None:
    """Point each execution row at its mirrored entity and definition (None where not mirrored yet): found by id."""
    pks: dict[str, dict[str, int]] = {}
    for schema, model in ENTITY_MODELS.items():
        ids = sorted({row["entity_epilot_id"] for row in rows if row["entity_schema"] == schema})
        pks[schema] = dict(values_read_at_once(model.objects.filter(column_in(model, "epilot_id", ids)).order_by(),
                                               "epilot_id", "id")) if ids else {}
    definitions = {(engine, epilot_id): pk for engine, epilot_id, pk in WorkflowDefinition.objects.filter(
        epilot_id__in={row["definition_epilot_id"] for row in rows}).values_list("engine", "epilot_id", "pk")}
    for row in rows:
        for schema in ENTITY_MODELS:
            row[schema] = pks[schema].get(row["entity_epilot_id"]) if row["entity_schema"] == schema else None
        row["definition"] = definitions.get((row["engine"], row["definition_epilot_id"]))


def _delete_vanished_executions(answers: list[tuple[str, str, list[RemoteExecution], dt.datetime]]) -> None:
    """Remove mirrored executions epilot no longer lists for an entity (unless stored after that entity was read)."""
    answered = {(schema, entity_id): ({e.id for e in executions}, read_at)
                for schema, entity_id, executions, read_at in answers}
    vanished = [
        pk for pk, schema, entity_id, epilot_id, synced_at in WorkflowExecution.objects.filter(
            entity_epilot_id__in=[entity_id for _schema, entity_id in answered]).values_list(
            "pk", "entity_schema", "entity_epilot_id", "epilot_id", "synced_at")
        if (schema, entity_id) in answered and epilot_id not in answered[schema, entity_id][0]
        and synced_at < answered[schema, entity_id][1]
    ]
    if vanished:
        WorkflowExecution.objects.filter(pk__in=vanished).delete()


def _clear_pending_reads(answers: list[tuple[str, str, list[RemoteExecution], dt.datetime]]) -> None:
    """The entities answered no longer wait for their executions, unless their workflows changed after the read began."""
    read_at = {entity_id: moment for _schema, entity_id, _executions, moment in answers}
    done = [pk for pk, epilot_id, since in PendingExecutionRead.objects.filter(
        column_in(PendingExecutionRead, "epilot_id", list(read_at))).values_list("pk", "epilot_id", "since")
        if since <= read_at[epilot_id]]
    if done:
        PendingExecutionRead.objects.filter(pk__in=done).delete()


def pending_execution_reads(*, schemas: Iterable[str] | None = None, epilot_ids: Iterable[str] | None = None
                            ) -> list[tuple[str, str, Any]]:
    """Entities whose changed workflows are mirrored but whose executions were not read (a run or refresh stopped in
    between), as (schema, epilot id, workflows), oldest first; of the given schemas or ids when named."""
    queryset = PendingExecutionRead.objects.order_by("since", "pk")
    if schemas is not None:
        queryset = queryset.filter(schema__in=list(schemas))
    if epilot_ids is not None:
        queryset = queryset.filter(column_in(PendingExecutionRead, "epilot_id", list(epilot_ids)))
    return list(queryset.values_list("schema", "epilot_id", "workflows"))


def store_steps(executions: list[RemoteExecution], now: dt.datetime) -> None:
    """Rewrite the step rows of executions whose mirrored version is the one given (a newer one keeps its steps).

    When a step's assignees change, `assigned_at` records when the mirror first saw the new ones
    (the digest reports steps newly assigned since it last ran). Call inside a transaction.
    """
    stored = {epilot_id: (pk, updated_at) for pk, epilot_id, updated_at in WorkflowExecution.objects.filter(
        epilot_id__in=[e.id for e in executions]).values_list("id", "epilot_id", "epilot_updated_at")}
    current = [(stored[e.id][0], e) for e in executions if e.id in stored and stored[e.id][1] == e.updated_at]
    if not current:
        return
    known = {(execution_id, epilot_id): (assignees, assigned_at, pk) for pk, execution_id, epilot_id, assignees, assigned_at
             in MirroredStep.objects.filter(execution_id__in=[pk for pk, _ in current]).values_list(
                 "pk", "execution_id", "epilot_id", "assignees", "assigned_at")}
    rows = []
    for pk, execution in current:
        seen: set[str] = set()
        for position, step in enumerate(execution.steps):
            if not step.id or step.id in seen:
                continue
            seen.add(step.id)
            assignees = ("," + ",".join(step.assigned_to) + ",") if step.assigned_to else ""
            before = known.get((pk, step.id))
            assigned_at = before[1] if before and before[0] == assignees else (now if assignees else None)
            row = {"execution": pk, "epilot_id": step.id, "position": position, "section": step.section or "",
                   "section_epilot_id": step.section_id or "", "name": step.name, "status": step.status or "",
                   "enabled": step.enabled, "execution_type": step.execution_type, "assigned_to": list(step.assigned_to),
                   "assignees": assignees, "due_date": step.due_date, "completed_at": step.completed_at,
                   "assigned_at": assigned_at, "synced_at": now}
            try:
                check_fits(MirroredStep, row)
            except QuarantineReason as reason:
                quarantine("workflow_step", f"{execution.id}/{step.id}", str(reason), dict(execution.data), None, now)
                continue
            rows.append(row)
    # Upserted, not replaced, so a step keeps its row (and the admin's links to it) across refreshes.
    bulk_upsert(MirroredStep, rows, unique_field=("execution", "epilot_id"),
                update_fields=[f for f in STEP_FIELDS if f not in ("execution", "epilot_id")])
    kept = {(row["execution"], row["epilot_id"]) for row in rows}
    gone = [before[2] for key, before in known.items() if key not in kept]
    if gone:
        MirroredStep.objects.filter(pk__in=gone).delete()


STEP_FIELDS = ["execution", "epilot_id", "position", "section", "section_epilot_id", "name", "status", "enabled",
               "execution_type", "assigned_to", "assignees", "due_date", "completed_at", "assigned_at", "synced_at"]
