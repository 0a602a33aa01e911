"""Benchmark: reconciliation by ids against a full sync of the same mirror, in one run.

A sandbox holds epilot-shaped data (bench/epilot_shaped.py); the mirror is filled by a full sync
(timed), then epilot changes behind the mirror's back, without webhooks: 0.2 % of the entities are
purged, 0.2 % added and 0.2 % changed. `reconcile` then pages through the ids and fixes the mirror.
Printed: the reconciliation's seconds and requests (by the sandbox's own counters), its ratio to the
full sync, what it found per schema, and whether the mirror's live entities equal epilot's after it.
Target: for 150,000 entities at most 160 searches, and under a quarter of a full sync's time.

    .venv/bin/python bench/reconcile.py                       # 50,000 entities, SQLite
    .venv/bin/python bench/reconcile.py --entities 150000
    DATABASE_URL=postgres://... .venv/bin/python bench/reconcile.py
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402
from bench.sync_full import SCHEMAS, seed, start_sandbox_server, use_django_against  # noqa: E402


def change_behind_the_mirrors_back(url: str, entities: int) -> dict[str, int]:
    """Purge, add and change 0.2 % each through epilot's API (the sandbox's), no webhook involved."""
    from integrations.epilot import EpilotClient, ServiceURLs

    client = EpilotClient(token="bench", urls=ServiceURLs.single_origin(url))
    share = max(1, entities // 500)
    ids = [entity.id for page in client.iter_search_entities("_schema:contact", fields=["_id", "_schema", "_updated_at"])
           for entity in page.results][:2 * share]
    for epilot_id in ids[:share]:
        client.delete_entity("contact", epilot_id, purge=True)
    for epilot_id in ids[share:2 * share]:
        client.patch_entity("contact", epilot_id, {"notes": "geändert hinter dem Rücken des Spiegels"})
    for number in range(share):
        client.create_entity("contact", {"_title": f"Neu {number}", "first_name": "Neu", "last_name": str(number)})
    client.close()
    return {"purged": share, "changed": share, "added": share}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--shape", default="orphans", help="bench/epilot_shaped.py SHAPES")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workflows", type=float, default=0.0, metavar="SHARE")
    args = parser.parse_args()

    workdir = scratch_directory("bench-reconcile-")
    sandbox_db = workdir / "sandbox.sqlite3"
    seed(sandbox_db, args)
    from integrations.epilot_sandbox import sandbox_stats

    server, url = start_sandbox_server(sandbox_db)
    try:
        use_django_against(url, workdir)
        from django.db import connection

        from projects.models import SyncRun
        from projects.services.reconcile import reconcile
        from projects.services.sync import sync_run

        started = time.perf_counter()
        full = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True)
        full_seconds = time.perf_counter() - started
        changed = change_behind_the_mirrors_back(url, args.entities)
        before = sandbox_stats(url)
        started = time.perf_counter()
        records = reconcile()
        seconds = time.perf_counter() - started
        after = sandbox_stats(url)
        again = reconcile()  # a second pass finds nothing left
    finally:
        server.terminate()
        server.wait(timeout=10)

    searches = after.get("op:searchEntities", 0) - before.get("op:searchEntities", 0)
    requests = after.get("requests", 0) - before.get("requests", 0)
    print(f"data:               {args.shape}-shaped, {args.entities:,} entities; database {connection.vendor}")
    print(f"full sync:          {full.status} in {full_seconds:.1f} s")
    print(f"changed in epilot:  {changed['purged']} purged, {changed['added']} added, {changed['changed']} changed "
          "(contacts, no webhook)")
    print(f"reconciliation:     {seconds:.1f} s = {seconds / full_seconds:.2f}x the full sync; {requests} requests "
          f"({searches} searches) at the sandbox, {sum(r.requests for r in records)} counted by the gateway")
    for record in records:
        print(f"  {record.schema:<12} {record.status}: epilot {record.epilot_count:,}, mirror {record.mirror_count:,}; "
              f"{record.deleted_found} purged, {record.missing_found} missing, {record.newer_found} newer; "
              f"{record.requests} requests in {record.duration_seconds:.1f} s")
    print("second pass:        " + ", ".join(f"{r.schema} {r.deleted_found + r.missing_found + r.newer_found} fixed"
                                             for r in again))
    exact = all(r.epilot_count == r.mirror_count for r in records) and len(records) == len(SCHEMAS)
    print(f"mirror after it:    {'whole (live counts equal epilot)' if exact else 'DIFFERS'}")


if __name__ == "__main__":
    main()
