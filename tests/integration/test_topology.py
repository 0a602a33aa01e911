"""The production topology under faults: scheduled syncs, concurrent and killed workers, epilot outages, 429 storms."""
from __future__ import annotations

import signal

import pytest

from integrations.epilot_sandbox import AUSBAU_DEFINITION_ID, FaultConfig, SandboxApp, seed_bulk
from projects.models import Contact, Opportunity, Order, SyncRun, WorkflowStart
from tests.integration.conftest import Topology, wait_until

pytestmark = pytest.mark.integration


def sandbox_state(sandbox: SandboxApp, schema: str) -> dict[str, str]:
    rows = sandbox.store.conn.execute("SELECT id, updated_at FROM entities WHERE schema = ?", (schema,))
    return {row["id"]: row["updated_at"] for row in rows}


def mirror_equals_sandbox(sandbox: SandboxApp) -> bool:
    return all({e.epilot_id: e.payload["_updated_at"] for e in model.objects.all()} == sandbox_state(sandbox, schema)
               for model, schema in ((Contact, "contact"), (Opportunity, "opportunity"), (Order, "order")))


def enqueue_sync(topology: Topology, *, full: bool = False) -> int:
    return int(topology.python("from projects.services.sync import sync_enqueue\n"
                               f"print(sync_enqueue(trigger='api', full={full}).pk)"))


def finished(run_id: int) -> SyncRun | None:
    run = SyncRun.objects.get(pk=run_id)
    return run if run.status not in (SyncRun.Status.QUEUED, SyncRun.Status.RUNNING) else None


def test_the_scheduled_sync_runs_and_converges(topology: Topology, sandbox: SandboxApp) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    task = PeriodicTask.objects.get(name="epilot sync (incremental)")
    task.interval = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
    task.save()
    topology.start_worker("w1")
    topology.start_beat()
    wait_until(
        lambda: SyncRun.objects.filter(trigger="schedule", status="succeeded").exists(), timeout=90, what="a scheduled run"
    )
    assert mirror_equals_sandbox(sandbox)
    from integrations.epilot import EpilotClient, ServiceURLs

    client = EpilotClient(token="t", urls=ServiceURLs.single_origin(topology.env["EPILOT_API_URL"]))
    changed = client.patch_entity("opportunity", Opportunity.objects.first().epilot_id, {"status": "bearbeitung"})
    wait_until(lambda: Opportunity.objects.filter(epilot_id=changed.id, status="bearbeitung").exists(), timeout=60,
               what="the next scheduled run to bring the change")


def test_a_full_sync_in_a_prefork_worker_builds_its_pages_in_a_forked_process(topology: Topology,
                                                                              sandbox: SandboxApp) -> None:
    """As production runs it: a Celery prefork pool process forks the page builders and the execution reader
    (billiard's pool processes are daemons, which may not start multiprocessing children)."""
    seed_bulk(sandbox.store, contacts=2500, opportunities=1200, orders=400, seed=33)
    topology.start_worker("w1", pool="prefork")
    run_id = enqueue_sync(topology, full=True)
    done = wait_until(lambda: finished(run_id), timeout=180, what="the full run")
    assert done.status == SyncRun.Status.SUCCEEDED, done.error
    assert mirror_equals_sandbox(sandbox)
    assert (topology.logs / "w1.log").read_text().count("pages read and built in a forked process") == 3


def test_two_workers_never_sync_the_same_schema_at_once(topology: Topology, sandbox: SandboxApp) -> None:
    seed_bulk(sandbox.store, contacts=1500, opportunities=300, orders=100, seed=31)
    sandbox.set_faults(FaultConfig(latency_ms=120))
    topology.start_worker("w1")
    topology.start_worker("w2")
    runs = [enqueue_sync(topology) for _ in range(4)]
    done = [wait_until(lambda r=run: finished(r), timeout=180, what=f"run {run}") for run in runs]
    succeeded = [run for run in done if run.status == SyncRun.Status.SUCCEEDED]
    assert succeeded and all(run.status in ("succeeded", "skipped") for run in done)
    for first in succeeded:
        for second in succeeded:
            if first.pk < second.pk:
                assert first.finished_at <= second.started_at or second.finished_at <= first.started_at, "two syncs overlapped"
    assert mirror_equals_sandbox(sandbox)


