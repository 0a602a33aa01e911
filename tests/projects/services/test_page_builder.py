"""A full sync over the network reads and builds its pages, and reads the executions, in forked processes: the same
mirror as in one process, epilot's errors raised in order after the pages before them, and no process left behind."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from integrations.epilot import EpilotClient, ExecutionContext, RetryPolicy, ServiceURLs
from integrations.epilot.observer import CallObserver
from integrations.epilot_sandbox import FaultConfig, SandboxApp, make_sandbox_server, seed_bulk
from integrations.epilot_sandbox.store import now_ms
from projects.mirror.execution_reader import ExecutionReaderLost
from projects.mirror.page_builder import PageBuilderLost, PagesBuiltInChild
from projects.models import (
    Contact,
    GenericEntity,
    MirroredStep,
    Opportunity,
    Order,
    PendingExecutionRead,
    QuarantinedEntity,
    SyncRun,
    SyncState,
    WorkflowExecution,
)
from projects.services.sync import Progress, sync_run

pytestmark = pytest.mark.django_db

MIRRORED = (Contact, Opportunity, Order)
CHILD_LOG = "built in a forked process"


class Counting(CallObserver):
    def __init__(self) -> None:
        self.answers: Counter[tuple[str, str]] = Counter()

    def answered(self, service: str, operation: str, status: str, seconds: float) -> None:
        self.answers[operation, status] += 1


def over_network(origin: str, observer: CallObserver | None = None) -> EpilotClient:
    return EpilotClient(token="t", urls=ServiceURLs.single_origin(origin), retry=RetryPolicy(max_attempts=1),
                        observer=observer)


def children() -> set[str]:
    """The pids of this process's child processes (Linux)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = stat.read_text().rpartition(")")[2].split()[1]  # after the name: state, parent pid
        except OSError:  # ended meanwhile
            continue
        if parent == str(os.getpid()):
            found.add(stat.parent.name)
    return found


def mirror() -> dict[str, list[tuple]]:
    """Every mirrored row's fields that come from epilot, and the quarantine; no primary keys, no sync times."""
    state = {}
    for model in MIRRORED:
        names = [field.attname for field in model._meta.concrete_fields
                 if field.attname not in ("id", "synced_at", "opportunity_id")]
        state[model.__name__] = sorted(model.objects.values_list(*names), key=lambda row: row[names.index("epilot_id")])
    state["quarantine"] = sorted(QuarantinedEntity.objects.values_list("schema", "epilot_id", "reason", "payload"))
    state["linked"] = sorted(Order.objects.values_list("epilot_id", "opportunity__epilot_id"))
    state["executions"] = sorted(WorkflowExecution.objects.values_list(
        "epilot_id", "entity_schema", "entity_epilot_id", "opportunity__epilot_id", "status", "completed_steps", "total_steps"))
    state["steps"] = sorted(MirroredStep.objects.values_list("execution__epilot_id", "epilot_id", "name", "status"))
    return state


def forget_the_mirror() -> None:
    for model in (MirroredStep, WorkflowExecution, *MIRRORED, GenericEntity, QuarantinedEntity):
        model.objects.all().delete()
    SyncState.objects.update(watermark_updated_at=None, watermark_id="")


@pytest.fixture
def many(sandbox: SandboxApp) -> SandboxApp:
    """Several pages of each schema, and entities that must be quarantined."""
    seed_bulk(sandbox.store, contacts=2300, opportunities=1200, orders=700, seed=3)
    stamp = now_ms()
    base = {"_schema": "order", "_org": "1", "_created_at": stamp, "_updated_at": stamp, "_title": "bad"}
    sandbox.store.bulk_insert_entities([{**base, "_id": "bad-amount", "amount_total": "viel"},
                                        {**base, "_id": "bad-title", "_title": "x" * 600}])
    return sandbox


@pytest.fixture
def running(many: SandboxApp, sandbox_server: str) -> list[str]:
    """Workflows started on 40 of the bulk opportunities (more than the reader sends at once); their ids."""
    client = over_network(sandbox_server)
    definition = client.get_definitions()[0]
    ids = [row[0] for row in many.store.conn.execute(
        "SELECT id FROM entities WHERE schema = 'opportunity' ORDER BY id LIMIT 40").fetchall()]
    for epilot_id in ids:
        client.create_execution(definition.id, [ExecutionContext(entity_id=epilot_id, schema="opportunity")])
    return ids


