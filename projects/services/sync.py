"""Incremental, resumable pull of epilot entities, workflow definitions and executions into the mirror.

Per schema the watermark `(_updated_at, _id)` advances in the same transaction as the page's rows,
so a crash anywhere loses nothing and a re-run converges. No transaction is open while epilot is
called: each page is fetched (and its rows built, projects/mirror/pages.py) in a prefetch thread, or
for a full pass in a forked process (projects/mirror/page_builder.py), then written in one short
transaction with its relations. The run holds a lease per schema
(projects/mirror/lease.py); executions are read meanwhile (projects/mirror/intake.py; for a full pass
in a forked process, projects/mirror/execution_reader.py), then the run announces what it committed
(projects/mirror/changes.py) and projects and areas recompute. A run takes opportunities and orders
first; a full pass announces them as soon as they are whole, so projects and areas are worked out
while the contacts' pages are still read and built.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import connection, reset_queries, transaction
from django.utils import timezone

from config import metrics
from integrations.connection import get_epilot_client
from integrations.epilot import EpilotClient, EpilotError
from projects.mirror.changes import DERIVED_FROM, announce
from projects.mirror.checkpoints import checkpoints_beside_writer, statement_journals_in_memory
from projects.mirror.execution_reader import ExecutionsReadInChild
from projects.mirror.indexes_set_aside import IndexesSetAside, indexes_restore
from projects.mirror.intake import (
    ExecutionFetcher,
    pending_execution_reads,
    refresh_executions,
    store_ready_executions,
    sync_definitions,
)
from projects.mirror.lease import LeaseLost, SyncLease, lease_seconds
from projects.mirror.page_builder import PagesBuiltInChild, can_build_in_child
from projects.mirror.pages import MirrorChanges, PreparedPage, adapted, mark_purged, prepare_page, store_page
from projects.mirror.prefetch import prefetched
from projects.mirror.schemas import configured_schemas, model_for, validate_schemas
from projects.models import SyncRun, SyncState
from projects.services.recipes import recipes_check_drift
from projects.services.rules import rules_evaluate_safely

logger = logging.getLogger("projects.sync")


T = TypeVar("T")


@dataclass
class Progress:
    """What a progress display needs after each page."""

    schema: str
    pages: int
    entities: int
    total: int | None
    elapsed: float


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
    counts = MirrorChanges(full_pass=full)  # rewrites every row; announced whole, listeners recompute everything
    lease = SyncLease(owner)
    indexes = IndexesSetAside()
    try:
        if dry_run:
            _dry_run(client, wanted, full, on_progress)
            return _finish(run, counts, SyncRun.Status.SUCCEEDED)
        locked = lease.acquire(wanted, wait_seconds=wait_for_lock_seconds)
        if not locked:
            return _finish(run, counts, SyncRun.Status.SKIPPED, "another sync is running for " + ", ".join(wanted))
        run.started_at = timezone.now()  # the run starts once it holds its locks, not while it waits for them
        SyncRun.objects.filter(pk=run.pk).update(started_at=run.started_at)
        # What the listeners derive from comes first: a full pass announces it as soon as it is whole, and projects,
        # areas and promises are worked out while the other schemas' pages are still read and built.
        locked = sorted(locked, key=lambda schema: schema not in DERIVED_FROM)
        last_derived = next((schema for schema in reversed(locked) if schema in DERIVED_FROM), None)
        indexes_restore(SyncState.objects.filter(schema__in=locked))
        sync_definitions(client)
        recipes_check_drift(client)
        # Executions of entities whose workflows changed are read while later pages are written; first those
        # a run before stored the entity for but did not read.
        counts.workflow_changes.extend(pending_execution_reads(schemas=locked))
        # A full pass is long: its pages are read and built, and its executions read, on another core.
        in_child = full and settings.SYNC_BUILD_PAGES_IN_CHILD and can_build_in_child(client)
        try:
            with _execution_reader(client, in_child=in_child) as executions, contextlib.ExitStack() as builders, \
                    checkpoints_beside_writer() if full else contextlib.nullcontext(), \
                    statement_journals_in_memory() if full else contextlib.nullcontext():
                upcoming: _Pages | None = None
                for index, schema in enumerate(locked):
                    pages = upcoming or _pages(client, schema, full=full, in_child=in_child, run=run)
                    upcoming = None
                    if in_child and index + 1 < len(locked):
                        # The next schema's child reads its first pages while this one's are written.
                        upcoming = _pages(client, locked[index + 1], full=full, in_child=in_child, run=run, ahead=True)
                        builders.callback(upcoming.close)
                    _sync_schema(pages, full=full, lease=lease, counts=counts, run=run, indexes=indexes,
                                 on_progress=on_progress,
                                 between_pages=lambda: store_ready_executions(executions, counts))
                    if full and schema == last_derived and index + 1 < len(locked):
                        indexes.join()  # what the listeners filter by is indexed again first
                        with counts.timed("projects"):
                            announce(counts.whole_so_far())
                lease.check()
                with counts.timed("executions"):
                    refresh_executions(client, counts, heartbeat=lease.renew_if_due, fetcher=executions)
        finally:
            with counts.timed("indexes"):  # what the listeners filter by is indexed again first
                indexes.join()
            with counts.timed("projects"):  # what the run committed is announced, also when it failed later
                announce(counts.as_event())
        lease.check()
        with counts.timed("rules"):
            rules_evaluate_safely(refs=None if counts.full_pass else counts.changed_refs, client=client)
        skipped = [schema for schema in wanted if schema not in locked]
        return _finish(
            run, counts, SyncRun.Status.SUCCEEDED, f"skipped (locked elsewhere): {', '.join(skipped)}" if skipped else ""
        )
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


def sync_enqueue(*, trigger: str, schemas: list[str] | None = None, full: bool = False) -> SyncRun:
    """Record a queued run and hand it to a worker once the record is committed."""
    from projects.tasks import sync_epilot_task

    schemas = validate_schemas(schemas) if schemas else None
    run = SyncRun.objects.create(trigger=trigger, schemas=schemas or configured_schemas(), full=full,
                                 status=SyncRun.Status.QUEUED, started_at=timezone.now())
    # robust: with the broker down the run stays queued and the outbox sweep sends it later.
    transaction.on_commit(lambda: sync_epilot_task.delay(run_id=run.pk, schemas=schemas, full=full), robust=True)
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


def _finish(run: SyncRun, counts: MirrorChanges, status: str, error: str = "") -> SyncRun:
    run.phase_seconds = dict(counts.seconds)  # for the caller (benchmarks, the command); not stored
    run.status = status
    run.error = error
    run.finished_at = timezone.now()
    for name in ("created", "updated", "deleted", "quarantined", "pages"):
        setattr(run, name, getattr(counts, name))
    run.save()
    kind = "full" if run.full else "incremental"
    for schema in run.schemas or ():
        metrics.sync_runs.labels(schema, kind, status).inc()
    for change in ("created", "updated", "deleted", "quarantined"):
        metrics.sync_entities.labels(change).inc(getattr(run, change))
    if run.duration_seconds is not None:
        metrics.sync_duration.labels(kind).observe(run.duration_seconds)
    logger.info("sync run %s %s: %d created, %d updated, %d deleted, %d quarantined in %.1f s (%s)",
                run.pk, status, run.created, run.updated, run.deleted, run.quarantined, run.duration_seconds or 0,
                ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in run.phase_seconds.items()))
    return run


def _dry_run(client: EpilotClient, schemas: list[str], full: bool, on_progress: Callable[[Progress], None] | None) -> None:
    for schema in schemas:
        state = SyncState.objects.filter(schema=schema).first()
        page = client.search_entities({"q": _query(schema, None if full else state), "size": 0, "include_deleted": "true"})
        if on_progress:
            on_progress(Progress(schema=schema, pages=0, entities=0, total=page.hits, elapsed=0.0))


def _execution_reader(client: EpilotClient, *, in_child: bool) -> ExecutionFetcher | ExecutionsReadInChild:
    """Who reads the executions: a forked process (execution_reader.py) or threads of this one."""
    return ExecutionsReadInChild(client) if in_child else ExecutionFetcher(client)


@dataclass
class _Pages:
    """A schema's pages, (hits, prepared page) each, as they are read; `started` is when the reading began."""

    schema: str
    state: SyncState
    started: dt.datetime
    pages: Iterator[tuple[int, PreparedPage]]

    def close(self) -> None:
        self.pages.close()


