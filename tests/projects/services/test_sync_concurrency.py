"""Single flight across processes: two `sync_epilot` commands at once, one shared database."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from integrations.epilot_sandbox import FaultConfig, SandboxApp, seed_bulk

ROOT = Path(__file__).resolve().parents[3]


def test_two_concurrent_commands_never_sync_the_same_schema(tmp_path, sandbox: SandboxApp, sandbox_server: str) -> None:
    seed_bulk(sandbox.store, contacts=4000, opportunities=0, orders=0, seed=5)  # five pages of contacts
    sandbox.set_faults(FaultConfig(latency_ms=700))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite3'}",
        "EPILOT_API_URL": sandbox_server,
        "EPILOT_API_TOKEN": "",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    command = [sys.executable, "manage.py", "sync_epilot"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Once the first run reports its first page it holds every schema's lock, and at least six more
    # requests of 0.7 s each follow: the second process starts well inside that window.
    assert first.stdout.readline().startswith("opportunity: page 1")  # a run takes opportunities and orders first
    second = subprocess.run([*command, "--wait-for-lock", "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    first_out, first_err = first.communicate(timeout=120)

    assert first.returncode == 0, first_err
    assert second.returncode != 0 and "Not started" in second.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from projects.models import SyncRun, Contact; "
         "print(sorted(SyncRun.objects.values_list('status', flat=True)), Contact.objects.count())"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert check.stdout.split("\n")[-2] == "['skipped', 'succeeded'] 4008"
