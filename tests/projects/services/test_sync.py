"""The sync engine against the sandbox: incremental and full runs, deletes, relations, quarantine, locks, faults."""
from __future__ import annotations

import datetime as dt
import gc
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from integrations.epilot import EpilotClient, ExecutionContext, RetryPolicy
from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, demo_id, seed_bulk
from integrations.epilot_sandbox.store import now_ms
from projects.mirror.lease import acquire_lock
from projects.models import (
    AusbauProject,
    Contact,
    Opportunity,
    Order,
    PendingExecutionRead,
    QuarantinedEntity,
    SyncRun,
    SyncState,
    WorkflowDefinition,
    WorkflowExecution,
)
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db


def run(epilot: EpilotClient, **kwargs) -> SyncRun:
    return sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, **kwargs)


def sandbox_state(sandbox: SandboxApp, schema: str, *, include_deleted: bool = False) -> dict[str, str]:
    rows = sandbox.store.conn.execute(
        "SELECT id, updated_at FROM entities WHERE schema = ?" + ("" if include_deleted else " AND deleted_at IS NULL"), (schema,)
    )
    return {row["id"]: row["updated_at"] for row in rows}


def mirror_state(model, *, include_deleted: bool = False) -> dict[str, str]:
    queryset = model.objects.all() if include_deleted else model.objects.filter(epilot_deleted_at__isnull=True)
    return {e.epilot_id: e.payload["_updated_at"] for e in queryset}