def _pages(client: EpilotClient, schema: str, *, full: bool, in_child: bool, run: SyncRun, ahead: bool = False) -> _Pages:
    """Start reading a schema's pages: in a forked process (page_builder.py), else in a prefetch thread. `ahead`: while
    another schema's pages are written."""
    state = SyncState.objects.get(schema=schema)
    started = timezone.now()  # before the first page is read: the purge check counts on it
    query = _query(schema, None if full else state)
    if in_child:
        logger.info("sync run=%s schema=%s pages read and built in a forked process", run.pk, schema)
        return _Pages(schema, state, started, PagesBuiltInChild(client, schema, query, built_ahead=ahead))
    # Each page's rows are built in the prefetch thread too, while this one writes the page before;
    # epilot is asked for the next page meanwhile (read ahead).
    searched = client.iter_search_documents(query, include_deleted="true", read_ahead=True)
    return _Pages(schema, state, started,
                  prefetched(searched, lambda page: (page.hits, adapted(prepare_page(schema, page.documents)))))


def _query(schema: str, state: SyncState | None) -> str:
    query = f"_schema:{schema}"
    if state and state.watermark_updated_at:
        # Re-read a short window before the watermark: epilot's search index is near-real-time, so an
        # entity saved just before the last run may have become searchable only after it.
        since = state.watermark_updated_at - dt.timedelta(seconds=settings.SYNC_OVERLAP_SECONDS)
        stamp = since.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        query += f' AND _updated_at:["{stamp}" TO *]'
    return query