def test_a_full_sync_built_in_a_child_mirrors_what_one_process_mirrors(many: SandboxApp, running: list[str],
                                                                       sandbox_server: str, settings, caplog) -> None:
    before, calls = children(), Counting()
    with caplog.at_level(logging.INFO, logger="projects"):
        in_child = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server, calls))
    assert in_child.status == SyncRun.Status.SUCCEEDED and in_child.quarantined == 2
    assert sum(CHILD_LOG in message for message in caplog.messages) == 3  # contacts, opportunities, orders
    assert children() == before
    assert calls.answers["searchEntities", "200"] >= 3 + 2 + 1  # the children's reads, counted by this process
    assert calls.answers["getExecutions", "200"] >= len(running) and calls.answers["getExecution", "200"] >= len(running)
    changed = Contact.objects.order_by("epilot_id").first()
    over_network(sandbox_server).patch_entity("contact", changed.epilot_id, {"first_name": "Geändert"})
    again = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server))
    assert again.status == SyncRun.Status.SUCCEEDED and (again.created, again.updated, again.deleted) == (0, 1, 0)
    built_in_child = mirror()
    assert len(built_in_child["Contact"]) > 2300 and len(built_in_child["Order"]) > 700
    assert {row[2] for row in built_in_child["executions"]} >= set(running) and len(built_in_child["steps"]) > len(running)

    forget_the_mirror()
    settings.SYNC_BUILD_PAGES_IN_CHILD = False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="projects"):
        in_one = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server))
    assert in_one.status == SyncRun.Status.SUCCEEDED and not any(CHILD_LOG in message for message in caplog.messages)
    assert mirror() == built_in_child


class CountingSearches:
    """The sandbox behind a WSGI layer that counts the searches it answered."""

    def __init__(self, app: SandboxApp) -> None:
        self.app, self.searches = app, 0

    def __call__(self, environ, start_response):
        answer = self.app(environ, start_response)
        if environ["PATH_INFO"].endswith(":search"):
            self.searches += 1
        return answer