def test_first_sync_mirrors_the_demo_and_derives_projects(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED and result.created == 18
    assert mirror_state(Opportunity) == sandbox_state(sandbox, "opportunity")
    nord = Opportunity.objects.get(epilot_id=demo_id("opportunity:nordstrasse"))
    assert nord.customer.title == "Anna Meier" and nord.city == "Wülfrath" and nord.street == "Nordstraße 12"
    assert Order.objects.get(epilot_id=demo_id("order:flehenberg")).opportunity.title == "Glasfaser Flehenberg"
    assert WorkflowDefinition.objects.get(epilot_id=AUSBAU_DEFINITION_ID).sections == [
        "Planung",
        "Tiefbau",
        "Hausanschluss",
        "Abschluss",
    ]
    phases = dict(AusbauProject.objects.values_list("opportunity__epilot_id", "phase"))
    assert len(phases) == 8
    assert phases[demo_id("opportunity:angerbach")] == "cancelled"
    assert phases[demo_id("opportunity:flehenberg")] == "completed"  # its order is completed
    assert phases[demo_id("opportunity:schulzentrum")] == "approved"  # order placed, no workflow yet
    assert phases[demo_id("opportunity:nordstrasse")] == "planning"


def test_incremental_run_reads_only_changes_with_one_search_per_schema(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    run(epilot)
    before = sandbox.stats["op:searchEntities"]
    quiet = run(epilot)
    assert (quiet.created, quiet.updated) == (0, 0)
    assert sandbox.stats["op:searchEntities"] - before == 3
    epilot.patch_entity("opportunity", demo_id("opportunity:kalkstrasse"), {"status": "bearbeitung"})
    changed = run(epilot)
    assert (changed.created, changed.updated) == (0, 1)
    assert Opportunity.objects.get(epilot_id=demo_id("opportunity:kalkstrasse")).status == "bearbeitung"


def test_soft_deletes_are_mirrored_and_full_runs_find_purges(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    run(epilot)
    epilot.delete_entity("contact", demo_id("contact:wagner"))
    assert run(epilot).deleted == 1
    assert Contact.objects.get(epilot_id=demo_id("contact:wagner")).epilot_deleted_at is not None
    epilot.delete_entity("contact", demo_id("contact:becker"), purge=True)
    assert run(epilot).deleted == 0  # a purge leaves nothing to see incrementally
    full = run(epilot, full=True)
    assert full.deleted == 1
    assert Contact.objects.get(epilot_id=demo_id("contact:becker")).epilot_deleted_at is not None
    assert mirror_state(Contact) == sandbox_state(sandbox, "contact")


def test_a_full_run_marks_deleted_only_what_epilot_no_longer_returns(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    """Rows a full pass read but did not write stay live: one epilot now sends malformed (quarantined), one the
    mirror holds in a newer version (a webhook was quicker than epilot's search index)."""
    run(epilot)
    wagner, becker, purged = (demo_id(f"contact:{name}") for name in ("wagner", "becker", "schmitz"))
    newer = timezone.now() + dt.timedelta(days=1)
    Contact.objects.filter(epilot_id=wagner).update(epilot_updated_at=newer, title="Neuer als die Suche")
    epilot.patch_entity("contact", becker, {"status": 5})
    epilot.delete_entity("contact", purged, purge=True)
    full = run(epilot, full=True)
    assert full.deleted == 1 and full.quarantined == 1
    live = dict(Contact.objects.filter(epilot_deleted_at__isnull=True).values_list("epilot_id", "title"))
    assert live[wagner] == "Neuer als die Suche" and becker in live and purged not in live


def test_references_to_entities_not_yet_mirrored_resolve_later(epilot: EpilotClient) -> None:
    assert run(epilot, schemas=["order"]).status == SyncRun.Status.SUCCEEDED
    order = Order.objects.get(epilot_id=demo_id("order:schulzentrum"))
    assert order.opportunity is None and order.opportunity_epilot_id == demo_id("opportunity:schulzentrum")
    run(epilot, schemas=["opportunity", "contact"])
    order.refresh_from_db()
    assert order.opportunity.epilot_id == demo_id("opportunity:schulzentrum")
    assert Opportunity.objects.get(epilot_id=demo_id("opportunity:schulzentrum")).customer is not None


def test_malformed_entities_are_quarantined_and_the_page_goes_on(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    stamp = now_ms()
    base = {"_schema": "order", "_org": "1", "_created_at": stamp, "_updated_at": stamp, "_title": "bad"}
    sandbox.store.bulk_insert_entities([
        {**base, "_id": "bad-amount", "amount_total": "viel"},
        {**base, "_id": "bad-relation", "opportunity": {"$relation": "not-a-list"}},
        {**base, "_id": "bad-title", "_title": "x" * 600},
        {**base, "_id": "bad-tags", "_tags": "not a list"},  # a system attribute: checked as the document is read
    ])
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED and result.quarantined == 4
    reasons = dict(QuarantinedEntity.objects.values_list("epilot_id", "reason"))
    assert "amount_total" in reasons["bad-amount"] and "relation opportunity" in reasons["bad-relation"]
    assert "_title" in reasons["bad-title"] and reasons["bad-tags"] == "_tags is not a list of strings"
    assert QuarantinedEntity.objects.get(epilot_id="bad-tags").payload["_tags"] == "not a list"
    assert QuarantinedEntity.objects.get(epilot_id="bad-amount").payload["amount_total"] == "viel"
    assert Order.objects.filter(epilot_id=demo_id("order:flehenberg")).exists()
    epilot.patch_entity("order", "bad-amount", {"amount_total": 1000})
    run(epilot)
    assert not QuarantinedEntity.objects.filter(epilot_id="bad-amount").exists()
    assert Order.objects.get(epilot_id="bad-amount").amount_total == 1000


def test_a_second_run_is_refused_while_a_live_lock_is_held(epilot: EpilotClient) -> None:
    for schema in ("contact", "opportunity", "order"):
        assert acquire_lock(schema, "other-host:1")
    skipped = run(epilot)
    assert skipped.status == SyncRun.Status.SKIPPED and "another sync" in skipped.error
    with pytest.raises(CommandError, match="Not started"):
        call_command("sync_epilot", "--wait-for-lock", "0")
    SyncState.objects.update(lock_expires_at=timezone.now() - dt.timedelta(seconds=1))  # the holder crashed
    assert run(epilot).status == SyncRun.Status.SUCCEEDED
    assert SyncState.objects.filter(lock_owner="").count() == 3


def test_a_failure_between_pages_keeps_committed_pages_and_a_rerun_converges(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    seed_bulk(sandbox.store, contacts=5500, opportunities=0, orders=0, seed=3)
    epilot.retry = RetryPolicy(max_attempts=2)

    def fail_after_first_page(progress) -> None:
        if progress.schema == "contact" and progress.pages == 1:
            sandbox.set_faults(FaultConfig(rate_5xx=1.0))  # the next fetch fails (up to three pages are fetched ahead)

    failed = sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, schemas=["contact"], on_progress=fail_after_first_page)
    assert failed.status == SyncRun.Status.FAILED and "503" in failed.error
    committed = Contact.objects.count()
    assert committed % 1000 == 0 and 1000 <= committed <= 4000  # whole pages only
    state = SyncState.objects.get(schema="contact")
    assert state.lock_owner == "" and state.watermark_id
    sandbox.set_faults(FaultConfig())
    resumed = run(epilot, schemas=["contact"])
    assert resumed.status == SyncRun.Status.SUCCEEDED and resumed.created == 5508 - committed
    assert mirror_state(Contact) == sandbox_state(sandbox, "contact")


def test_injected_429s_and_5xx_end_with_an_exact_mirror(epilot: EpilotClient, sandbox: SandboxApp, clock) -> None:
    seed_bulk(sandbox.store, contacts=1500, opportunities=600, orders=300, seed=11)
    sandbox.set_faults(FaultConfig(rate_429=0.25, rate_5xx=0.25, retry_after_seconds=2, seed=1))
    epilot.retry = RetryPolicy(max_attempts=15, max_elapsed_seconds=900)
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED, result.error
    for model, schema in ((Contact, "contact"), (Opportunity, "opportunity"), (Order, "order")):
        assert mirror_state(model, include_deleted=True) == sandbox_state(sandbox, schema, include_deleted=True)
    assert sandbox.stats["injected_429"] > 0 and sandbox.stats["injected_5xx"] > 0
    assert 2.0 in clock.sleeps


def test_executions_are_fetched_only_for_entities_whose_workflows_changed(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    run(epilot)
    calls = sandbox.stats["op:getExecutions"]
    run(epilot)
    assert sandbox.stats["op:getExecutions"] == calls
    order_id = demo_id("order:schulzentrum")
    execution = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(order_id, "order", "Schulzentrum")])
    run(epilot)
    assert sandbox.stats["op:getExecutions"] == calls + 1
    mirrored = WorkflowExecution.objects.get(epilot_id=execution.id)
    assert mirrored.order.epilot_id == order_id and mirrored.definition.epilot_id == AUSBAU_DEFINITION_ID
    assert (mirrored.current_section, mirrored.completed_steps, mirrored.total_steps) == ("Planung", 0, 8)
    project = AusbauProject.objects.get(opportunity__epilot_id=demo_id("opportunity:schulzentrum"))
    assert project.phase == "construction" and project.has_running_workflow and project.current_section == "Planung"


def test_executions_left_unread_by_a_failed_run_are_read_by_the_next(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    """The entity with its changed workflows is committed before its executions are read: a run that fails in
    between must not leave them unread for good (the next run sees the entity unchanged)."""
    run(epilot)
    order_id = demo_id("order:schulzentrum")
    execution = epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(order_id, "order", "Schulzentrum")])
    epilot.retry = RetryPolicy(max_attempts=1)
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("getExecutions",)))
    failed = run(epilot)
    assert failed.status == SyncRun.Status.FAILED and Order.objects.get(epilot_id=order_id).payload.get("workflows")
    assert not WorkflowExecution.objects.filter(epilot_id=execution.id).exists()
    sandbox.set_faults(FaultConfig())
    calls = sandbox.stats["op:getExecutions"]
    resumed = run(epilot)
    assert resumed.status == SyncRun.Status.SUCCEEDED and resumed.updated == 0
    assert WorkflowExecution.objects.get(epilot_id=execution.id).order.epilot_id == order_id
    project = AusbauProject.objects.get(opportunity__epilot_id=demo_id("opportunity:schulzentrum"))
    assert project.phase == "construction" and project.has_running_workflow
    run(epilot)
    assert sandbox.stats["op:getExecutions"] == calls + 1  # read once, then no more


def test_an_execution_that_cannot_be_read_fails_the_run_after_its_pages_not_before(epilot: EpilotClient,
                                                                                  sandbox: SandboxApp) -> None:
    """Executions are read while later pages are written: one that cannot be read must not keep the pages after it
    from being mirrored; the run fails once they are, and the entity waits for the next run."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sandbox.store.bulk_insert_entities([{"_id": "contact-wf", "_schema": "contact", "_org": "1", "_title": "Anna Meier",
                                         "_created_at": stamp, "_updated_at": stamp}])
    epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext("contact-wf", "contact", "Anna Meier")])
    sandbox.store.bulk_insert_entities([
        {"_id": f"opp-{n}", "_schema": "opportunity", "_org": "1", "_title": f"Glasfaser Weg {n}", "_created_at": stamp,
         "_updated_at": stamp, "status": "ausstehend"} for n in range(2500)])
    epilot.retry = RetryPolicy(max_attempts=1)
    sandbox.set_faults(FaultConfig(rate_5xx=1.0, operations=("getExecutions",)))
    failed = run(epilot)
    assert failed.status == SyncRun.Status.FAILED and "getExecutions" in failed.error
    assert Opportunity.objects.filter(epilot_id__startswith="opp-").count() == 2500
    assert set(PendingExecutionRead.objects.values_list("epilot_id", flat=True)) == {"contact-wf"}


def test_a_full_sync_derives_projects_while_executions_are_read_and_those_with_workflows_from_them(
        epilot: EpilotClient, sandbox: SandboxApp) -> None:
    """More opportunities than a chunk of projects: the projects without workflows are refreshed while epilot
    answers for the executions; the others once their executions are stored."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sandbox.store.bulk_insert_entities([
        {"_id": f"opp-{n}", "_schema": "opportunity", "_org": "1", "_title": f"Glasfaser Weg {n}", "_created_at": stamp,
         "_updated_at": stamp, "status": "ausstehend"} for n in range(2500)])
    running = [f"opp-{n}" for n in (7, 2100, 2499)]
    for entity_id in running:
        epilot.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(entity_id, "opportunity", entity_id)])
    result = run(epilot, full=True)
    assert result.status == SyncRun.Status.SUCCEEDED, result.error
    projects = {p.opportunity.epilot_id: p for p in AusbauProject.objects.select_related("opportunity")
                .filter(opportunity__epilot_id__startswith="opp-")}
    assert len(projects) == 2500
    assert {epilot_id for epilot_id, p in projects.items() if p.has_running_workflow} == set(running)
    assert all(projects[epilot_id].current_section == "Planung" for epilot_id in running)
    assert {p.phase for epilot_id, p in projects.items() if epilot_id not in running} == {"planning"}


