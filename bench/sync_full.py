"""Benchmark: a full sync from the standalone sandbox against a bare fetch of the same pages, then a quiet incremental run.

The data is shaped like a real epilot organisation (bench/epilot_shaped.py) unless `--shape sandbox`
asks for the sandbox's own bulk data. Each run prints: entities/s, the ratio of the sync's time to a
bare fetch of the same pages measured in the same run, just before and just after the sync (a plain
HTTP loop: urllib, json.loads, search_after; the ratio is to the mean of the two, as the machine's
speed drifts within minutes) and, where entities carry running workflows, to a bare fetch of the
pages and then of the same execution reads (each such entity's list, then each listed execution; a few plain
keep-alive connections at once), the peak RSS of this process from the sync's start, the CPU time
of this process, of its page builders (each with its share in the kernel), of the sandbox and of
PostgreSQL's backend during the sync (on 2 cores they compete), the time per phase ("rows" are
built in the prefetch thread and overlap the writing), and what a quiet incremental run costs.
Before the sync it lays out rollout areas as a Stadtwerk has them (20 areas, 25,000 addresses: every
opportunity's address in the data, then made-up ones; `--areas 0` for none), so the full run
recomputes their figures too.
After the full and after the incremental run it pages through the sandbox once more and compares
the mirror with it (every payload, every order's opportunity, every execution and its status), and
the areas' figures with a recompute.
Targets (2-core machine): ratio <= 2.5 on SQLite and <= 3.5 on PostgreSQL to the bare fetch of what
the run reads (the pages, and the execution reads where workflows run); peak RSS < 300 MB and
flat in entity count (run 50,000 and 150,000 in separate processes and compare); an exact mirror.

    .venv/bin/python bench/sync_full.py                                   # 50,000 entities, SQLite (a fresh file)
    .venv/bin/python bench/sync_full.py --entities 150000                 # memory flatness
    .venv/bin/python bench/sync_full.py --latency 100                     # each request 100 ms later (the floor too)
    .venv/bin/python bench/sync_full.py --workflows 0                     # no running workflows: no execution reads
    DATABASE_URL=postgres://... .venv/bin/python bench/sync_full.py       # PostgreSQL (the mirror's tables are emptied)
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import http.client
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402

SCHEMAS = ("contact", "opportunity", "order")
EXECUTION_FLOOR_READERS = 4  # on loopback with 2 cores, 2 to 4 at once read fastest; the differences are within the noise


def search_pages(url: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every page of every schema as the sync reads them (searchEntities, search_after), with nothing but urllib and json."""
    for schema in SCHEMAS:
        params = {"q": f"_schema:{schema}", "sort": ["_updated_at:asc", "_id:asc"], "size": 1000, "include_deleted": "true",
                  "stable_for": 30}
        while True:
            request = urllib.request.Request(f"{url}/v1/entity:search", data=json.dumps(params).encode(), method="POST",
                                             headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                body = json.loads(answer.read())
            yield schema, body["results"]
            if len(body["results"]) < 1000 or not body.get("sort_end"):
                break
            params["search_after"] = body["sort_end"]
            if body.get("stable_query_id"):
                params["stable_query_id"] = body["stable_query_id"]


def bare_fetch(url: str) -> tuple[float, int, int, list[tuple[str, str]]]:
    """Page every schema as the sync does, with nothing but HTTP and JSON.

    Returns (seconds, entities, pages, the (id, schema) of the entities with a `workflows` attribute).
    """
    started = time.perf_counter()
    entities = pages = 0
    with_workflows = []
    for schema, results in search_pages(url):
        pages += 1
        entities += len(results)
        with_workflows += [(entity["_id"], schema) for entity in results if entity.get("workflows")]
    return time.perf_counter() - started, entities, pages, with_workflows


def bare_fetch_executions(url: str, owners: list[tuple[str, str]], *, readers: int = EXECUTION_FLOOR_READERS
                          ) -> tuple[float, int, dict[str, dict[str, str]]]:
    """Read the executions of `owners` as the sync does (getExecutions of each, then getExecution of each listed),
    with nothing but keep-alive HTTP and JSON, `readers` at once.

    Returns (seconds, requests, each owner's executions as {execution id: status}).
    """
    origin = urllib.parse.urlsplit(url)
    local = threading.local()

    def get(path: str) -> Any:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(origin.hostname, origin.port, timeout=60)
        local.connection.request("GET", path, headers={"Authorization": "Bearer bench"})
        answer = local.connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status}")
        return json.loads(body) if body else None

    def read(owner: tuple[str, str]) -> tuple[str, dict[str, str]]:
        entity_id, schema = owner
        listed = get("/v1/workflows/executions?" + urllib.parse.urlencode({"context": entity_id, "schema": schema}))
        read = [get(f"/v1/workflows/executions/{urllib.parse.quote(execution['id'], safe='')}") for execution in listed]
        return entity_id, {execution["id"]: execution["status"] for execution in read if execution}

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=readers) as pool:
        executions = dict(pool.map(read, owners))
    requests = len(owners) + sum(len(found) for found in executions.values())
    return time.perf_counter() - started, requests, executions


