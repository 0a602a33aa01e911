"""Seed data: the Stadtwerke Wülfrath demo, and large deterministic sets for benchmarks."""
from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

from integrations.epilot_sandbox.query import iso_ms
from integrations.epilot_sandbox.store import SandboxStore

NAMESPACE = uuid.UUID("5b0e4c1e-7d1f-4b59-9c1a-2f8f1c0a9e11")
AUSBAU_DEFINITION_ID = "wfQpwhJF6J"
HAUSANSCHLUSS_TEMPLATE_ID = "ftHausanschlussV2"


def demo_id(name: str) -> str:
    """A stable entity id, so demo links and bookmarks survive a re-seed."""
    return str(uuid.uuid5(NAMESPACE, name))


def _stamp(day_offset: float) -> str:
    base = dt.datetime(2025, 11, 3, 8, 0, tzinfo=dt.UTC)
    return iso_ms((base + dt.timedelta(days=day_offset)).isoformat())


def _entity(schema: str, key: str, day: float, attributes: dict[str, Any], *, org_id: str) -> dict[str, Any]:
    stamp = _stamp(day)
    body = {
        "_id": demo_id(f"{schema}:{key}"),
        "_schema": schema,
        "_org": org_id,
        "_created_at": stamp,
        "_updated_at": stamp,
        "_owners": [{"org_id": org_id}],
        "_acl": {"view": [f"org:{org_id}"], "edit": [f"org:{org_id}"], "delete": [f"org:{org_id}"]},
        "_tags": [],
    }
    body.update(attributes)
    if schema == "contact":
        body["_title"] = f"{attributes['first_name']} {attributes['last_name']}"
    else:
        body.setdefault("_title", attributes.get("title", key))
    return body


# Closing reasons of the org (epilot keeps them apart from definitions, which name them by id).
CLOSING_REASONS: list[dict[str, str]] = [
    {"id": "crKeinInteresse", "title": "Eigentümer hat kein Interesse mehr"},
    {"id": "crTechnisch", "title": "Technisch nicht realisierbar"},
    {"id": "crDoppelt", "title": "Doppelt angelegt"},
]

AUSBAU_DEFINITION: dict[str, Any] = {
    "id": AUSBAU_DEFINITION_ID,
    "name": "Ausbau Glasfaser",
    "description": "Glasfaserausbau von der Planung bis zur Abnahme",
    "enabled": True,
    "creationTime": "2025-10-01T09:00:00.000Z",
    "lastUpdateTime": "2025-10-01T09:00:00.000Z",
    "assignedTo": [],
    "flow": [
        {"id": "secPlan", "name": "Planung", "type": "SECTION", "order": 1, "steps": [
            {"id": "stTrasse", "name": "Trassenplanung erstellen", "type": "STEP", "order": 1},
            {"id": "stGenehm", "name": "Genehmigungen einholen", "type": "STEP", "order": 2},
        ]},
        {"id": "secTief", "name": "Tiefbau", "type": "SECTION", "order": 2, "steps": [
            {"id": "stTiefAuf", "name": "Tiefbau beauftragen", "type": "STEP", "order": 1},
            {"id": "stTiefDur", "name": "Tiefbau durchführen", "type": "STEP", "order": 2},
        ]},
        {"id": "secHaus", "name": "Hausanschluss", "type": "SECTION", "order": 3, "steps": [
            {"id": "stHausSet", "name": "Hausanschluss setzen", "type": "STEP", "order": 1},
            {"id": "stEinblas", "name": "Glasfaser einblasen und spleißen", "type": "STEP", "order": 2},
        ]},
        {"id": "secAbsch", "name": "Abschluss", "type": "SECTION", "order": 4, "steps": [
            {"id": "stAbnahme", "name": "Abnahme und Messprotokoll", "type": "STEP", "order": 1},
            {"id": "stDoku", "name": "Dokumentation an Kunde", "type": "STEP", "order": 2},
        ]},
    ],
    "updateEntityAttributes": [
        {"source": "current_section", "target": {"entitySchema": "opportunity", "entityAttribute": "ausbau_phase"}},
        {"source": "current_section", "target": {"entitySchema": "order", "entityAttribute": "ausbau_phase"}},
    ],
    "closingReasons": [{"id": reason["id"]} for reason in CLOSING_REASONS],
}

