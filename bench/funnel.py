"""Benchmark: the funnel of 20 rollout areas with 50,000 (or 150,000) buildings, after one change and a rule change.

The mirror is filled directly (the sync is measured by bench/sync_full.py): per building with a
contract an opportunity with an order, an "Ausbau Glasfaser" (V1) execution with eight steps on the
opportunity and, from connected on, a "Hausanschluss" (V2) flow with three tasks on the order, each
completed as far as the building came. Shapes (--shape):

- `plain`: one opportunity per building, the order linked by its own relation;
- `shared`: a third of the buildings hold two or three opportunities (flats of one house), a tenth none;
- `orphans`: a third more orders belong to no opportunity and run workflows of their own (shop and change
  orders), which no building may count;
- `wide`: every execution also carries completed steps of other definitions named like the milestones'
  steps, and twice as many steps.

Prints: a bare read of the rows the funnel needs (the floor); the rule change (every building recomputed,
`milestone_rules_replace`) as a ratio to that floor and per building; one change (a step completed on one
building's execution, announced as the mirror announces it: `entities_changed`) as p50 and max of 20
changes, with its queries; the peak RSS. Targets: one change < 50 ms, a rule change < 10 s.

    .venv/bin/python bench/funnel.py [--buildings 50000] [--shape plain|shared|orphans|wide]
    DATABASE_URL=postgres://... .venv/bin/python bench/funnel.py   # empties the mirror's tables there
    BENCH_SLOWEST=1 .venv/bin/python bench/funnel.py                 # also the rule change's slowest and a change's queries
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402
from bench.sync_full import use_django_against  # noqa: E402

STREETS = ["Wilhelmstraße", "Goethestraße", "Schulstraße", "Kirchstraße", "Am Diek", "Ellenbeek", "Bahnhofstraße",
           "Mettmanner Straße", "Düsseler Straße", "Heumarkt", "Tiegenhöfe", "Schlupkothen", "Erbacher Berg", "Dorfstraße"]
V1_STEPS = ["Trassenplanung erstellen", "Genehmigungen einholen", "Tiefbau beauftragen", "Tiefbau durchführen",
            "Hausanschluss setzen", "Glasfaser einblasen und spleißen", "Abnahme und Messprotokoll", "Dokumentation an Kunde"]
V2_TASKS = ["Termin mit Eigentümer vereinbaren", "Glasfaser-Modem montieren", "Anschluss aktivieren"]
DONE_V1 = {"signed": 2, "passed": 4, "connected": 6, "activated": 8}  # steps completed at each stage
DONE_V2 = {"connected": 2, "activated": 3}
RULES = [
    {"key": "passed", "definition": "wfAusbau", "step": "Tiefbau durchführen"},
    {"key": "connected", "definition": "wfAusbau", "step": "Hausanschluss setzen"},
    {"key": "connected", "definition": "ftHausanschluss", "step": "Glasfaser-Modem montieren"},
    {"key": "activated", "definition": "ftHausanschluss", "step": "Anschluss aktivieren"},
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--buildings", type=int, default=50_000)
    parser.add_argument("--areas", type=int, default=20)
    parser.add_argument("--shape", choices=["plain", "shared", "orphans", "wide"], default="plain")
    args = parser.parse_args()
    workdir = scratch_directory("bench-funnel-")
    os.environ["EPILOT_SANDBOX_DB"] = str(workdir / "sandbox.sqlite3")  # nothing is asked of epilot here
    use_django_against("", workdir)
    from django.db import connection

    from projects.models import MirroredStep

    empty_funnel()
    started = time.perf_counter()
    changes = fill(args)
    filled = time.perf_counter() - started
    steps = MirroredStep.objects.count()
    print(f"data:        {args.areas} areas, {args.buildings:,} buildings, shape {args.shape}, {steps:,} steps; "
          f"{connection.vendor}; filled in {filled:.0f} s")

    floor = bare_read()
    print(f"bare read:   {floor:.2f} s (opportunities, orders, executions and completed steps, as the recompute reads them)")
    from django.test.utils import CaptureQueriesContext

    from projects.services.funnel import area_funnel, milestone_rules_replace

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        milestone_rules_replace(RULES, actor="bench")
        rule_change = time.perf_counter() - started
    if os.environ.get("BENCH_SLOWEST"):
        for query in sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:8]:
            print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:300]}")
    print(f"rule change: {rule_change:.2f} s = {rule_change / floor:.1f}x the bare read, "
          f"{rule_change / args.buildings * 1e6:.0f} µs per building (every building and area recomputed)")
    funnel = area_funnel(None)
    print("funnel:      " + ", ".join(f"{stage['key']} {stage['buildings']:,}" for stage in funnel.stages)
          + f"; stuck {sum(funnel.stuck.values()):,}")
    times, queries, moved = one_changes(changes)
    print(f"one change:  p50 {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {len(times)} "
          f"changes ({queries} queries each at most; {moved} of {len(times)} buildings moved a stage as expected)")
    print(f"peak RSS:    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def empty_funnel() -> None:
    """What an earlier run left beside the mirror (use_django_against empties that)."""
    from projects.models import AreaAddress, MilestoneRule, RolloutArea

    for model in (AreaAddress, RolloutArea, MilestoneRule):
        model.objects.all().delete()


def fill(args: argparse.Namespace) -> list[tuple[int, str]]:
    """Fill the mirror; returns (execution pk, opportunity epilot id) of buildings at `passed` whose next step a change
    completes."""
    from django.utils import timezone

    from projects.mirror.addresses import address_key
    from projects.models import AreaAddress, MirroredStep, Opportunity, Order, RolloutArea, WorkflowExecution

    rng = random.Random(17)
    now = timezone.now()
    areas = RolloutArea.objects.bulk_create([RolloutArea(name=f"Gebiet {n + 1}") for n in range(args.areas)])
    stages = ["in_scope"] * 30 + ["signed"] * 25 + ["passed"] * 20 + ["connected"] * 12 + ["activated"] * 13
    changes: list[tuple[int, str]] = []
    batch = 5000
    for start in range(0, args.buildings, batch):
        addresses, opportunities, orders, plan = [], [], [], []
        for i in range(start, min(start + batch, args.buildings)):
            street = f"{STREETS[i % len(STREETS)]} {i // (len(STREETS) * 400) or ''}".strip()
            number = f"{i // len(STREETS) % 400 + 1}{rng.choice(['', '', '', 'a', ' b'])}"
            key = address_key("42489", street, number)
            addresses.append(AreaAddress(area=areas[i % args.areas], postal_code="42489", street=street, house_number=number,
                                         units=rng.randint(1, 12), key=key))
            stage = rng.choice(stages)
            owners = 1
            if args.shape == "shared":
                owners = rng.choices([0, 1, 2, 3], weights=[10, 57, 23, 10])[0]
            for n in range(owners):
                opportunity = Opportunity(epilot_id=f"opp-{i}-{n}", title=f"Glasfaser {street} {number}", status="bearbeitung",
                                          synced_at=now, epilot_updated_at=now, postal_code="42489",
                                          street=f"{street} {number}", address_key=key,
                                          latitude=51.28 + rng.random() / 50, longitude=7.03 + rng.random() / 30)
                opportunities.append(opportunity)
                # In a shared building one flat's workflows carry the building's progress; the others were only signed.
                plan.append((opportunity, stage if n == 0 else rng.choice(["in_scope", "signed"])))
        AreaAddress.objects.bulk_create(addresses, batch_size=2000)
        Opportunity.objects.bulk_create(opportunities, batch_size=2000)
        for opportunity, stage in plan:
            if stage != "in_scope":
                orders.append(Order(epilot_id=f"ord-{opportunity.epilot_id}", title="Hausanschluss", status="placed",
                                    synced_at=now, epilot_updated_at=now, epilot_created_at=now, opportunity=opportunity,
                                    opportunity_epilot_id=opportunity.epilot_id))
        if args.shape == "orphans":
            orders += [Order(epilot_id=f"ord-shop-{start}-{n}", title="Shop", status="placed", synced_at=now,
                             epilot_updated_at=now) for n in range(len(orders) // 3)]
        Order.objects.bulk_create(orders, batch_size=2000)
        order_of = {order.opportunity_id: order for order in orders if order.opportunity_id}
        executions, step_rows = [], []
        for opportunity, stage in plan:
            if stage == "in_scope":
                continue
            v1 = WorkflowExecution(epilot_id=f"ex-{opportunity.epilot_id}", engine="v1", definition_epilot_id="wfAusbau",
                                   name="Ausbau Glasfaser", entity_schema="opportunity",
                                   entity_epilot_id=opportunity.epilot_id, opportunity=opportunity,
                                   status="DONE" if DONE_V1[stage] == 8 else "STARTED",
                                   current_step="" if DONE_V1[stage] == 8 else V1_STEPS[DONE_V1[stage]], synced_at=now,
                                   epilot_updated_at=now, total_steps=8, completed_steps=DONE_V1[stage])
            executions.append((v1, V1_STEPS, DONE_V1[stage]))
            if stage in DONE_V2:
                v2 = WorkflowExecution(epilot_id=f"fl-{opportunity.epilot_id}", engine="v2",
                                       definition_epilot_id="ftHausanschluss", name="Hausanschluss", entity_schema="order",
                                       entity_epilot_id=order_of[opportunity.pk].epilot_id, order=order_of[opportunity.pk],
                                       status="DONE" if DONE_V2[stage] == 3 else "STARTED", synced_at=now,
                                       epilot_updated_at=now, current_step="" if DONE_V2[stage] == 3 else V2_TASKS[2])
                executions.append((v2, V2_TASKS, DONE_V2[stage]))
            if args.shape == "wide":
                other = WorkflowExecution(epilot_id=f"ot-{opportunity.epilot_id}", engine="v1", definition_epilot_id="wfOther",
                                          name="Wartung", entity_schema="opportunity", entity_epilot_id=opportunity.epilot_id,
                                          opportunity=opportunity, status="DONE", synced_at=now, epilot_updated_at=now)
                executions.append((other, V1_STEPS + V2_TASKS + [f"Prüfung {n}" for n in range(5)], 16))
        for order in orders:
            if order.opportunity_id is None:
                executions.append((WorkflowExecution(
                    epilot_id=f"ex-{order.epilot_id}", engine="v2", definition_epilot_id="ftHausanschluss",
                    name="Hausanschluss", entity_schema="order", entity_epilot_id=order.epilot_id, order=order, status="DONE",
                    synced_at=now, epilot_updated_at=now), V2_TASKS, 3))
        WorkflowExecution.objects.bulk_create([execution for execution, _names, _done in executions], batch_size=2000)
        for execution, names, done in executions:
            for position, name in enumerate(names):
                completed = position < done
                step_rows.append(MirroredStep(
                    execution=execution, epilot_id=f"s{position}", position=position, name=name,
                    status="COMPLETED" if completed else "PENDING", synced_at=now,
                    completed_at=now - dt.timedelta(days=rng.randint(1, 200)) if completed else None))
            if execution.definition_epilot_id == "wfAusbau" and execution.completed_steps == 4 and len(changes) < 20:
                changes.append((execution.pk, execution.entity_epilot_id))
        MirroredStep.objects.bulk_create(step_rows, batch_size=5000)
    return changes


def bare_read() -> float:
    """The rows a rule change reads, read plainly: the floor of any recompute."""
    from projects.models import MirroredStep, Opportunity, Order, WorkflowExecution

    started = time.perf_counter()
    list(Opportunity.objects.values_list("id", "address_key"))
    list(Order.objects.values_list("id", "opportunity_id"))
    list(WorkflowExecution.objects.values_list("id", "opportunity_id", "order_id", "definition_epilot_id", "status"))
    list(MirroredStep.objects.filter(status="COMPLETED", name__in=sorted({rule["step"] for rule in RULES}))
         .values_list("execution_id", "name", "completed_at"))
    return time.perf_counter() - started


def one_changes(changes: list[tuple[int, str]]) -> tuple[list[float], int, int]:
    """Complete "Hausanschluss setzen" on buildings at `passed` as the execution store would, and announce it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from projects.mirror.changes import EntitiesChanged, announce
    from projects.models import AreaAddress, MirroredStep, Opportunity

    times, most, moved = [], 0, 0
    for execution_pk, opportunity_id in changes:
        MirroredStep.objects.filter(execution_id=execution_pk, name="Hausanschluss setzen").update(
            status="COMPLETED", completed_at=timezone.now())
        ref = ("opportunity", opportunity_id)
        change = EntitiesChanged(refs=(ref,), kinds={ref: "workflows"}, opportunities=frozenset({opportunity_id}))
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            announce(change)
            times.append(time.perf_counter() - started)
        most = max(most, len(queries.captured_queries))
        if os.environ.get("BENCH_SLOWEST") and len(times) == len(changes):
            print(f"  SQL {sum(float(q['time']) for q in queries.captured_queries) * 1000:.1f} ms of "
                  f"{times[-1] * 1000:.1f} ms")
            for query in queries.captured_queries:
                print(f"  {float(query['time']) * 1000:7.1f} ms  {query['sql'][:400]}")
        key = Opportunity.objects.get(epilot_id=opportunity_id).address_key
        moved += AreaAddress.objects.filter(key=key, stage="connected").exists()
    return times, most, moved


if __name__ == "__main__":
    main()