def reset_peak_rss() -> None:
    """Linux: start this process's peak RSS (ru_maxrss) afresh from its current size; elsewhere nothing."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


def floor_in_own_process(url: str) -> dict[str, Any]:
    """`bare_fetch`, then `bare_fetch_executions`, in a process of their own: the floor's threads and pages would
    otherwise leave malloc arenas and fragments behind in this one and add to the sync's peak RSS (30-40 MB at 150,000).
    Exits with the floor's error output should it fail."""
    answer = subprocess.run([sys.executable, __file__, "--floor-of", url], capture_output=True, text=True)
    if answer.returncode:
        sys.exit(f"the bare fetch failed:\n{answer.stderr}")
    return json.loads(answer.stdout)


def print_floor(url: str) -> None:
    seconds, entities, pages, with_workflows = bare_fetch(url)
    executions_seconds, requests, executions = bare_fetch_executions(url, with_workflows)
    print(json.dumps({"seconds": seconds, "entities": entities, "pages": pages, "executions_seconds": executions_seconds,
                      "requests": requests, "executions": executions}))


def mirror_differences(url: str, executions: dict[str, dict[str, str]]) -> list[str]:
    """Where the mirror differs from epilot after a sync: each entity's payload, the orders' opportunities, the executions.

    Pages through the sandbox once more (after the timed runs, so it adds nothing to their figures).
    An order belongs to the opportunity its own `opportunity` relation names, else to the one whose
    `items` name it. Returns descriptions of the differences, the first 10 of each kind.
    """
    from integrations.epilot.types import relation_ids
    from projects.models import Contact, Opportunity, Order, WorkflowExecution

    models = {"contact": Contact, "opportunity": Opportunity, "order": Order}
    differences: list[str] = []
    seen: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
    item_owner: dict[str, str] = {}
    wrong_payloads: list[str] = []
    wrong_links: list[str] = []

    for schema, results in search_pages(url):
        seen[schema] += len(results)
        query = models[schema].objects.filter(epilot_id__in=[entity["_id"] for entity in results])
        mirrored = dict(query.values_list("epilot_id", "payload"))
        wrong_payloads += [f"{schema} {entity['_id']}: " + ("missing" if entity["_id"] not in mirrored else "payload differs")
                           for entity in results if mirrored.get(entity["_id"]) != entity]
        if schema == "opportunity":
            for entity in results:
                for order_id in relation_ids(entity.get("items")):
                    item_owner.setdefault(order_id, entity["_id"])
        elif schema == "order":
            linked = dict(query.values_list("epilot_id", "opportunity__epilot_id"))
            for entity in results:
                expected = next(iter(relation_ids(entity.get("opportunity"))), "") or item_owner.get(entity["_id"], "")
                if (linked.get(entity["_id"]) or "") != expected:
                    wrong_links.append(f"order {entity['_id']}: opportunity {linked.get(entity['_id'])!r}, expected {expected!r}")
    differences += wrong_payloads[:10] + wrong_links[:10]
    for schema, model in models.items():
        mirrored_count = model.objects.count()
        if mirrored_count != seen[schema]:
            differences.append(f"{schema}: {mirrored_count} mirrored, {seen[schema]} in epilot")
    mirrored_executions: dict[str, dict[str, str]] = {}
    for owner, execution_id, status in WorkflowExecution.objects.values_list("entity_epilot_id", "epilot_id", "status"):
        mirrored_executions.setdefault(owner, {})[execution_id] = status
    expected_executions = {owner: found for owner, found in executions.items() if found}
    differences += [f"executions of {owner}: {mirrored_executions.get(owner)} mirrored, {found} in epilot"
                    for owner, found in expected_executions.items() if mirrored_executions.get(owner) != found][:10]
    differences += [f"executions of {owner}: mirrored, but none in epilot"
                    for owner in mirrored_executions.keys() - expected_executions.keys()][:10]
    return differences