PLANUNG_DEFINITION: dict[str, Any] = {
    "id": "wfPlanung1",
    "name": "Ausbau Planung",
    "description": "Machbarkeit und Budget prüfen",
    "enabled": True,
    "creationTime": "2025-10-01T09:00:00.000Z",
    "lastUpdateTime": "2025-10-01T09:00:00.000Z",
    "flow": [
        {"id": "secMach", "name": "Machbarkeit", "type": "SECTION", "order": 1, "steps": [
            {"id": "stBegeh", "name": "Begehung vor Ort", "type": "STEP", "order": 1},
            {"id": "stBudget", "name": "Budget freigeben", "type": "STEP", "order": 2},
        ]},
    ],
}

HAUSANSCHLUSS_TEMPLATE: dict[str, Any] = {
    "id": HAUSANSCHLUSS_TEMPLATE_ID,
    "org_id": "739224",
    "name": "Hausanschluss Glasfaser (Flows)",
    "description": "Hausanschluss als V2-Flow",
    "enabled": True,
    "trigger": {"type": "manual"},
    "phases": [{"id": "phTermin", "name": "Terminierung"}, {"id": "phMontage", "name": "Montage"}],
    "tasks": [
        {"id": "tkTermin", "name": "Termin mit Eigentümer vereinbaren", "task_type": "MANUAL", "phase_id": "phTermin"},
        {"id": "tkMontage", "name": "Glasfaser-Modem montieren", "task_type": "MANUAL", "phase_id": "phMontage"},
        {"id": "tkAktiv", "name": "Anschluss aktivieren", "task_type": "MANUAL", "phase_id": "phMontage"},
    ],
    "closing_reasons": [{"id": reason["id"]} for reason in CLOSING_REASONS],
    "edges": [
        {"id": "e1", "from_id": "tkTermin", "to_id": "tkMontage"},
        {"id": "e2", "from_id": "tkMontage", "to_id": "tkAktiv"},
    ],
}

SCHEMAS = [
    {
        "slug": "contact",
        "name": "Contact",
        "plural": "Contacts",
        "title_template": "{{first_name}} {{last_name}}",
        "attributes": [],
        "capabilities": [],
    },
    {
        "slug": "opportunity",
        "name": "Opportunity",
        "plural": "Opportunities",
        "title_template": "{{title}}",
        "attributes": [],
        "capabilities": [],
    },
    {
        "slug": "order",
        "name": "Order",
        "plural": "Orders",
        "title_template": "{{order_number}}",
        "attributes": [],
        "capabilities": [],
    },
]

# (key, title, status, street, house number, contact key, budget, tags)
DEMO_OPPORTUNITIES = [
    ("nordstrasse", "Glasfaser Neubaugebiet Nordstraße", "ausstehend", "Nordstraße", "12", "meier", 45000,
     ["glasfaser", "neubau"]),
    ("rohdenhaus", "Glasfaser Gewerbegebiet Rohdenhaus", "bearbeitung", "Rohdenhauser Straße", "40", "schmitz", 120000,
     ["glasfaser", "gewerbe"]),
    ("duessel", "FTTH Düssel Ortskern", "bearbeitung", "Dorfstraße", "3", "yilmaz", 68000, ["glasfaser", "ftth"]),
    ("flehenberg", "Glasfaser Flehenberg", "geschlossen", "Flehenberger Weg", "7", "krueger", 52000, ["glasfaser"]),
    ("schulzentrum", "Anbindung Schulzentrum Wülfrath", "geschlossen", "Fliethe", "20", "stadt", 90000,
     ["glasfaser", "öffentlich"]),
    ("kalkstrasse", "Glasfaser Kalkstraße", "ausstehend", "Kalkstraße", "58", "becker", 31000, ["glasfaser"]),
    ("angerbach", "Glasfaser Wohnpark Angerbach", "abgebrochen", "Am Angerbach", "1", "wagner", 27000, ["glasfaser", "neubau"]),
    ("tiefenbach", "Glasfaser Tiefenbach Höfe", "ausstehend", "Tiefenbacher Weg", "15", "hoffmann", 38000,
     ["glasfaser", "außenbereich"]),
]

