"""The sync lock as a lease: a SIGKILLed run frees it within the lease, a live run is never taken over.

Syncs run as `manage.py sync_epilot` processes against the sandbox on loopback, as an operator's cron would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from integrations.epilot_sandbox import FaultConfig, SandboxApp, seed_bulk
from projects.models import Contact, SyncRun
from tests.integration.conftest import ROOT, database_url, wait_until

LEASE_SECONDS = 6


@pytest.fixture
def sync_env(sandbox_server: str, django_db_serialized_rollback, transactional_db) -> Iterator[dict[str, str]]:
    yield {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": database_url(),
           "EPILOT_API_URL": sandbox_server, "EPILOT_API_TOKEN": "", "SYNC_LOCK_SECONDS": str(LEASE_SECONDS),
           "CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING"}
    connection.close()


def start_sync(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "sync_epilot", *args], cwd=ROOT, env=env,
                            stdout=open(log, "a"), stderr=subprocess.STDOUT)


def test_a_sigkilled_sync_blocks_the_next_one_no_longer_than_its_lease(sync_env, sandbox: SandboxApp, tmp_path: Path) -> None:
    seed_bulk(sandbox.store, contacts=4500, opportunities=0, orders=0, seed=41)
    sandbox.set_faults(FaultConfig(latency_ms=400))
    victim = start_sync(sync_env, tmp_path / "victim.log", "--schema", "contact")
    wait_until(lambda: Contact.objects.count() >= 1000, timeout=120, what="the first committed page")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=20)
    killed_at = time.monotonic()
    sandbox.set_faults(FaultConfig())
    searches = sandbox.stats["op:searchEntities"]
    nxt = start_sync(sync_env, tmp_path / "next.log", "--schema", "contact")
    wait_until(lambda: sandbox.stats["op:searchEntities"] > searches, timeout=60, what="the next sync to fetch")
    waited = time.monotonic() - killed_at
    assert nxt.wait(timeout=120) == 0, (tmp_path / "next.log").read_text()
    assert waited < LEASE_SECONDS + 5, f"the next sync started fetching {waited:.1f} s after the kill"
    assert Contact.objects.count() == 4508
    assert "abandoned" in SyncRun.objects.filter(status=SyncRun.Status.FAILED).get().error


def test_a_live_sync_longer_than_its_lease_is_never_taken_over(sync_env, sandbox: SandboxApp, tmp_path: Path) -> None:
    seed_bulk(sandbox.store, contacts=3500, opportunities=0, orders=0, seed=42)
    sandbox.set_faults(FaultConfig(latency_ms=2500))  # each page takes longer than a third of the lease
    first = start_sync(sync_env, tmp_path / "first.log", "--schema", "contact")
    wait_until(lambda: SyncRun.objects.filter(status=SyncRun.Status.RUNNING).exists(), timeout=60, what="the first run")
    refused = 0
    while first.poll() is None:
        second = subprocess.run([sys.executable, "manage.py", "sync_epilot", "--schema", "contact", "--wait-for-lock", "0"],
                                cwd=ROOT, env=sync_env, capture_output=True, text=True, timeout=120)
        if first.poll() is None:
            assert second.returncode != 0 and "Not started" in second.stderr, second.stdout + second.stderr
            refused += 1
        time.sleep(1)
    assert first.returncode == 0, (tmp_path / "first.log").read_text()
    assert refused >= 2
    first_run = SyncRun.objects.order_by("started_at").first()
    assert first_run.status == SyncRun.Status.SUCCEEDED and first_run.duration_seconds > LEASE_SECONDS
