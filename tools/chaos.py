"""A bounded fault scenario: the sync and the back-office against a faulty, slow epilot, with a killed worker.

Everything runs in a scratch directory: the sandbox server (its own SQLite), the app's database
(a fresh SQLite file unless a PostgreSQL URL is given) and the worker processes. The operator's
database and epilot are never touched. See `manage.py epilot_chaos --help`.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from integrations.epilot import EpilotClient, EpilotConflictError, EpilotError, EpilotNotFoundError, RetryPolicy, ServiceURLs
from integrations.epilot_sandbox import SandboxStore, free_loopback_port, sandbox_stats, seed_bulk, seed_demo, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
LOCK_SECONDS = 8


@dataclass
class Scenario:
    contacts: int = 2000
    opportunities: int = 1000
    orders: int = 500
    rate_5xx: float = 0.2
    rate_429: float = 0.1
    rate_drop: float = 0.0
    latency_ms: int = 200
    retry_after: int = 1
    kill_worker: bool = True
    conversions: int = 5
    database_url: str | None = None
    seed: int = 7


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    lost: int = 0
    stale: int = 0
    phantom: int = 0
    duplicates: int = 0

    def say(self, text: str) -> None:
        self.lines.append(text)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stale or self.phantom or self.duplicates)


def run_scenario(scenario: Scenario, *, echo: Callable[[str], None] = print) -> Report:
    """Run the scenario to the end (bounded in time) and compare the mirror with the sandbox."""
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="epilot-chaos-"))
    sandbox_db = work / "sandbox.sqlite3"
    store = SandboxStore(sandbox_db)
    seed_demo(store)
    seeded = seed_bulk(
        store, contacts=scenario.contacts, opportunities=scenario.opportunities, orders=scenario.orders, seed=scenario.seed
    )
    port = free_loopback_port()
    origin = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local", "EPILOT_API_URL": origin, "EPILOT_API_TOKEN": "",
           "DATABASE_URL": scenario.database_url or f"sqlite:///{work / 'app.sqlite3'}", "SYNC_LOCK_SECONDS": str(LOCK_SECONDS),
           "SYNC_OVERLAP_SECONDS": "120", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, cwd=ROOT, timeout=300)
    server = subprocess.Popen([*manage, "epilot_sandbox", "--port", str(port), "--db", str(sandbox_db),
                               "--fault-5xx", str(scenario.rate_5xx), "--fault-429", str(scenario.rate_429),
                               "--fault-drop", str(scenario.rate_drop), "--latency-ms", str(scenario.latency_ms),
                               "--retry-after", str(scenario.retry_after), "--seed", str(scenario.seed)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    try:
        wait_until_serving(origin)
        echo(f"sandbox {origin}: {seeded + 18} entities; faults 5xx {scenario.rate_5xx:.0%}, 429 {scenario.rate_429:.0%} "
             f"(Retry-After {scenario.retry_after} s), drops {scenario.rate_drop:.0%}, +{scenario.latency_ms} ms")
        if scenario.kill_worker:
            _killed_sync(manage, env, echo)
            time.sleep(LOCK_SECONDS + 1)  # the dead worker's lock expires
        _sync_until_done(manage, env, echo, full=False)
        _mutate(origin, manage, env, scenario, echo)
        _sync_until_done(manage, env, echo, full=True)
        stats = sandbox_stats(origin)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    _compare(store, env, report)
    report.say(f"duration                  {time.monotonic() - started:.0f} s")
    report.say(f"requests to epilot        {stats.get('requests', 0)}")
    report.say(
        f"injected 5xx / 429 / drop {stats.get('injected_5xx', 0)} / {stats.get('injected_429', 0)} / "
        f"{stats.get('injected_drop', 0)}"
        "  (each answered by a retry or a clean failure)"
    )
    report.say(f"429s honoured             {stats.get('injected_429', 0) - stats.get('retry_after_violations', 0)} of "
               f"{stats.get('injected_429', 0)} (retries sent before Retry-After: {stats.get('retry_after_violations', 0)})")
    report.say(f"lost entities             {report.lost}")
    report.say(f"stale entities            {report.stale}")
    report.say(f"phantom entities          {report.phantom}")
    report.say(f"duplicates in epilot      {report.duplicates}")
    return report


def _killed_sync(manage: list[str], env: dict[str, str], echo: Callable[[str], None]) -> None:
    """Start a sync worker and SIGKILL it after its second page."""
    worker = subprocess.Popen(
        [*manage, "sync_epilot"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    pages = 0
    deadline = time.monotonic() + 300
    for line in worker.stdout:
        if ": page " in line:
            pages += 1
        if pages >= 2 or time.monotonic() > deadline:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    echo(f"worker killed with SIGKILL after {pages} pages")


def _sync_until_done(manage: list[str], env: dict[str, str], echo: Callable[[str], None], *, full: bool) -> None:
    for attempt in range(1, 9):
        result = subprocess.run([*manage, "sync_epilot", *(["--full"] if full else [])], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=900)
        summary = (
            (result.stdout.strip().splitlines() or [""])[-1] if result.returncode == 0 else result.stderr.strip().splitlines()[-1]
        )
        echo(f"{'full' if full else 'incremental'} sync, attempt {attempt}: {summary[:140]}")
        if result.returncode == 0:
            return
        time.sleep(1)
    raise RuntimeError("the sync did not succeed within 8 attempts")


def _mutate(origin: str, manage: list[str], env: dict[str, str], scenario: Scenario, echo: Callable[[str], None]) -> None:
    """Change epilot under the mirror (through the same faults), and convert opportunities from the back-office."""
    gateway_log = logging.getLogger("integrations.epilot")
    level = gateway_log.level
    gateway_log.setLevel(logging.ERROR)  # the report counts the retries; no line per request here
    try:
        client = EpilotClient(token="chaos", urls=ServiceURLs.single_origin(origin),
                              retry=RetryPolicy(max_attempts=12, max_elapsed_seconds=120))
        opportunities = _change_epilot(client)
        client.close()
    finally:
        gateway_log.setLevel(level)
    echo("epilot changed: 40 opportunities updated, 20 contacts deleted, 5 purged, 20 created")
    _sync_until_done(manage, env, echo, full=False)
    candidates = [e for e in opportunities if e.data.get("status") in ("ausstehend", "bearbeitung")][: scenario.conversions]
    converted = 0
    for entity in candidates:
        for _ in range(4):
            result = subprocess.run(
                [*manage, "convert_opportunity", entity.id], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
            )
            if result.returncode == 0:
                converted += 1
                break
    echo(f"converted {converted} of {len(candidates)} opportunities (each retried up to 4 times)")


def _change_epilot(client: EpilotClient) -> list:
    """Update, soft-delete, purge and create entities as epilot's own users would; returns the opportunities seen."""
    contacts = [e for page in client.iter_search_entities("_schema:contact", page_size=200) for e in page.results][:60]
    opportunities = [e for page in client.iter_search_entities("_schema:opportunity", page_size=200) for e in page.results]
    for entity in opportunities[:40]:
        # Guarded by _updated_at, so the client retries it; a 409 means an earlier attempt went through.
        _eventually(lambda e=entity: client.patch_entity("opportunity", e.id, {"beschreibung": "geändert im Chaos-Lauf"},
                                                         updated_at=e.data["_updated_at"]))
    for entity in contacts[:20]:
        _eventually(lambda e=entity: client.delete_entity("contact", e.id))
    for entity in contacts[20:25]:
        _eventually(lambda e=entity: client.delete_entity("contact", e.id, purge=True))
    for i in range(20):
        client.upsert_entity(
            "contact", ["chaos_key"], {"chaos_key": f"chaos-{i}", "first_name": "Neu", "last_name": f"Kunde {i}"}
        )
    return opportunities


