"""Benchmark: the admin header's search over 50,000 mirrored entities and 25,000 buildings.

The mirror is filled through the mirror's own mapping (`entity_row`, so every row's search words are
the ones a sync would store): 30,000 contacts, 15,000 opportunities (a third of them sharing an address
with another), 5,000 orders (a third belonging to no opportunity), unknown extra attributes on every
document, and 20 rollout areas with 25,000 buildings. Then each kind of query staff type is run 20 times
with different values: a street and house number in three spellings, a street alone, a name, a customer
number, an opportunity and an order number, an e-mail address, and something that is nowhere.

Prints p50 and max per kind, the statements per search, rows per group, and the peak RSS. Target: < 200 ms
on PostgreSQL at 50,000 entities.

    .venv/bin/python bench/search.py [--entities 50000]
    DATABASE_URL=postgres://... .venv/bin/python bench/search.py   # empties the mirror's tables there
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
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
           "Mettmanner Straße", "Düsseler Straße", "Heumarkt", "Tiegenhöfe", "Schlupkothen", "Erbacher Berg",
           "Dorfstraße", "Tiefenbacher Weg", "Flehenberger Weg", "Kalkstraße", "Rohdenhauser Straße", "Fliethe",
           "Am Angerbach"]
FIRST = ["Anna", "Jörg", "Elif", "Peter", "Sabine", "Thomas", "Maria", "Klaus", "Özlem", "Jürgen", "Lena", "Max"]
LAST = ["Meier", "Schmitz", "Yılmaz", "Krüger", "Hartmann", "Becker", "Wagner", "Hoffmann", "Müller", "Schäfer",
        "Weiß", "Köhler", "Schulz", "Fischer", "Neumann", "Schwarz", "Zimmermann", "Braun", "Hofmann", "Lange"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=50_000)
    parser.add_argument("--buildings", type=int, default=25_000)
    args = parser.parse_args()
    workdir = scratch_directory("bench-search-")
    use_django_against("http://127.0.0.1:9/unused", workdir)
    from django.db import connection, reset_queries

    fill(args.entities, args.buildings)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # as autovacuum would after such a fill
    from projects.services.search import search

    rng = random.Random(7)
    contacts, opportunities = args.entities * 3 // 5, args.entities * 3 // 10
    queries = {
        "street + number": lambda: f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
        "street + number, lower case, 'str.'": lambda: f"{rng.choice(STREETS).lower().replace('straße', 'str.')} "
                                                        f"{rng.randint(1, 120)}",
        "street abbreviated ('Tiefenbacher W. 15')": lambda: _abbreviated(rng),
        "street alone": lambda: rng.choice(STREETS),
        "customer name": lambda: f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "customer number": lambda: f"K-{rng.randint(1, contacts):06d}",
        "opportunity number": lambda: f"OPP-{rng.randint(1, opportunities):06d}",
        "order number": lambda: f"AUF-{rng.randint(1, args.entities // 10):06d}",
        "e-mail": lambda: f"kunde{rng.randint(1, contacts)}@example.org",
        "nowhere": lambda: f"Nirgendwo {rng.randint(1, 99)}",
    }
    print(f"{args.entities:,} entities, {args.buildings:,} buildings, {connection.vendor}")
    from django.conf import settings

    settings.DEBUG = True  # count statements
    for kind, make in queries.items():
        times, found, statements = [], [], 0
        for _ in range(20):
            query = make()
            reset_queries()
            started = time.perf_counter()
            results = search(query)
            times.append((time.perf_counter() - started) * 1000)
            statements = max(statements, len(connection.queries))
            found.append(results.count)
        if os.environ.get("BENCH_SLOWEST"):
            for statement in sorted(connection.queries, key=lambda q: -float(q["time"]))[:2]:
                print(f"      {statement['time']} s  {statement['sql'][:300]}")
        print(f"  {kind:42s} p50 {statistics.median(times):7.1f} ms  max {max(times):7.1f} ms  "
              f"{statements} statements  hits p50 {statistics.median(found):.0f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _abbreviated(rng: random.Random) -> str:
    street = rng.choice(STREETS)
    words = street.split()
    if len(words) > 1:
        words[-1] = words[-1][0] + "."
    else:
        words[0] = words[0].replace("straße", "str.")
    return f"{' '.join(words)} {rng.randint(1, 120)}"


def fill(entities: int, buildings: int) -> None:
    """The mirror and the areas, through the mirror's mapping of documents to rows."""
    from django.utils import timezone

    from projects.mirror.addresses import address_key, searchable
    from projects.mirror.rows import entity_row
    from projects.models import AreaAddress, Contact, Opportunity, Order, RolloutArea

    rng = random.Random(1)
    now = timezone.now()
    contacts, opportunities = entities * 3 // 5, entities * 3 // 10
    orders = entities - contacts - opportunities

    def rows(schema: str, documents):
        for document in documents:
            document.update({"_schema": schema, "_org": "1", "_created_at": "2026-01-01T00:00:00Z",
                             "_updated_at": "2026-06-01T00:00:00Z", "_tags": [], "zusatz_feld": {"x": [1, 2]}})
            yield entity_row(schema, document, now)

    def contact_documents():
        for i in range(1, contacts + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            yield {"_id": f"c{i}", "_title": f"{first} {last}", "first_name": first, "last_name": last,
                   "customer_number": f"K-{i:06d}", "email": [{"email": f"kunde{i}@example.org"}]}

    def address(i: int) -> dict:
        number = i % 997 if i % 3 else (i - 1) % 997  # a third share an address with the one before
        return {"street": STREETS[number % len(STREETS)], "street_number": str(number // len(STREETS) + 1),
                "postal_code": "42489", "city": "Wülfrath"}

    def opportunity_documents():
        for i in range(1, opportunities + 1):
            yield {"_id": f"o{i}", "_title": f"Glasfaser {address(i)['street']}", "status": "bearbeitung",
                   "opportunity_number": f"OPP-{i:06d}", "address": address(i),
                   "customer": {"$relation": [{"entity_id": f"c{rng.randint(1, contacts)}"}]}}

    def order_documents():
        for i in range(1, orders + 1):
            relation = {"opportunity": {"$relation": [{"entity_id": f"o{rng.randint(1, opportunities)}"}]}} if i % 3 else {}
            yield {"_id": f"a{i}", "_title": f"Hausanschluss {i}", "order_number": f"AUF-{i:06d}", "status": "placed",
                   "amount_total": 99900, "currency": "EUR", **relation}

    started = time.perf_counter()
    for model, schema, documents in ((Contact, "contact", contact_documents()),
                                     (Opportunity, "opportunity", opportunity_documents()),
                                     (Order, "order", order_documents())):
        batch = []
        for row in rows(schema, documents):
            row.pop("payload__json", None)
            row["tags"] = json.loads(row.pop("tags__json"))  # the mirror's rows carry their JSON encoded
            batch.append(model(**row))
            if len(batch) == 5000:
                model.objects.bulk_create(batch)
                batch = []
        model.objects.bulk_create(batch)
    by_id = dict(Opportunity.objects.values_list("epilot_id", "pk"))
    linked = [Order(pk=pk, opportunity_id=by_id.get(ref)) for pk, ref in
              Order.objects.exclude(opportunity_epilot_id="").values_list("pk", "opportunity_epilot_id")]
    Order.objects.bulk_update(linked, ["opportunity"], batch_size=2000)
    areas = [RolloutArea.objects.get_or_create(name=f"Bench {n}")[0] for n in range(20)]
    AreaAddress.objects.filter(area__in=areas).delete()
    made = []
    for i in range(buildings):
        street, number = STREETS[i % len(STREETS)], str(i // len(STREETS) + 1)
        made.append(AreaAddress(area=areas[i % 20], postal_code="42489", street=street, house_number=number, units=1,
                                key=address_key("42489", street, number), search_text=searchable(street, number, "42489")))
    AreaAddress.objects.bulk_create(made, batch_size=5000)
    print(f"filled in {time.perf_counter() - started:.1f} s ({dt.datetime.now():%H:%M})")


if __name__ == "__main__":
    main()