def test_a_child_builds_every_page_before_the_parent_reads_one(many: SandboxApp) -> None:
    """The next schema's child builds on while the schema before is written: its pages wait built, not its pipe."""
    counting = CountingSearches(many)
    server = make_sandbox_server(counting, host="127.0.0.1", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    before = children()
    host, port = server.server_address[:2]
    builder = PagesBuiltInChild(over_network(f"http://{host}:{port}"), "contact", "_schema:contact")
    try:
        deadline = time.monotonic() + 30
        while counting.searches < 3 and time.monotonic() < deadline:  # 2,300 contacts: three pages of 1,000
            time.sleep(0.05)
        assert counting.searches == 3  # none of them read here yet: written directly, the pipe held one page
        pages = list(builder)
    finally:
        builder.close()
        server.shutdown()
        server.server_close()
    in_epilot = len(many.store.conn.execute("SELECT id FROM entities WHERE schema = 'contact'").fetchall())
    assert [len(page.rows) for _hits, page in pages] == [1000, 1000, in_epilot - 2000]
    assert children() == before


def test_pages_built_ahead_arrive_adapted_as_the_parent_would_adapt_them(many: SandboxApp, sandbox_server: str) -> None:
    """A child building ahead converts the date-times for the database itself; the rows are the same either way."""
    built: dict[bool, list] = {}
    for ahead in (False, True):
        builder = PagesBuiltInChild(over_network(sandbox_server), "order", "_schema:order", built_ahead=ahead)
        try:
            # Each build stamps its rows with its own moment (synced_at): the rest must be the same.
            built[ahead] = [{epilot_id: {key: value for key, value in row.items() if not key.startswith("synced_at")}
                             for epilot_id, row in page.rows.items()} for _hits, page in builder]
        finally:
            builder.close()
    assert built[True] and built[True] == built[False]
    if connection.vendor == "sqlite":  # PostgreSQL's driver takes the date-times as they are
        row = next(iter(built[True][0].values()))
        assert row["epilot_updated_at__db"] == connection.ops.adapt_datetimefield_value(row["epilot_updated_at"])


def test_an_incremental_run_builds_its_pages_in_this_process(many: SandboxApp, sandbox_server: str, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="projects"):
        result = sync_run(trigger=SyncRun.Trigger.COMMAND, client=over_network(sandbox_server))
    assert result.status == SyncRun.Status.SUCCEEDED
    assert not any(CHILD_LOG in message for message in caplog.messages)


def test_an_epilot_error_in_the_child_fails_the_run_after_the_pages_before_it(many: SandboxApp,
                                                                              sandbox_server: str) -> None:
    before = children()

    def fail_after_the_first_page(progress: Progress) -> None:
        if progress.schema == "opportunity" and progress.pages == 1:
            many.set_faults(FaultConfig(rate_5xx=1.0, operations=("searchEntities",)))

    result = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server),
                      on_progress=fail_after_the_first_page)
    assert result.status == SyncRun.Status.FAILED and "searchEntities" in result.error
    # Whole pages, schema after schema: those the children had read before the fault (they read ahead, and the next
    # schema's child starts early), then none; the schemas after the one that failed are not begun.
    schemas = [(schema, model.objects.count() + QuarantinedEntity.objects.filter(schema=schema).count(), len(
        many.store.conn.execute("SELECT id FROM entities WHERE schema = ?", (schema,)).fetchall()))
        for schema, model in (("opportunity", Opportunity), ("order", Order), ("contact", Contact))]
    failed = next(index for index, (_schema, mirrored, in_epilot) in enumerate(schemas) if mirrored < in_epilot)
    assert schemas[0][1] >= 1000 and schemas[failed][1] % 1000 == 0
    assert all(mirrored == 0 for _schema, mirrored, _in_epilot in schemas[failed + 1:])
    watermark = SyncState.objects.get(schema="opportunity")
    last = Opportunity.objects.order_by("-epilot_updated_at", "-epilot_id").first()
    assert (watermark.watermark_updated_at, watermark.watermark_id) == (last.epilot_updated_at, last.epilot_id)
    assert children() == before


def test_a_failed_execution_read_in_the_child_fails_the_run_and_leaves_the_read_pending(
        many: SandboxApp, running: list[str], sandbox_server: str) -> None:
    before = children()
    many.set_faults(FaultConfig(rate_5xx=1.0, operations=("getExecution",)))
    result = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server))
    assert result.status == SyncRun.Status.FAILED and "getExecution" in result.error
    assert children() == before
    assert Order.objects.count() > 700  # every page was written before the run failed
    pending = set(PendingExecutionRead.objects.values_list("epilot_id", flat=True))
    assert pending >= set(running) - set(WorkflowExecution.objects.values_list("entity_epilot_id", flat=True))

    many.set_faults(FaultConfig())
    again = sync_run(trigger=SyncRun.Trigger.COMMAND, client=over_network(sandbox_server))
    assert again.status == SyncRun.Status.SUCCEEDED
    assert set(WorkflowExecution.objects.values_list("entity_epilot_id", flat=True)) >= set(running)
    assert not PendingExecutionRead.objects.filter(epilot_id__in=running).exists()


def test_a_killed_child_fails_the_run_and_leaves_no_process(many: SandboxApp, running: list[str],
                                                             sandbox_server: str) -> None:
    """Page builders and the execution reader killed after the first page (as the OOM killer might): the run fails
    with the loss, nobody waits for ever, and no process is left."""
    before = children()

    def kill_the_children(progress: Progress) -> None:
        if progress.schema == "opportunity" and progress.pages == 1:
            for pid in children() - before:
                os.kill(int(pid), signal.SIGKILL)

    with pytest.raises((PageBuilderLost, ExecutionReaderLost)):
        sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=over_network(sandbox_server),
                 on_progress=kill_the_children)
    assert SyncRun.objects.get().status == SyncRun.Status.FAILED
    assert children() == before