def test_sync_command_reports_failure_with_a_non_zero_exit(sandbox: SandboxApp, capsys) -> None:
    call_command("sync_epilot")  # the embedded sandbox of this test
    assert "18 created" in capsys.readouterr().out
    with pytest.raises(CommandError, match="Unknown schema"):
        call_command("sync_epilot", schemas=["infrastructure_project"])



def test_entities_indexed_late_within_the_overlap_window_are_not_missed(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    run(epilot)
    watermark = SyncState.objects.get(schema="contact").watermark_updated_at
    late = (watermark - dt.timedelta(seconds=30)).astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    sandbox.store.bulk_insert_entities([{"_id": "late-contact", "_schema": "contact", "_org": "1", "_title": "Spät Indiziert",
                                         "_created_at": late, "_updated_at": late, "first_name": "Spät"}])
    assert run(epilot).created == 1
    assert Contact.objects.filter(epilot_id="late-contact").exists()


def test_further_schemas_are_mirrored_generically(epilot: EpilotClient, settings) -> None:
    settings.SYNC_EXTRA_SCHEMAS = ["infrastructure_project"]
    project = epilot.create_entity("infrastructure_project", {"_title": "Backbone Wülfrath Nord", "status": "planung"})
    execution = epilot.create_execution(
        AUSBAU_DEFINITION_ID, [ExecutionContext(project.id, "infrastructure_project", "Backbone")]
    )
    result = run(epilot)
    assert result.status == SyncRun.Status.SUCCEEDED
    from projects.models import GenericEntity

    mirrored = GenericEntity.objects.get(epilot_id=project.id)
    assert (mirrored.schema, mirrored.title, mirrored.status) == ("infrastructure_project", "Backbone Wülfrath Nord", "planung")
    assert WorkflowExecution.objects.get(epilot_id=execution.id).entity_schema == "infrastructure_project"


def test_the_celery_task_runs_a_queued_run_once(epilot: EpilotClient, django_capture_on_commit_callbacks) -> None:
    from projects.services.sync import sync_enqueue
    from projects.tasks import sync_epilot_task

    with django_capture_on_commit_callbacks() as callbacks:
        queued = sync_enqueue(trigger=SyncRun.Trigger.API)
    assert queued.status == SyncRun.Status.QUEUED and len(callbacks) == 1
    assert sync_epilot_task(run_id=queued.pk) == queued.pk
    queued.refresh_from_db()
    assert queued.status == SyncRun.Status.SUCCEEDED and queued.created == 18 and queued.trigger == "api"
    assert sync_epilot_task(run_id=queued.pk) == queued.pk  # a redelivered message does not run it again
    assert SyncRun.objects.count() == 1


def test_an_older_version_never_overwrites_a_newer_one(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    from projects.mirror.bulk import bulk_upsert

    run(epilot)
    kalk = Opportunity.objects.get(epilot_id=demo_id("opportunity:kalkstrasse"))
    newer = epilot.patch_entity("opportunity", kalk.epilot_id, {"status": "bearbeitung"})
    run(epilot)
    from projects.mirror.rows import COMMON_FIELDS, EXTRA_FIELDS

    stale = {field: getattr(kalk, field) for field in [*COMMON_FIELDS, *EXTRA_FIELDS["opportunity"]]}
    bulk_upsert(Opportunity, [{"epilot_id": kalk.epilot_id, **stale}], unique_field="epilot_id",
                update_fields=list(stale), newer_by="epilot_updated_at")  # a writer that read epilot earlier
    kalk.refresh_from_db()
    assert kalk.status == "bearbeitung" and kalk.payload["_updated_at"] == newer.data["_updated_at"]


def test_rows_believed_new_that_another_writer_inserted_meanwhile_are_upserted(epilot: EpilotClient) -> None:
    """A page read as all new, while a webhook stored one of its entities: nothing is refused or doubled."""
    from projects.mirror.bulk import bulk_upsert
    from projects.mirror.rows import COMMON_FIELDS, EXTRA_FIELDS

    run(epilot)
    kalk = Opportunity.objects.get(epilot_id=demo_id("opportunity:kalkstrasse"))
    fields = [*COMMON_FIELDS, *EXTRA_FIELDS["opportunity"]]
    newer = {**{field: getattr(kalk, field) for field in fields}, "status": "geschlossen", "title": "Kalkstraße, neu",
             "epilot_updated_at": kalk.epilot_updated_at + dt.timedelta(seconds=1)}
    fresh = {**newer, "title": "Neu im Gebiet", "payload": {"_id": "fresh-1", "notiz": "Größe \"XL\" ✓"}}
    bulk_upsert(Opportunity, [{"epilot_id": kalk.epilot_id, **newer}, {"epilot_id": "fresh-1", **fresh}],
                unique_field="epilot_id", update_fields=fields, newer_by="epilot_updated_at", believed_new=True)
    kalk.refresh_from_db()
    assert (kalk.status, kalk.title) == ("geschlossen", "Kalkstraße, neu")
    assert Opportunity.objects.filter(epilot_id=kalk.epilot_id).count() == 1
    assert Opportunity.objects.get(epilot_id="fresh-1").payload == {"_id": "fresh-1", "notiz": 'Größe "XL" ✓'}
    # A number where a text belongs does not fit PostgreSQL's binary COPY; the rows go as text instead.
    bulk_upsert(Opportunity, [{"epilot_id": "fresh-2", **fresh, "title": 4711}], unique_field="epilot_id",
                update_fields=fields, believed_new=True)
    fresh_two = Opportunity.objects.get(epilot_id="fresh-2")
    assert (fresh_two.title, fresh_two.payload["notiz"]) == ("4711", 'Größe "XL" ✓')


def test_a_changed_customer_relation_moves_the_foreign_key(epilot: EpilotClient) -> None:
    """The customer of an opportunity changes in epilot: the mirror points at the new contact, or at none."""
    run(epilot)
    nord_id = demo_id("opportunity:nordstrasse")
    other = Contact.objects.exclude(pk=Opportunity.objects.get(epilot_id=nord_id).customer.pk).first()
    epilot.patch_entity("opportunity", nord_id, {"customer": {"$relation": [{"entity_id": other.epilot_id}]}})
    run(epilot)
    assert Opportunity.objects.get(epilot_id=nord_id).customer == other
    epilot.patch_entity("opportunity", nord_id, {"customer": {"$relation": [{"entity_id": "not-mirrored-yet"}]}})
    run(epilot)
    nord = Opportunity.objects.get(epilot_id=nord_id)
    assert nord.customer is None and nord.customer_epilot_id == "not-mirrored-yet"


def test_a_changed_order_relation_moves_or_clears_the_foreign_key(epilot: EpilotClient) -> None:
    """The foreign key written with the order follows its relation, also to an opportunity not mirrored yet."""
    run(epilot)
    order_id = demo_id("order:flehenberg")
    other = Opportunity.objects.exclude(pk=Order.objects.get(epilot_id=order_id).opportunity_id).first()
    epilot.patch_entity("order", order_id, {"opportunity": {"$relation": [{"entity_id": other.epilot_id}]}})
    run(epilot)
    assert Order.objects.get(epilot_id=order_id).opportunity == other
    epilot.patch_entity("order", order_id, {"opportunity": {"$relation": [{"entity_id": "not-mirrored-yet"}]}})
    run(epilot)
    order = Order.objects.get(epilot_id=order_id)
    assert order.opportunity is None and order.opportunity_epilot_id == "not-mirrored-yet"


def test_a_run_leaves_the_interpreter_as_it_found_it(epilot: EpilotClient) -> None:
    """Process tuning is the process's (at worker start), not the service's: a run changes none of it."""
    before = gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count()
    assert run(epilot).status == SyncRun.Status.SUCCEEDED
    assert (gc.get_threshold(), sys.getswitchinterval(), gc.get_freeze_count()) == before


def test_a_celery_worker_process_is_tuned_once_as_it_starts() -> None:
    """worker_process_init tunes the collector, the switch interval and malloc arenas of each worker process."""
    script = ("import gc, sys, django; django.setup(); from celery.signals import worker_process_init; "
              "import config.celery; before = (gc.get_threshold()[0], sys.getswitchinterval(), gc.get_freeze_count() > 0); "
              "worker_process_init.send(sender=None); "
              "print(before, (gc.get_threshold()[0], sys.getswitchinterval(), gc.get_freeze_count() > 0))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "(700, 0.005, False) (50000, 0.001, True)"


def test_a_run_leaves_no_reference_cycles_that_hold_its_pages(epilot: EpilotClient, sandbox: SandboxApp) -> None:
    """A page's documents are freed by reference counting once it is written, not by the cyclic collector:
    a frame of the sync kept in a cycle (a caught exception's traceback) would hold a whole page until then."""
    seed_bulk(sandbox.store, contacts=30, opportunities=30, orders=10)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert run(epilot, full=True).status == SyncRun.Status.SUCCEEDED
        gc.collect()
        held = sorted({f"{frame.f_code.co_qualname} ({frame.f_code.co_filename.rsplit('/', 3)[-1]})"
                       for frame in gc.garbage if type(frame).__name__ == "frame"})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert held == []


def test_only_opportunities_with_a_project_tag_are_projects_when_tags_are_configured(epilot: EpilotClient, settings) -> None:
    """AUSBAU_PROJECT_TAGS narrows the projects to opportunities with one of the tags; a project whose
    opportunity loses them is removed on the next refresh."""
    assert run(epilot).status == SyncRun.Status.SUCCEEDED
    assert AusbauProject.objects.count() == Opportunity.objects.count()
    settings.AUSBAU_PROJECT_TAGS = ["neubau", "gewerbe"]
    assert run(epilot, full=True).status == SyncRun.Status.SUCCEEDED
    assert set(AusbauProject.objects.values_list("opportunity__epilot_id", flat=True)) == {
        demo_id("opportunity:nordstrasse"), demo_id("opportunity:rohdenhaus"), demo_id("opportunity:angerbach")}
    assert AusbauProject.objects.get(opportunity__epilot_id=demo_id("opportunity:nordstrasse")).tags == ",glasfaser,neubau,"
