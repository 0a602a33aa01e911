"""Benchmark: recomputing the figures of 20 rollout areas with 50,000 addresses and 50,000 opportunities.

The data is shaped like a Stadtwerk's: German streets and house numbers (some with letters), 1 to 12
units per address, 40 % of opportunities with a placed or completed order, projects in every phase.
Prints the time and the number of queries of `areas_refresh`: all areas (target: under 2 s on SQLite), again
with nothing changed, and for the address of one changed opportunity.

    .venv/bin/python bench/areas_figures.py [--addresses 50000]
    DATABASE_URL=postgres://... .venv/bin/python bench/areas_figures.py   # empties the mirror's tables there
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import scratch_directory  # noqa: E402

STREETS = ["Wilhelmstraße", "Goethestr.", "Schulstraße", "Kirchstraße", "Am Diek", "Ellenbeek", "Bahnhofstraße",
           "Mettmanner Straße", "Düsseler Straße", "Heumarkt", "Tiegenhöfe", "Schlupkothen", "Erbacher Berg", "Dorfstraße"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--addresses", type=int, default=50_000)
    parser.add_argument("--areas", type=int, default=20)
    args = parser.parse_args()
    workdir = scratch_directory("bench-areas-")
    os.environ.update({"DJANGO_SETTINGS_MODULE": "config.settings.local", "LOG_LEVEL": "WARNING", "DEBUG": "false",
                       "EPILOT_SANDBOX_DB": str(workdir / "sandbox.sqlite3")})
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'app.sqlite3'}")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from projects.mirror.addresses import address_key
    from projects.models import AreaAddress, AusbauProject, Opportunity, Order, RolloutArea
    from projects.services.areas import areas_refresh

    call_command("migrate", verbosity=0)
    for model in (AreaAddress, RolloutArea, AusbauProject, Order, Opportunity):
        model.objects.all().delete()
    rng = random.Random(11)
    now = timezone.now()
    addresses = []
    for i in range(args.addresses):
        street = STREETS[i % len(STREETS)] + ("" if i < len(STREETS) * 400 else f" {i // (len(STREETS) * 400)}")
        number = f"{i // len(STREETS) % 400 + 1}{rng.choice(['', '', '', 'a', ' b'])}"
        addresses.append(("42489", street, number, rng.randint(1, 12)))
    areas = RolloutArea.objects.bulk_create([RolloutArea(name=f"Gebiet {n + 1}") for n in range(args.areas)])
    AreaAddress.objects.bulk_create([
        AreaAddress(area=areas[i % args.areas], postal_code=p, street=s, house_number=n, units=u, key=address_key(p, s, n))
        for i, (p, s, n, u) in enumerate(addresses)], batch_size=5000)
    opportunities = Opportunity.objects.bulk_create([
        Opportunity(epilot_id=f"opp-{i}", title=f"Glasfaser {s} {n}", status=rng.choice(["ausstehend", "bearbeitung",
                    "geschlossen", "abgebrochen"]), synced_at=now, epilot_updated_at=now, postal_code=p, street=f"{s} {n}",
                    address_key=address_key(p, s.upper(), n.replace(" ", "")))
        for i, (p, s, n, _u) in enumerate(addresses)], batch_size=5000)
    Order.objects.bulk_create([
        Order(epilot_id=f"ord-{i}", title="Auftrag", status=rng.choice(["placed", "completed", "draft", "quote"]), synced_at=now,
              epilot_updated_at=now, opportunity=opportunity, opportunity_epilot_id=opportunity.epilot_id)
        for i, opportunity in enumerate(opportunities) if rng.random() < 0.4], batch_size=5000)
    AusbauProject.objects.bulk_create([
        AusbauProject(opportunity=opportunity, title=opportunity.title, updated_at=now,
                      phase=rng.choice(["planning", "approved", "construction", "completed", "cancelled"]))
        for opportunity in opportunities], batch_size=5000)

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        updated = areas_refresh()
        elapsed = time.perf_counter() - started
    signed = sum(RolloutArea.objects.values_list("units_signed", flat=True))
    started = time.perf_counter()
    areas_refresh()
    again = time.perf_counter() - started
    one_key = opportunities[len(opportunities) // 2].address_key
    with CaptureQueriesContext(connection) as one_queries:
        started = time.perf_counter()
        areas_refresh(address_keys=[one_key])
        one = time.perf_counter() - started
    print(f"data:        {args.areas} areas, {len(addresses):,} addresses, {len(opportunities):,} opportunities; "
          f"{connection.vendor}")
    print(f"recompute:   {updated} areas in {elapsed:.2f} s, {len(queries.captured_queries)} queries; {signed:,} units signed "
          f"(first time: every address's contribution written)")
    print(f"again:       {again:.2f} s (nothing changed: no address written)")
    print(f"one address: {one * 1000:.1f} ms, {len(one_queries.captured_queries)} queries (the change of one opportunity)")


if __name__ == "__main__":
    main()
