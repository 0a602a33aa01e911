"""Benchmark: a bulk completion of 500 workflow steps as one step job, against the standalone sandbox.

Starts "Ausbau Glasfaser" on 500 opportunities (setup, with a budget high enough not to wait), syncs
the mirror, then completes the first step of each execution through `step_job_run` with the
production write budget (EPILOT_WRITES_PER_MINUTE, 450 by default). Prints steps/s and the most
writes the sandbox received in any 60-second window, which must not exceed the budget.

    .venv/bin/python bench/steps_bulk.py [--steps 500] [--budget 450]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--budget", type=int, default=450, help="writes per minute of the measured client")
    args = parser.parse_args()

    workdir = scratch_directory("bench-steps-")
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING", "EPILOT_API_TOKEN": "",
                       "DEBUG": "false"})
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
    from integrations.epilot_sandbox import (
        AUSBAU_DEFINITION_ID,
        SandboxStore,
        free_loopback_port,
        sandbox_stats,
        seed_bulk,
        seed_demo,
        wait_until_serving,
    )

    sandbox_db = workdir / "sandbox.sqlite3"
    store = SandboxStore(sandbox_db)
    seed_demo(store)
    seed_bulk(store, contacts=args.steps, opportunities=args.steps, orders=0)
    store.conn.close()
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "manage.py", "epilot_sandbox", "--port", str(port), "--db", str(sandbox_db)],
                              cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(url)
        os.environ["EPILOT_API_URL"] = url
        import django

        django.setup()
        from django.core.management import call_command

        from integrations.epilot import EpilotClient, ExecutionContext, ServiceURLs
        from projects.models import StepJobItem, SyncRun, WorkflowExecution
        from projects.services.steps import COMPLETE, step_job_create, step_job_run
        from projects.services.sync import sync_run

        call_command("migrate", verbosity=0)
        setup = EpilotClient(token="bench", urls=ServiceURLs.single_origin(url), writes_per_minute=1_000_000)
        opportunities = [page.results for page in setup.iter_search_entities("_schema:opportunity", page_size=1000)]
        targets = [entity for page in opportunities for entity in page][: args.steps]
        started = time.perf_counter()
        for entity in targets:
            setup.create_execution(AUSBAU_DEFINITION_ID, [ExecutionContext(entity.id, "opportunity", entity.title or entity.id)])
        setup_seconds = time.perf_counter() - started
        sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=setup)
        executions = WorkflowExecution.objects.filter(status="STARTED").prefetch_related("steps")
        steps = [execution.steps.order_by("position").first() for execution in executions][: args.steps]

        urllib.request.urlopen(urllib.request.Request(f"{url}/__sandbox__/stats", method="DELETE"), timeout=10).close()
        measured = EpilotClient(token="bench", urls=ServiceURLs.single_origin(url), writes_per_minute=args.budget)
        job = step_job_create(operation=COMPLETE, steps=steps, actor="bench")
        started = time.perf_counter()
        job = step_job_run(job, client=measured)
        elapsed = time.perf_counter() - started
        stats = sandbox_stats(url)
    finally:
        server.terminate()
        server.wait(timeout=10)

    from django.db.models import Count

    outcome = dict(job.items.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    peak = stats.get("max_writes_per_60s", 0)
    print(f"setup:                  {len(targets)} executions started in {setup_seconds:.1f} s")
    print(f"step job:               {len(steps)} steps in {elapsed:.1f} s = {len(steps) / elapsed:.1f} steps/s ({outcome})")
    print(f"writes epilot received: {stats.get('op:updateStep', 0)} updateStep; most in any 60 s window: {peak} "
          f"(budget {args.budget}/min); {stats.get('requests', 0)} requests in all")
    done = job.items.filter(status=StepJobItem.Status.DONE).count()
    print(f"budget held:            {'yes' if peak <= args.budget else 'NO'}; {done} steps completed, each written once")


if __name__ == "__main__":
    main()
