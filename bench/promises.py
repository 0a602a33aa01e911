"""Benchmark: the nightly recompute of promised dates for 50,000 orders (forecast curves, every promise's state).

The mirror is filled as bench/funnel.py fills it (20 areas; per building with a contract an
opportunity, an order, an "Ausbau Glasfaser" execution and from connected on a "Hausanschluss" flow,
completed as far as the building came; shapes `plain`, `shared`, `orphans`, `wide`), with enough
buildings for the orders asked for. Four of five orders carry a promised connection date in their
epilot attribute (some past, some ahead), a third of those a promised activation date; the areas'
buildings get their milestone dates from the milestone rules.

Prints: the first nightly run (every promise created), a second one (states and forecasts
recomputed, little written), per order; a bare read of what the recompute reads (orders with their
attribute, buildings' dates) as the floor; one order's change (its promises re-read and recomputed)
as p50/max of 20; the state counts; the peak RSS. Target: the nightly recompute < 60 s at 50,000 orders.

    .venv/bin/python bench/promises.py [--orders 50000] [--shape plain|shared|orphans|wide]
    DATABASE_URL=postgres://... .venv/bin/python bench/promises.py   # empties the mirror's tables there
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
from bench.funnel import RULES, empty_funnel, fill  # noqa: E402
from bench.sync_full import use_django_against  # noqa: E402

SIGNED_SHARE = 0.7  # the funnel bench's buildings with a contract


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--areas", type=int, default=20)
    parser.add_argument("--shape", choices=["plain", "shared", "orphans", "wide"], default="plain")
    args = parser.parse_args()
    workdir = scratch_directory("bench-promises-")
    os.environ["EPILOT_SANDBOX_DB"] = str(workdir / "sandbox.sqlite3")  # nothing is asked of epilot here
    use_django_against("", workdir)
    from django.db import connection
    from django.db.models import Count

    from projects.models import Order, Promise
    from projects.services.funnel import milestone_rules_replace
    from projects.services.promises import promises_nightly, promises_sync

    empty_funnel()
    Promise.objects.all().delete()
    buildings = round(args.orders / SIGNED_SHARE / (1.33 if args.shape == "orphans" else 1))
    started = time.perf_counter()
    fill(argparse.Namespace(buildings=buildings, areas=args.areas, shape=args.shape))
    milestone_rules_replace(RULES, actor="bench")  # the buildings' milestone dates
    promised = promise_attributes_set()
    orders = Order.objects.count()
    print(f"data:          {orders:,} orders ({promised:,} with a promise), {buildings:,} buildings, shape {args.shape}; "
          f"{connection.vendor}; filled in {time.perf_counter() - started:.0f} s")

    floor = bare_read()
    print(f"bare read:     {floor:.2f} s (orders with their attributes, the buildings' dates)")
    for name in ("first night", "second night"):
        started = time.perf_counter()
        count = promises_nightly()
        took = time.perf_counter() - started
        print(f"{name}:  {took:.2f} s for {count:,} promises = {took / floor:.1f}x the bare read, "
              f"{took / orders * 1e6:.0f} µs per order")
    states = dict(Promise.objects.order_by().values_list("state").annotate(n=Count("id")))
    print("states:        " + ", ".join(f"{state} {count:,}" for state, count in sorted(states.items())))
    rng = random.Random(3)
    ids = list(Order.objects.filter(promises__isnull=False).values_list("id", flat=True).distinct()[:2000])
    times = []
    for pk in rng.sample(ids, min(20, len(ids))):
        started = time.perf_counter()
        promises_sync([pk])
        times.append(time.perf_counter() - started)
    print(f"one order:     p50 {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms over {len(times)} orders")
    print(f"peak RSS:      {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def promise_attributes_set() -> int:
    """Promised dates in the orders' attributes, as epilot would hold them; returns how many orders have one."""
    from django.utils import timezone

    from projects.mirror.bulk import bulk_update_by_pk
    from projects.models import Order

    rng = random.Random(11)
    today = timezone.localdate()
    rows = []
    for pk, payload in Order.objects.order_by("pk").values_list("pk", "payload").iterator(chunk_size=5000):
        if rng.random() < 0.2:
            continue
        attributes = dict(payload or {})
        attributes["zugesagter_anschlusstermin"] = (today + dt.timedelta(days=rng.randint(-120, 180))).isoformat()
        if rng.random() < 0.33:
            attributes["zugesagte_aktivierung"] = f"{today + dt.timedelta(days=rng.randint(-60, 240))}T10:00:00Z"
        rows.append({"id": pk, "payload": attributes})
    for start in range(0, len(rows), 5000):
        bulk_update_by_pk(Order, rows[start:start + 5000], ["payload"])
    return len(rows)


def bare_read() -> float:
    from projects.mirror.bulk import json_key, values_read_at_once
    from projects.models import AreaAddress, Order

    started = time.perf_counter()
    list(Order.objects.order_by().values_list("id", "epilot_created_at", "opportunity__address_key",
                                              json_key("payload", "zugesagter_anschlusstermin"),
                                              json_key("payload", "zugesagte_aktivierung")))
    values_read_at_once(AreaAddress.objects.order_by(), "key", "area", "signed_at", "passed_at", "connected_at",
                        "activated_at")
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