def test_a_worker_killed_mid_sync_loses_nothing(topology: Topology, sandbox: SandboxApp) -> None:
    seed_bulk(sandbox.store, contacts=2500, opportunities=0, orders=0, seed=32)
    sandbox.set_faults(FaultConfig(latency_ms=300))
    worker = topology.start_worker("w1")
    killed_run = enqueue_sync(topology)
    wait_until(lambda: Contact.objects.count() >= 1000, timeout=120, what="the first committed page")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=20)
    assert Contact.objects.count() in (1000, 2000, 2508)  # whole pages only
    sandbox.set_faults(FaultConfig())
    topology.start_worker("w2")
    # The unacknowledged message comes back after the visibility timeout and runs again once the dead
    # worker's lock has expired; the run it left behind is marked abandoned.
    wait_until(lambda: SyncRun.objects.filter(status="succeeded").exists(), timeout=120, what="the redelivered sync to succeed")
    assert mirror_equals_sandbox(sandbox)
    assert "abandoned" in SyncRun.objects.get(pk=killed_run).error or SyncRun.objects.get(pk=killed_run).status == "succeeded"


def test_a_workflow_start_job_survives_a_worker_restart_without_starting_twice(topology: Topology, sandbox: SandboxApp) -> None:
    assert topology.manage("sync_epilot").returncode == 0
    sandbox.set_faults(FaultConfig(latency_ms=250))
    job_id = int(
        topology.python(
            "from projects.models import Opportunity, WorkflowDefinition\n"
            "from projects.services.workflows import workflow_start_many\n"
            f"d = WorkflowDefinition.objects.get(epilot_id='{AUSBAU_DEFINITION_ID}')\n"
            "live = Opportunity.objects.exclude(status='abgebrochen').order_by('id')[:6]\n"
            "targets = [('opportunity', o.epilot_id, o.title) for o in live]\n"
            "print(workflow_start_many(definition=d, entities=targets).pk)"
        )
    )
    worker = topology.start_worker("w1")
    wait_until(lambda: WorkflowStart.objects.filter(job_id=job_id, status="started").count() >= 2, timeout=120, what="two starts")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=20)
    topology.start_worker("w2")
    wait_until(lambda: not WorkflowStart.objects.filter(job_id=job_id, status="pending").exists(), timeout=120,
               what="the job to finish on the new worker")
    starts = WorkflowStart.objects.filter(job_id=job_id)
    assert starts.count() == 6 and all(start.status == "started" for start in starts)
    for start in starts:
        running = [row for row in sandbox.store.list_documents("execution", entity_id=start.entity_epilot_id)
                   if row["definitionId"] == AUSBAU_DEFINITION_ID and row["status"] == "STARTED"]
        assert len(running) == 1, f"{start.entity_title}: {len(running)} executions"


def test_epilot_down_fails_cleanly_and_recovers(topology: Topology, sandbox: SandboxApp) -> None:
    topology.start_worker("w1")
    sandbox.set_faults(FaultConfig(rate_5xx=1.0))
    failing = enqueue_sync(topology)
    failed = wait_until(lambda: finished(failing), timeout=180, what="the failing run")
    assert failed.status == SyncRun.Status.FAILED and "503" in failed.error
    assert Contact.objects.count() == 0
    sandbox.set_faults(FaultConfig())
    recovering = enqueue_sync(topology)
    recovered = wait_until(lambda: finished(recovering), timeout=120, what="the recovering run")
    assert recovered.status == SyncRun.Status.SUCCEEDED and mirror_equals_sandbox(sandbox)


def test_a_429_storm_slows_the_sync_but_drops_nothing(topology: Topology, sandbox: SandboxApp) -> None:
    seed_bulk(sandbox.store, contacts=1200, opportunities=200, orders=50, seed=33)
    sandbox.set_faults(FaultConfig(rate_429=0.5, retry_after_seconds=1, seed=3))
    topology.start_worker("w1")
    storm_run = enqueue_sync(topology)
    run = wait_until(lambda: finished(storm_run), timeout=240, what="the run through the storm")
    assert run.status == SyncRun.Status.SUCCEEDED, run.error
    assert sandbox.stats["injected_429"] > 0 and sandbox.stats["retry_after_violations"] == 0
    assert mirror_equals_sandbox(sandbox)