def _sync_schema(opened: _Pages, *, full: bool, lease: SyncLease, counts: MirrorChanges, run: SyncRun,
                 indexes: IndexesSetAside,
                 on_progress: Callable[[Progress], None] | None, between_pages: Callable[[], None]) -> None:
    schema, state, pages = opened.schema, opened.state, opened.pages
    started = time.monotonic()
    entities = 0
    # A full pass into an empty table builds its secondary indexes once, after its last page; a failed write
    # stops the reading at once.
    with indexes.during_pass(model_for(schema), state) if full else contextlib.nullcontext(), contextlib.closing(pages):
        for number, (hits, page) in enumerate(_waited_for(pages, counts), start=1):
            page_started = time.monotonic()
            with counts.timed("page"), transaction.atomic():
                _commit_without_waiting_for_disk()
                written = store_page(page, counts, run, state)
            reset_queries()  # with DEBUG on, Django would keep every page's SQL until the run ends
            lease.renew_if_due()
            with counts.timed("executions"):
                between_pages()
            entities += len(page.ids)
            counts.pages += 1
            logger.info("sync run=%s schema=%s page=%d entities=%d written=%d store_ms=%.0f", run.pk, schema, number,
                        len(page.ids), written, (time.monotonic() - page_started) * 1000)
            if on_progress:
                on_progress(Progress(schema=schema, pages=number, entities=entities, total=hits,
                                     elapsed=time.monotonic() - started))
    if full:
        named = {epilot_id for named_schema, epilot_id in counts.not_written if named_schema == schema}
        counts.deleted += len(mark_purged(schema, named, pass_started=opened.started))
    SyncState.objects.filter(pk=state.pk).update(last_success_at=timezone.now())


def _commit_without_waiting_for_disk() -> None:
    """PostgreSQL: this transaction's commit does not wait for its WAL to reach the disk.

    A page and its watermark still commit together or not at all; a crash of the database server
    can only lose the last pages' commits (a fraction of a second), which the next run reads again.
    SQLite's WAL with synchronous=NORMAL (settings) makes the same trade.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


_END = object()


def _waited_for(pages: Iterator[T], counts: MirrorChanges) -> Iterator[T]:
    """The pages, with the time spent waiting for each counted as "fetch wait"."""
    while True:
        with counts.timed("fetch wait"):
            page = next(pages, _END)
        if page is _END:
            return
        yield page
