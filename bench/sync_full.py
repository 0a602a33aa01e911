"""Benchmark: full sync of 50,000 entities from the standalone sandbox, then an incremental run with no changes.

Prints entities per second, peak memory (max RSS of this process) and the number of search
requests of the incremental run. Targets (2-core machine): >= 5,000 entities/s, < 300 MB, and one
search per schema when nothing changed.

    .venv/bin/python bench/sync_full.py                      # SQLite (a fresh file)
    DATABASE_URL=postgres://... .venv/bin/python bench/sync_full.py   # PostgreSQL (tables are reset)
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=30_000)
    parser.add_argument("--opportunities", type=int, default=15_000)
    parser.add_argument("--orders", type=int, default=5_000)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    sandbox_db = workdir / "sandbox.sqlite3"
    base_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "seed_sandbox", "--db", str(sandbox_db), "--contacts", str(args.contacts),
                    "--opportunities", str(args.opportunities), "--orders", str(args.orders)],
                   cwd=ROOT, env=base_env, check=True, stdout=subprocess.DEVNULL)
    from integrations.epilot_sandbox import free_loopback_port, sandbox_stats, wait_until_serving

    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "manage.py", "epilot_sandbox", "--port", str(port), "--db", str(sandbox_db)],
                              cwd=ROOT, env=base_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_serving(url)
        os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING", "EPILOT_API_URL": url,
                           "EPILOT_API_TOKEN": ""})
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0)
        from projects.models import (
            AusbauProject,
            Contact,
            GenericEntity,
            Opportunity,
            Order,
            SyncRun,
            SyncState,
            WorkflowExecution,
        )
        from projects.services.sync import sync_run

        for model in (AusbauProject, WorkflowExecution, Order, Opportunity, Contact, GenericEntity, SyncState):
            model.objects.all().delete()

        started = time.perf_counter()
        full = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True)
        elapsed = time.perf_counter() - started
        total = full.created + full.updated
        before = sandbox_stats(url)
        started = time.perf_counter()
        quiet = sync_run(trigger=SyncRun.Trigger.COMMAND)
        quiet_elapsed = time.perf_counter() - started
        after = sandbox_stats(url)
    finally:
        server.terminate()
        server.wait(timeout=10)

    searches = after.get("op:searchEntities", 0) - before.get("op:searchEntities", 0)
    requests = after.get("requests", 0) - before.get("requests", 0)
    print(f"database:                  {connection.vendor}")
    print(f"full sync:                 {full.status}, {total} entities in {elapsed:.1f} s = {total / elapsed:,.0f} entities/s "
          f"({full.pages} pages, {AusbauProject.objects.count()} projects)")
    print(f"incremental, no changes:   {quiet.status}, {quiet.created + quiet.updated} changed, {searches} searches for "
          f"{len(quiet.schemas)} schemas ({requests} requests in all) in {quiet_elapsed:.2f} s")
    print(f"peak memory (max RSS):     {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
