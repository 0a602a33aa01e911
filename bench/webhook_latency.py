"""Benchmark: a burst of changes in epilot reaching the mirror through the live-mirror webhook, at the mirror's real size.

Starts Redis, the standalone sandbox (delivering webhooks, chunked and signed), gunicorn (2 workers) and one
Celery worker (prefork, 2 processes, no -Q: both queues), seeds `--entities` epilot-shaped entities
(bench/epilot_shaped.py, shape `--shape`), syncs them, lays `--addresses` addresses in scope over
`--areas` rollout areas (the opportunities' own addresses first), and runs `provision_webhook`. Then
changes N different opportunities and orders (status) at a steady rate and times each until its
new status is in the mirror (the event's processing finished). Prints p50, p95, p99 and the
maximum change → mirror, the drain time (first change to last mirrored), the time per webhook task
as the worker logged it, and whether the mirror and every area's figures are exact afterwards
(compared with a full recompute and with epilot).

    .venv/bin/python bench/webhook_latency.py                                  # 50,000 entities, 600 changes at 25/s
    .venv/bin/python bench/webhook_latency.py --entities 5000                  # the same burst on a small mirror
    DATABASE_URL=postgres://... .venv/bin/python bench/webhook_latency.py      # PostgreSQL (its tables are emptied)
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402


def wait_for_port(port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start on port {port}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=600)
    parser.add_argument("--rate", type=float, default=25, help="changes per second sent to the sandbox")
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--shape", default="orphans", help="bench/epilot_shaped.py SHAPES")
    parser.add_argument("--areas", type=int, default=20)
    parser.add_argument("--addresses", type=int, default=25_000, help="addresses in scope over all areas")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (prefork concurrency)")
    args = parser.parse_args()
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")

    workdir = scratch_directory("bench-webhooks-")
    from integrations.epilot_sandbox import SandboxStore, free_loopback_port, seed_demo, wait_until_serving

    ports = {name: free_loopback_port() for name in ("redis", "sandbox", "web")}
    sandbox_db = workdir / "sandbox.sqlite3"
    store = SandboxStore(sandbox_db)
    seed_demo(store)
    from bench.epilot_shaped import SHAPES, seed_epilot_shaped

    seed_epilot_shaped(store, entities=args.entities, shape=SHAPES[args.shape])
    store.conn.close()
    sandbox_url = f"http://127.0.0.1:{ports['sandbox']}"
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING", "EPILOT_API_TOKEN": "",
                       "DEBUG": "false", "EPILOT_API_URL": sandbox_url, "SECRET_KEY": "bench-only-secret-key",
                       "CELERY_BROKER_URL": f"redis://127.0.0.1:{ports['redis']}/0", "ALLOWED_HOSTS": "127.0.0.1,localhost"})
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
    logs = {name: open(workdir / f"{name}.log", "w") for name in ("redis", "sandbox", "web", "worker")}  # noqa: SIM115
    processes = [
        subprocess.Popen([redis, "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(workdir)], stdout=logs["redis"], stderr=subprocess.STDOUT),
        subprocess.Popen([sys.executable, "manage.py", "epilot_sandbox", "--port", str(ports["sandbox"]), "--db",
                          str(sandbox_db)], cwd=ROOT, env=dict(os.environ), stdout=logs["sandbox"], stderr=subprocess.STDOUT),
    ]
    try:
        import django

        django.setup()
        from django.core.management import call_command

        wait_for_port(ports["redis"], "redis")
        wait_until_serving(sandbox_url)
        call_command("migrate", verbosity=0)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{ports['web']}",
             "--workers", "2", "--threads", "4"], cwd=ROOT, env=dict(os.environ), stdout=logs["web"], stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", str(args.workers), "--loglevel",
             "INFO", "--without-gossip", "--without-mingle"], cwd=ROOT, env={**os.environ, "LOG_LEVEL": "INFO"},
            stdout=logs["worker"],
            stderr=subprocess.STDOUT))
        wait_for_port(ports["web"], "gunicorn")

        from bench.areas_layout import lay_out_areas
        from integrations.epilot import EpilotClient, ServiceURLs
        from projects.models import (
            AusbauProject,
            Contact,
            Opportunity,
            OpportunityItem,
            Order,
            PendingExecutionRead,
            RolloutArea,
            SyncRun,
            SyncState,
            WebhookEvent,
            WorkflowExecution,
        )
        from projects.services.sync import sync_run
        from projects.services.webhook_subscriptions import webhook_provision

        for model in (WebhookEvent, AusbauProject, WorkflowExecution, Order, Opportunity, OpportunityItem, Contact,
                      PendingExecutionRead, SyncState, RolloutArea):
            model.objects.all().delete()
        client = EpilotClient(token="bench", urls=ServiceURLs.single_origin(sandbox_url), writes_per_minute=1_000_000)
        synced = time.perf_counter()
        sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=client)
        synced = time.perf_counter() - synced
        lay_out_areas(Opportunity.objects.values_list("address_key", flat=True), args.areas, args.addresses)
        webhook_provision(url=f"http://127.0.0.1:{ports['web']}/webhooks/epilot/", schemas=["opportunity", "order"],
                          client=client)
        targets = burst_targets(args.changes)
        time.sleep(2)  # the worker is ready

        sent_at: dict[str, float] = {}
        started = time.time()
        for number, (schema, epilot_id, status) in enumerate(targets):
            due = started + number / args.rate
            time.sleep(max(0.0, due - time.time()))
            sent_at[epilot_id] = time.time()
            client.patch_entity(schema, epilot_id, {"status": status})
        sending = time.time() - started

        arrived: dict[str, float] = {}
        deadline = time.time() + 180
        wanted = [epilot_id for _schema, epilot_id, _status in targets]
        while len(arrived) < len(targets) and time.time() < deadline:
            # An event counts once its entity is re-read and written (processed_at is set after the mirror write).
            for epilot_id, processed_at in WebhookEvent.objects.filter(
                    entity_epilot_id__in=wanted, outcome=WebhookEvent.Outcome.PROCESSED).exclude(
                    entity_epilot_id__in=list(arrived)).values_list("entity_epilot_id", "processed_at"):
                arrived[epilot_id] = processed_at.timestamp()
            time.sleep(0.05)
        finished = max(arrived.values()) if arrived else time.time()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    latencies = [arrived[epilot_id] - sent_at[epilot_id] for epilot_id in arrived]
    events = WebhookEvent.objects.count()
    models = {"opportunity": Opportunity, "order": Order}
    wrong = [epilot_id for schema, epilot_id, status in targets
             if models[schema].objects.filter(epilot_id=epilot_id).values_list("status", flat=True).first() != status]
    task_seconds = worker_task_seconds(workdir / "worker.log")
    print(f"mirror:          {args.entities:,} {args.shape}-shaped entities (full sync {synced:.1f} s); "
          f"{RolloutArea.objects.count()} areas with {args.addresses:,} addresses in scope; database {connection_vendor()}")
    print(f"changes:         {len(targets)} opportunities and orders changed at {args.rate:g}/s (sent in {sending:.1f} s)")
    print(f"in the mirror:   {len(arrived)} of {len(targets)}; {events} webhook events recorded; "
          f"every status as in epilot: {'yes' if not wrong else f'NO ({len(wrong)} differ)'}")
    print(f"area figures:    {figures_exactness()}")
    if latencies:
        print(f"change → mirror: p50 {statistics.median(latencies):.3f} s, p95 {percentile(latencies, 0.95):.3f} s, "
              f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies):.3f} s")
        print(f"drain:           the last change mirrored {finished - started:.1f} s after the first was sent "
              f"({len(arrived) / (finished - started):.1f} events/s)")
    if task_seconds:
        print(f"webhook task:    p50 {statistics.median(task_seconds):.3f} s, p90 {percentile(task_seconds, 0.9):.3f} s, "
              f"max {max(task_seconds):.3f} s over {len(task_seconds)} tasks (as the worker logged them)")
    print(f"logs:            {workdir}" if os.environ.get("BENCH_KEEP") else
          "logs:            removed with the run's scratch directory (BENCH_KEEP=1 keeps them)")


def burst_targets(changes: int) -> list[tuple[str, str, str]]:
    """(schema, epilot id, new status): opportunities and orders in turn, each a different entity, spread over the areas."""
    from projects.models import Opportunity, Order

    opportunities = list(Opportunity.objects.filter(epilot_deleted_at=None).exclude(status="geschlossen").order_by("?")
                         .values_list("epilot_id", flat=True)[: (changes + 1) // 2])
    orders = list(Order.objects.filter(epilot_deleted_at=None).exclude(status="completed").order_by("?")
                  .values_list("epilot_id", flat=True)[: changes // 2])
    targets = []
    for number in range(changes):
        if number % 2 == 0 and opportunities:
            targets.append(("opportunity", opportunities.pop(), "geschlossen"))
        elif orders:
            targets.append(("order", orders.pop(), "completed"))
    return targets


def figures_exactness() -> str:
    """Whether every area's figures equal a full recompute of the projects and areas from the mirror."""
    from projects.models import RolloutArea
    from projects.services.areas import areas_refresh
    from projects.services.projects import projects_refresh

    fields = ("units_in_scope", "addresses_in_scope", "units_signed", "units_connected", "projects_by_phase")
    live = {area.pk: tuple(getattr(area, name) for name in fields) for area in RolloutArea.objects.all()}
    projects_refresh()
    areas_refresh()
    recomputed = {area.pk: tuple(getattr(area, name) for name in fields) for area in RolloutArea.objects.all()}
    wrong = [pk for pk in live if live[pk] != recomputed[pk]]
    return "exact (equal to a full recompute)" if not wrong else f"NOT EXACT in {len(wrong)} areas"


def worker_task_seconds(log: Path) -> list[float]:
    """How long each webhook task ran, from the worker's own log lines ("Task ... succeeded in 0.0123s")."""
    pattern = re.compile(r"Task projects\.webhook_event\[[^\]]+\] succeeded in ([0-9.]+)s")
    return [float(match.group(1)) for match in pattern.finditer(log.read_text(errors="replace"))]


def connection_vendor() -> str:
    from django.db import connection

    return connection.vendor


if __name__ == "__main__":
    main()