DEMO_CONTACTS = {
    "meier": ("Anna", "Meier", "anna.meier@example.org"),
    "schmitz": ("Jörg", "Schmitz", "j.schmitz@example.org"),
    "yilmaz": ("Elif", "Yılmaz", "elif.yilmaz@example.org"),
    "krueger": ("Peter", "Krüger", "p.krueger@example.org"),
    "stadt": ("Sabine", "Hartmann", "s.hartmann@example.org"),
    "becker": ("Thomas", "Becker", "t.becker@example.org"),
    "wagner": ("Maria", "Wagner", "m.wagner@example.org"),
    "hoffmann": ("Klaus", "Hoffmann", "k.hoffmann@example.org"),
}


# Where the demo's addresses lie in Wülfrath ("lat,lng", as the address attribute's `coordinates` carries it).
DEMO_COORDINATES = {
    "Nordstraße": "51.286900,7.037000", "Rohdenhauser Straße": "51.275800,7.055600", "Dorfstraße": "51.253400,7.033700",
    "Flehenberger Weg": "51.289500,7.051800", "Fliethe": "51.282900,7.042600", "Kalkstraße": "51.287100,7.046300",
    "Am Angerbach": "51.280100,7.025900", "Tiefenbacher Weg": "51.273100,7.062700",
}


def _address(street: str, number: str) -> dict[str, Any]:
    address = {
        "street": street,
        "street_number": number,
        "postal_code": "42489",
        "city": "Wülfrath",
        "country": "DE",
        "_tags": ["billing"],
    }
    if street in DEMO_COORDINATES:
        address["coordinates"] = DEMO_COORDINATES[street]
    return address


def demo_documents(org_id: str = "739224") -> list[dict[str, Any]]:
    """The demo entities: 8 contacts, 8 opportunities, 2 orders linked to the closed opportunities."""
    docs = []
    addresses = {o[0]: _address(o[3], o[4]) for o in DEMO_OPPORTUNITIES}
    for i, (key, (first, last, email)) in enumerate(DEMO_CONTACTS.items()):
        opportunity_key = next(o[0] for o in DEMO_OPPORTUNITIES if o[5] == key)
        docs.append(_entity("contact", key, i * 0.1, {
            "first_name": first, "last_name": last, "customer_number": f"K-{10001 + i}",
            "email": [{"email": email, "_tags": ["primary"]}],
            "phone": [{"phone": f"+49 2058 9{i:05d}", "_tags": ["primary"]}],
            "address": [addresses[opportunity_key]],
        }, org_id=org_id))
    for i, (key, title, status, street, number, contact, budget, tags) in enumerate(DEMO_OPPORTUNITIES):
        body = _entity("opportunity", key, 1 + i * 0.5, {
            "title": title, "_title": title, "status": status, "opportunity_number": f"OPP-2025-{101 + i}",
            "beschreibung": f"Glasfaserausbau {street}, Wülfrath",
            "customer": {"$relation": [{"entity_id": demo_id(f"contact:{contact}"), "_tags": ["primary"]}]},
            "billing_address": {"$relation_ref": [{"entity_id": demo_id(f"contact:{contact}"), "path": "address.0"}]},
            "address": _address(street, number),
            "budget": budget, "currency": "EUR",
        }, org_id=org_id)
        body["_tags"] = tags
        docs.append(body)
    for i, key in enumerate(("flehenberg", "schulzentrum")):
        opportunity = next(o for o in DEMO_OPPORTUNITIES if o[0] == key)
        order = _entity(
            "order",
            key,
            6 + i,
            {
                "_title": f"Ausbau: {opportunity[1]}",
                "order_number": f"AUF-2025-{201 + i}",
                "status": "placed" if i else "completed",
                "amount_total": opportunity[6] * 100,
                "amount_subtotal": round(opportunity[6] * 100 / 1.19),
                "currency": "EUR",
                "customer": {"$relation": [{"entity_id": demo_id(f"contact:{opportunity[5]}")}]},
                "opportunity": {"$relation": [{"entity_id": demo_id(f"opportunity:{key}")}]},
                "billing_address": [_address(opportunity[3], opportunity[4])],
                "line_items": [
                    {
                        "_position": 1,
                        "description": "Glasfaser-Ausbau Pauschale",
                        "quantity": 1,
                        "amount_total": opportunity[6] * 100,
                        "currency": "EUR",
                    }
                ],
            },
            org_id=org_id,
        )
        order["_tags"] = ["ausbau", "glasfaser"]
        docs.append(order)
        opportunity_doc = next(d for d in docs if d["_id"] == demo_id(f"opportunity:{key}"))
        opportunity_doc["items"] = {"$relation": [{"entity_id": order["_id"]}]}
    return docs