def touch_one_percent(sandbox_db: Path, entities: int) -> int:
    """Change 1 % of the entities in epilot (an attribute and `_updated_at`), as a day's work in the portal would."""
    from integrations.epilot_sandbox import SandboxStore
    from integrations.epilot_sandbox.store import later_than

    store = SandboxStore(sandbox_db)
    ids = [row["id"] for row in store.conn.execute("SELECT id FROM entities ORDER BY id LIMIT ?", (max(1, entities // 100),))]
    stamp = None
    with store.write() as conn:
        for entity_id in ids:
            body = store.get_entity(entity_id)
            stamp = later_than(stamp)
            body.update({"_updated_at": stamp, "notes": f"geändert {stamp}"})
            store.put_entity(conn, body)
    return len(ids)


def start_sandbox_server(sandbox_db: Path) -> tuple[subprocess.Popen, str]:
    """The standalone sandbox serving `sandbox_db` on a free loopback port, once it answers; (process, origin)."""
    from integrations.epilot_sandbox import free_loopback_port, wait_until_serving

    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "manage.py", "epilot_sandbox", "--port", str(port), "--db", str(sandbox_db)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_serving(url)
    return server, url


def use_django_against(url: str, workdir: Path) -> None:
    """Set Django up in this process against the sandbox at `url` (DATABASE_URL, else a fresh SQLite file), migrated
    (by another process), tuned as a worker process is, with the mirror and the rollout areas empty."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING", "EPILOT_API_URL": url,
                       "EPILOT_API_TOKEN": "", "DEBUG": "false"})
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
    # Migrated by a process of its own, as a deployment migrates before its workers start: applied here, the
    # migrations would leave this process larger, and its peak RSS is the sync's figure.
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"], cwd=ROOT, check=True)
    import django

    django.setup()
    from config.tuning import tune_process

    tune_process()  # as a Celery worker process does when it starts
    from django.db import connection

    from projects.models import (
        AreaAddress,
        AreaSnapshot,
        AusbauProject,
        Contact,
        GenericEntity,
        Opportunity,
        OpportunityItem,
        Order,
        PendingExecutionRead,
        Reconciliation,
        RolloutArea,
        SyncState,
        WorkflowExecution,
    )

    models = (AusbauProject, WorkflowExecution, Order, Opportunity, OpportunityItem, Contact, GenericEntity, SyncState,
              PendingExecutionRead, Reconciliation, AreaSnapshot, AreaAddress, RolloutArea)
    if connection.vendor == "postgresql":
        # An earlier run's mirror (the database outlives the run): TRUNCATE, as deleting through the ORM would
        # load every row into this process first and leave its peak RSS hundreds of MB higher.
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE " + ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
                           + " CASCADE")
    else:
        for model in models:
            model.objects.all().delete()


def seed(sandbox_db: Path, args: argparse.Namespace) -> None:
    if args.shape == "sandbox":
        counts = ["--contacts", str(args.entities * 6 // 10), "--opportunities", str(args.entities * 3 // 10),
                  "--orders", str(args.entities // 10)]
        subprocess.run([sys.executable, "manage.py", "seed_sandbox", "--db", str(sandbox_db), *counts],
                       cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING"},
                       check=True, stdout=subprocess.DEVNULL)
        return
    # In a process of its own: the documents generated here would leave this process larger the more there are, and
    # the sync's peak RSS is compared between sizes.
    seeding = multiprocessing.get_context("fork").Process(target=seed_epilot_shaped_into, args=(sandbox_db, args))
    seeding.start()
    seeding.join()
    if seeding.exitcode:
        raise SystemExit(f"seeding the sandbox failed (exit code {seeding.exitcode})")


def seed_epilot_shaped_into(sandbox_db: Path, args: argparse.Namespace) -> None:
    from bench.epilot_shaped import SHAPES, seed_epilot_shaped
    from integrations.epilot_sandbox import SandboxStore

    store = SandboxStore(sandbox_db)
    seed_epilot_shaped(store, entities=args.entities, seed=args.seed, workflow_share=args.workflows, shape=SHAPES[args.shape])
    store.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--shape", choices=["epilot", "orphans", "shared", "wide", "sandbox"], default="epilot",
                        help="the data's shape (bench/epilot_shaped.py SHAPES), or the sandbox's own bulk data")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workflows", type=float, default=0.05, metavar="SHARE",
                        help="share of the opportunities with a running workflow, whose executions a first sync reads")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the full sync to FILE")
    parser.add_argument("--sql", action="store_true", help="print the statements of the full sync that took longest in all")
    parser.add_argument("--latency", type=int, default=0, metavar="MS",
                        help="the sandbox answers every request this much later, as epilot over the internet would")
    parser.add_argument("--areas", type=int, default=20, help="rollout areas laid out before the sync (0: none)")
    parser.add_argument("--addresses", type=int, default=25_000,
                        help="addresses in scope over the areas: every opportunity's address in the data, then made-up ones")
    parser.add_argument("--floor-of", metavar="URL", help=argparse.SUPPRESS)  # floor_in_own_process
    args = parser.parse_args()
    if args.floor_of:
        print_floor(args.floor_of)
        return

    workdir = scratch_directory("bench-sync-")
    sandbox_db = workdir / "sandbox.sqlite3"
    seed(sandbox_db, args)
    from integrations.epilot_sandbox import sandbox_stats

    server, url = start_sandbox_server(sandbox_db)
    try:
        if args.latency:
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/__sandbox__/faults", method="POST", headers={"Content-Type": "application/json"},
                data=json.dumps({"latency_ms": args.latency}).encode()), timeout=10).close()
        floor = floor_in_own_process(url)
        floor_seconds, floor_entities, floor_pages = floor["seconds"], floor["entities"], floor["pages"]
        executions_floor_seconds, executions_floor_requests = floor["executions_seconds"], floor["requests"]
        epilot_executions = floor["executions"]  # of every entity with a `workflows` attribute, none for some
        use_django_against(url, workdir)
        laid_out = areas_before_the_sync(sandbox_db, args.areas, args.addresses) if args.areas else 0
        from django.db import connection

        from projects.models import AusbauProject, Order, SyncRun
        from projects.services.sync import sync_run

        profiler = cProfile.Profile() if args.profile else None
        statements = StatementTimes()
        database_pid = None
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                database_pid = cursor.fetchone()[0]
        reset_peak_rss()  # seeding and emptying an earlier run's mirror (PostgreSQL) are not the sync's
        cpu_before, server_before, database_before = process_cpu(), cpu_of(server.pid), cpu_of(database_pid)
        kernel_before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the floor's process, ended
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        with connection.execute_wrapper(statements) if args.sql else contextlib.nullcontext():
            full = sync_run(trigger=SyncRun.Trigger.COMMAND, full=True)
        elapsed = time.perf_counter() - started
        cpu, server_cpu = process_cpu() - cpu_before, cpu_of(server.pid) - server_before
        kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel_before
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # and the page builders the sync forked, ended too
        builders_cpu = children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
        builders_kernel = children.ru_stime - children_before.ru_stime
        database_cpu = cpu_of(database_pid) - database_before
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the checks below read anything
        # The machine's speed drifts within minutes: the floor is measured on both sides of the sync, and the ratios
        # are to the mean of the two.
        floor_after = floor_in_own_process(url)
        total = full.created + full.updated
        linked = Order.objects.filter(opportunity__isnull=False).count()
        full_differences = mirror_differences(url, epilot_executions) + area_differences()
        before = sandbox_stats(url)
        started = time.perf_counter()
        quiet = sync_run(trigger=SyncRun.Trigger.COMMAND)
        quiet_elapsed = time.perf_counter() - started
        after = sandbox_stats(url)
        changed_count = touch_one_percent(sandbox_db, args.entities)
        started = time.perf_counter()
        small = sync_run(trigger=SyncRun.Trigger.COMMAND)
        small_elapsed = time.perf_counter() - started
        small_differences = mirror_differences(url, epilot_executions) + area_differences()
    finally:
        server.terminate()
        server.wait(timeout=10)

    searches = after.get("op:searchEntities", 0) - before.get("op:searchEntities", 0)
    requests = after.get("requests", 0) - before.get("requests", 0)
    phases = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in full.phase_seconds.items())
    print(f"data:                      {args.shape}-shaped, {args.entities:,} entities; database {connection.vendor}"
          + (f"; {args.workflows:.0%} of the opportunities with a running workflow" if args.shape != "sandbox" else "")
          + (f"; {args.latency} ms latency per request" if args.latency else "")
          + (f"; {args.areas} areas with {args.addresses:,} addresses, {laid_out:,} of them an opportunity's"
             if args.areas else ""))
    floor_before, executions_floor_before = floor_seconds, executions_floor_seconds
    floor_seconds = (floor_before + floor_after["seconds"]) / 2
    executions_floor_seconds = (executions_floor_before + floor_after["executions_seconds"]) / 2
    print(f"bare fetch (floor):        {floor_entities:,} entities, {floor_pages} pages in {floor_before:.1f} s before the "
          f"sync, {floor_after['seconds']:.1f} s after (mean {floor_seconds:.2f} s)")
    print(f"full sync:                 {full.status}, {total:,} entities in {elapsed:.1f} s = {total / elapsed:,.0f} entities/s "
          f"= {elapsed / max(1, total) * 1e6:.0f} µs per entity; "
          f"{full.quarantined} quarantined; {linked:,} orders linked; {AusbauProject.objects.count():,} projects")
    if epilot_executions:
        print(f"bare execution reads:      {executions_floor_requests:,} requests for {len(epilot_executions):,} entities "
              f"with workflows in {executions_floor_before:.1f} s before, {floor_after['executions_seconds']:.1f} s after "
              f"(mean {executions_floor_seconds:.2f} s; {EXECUTION_FLOOR_READERS} at once)")
    print(f"mirror after it:           {_exactness(full_differences)}")
    print(f"ratio to the mean floor:   {elapsed / floor_seconds:.2f}x" + (
        f" (pages); {elapsed / (floor_seconds + executions_floor_seconds):.2f}x (pages, then the execution reads)"
        if epilot_executions else ""))
    print(f"CPU during the full sync:  this process {cpu:.1f} s ({kernel:.2f} s of it in the kernel), its page builders "
          f"{builders_cpu:.1f} s ({builders_kernel:.2f} s in the kernel), "
          f"the sandbox serving it {server_cpu:.1f} s "
          f"(cores: {os.cpu_count()})" + (f", PostgreSQL's backend {database_cpu:.1f} s" if database_pid else ""))
    print(f"phases:                    {phases}")
    print(f"incremental, no changes:   {quiet.status}, {quiet.created + quiet.updated} changed, {searches} searches for "
          f"{len(quiet.schemas)} schemas ({requests} requests in all) in {quiet_elapsed:.2f} s")
    small_phases = ", ".join(f"{phase} {seconds:.2f} s" for phase, seconds in small.phase_seconds.items())
    print(f"incremental, 1 % changed:  {small.status}, {small.created + small.updated} of {changed_count} changes in "
          f"{small_elapsed:.2f} s ({small_phases})")
    print(f"mirror after it:           {_exactness(small_differences)}")
    print(f"peak memory (max RSS):     {peak_rss_mb:.0f} MB (during the full sync); the largest child process "
          f"{children.ru_maxrss / 1024:.0f} MB (the floor's reader: {children_before.ru_maxrss / 1024:.0f} MB; a page "
          "builder is forked from this process and counts the pages it shares with it too)")
    if args.sql:
        print("statements of the full sync by total time:")
        for sql, (count, seconds) in sorted(statements.times.items(), key=lambda item: -item[1][1])[:12]:
            print(f"  {seconds:6.2f} s  {count:6d}x  {sql}")


def areas_before_the_sync(sandbox_db: Path, areas: int, addresses: int) -> int:
    """Rollout areas laid out over every address of an opportunity in the sandbox, then made-up ones, their figures
    computed while the mirror is empty, as an area imported before the first sync is; returns how many addresses are
    an opportunity's."""
    import sqlite3

    from bench.areas_layout import lay_out_areas
    from projects.mirror.addresses import address_key
    from projects.mirror.rows import as_text, first_address

    keys = []
    with contextlib.closing(sqlite3.connect(sandbox_db)) as sandbox:
        for (body,) in sandbox.execute("SELECT body FROM entities WHERE schema = 'opportunity'"):
            address = first_address(json.loads(body))
            keys.append(address_key(as_text(address.get("postal_code")), as_text(address.get("street")),
                                    as_text(address.get("street_number"))))
    return lay_out_areas(keys, areas, addresses)


def area_differences() -> list[str]:
    """The addresses whose figures differ from a recompute of every area (which then puts them right)."""
    from projects.models import AreaAddress
    from projects.services.areas import ADDRESS_FIGURES, areas_refresh

    def figures() -> dict[int, tuple]:
        return {row[0]: row[1:] for row in AreaAddress.objects.values_list("pk", "units", *ADDRESS_FIGURES)}

    before = figures()
    areas_refresh()
    after = figures()
    return [f"address {pk}: figures {before[pk]} after the sync, {after[pk]} recomputed"
            for pk in sorted(after) if before.get(pk) != after[pk]][:5]


def _exactness(differences: list[str]) -> str:
    if not differences:
        return "exact (every payload, every order's opportunity, every execution and its status, every area's figures)"
    return "NOT EXACT:\n  " + "\n  ".join(differences)


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int | None) -> float:
    """CPU seconds a running process has used so far (Linux /proc), 0 where unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class StatementTimes:
    """A Django execute wrapper that adds up the time of each statement (its first 110 characters)."""

    def __init__(self) -> None:
        self.times: dict[str, tuple[int, float]] = {}

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = " ".join(sql.split())[:110]
            count, seconds = self.times.get(key, (0, 0.0))
            self.times[key] = (count + 1, seconds + time.perf_counter() - started)


if __name__ == "__main__":
    main()
