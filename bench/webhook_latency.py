"""Benchmark: latency from a change in epilot to the mirror, through the live-mirror webhook.

Starts Redis, the standalone sandbox (delivering webhooks, chunked and signed), gunicorn and one
Celery worker, syncs the mirror and runs `provision_webhook`. Then changes N different
opportunities in the sandbox at a steady rate and times each one until its new status is in the
mirror (the event's processing finished). Prints p50, p95, p99 and the maximum, and the events/s the pipeline sustained.

    .venv/bin/python bench/webhook_latency.py [--changes 200] [--rate 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="changes per second sent to the sandbox")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (prefork concurrency)")
    args = parser.parse_args()
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    from integrations.epilot_sandbox import SandboxStore, free_loopback_port, seed_bulk, seed_demo, wait_until_serving

    ports = {name: free_loopback_port() for name in ("redis", "sandbox", "web")}
    sandbox_db = workdir / "sandbox.sqlite3"
    store = SandboxStore(sandbox_db)
    seed_demo(store)
    seed_bulk(store, contacts=args.changes, opportunities=args.changes * 2, orders=0)
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
             "WARNING", "--without-gossip", "--without-mingle"], cwd=ROOT, env=dict(os.environ), stdout=logs["worker"],
            stderr=subprocess.STDOUT))
        wait_for_port(ports["web"], "gunicorn")

        from integrations.epilot import EpilotClient, ServiceURLs
        from projects.models import Opportunity, SyncRun, WebhookEvent
        from projects.services.sync import sync_run
        from projects.services.webhook_subscriptions import webhook_provision

        client = EpilotClient(token="bench", urls=ServiceURLs.single_origin(sandbox_url), writes_per_minute=1_000_000)
        sync_run(trigger=SyncRun.Trigger.COMMAND, full=True, client=client)
        webhook_provision(url=f"http://127.0.0.1:{ports['web']}/webhooks/epilot/", schemas=["opportunity"], client=client)
        targets = list(Opportunity.objects.filter(epilot_deleted_at=None).exclude(status="geschlossen")
                       .values_list("epilot_id", flat=True)[: args.changes])
        time.sleep(2)  # the worker is ready

        sent_at: dict[str, float] = {}
        started = time.time()
        for number, epilot_id in enumerate(targets):
            due = started + number / args.rate
            time.sleep(max(0.0, due - time.time()))
            sent_at[epilot_id] = time.time()
            client.patch_entity("opportunity", epilot_id, {"status": "geschlossen"})
        sending = time.time() - started

        arrived: dict[str, float] = {}
        deadline = time.time() + 120
        while len(arrived) < len(targets) and time.time() < deadline:
            # An event counts once its entity is re-read and written (processed_at is set after the mirror write).
            for epilot_id, processed_at in WebhookEvent.objects.filter(
                    entity_epilot_id__in=targets, outcome=WebhookEvent.Outcome.PROCESSED).exclude(
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
    exact = Opportunity.objects.filter(epilot_id__in=targets, status="geschlossen").count() == len(targets)
    print(f"changes:         {len(targets)} opportunities changed at {args.rate:g}/s (sent in {sending:.1f} s)")
    print(f"in the mirror:   {len(arrived)} of {len(targets)}; {events} webhook events recorded; "
          f"every status as in epilot: {'yes' if exact else 'NO'}")
    if latencies:
        print(f"latency:         p50 {statistics.median(latencies):.3f} s, p95 {percentile(latencies, 0.95):.3f} s, "
              f"p99 {percentile(latencies, 0.99):.3f} s, max {max(latencies):.3f} s")
        print(f"sustained:       {len(arrived) / (finished - started):.1f} events/s from first change to last mirrored")
    print(f"logs:            {workdir}")


if __name__ == "__main__":
    main()