def seed_demo(store: SandboxStore) -> int:
    """Load the Wülfrath demo (idempotent: stable ids replace earlier copies). Returns the entity count."""
    docs = demo_documents(store.org_id)
    store.bulk_insert_entities(docs)
    with store.write() as conn:
        for schema in SCHEMAS:
            store.put_schema(conn, schema)
        for reason in CLOSING_REASONS:
            store.put_document(conn, "closing_reason", reason["id"], reason)
        store.put_document(conn, "definition", AUSBAU_DEFINITION_ID, AUSBAU_DEFINITION)
        store.put_document(conn, "definition", PLANUNG_DEFINITION["id"], PLANUNG_DEFINITION)
        store.put_document(conn, "flow_template", HAUSANSCHLUSS_TEMPLATE_ID, {**HAUSANSCHLUSS_TEMPLATE, "org_id": store.org_id})
    return len(docs)


def is_seeded(store: SandboxStore) -> bool:
    return store.get_document("definition", AUSBAU_DEFINITION_ID) is not None


STREETS = ["Wilhelmstraße", "Goethestraße", "Schulstraße", "Kirchstraße", "Am Diek", "Ellenbeek", "Bahnhofstraße",
           "Mettmanner Straße", "Düsseler Straße", "Heumarkt", "Tiegenhöfe", "Schlupkothen", "Erbacher Berg"]
FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hannes", "Ida", "Jonas", "Lena", "Mats", "Nora", "Paul"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Koch"]
STATUSES = ["ausstehend", "bearbeitung", "geschlossen", "abgebrochen"]


def bulk_documents(
    *, contacts: int, opportunities: int, orders: int, seed: int = 42, org_id: str = "739224"
) -> Iterator[dict[str, Any]]:
    """A deterministic large data set: the same arguments always give the same entities."""
    rng = random.Random(seed)
    contact_ids = []
    for i in range(contacts):
        street = rng.choice(STREETS)
        body = _entity("contact", f"bulk-{seed}-{i}", 10 + i / 1000, {
            "first_name": rng.choice(FIRST), "last_name": rng.choice(LAST),
            "email": [{"email": f"kunde{i}@example.org"}],
            "address": [_address(street, str(rng.randint(1, 120)))],
        }, org_id=org_id)
        contact_ids.append(body["_id"])
        yield body
    opportunity_ids = []
    for i in range(opportunities):
        street = rng.choice(STREETS)
        customer = rng.choice(contact_ids) if contact_ids else None
        body = _entity("opportunity", f"bulk-{seed}-{i}", 40 + i / 1000, {
            "title": f"Glasfaser {street} {i}", "_title": f"Glasfaser {street} {i}", "status": rng.choice(STATUSES),
            "address": _address(street, str(rng.randint(1, 120))), "budget": rng.randint(5, 200) * 1000, "currency": "EUR",
            **({"customer": {"$relation": [{"entity_id": customer}]}} if customer else {}),
        }, org_id=org_id)
        body["_tags"] = ["glasfaser"]
        opportunity_ids.append(body["_id"])
        yield body
    for i in range(orders):
        opportunity = opportunity_ids[i] if i < len(opportunity_ids) else None
        amount = rng.randint(5, 200) * 100_000
        body = _entity("order", f"bulk-{seed}-{i}", 60 + i / 1000, {
            "_title": f"Ausbau-Auftrag {i}", "order_number": f"AUF-B-{i:06d}", "status": rng.choice(["placed", "completed"]),
            "amount_total": amount, "currency": "EUR",
            **({"opportunity": {"$relation": [{"entity_id": opportunity}]}} if opportunity else {}),
        }, org_id=org_id)
        yield body


def seed_bulk(store: SandboxStore, *, contacts: int, opportunities: int, orders: int, seed: int = 42) -> int:
    """Insert a bulk data set in batches; returns the number of entities written."""
    total = 0
    batch: list[dict[str, Any]] = []
    for body in bulk_documents(contacts=contacts, opportunities=opportunities, orders=orders, seed=seed, org_id=store.org_id):
        batch.append(body)
        if len(batch) >= 5000:
            total += store.bulk_insert_entities(batch)
            batch = []
    if batch:
        total += store.bulk_insert_entities(batch)
    return total