def _eventually(write: Callable[[], object]) -> None:
    """Repeat a write a person would repeat after an error page; deleting or re-patching twice is harmless here."""
    for _ in range(15):
        try:
            write()
            return
        except (EpilotConflictError, EpilotNotFoundError):
            return  # an earlier attempt went through
        except EpilotError:
            time.sleep(0.2)
    raise RuntimeError("a write to the sandbox kept failing")


def _compare(store: SandboxStore, env: dict[str, str], report: Report) -> None:
    epilot = {
        row["id"]: (row["schema"], row["updated_at"], row["deleted_at"])
        for row in store.conn.execute(
            "SELECT id, schema, updated_at, deleted_at FROM entities WHERE schema IN ('contact','opportunity','order')"
        )
    }
    dump = subprocess.run(
        [sys.executable, "-c", "import django, json; django.setup(); from projects.models import Contact, Opportunity, Order; "
         "print(json.dumps([[m.__name__.lower(), e, p['_updated_at'], d is not None] for m in (Contact, Opportunity, Order) "
         "for e, p, d in m.objects.values_list('epilot_id', 'payload', 'epilot_deleted_at')]))"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    mirror = {
        epilot_id: (schema, updated_at, deleted)
        for schema, epilot_id, updated_at, deleted in json.loads(dump.stdout.splitlines()[-1])
    }
    for epilot_id, (_schema, updated_at, _deleted_at) in epilot.items():
        if epilot_id not in mirror:
            report.lost += 1
        elif mirror[epilot_id][1] != updated_at:
            report.stale += 1
    report.phantom = sum(1 for epilot_id, (_, _, deleted) in mirror.items() if not deleted and epilot_id not in epilot)
    keys = [row[0] for row in store.conn.execute(
        "SELECT json_extract(body, '$.backoffice_conversion_key') FROM entities WHERE schema = 'order' AND "
        "json_extract(body, '$.backoffice_conversion_key') IS NOT NULL")]
    per_entity = [
        row[0]
        for row in store.conn.execute(
            "SELECT COUNT(*) FROM documents d JOIN document_links l ON l.document_id = d.id AND l.kind = d.kind "
            "WHERE d.kind = 'execution' AND json_extract(d.body, '$.status') = 'STARTED' "
            "GROUP BY l.entity_id, json_extract(d.body, '$.definitionId')"
        )
    ]
    report.duplicates = (len(keys) - len(set(keys))) + sum(count - 1 for count in per_entity if count > 1)
    opportunities_with_orders = [row[0] for row in store.conn.execute(
        "SELECT COUNT(*) FROM entities WHERE schema = 'order' AND json_extract(body, '$.backoffice_conversion_key') IS NOT NULL "
        "GROUP BY json_extract(body, '$.opportunity.\"$relation\"[0].entity_id')")]
    report.duplicates += sum(count - 1 for count in opportunities_with_orders if count > 1)
    report.say(
        f"entities compared         {len(epilot)} in epilot, {len(mirror)} mirrored; {len(keys)} orders made by conversion"
    )
    if isinstance(store.conn, sqlite3.Connection):
        store.conn.close()
