"""Benchmark data shaped like a Stadtwerk's epilot organisation, not like the sandbox's demo conveniences.

- contacts with lists of e-mails and phones and an address;
- opportunities with a German description, `wohneinheiten`, tags, an address, a `customer` relation and,
  for some, a `workflows` attribute (a running workflow epilot mirrored onto the entity) and the
  workflow execution itself: "Ausbau Glasfaser" part done, with assignees and due dates, and for
  about one in six an earlier execution that was closed; epilot lists them slim, so a sync reads each;
- orders with totals in cents, billing fields and line items; about 70 % are linked only through
  their opportunity's `items` relation, the rest also carry an `opportunity` relation of their own;
- about a sixth of all entities in import batches that share one exact `_updated_at`;
- payloads of 1 to 3 KB with epilot's system attributes (`_acl`, `_owners`, `_schema`, `_org`, ...).

Further shapes (`SHAPES`): `orphans` (60 % contacts, 30 % opportunities, 10 % orders of which 30 % belong
to no opportunity), `shared` (opportunities on a few hundred buildings, most contacts related to
nothing), `wide` (25 unknown attributes per entity, import batches of thousands across page boundaries).

Deterministic: the same arguments give the same entities.
"""
from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from integrations.epilot_sandbox import SandboxStore
from integrations.epilot_sandbox.seed import AUSBAU_DEFINITION

NAMESPACE = uuid.UUID("8f0b9a52-3c1e-4d7a-9b61-0d2f7c9e5a13")
STREETS = ["Goethestraße", "Wilhelmstraße", "Kastanienallee", "Rohdenhauser Straße", "Düsseler Straße", "Flehenberg",
           "Schulstraße", "Am Diek", "Kalkstraße", "Angerbachstraße", "Nordstraße", "Erbacher Berg", "Fliethe", "Kocherscheidt"]
FIRST = ["Anna", "Jonas", "Leonie", "Paul", "Marie", "Lukas", "Sophie", "Felix", "Emma", "Elias", "Hannah", "Ben"]
LAST = ["Meier", "Schmidt", "Wagner", "Becker", "Hoffmann", "Schulz", "Koch", "Richter", "Klein", "Wolf", "Neumann"]
WORDS = ("Glasfaser Hausanschluss Tiefbau Genehmigung Trasse Leerrohr Netzverteiler Begehung Wohneinheit Vermarktung "
         "Kabelverzweiger Montage Abnahme Bauabschnitt Gehweg Bohrung Spleißung Anschlussdose Eigentümer Zustimmung").split()
OPPORTUNITY_STATUSES = ["ausstehend", "bearbeitung", "bearbeitung", "geschlossen", "abgebrochen"]
ORDER_STATUSES = ["placed", "placed", "completed", "draft", "quote", "cancelled"]
START = dt.datetime(2024, 1, 8, 7, 0, tzinfo=dt.UTC)


def _id(kind: str, i: int, seed: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{seed}:{kind}:{i}"))


def _stamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _system(schema: str, entity_id: str, created: dt.datetime, updated: dt.datetime, org_id: str, title: str) -> dict[str, Any]:
    return {
        "_id": entity_id, "_schema": schema, "_org": org_id, "_title": title, "_created_at": _stamp(created),
        "_updated_at": _stamp(updated), "_owners": [{"org_id": org_id, "user_id": "10010"}],
        "_acl": {"view": [f"org:{org_id}"], "edit": [f"org:{org_id}"], "delete": [f"org:{org_id}"]},
        "_purpose": [], "_manifest": [], "_files": [],
    }


def _address(rng: random.Random) -> dict[str, Any]:
    return {"_tags": ["billing"] if rng.random() < 0.3 else [], "street": rng.choice(STREETS),
            "street_number": str(rng.randint(1, 140)) + (rng.choice(["", "", "", "a", "b"])), "postal_code": "42489",
            "city": "Wülfrath", "country": "DE", "additional_info": ""}


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


@dataclass(frozen=True)
class Shape:
    """How an organisation's data is shaped: the mix of schemas and the oddities real data has."""

    contacts: float = 0.4  # share of all entities
    opportunities: float = 0.4  # the rest are orders
    orphan_orders: float = 0.0  # orders no opportunity names and that name none (shop orders, change orders)
    addresses: int = 0  # opportunities share this many addresses (multi-dwelling buildings); 0: each its own
    extra_attributes: int = 0  # attributes of the organisation's own schema design, unknown to the mirror, per entity
    batch_chance: float = 0.0004  # chance that an entity starts an import batch sharing one exact _updated_at
    batch_size: tuple[int, int] = (300, 700)


SHAPES = {
    # Every order named by one opportunity; about a sixth of the entities in import batches.
    "epilot": Shape(),
    # The outside check's data: 60 % contacts, 30 % opportunities, 10 % orders, 30 % of them named by no opportunity.
    "orphans": Shape(contacts=0.6, opportunities=0.3, orphan_orders=0.3),
    # Opportunities crowded onto a few hundred buildings, most contacts related to nothing, some orphan orders.
    "shared": Shape(contacts=0.6, opportunities=0.3, orphan_orders=0.1, addresses=400),
    # Wide documents (25 unknown attributes each) and import batches of thousands that share one _updated_at
    # across page boundaries.
    "wide": Shape(orphan_orders=0.1, extra_attributes=25, batch_chance=0.001, batch_size=(1500, 3000)),
}


def _extra(rng: random.Random, count: int) -> dict[str, Any]:
    """Attributes an organisation adds to its schemas: texts, numbers, flags, dates, lists, nested objects."""
    kinds = [lambda: _text(rng, rng.randint(2, 12)), lambda: rng.randint(0, 10_000), lambda: rng.random() < 0.5,
             lambda: f"20{rng.randint(20, 27)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
             lambda: rng.sample(WORDS, rng.randint(1, 4)), lambda: {"value": rng.randint(1, 99), "unit": "m"}, lambda: None]
    return {f"sw_{name}_{k}": rng.choice(kinds)() for k, name in enumerate(rng.sample(WORDS, min(count, len(WORDS))))} | {
        f"sw_feld_{k}": rng.choice(kinds)() for k in range(max(0, count - len(WORDS)))}


def epilot_documents(*, entities: int, seed: int = 7, org_id: str = "739224", workflow_share: float = 0.05,
                     shape: Shape = SHAPES["epilot"]) -> Iterator[dict[str, Any]]:
    """`entities` documents in the proportions of `shape`, in the order epilot would have made them."""
    rng = random.Random(seed)
    contacts, opportunities = int(entities * shape.contacts), int(entities * shape.opportunities)
    orders = entities - contacts - opportunities
    clock = START
    batch_left = 0
    batch_stamp = clock

    def next_stamp() -> dt.datetime:
        # Some entities come from imports whose batch shares one exact _updated_at.
        nonlocal clock, batch_left, batch_stamp
        clock += dt.timedelta(seconds=rng.randint(20, 400), milliseconds=rng.randint(0, 999))
        if batch_left:
            batch_left -= 1
            return batch_stamp
        if rng.random() < shape.batch_chance:
            batch_left, batch_stamp = rng.randint(*shape.batch_size), clock
            return batch_stamp
        return clock

    contact_ids = [_id("contact", i, seed) for i in range(contacts)]
    order_ids = [_id("order", i, seed) for i in range(orders)]
    orphans = {n for n in range(orders) if random.Random(f"{seed}:orphan:{n}").random() < shape.orphan_orders}
    buildings = [_address(random.Random(f"{seed}:building:{k}")) for k in range(shape.addresses)]
    order_owner: dict[int, int] = {}
    # Named orders are spread over the opportunities: each is named by exactly one, as many as there are.
    spread = max(1, opportunities // max(1, orders))
    for i in range(contacts):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        moment = next_stamp()
        created = moment - dt.timedelta(days=rng.randint(0, 300))
        body = _system("contact", contact_ids[i], created, moment, org_id, f"{first} {last}")
        body.update({
            "salutation": rng.choice(["Frau", "Herr", ""]), "first_name": first, "last_name": last,
            "customer_number": f"K-{100000 + i}", "_tags": rng.sample(["Privatkunde", "Vermieter", "Gewerbe", "Newsletter"], 2),
            "email": [{"_tags": ["privat"], "email": f"{first.lower()}.{last.lower()}{i}@beispiel.de"}]
            + ([{"_tags": ["geschäftlich"], "email": f"kontakt{i}@firma-wuelfrath.de"}] if rng.random() < 0.3 else []),
            "phone": [{"_tags": ["mobil"], "phone": f"+49 171 {rng.randint(1000000, 9999999)}"}]
            + ([{"_tags": ["festnetz"], "phone": f"+49 2058 {rng.randint(10000, 99999)}"}] if rng.random() < 0.5 else []),
            "address": [_address(rng)], "birthdate": f"19{rng.randint(40, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
            "consent_email_marketing": {"status": rng.choice(["active", "inactive"]), "identifiers": []},
            "notes": _text(rng, rng.randint(5, 60)),
        })
        if shape.extra_attributes:
            body.update(_extra(rng, shape.extra_attributes))
        yield body
    for i in range(opportunities):
        moment = next_stamp()
        street = rng.choice(STREETS)
        items = [n for n in range(i // spread, min(orders, i // spread + 1))
                 if i % spread == 0 and n not in order_owner and n not in orphans]
        for n in items:
            order_owner[n] = i
        created = moment - dt.timedelta(days=rng.randint(0, 200))
        body = _system("opportunity", _id("opportunity", i, seed), created, moment, org_id, f"Glasfaser {street} {i}")
        body.update({
            "title": f"Glasfaser {street} {i}", "opportunity_number": f"OPP-{i:06d}", "status": rng.choice(OPPORTUNITY_STATUSES),
            "description": _text(rng, rng.randint(40, 170)), "wohneinheiten": rng.choice([1, 1, 1, 2, 3, 6, 12]),
            "_tags": ["glasfaser", rng.choice(["vorvermarktung", "ausbau", "nachverdichtung"])],
            "address": [rng.choice(buildings) if buildings else _address(rng)],
            "customer": {"$relation": [{"entity_id": rng.choice(contact_ids), "_tags": []}]} if contact_ids else None,
            "source": rng.choice(["journey", "manual", "import"]), "dates": [{"value": _stamp(moment), "_tags": ["Begehung"]}],
        })
        if items:
            body["items"] = {"$relation": [{"entity_id": order_ids[n], "_tags": []} for n in items]}
        if rng.random() < workflow_share:
            body["workflows"] = {"primary": {"id": f"ex{i}", "definition_id": "wfQpwhJF6J", "status": "STARTED",
                                             "task_name": "Trassenplanung erstellen", "assignees": ["10010"]}}
        if shape.extra_attributes:
            body.update(_extra(rng, shape.extra_attributes))
        yield body
    for n in range(orders):
        moment = next_stamp()
        owner = order_owner.get(n)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        lines = [{"_id": str(uuid.uuid5(NAMESPACE, f"{seed}:line:{n}:{k}")), "product_name": rng.choice(
            ["Glasfaser-Hausanschluss", "Glasfaser 500", "Glasfaser 1000", "Router", "Installation"]),
            "quantity": 1, "unit_amount": rng.randint(0, 150_000), "amount_total": rng.randint(0, 150_000), "currency": "EUR",
            "taxes": [{"rate": "19", "amount": rng.randint(0, 20_000)}]} for k in range(rng.randint(1, 4))]
        body = _system("order", order_ids[n], moment - dt.timedelta(days=rng.randint(0, 100)), moment, org_id, f"Auftrag {n}")
        body.update({
            "order_number": f"AUF-{n:06d}", "status": rng.choice(ORDER_STATUSES),
            "source": {"title": "back-office", "href": None},
            "currency": "EUR", "amount_subtotal": sum(line["amount_total"] for line in lines),
            "amount_total": sum(line["amount_total"] for line in lines) * 119 // 100, "line_items": lines,
            "billing_first_name": first, "billing_last_name": last, "billing_email": f"{first.lower()}{n}@beispiel.de",
            "billing_address": [_address(rng)], "payment_method": [{"type": rng.choice(["invoice", "sepa"])}],
        })
        if owner is not None and rng.random() < 0.3:
            body["opportunity"] = {"$relation": [{"entity_id": _id("opportunity", owner, seed), "_tags": []}]}
        if shape.extra_attributes:
            body.update(_extra(rng, shape.extra_attributes))
        yield body


def executions_of(opportunity: dict[str, Any], *, seed: int) -> list[dict[str, Any]]:
    """The V1 executions of an opportunity with a `workflows` attribute, as epilot's getExecution answers them:
    the running "Ausbau Glasfaser" of the attribute, and for about one in six an earlier one that was closed."""
    primary = opportunity["workflows"]["primary"]
    rng = random.Random(f"{seed}:{primary['id']}")
    started = dt.datetime.fromisoformat(opportunity["_updated_at"]) - dt.timedelta(days=rng.randint(1, 90))
    context = {"id": opportunity["_id"], "schema": "opportunity", "title": opportunity["_title"]}
    running = _execution(rng, primary["id"], context, started, done_steps=rng.randint(0, 7), status="STARTED",
                         org_id=opportunity["_org"])
    if rng.random() >= 1 / 6:
        return [running]
    closed = _execution(rng, f"{primary['id']}-old", context, started - dt.timedelta(days=rng.randint(30, 200)),
                        done_steps=rng.randint(0, 3), status="CLOSED", org_id=opportunity["_org"])
    closed.update({"completedTime": _stamp(started), "closingReasonDescription": "Eigentümer hat nicht zugestimmt",
                   "selectedClosingReasons": [{"id": "crKeinInteresse", "title": "Eigentümer hat kein Interesse mehr"}]})
    return [closed, running]


def _execution(rng: random.Random, execution_id: str, context: dict[str, str], started: dt.datetime, *, done_steps: int,
               status: str, org_id: str) -> dict[str, Any]:
    flow, position = [], 0
    for number, section in enumerate(AUSBAU_DEFINITION["flow"]):
        section_id = f"{execution_id}s{number}"
        steps = []
        for step in section["steps"]:
            state = "COMPLETED" if position < done_steps else "IN_PROGRESS" if position == done_steps else "PENDING"
            moment = started + dt.timedelta(days=3 * position, hours=rng.randint(0, 8))
            steps.append({key: value for key, value in {
                "id": f"{section_id}t{len(steps)}", "definitionId": step["id"], "name": step["name"], "type": "STEP",
                "status": state, "sectionId": section_id, "executionId": execution_id, "enabled": True,
                "executionType": "MANUAL", "assignedTo": [rng.choice(["10010", "10011", "10012"])],
                "assignedToInProgress": "10010" if state == "IN_PROGRESS" else None,
                "dueDate": _stamp(moment + dt.timedelta(days=14)) if rng.random() < 0.6 else None,
                "created": _stamp(started), "lastUpdated": _stamp(moment),
                **({"startedTime": _stamp(moment), "completedTime": _stamp(moment + dt.timedelta(days=2))}
                   if state == "COMPLETED" else {"startedTime": _stamp(moment)} if state == "IN_PROGRESS" else {}),
                "description": {"enabled": True, "value": _text(rng, rng.randint(4, 16))},
            }.items() if value is not None})
            position += 1
        states = {step["status"] for step in steps}
        flow.append({"id": section_id, "definitionId": section["id"], "name": section["name"], "type": "SECTION",
                     "status": "COMPLETED" if states == {"COMPLETED"} else "OPEN" if states == {"PENDING"} else "IN_PROGRESS",
                     "steps": steps})
    open_step = next((step for section in flow for step in section["steps"] if step["status"] != "COMPLETED"), None)
    return {
        "id": execution_id, "definitionId": AUSBAU_DEFINITION["id"], "orgId": org_id, "name": AUSBAU_DEFINITION["name"],
        "status": status, "trigger": "MANUAL", "creationTime": _stamp(started),
        "lastUpdateTime": _stamp(started + dt.timedelta(days=3 * done_steps)), "assignedTo": ["10010"],
        "contexts": [context], "flow": flow, "updateEntityAttributes": AUSBAU_DEFINITION["updateEntityAttributes"],
        "enableECPWorkflow": False, **({"nextOpenStep": {"id": open_step["id"]}} if open_step else {}),
    }


def seed_epilot_shaped(store: SandboxStore, *, entities: int, seed: int = 7, workflow_share: float = 0.05,
                       shape: Shape = SHAPES["epilot"]) -> int:
    """Insert `entities` epilot-shaped documents into a sandbox store (`workflow_share` of the opportunities with a
    running workflow, whose executions are stored too); returns how many entities."""
    total, batch, executions = 0, [], []
    for body in epilot_documents(entities=entities, seed=seed, org_id=store.org_id, workflow_share=workflow_share,
                                 shape=shape):
        batch.append(body)
        if "workflows" in body:
            executions.extend(executions_of(body, seed=seed))
        if len(batch) >= 5000:
            total += store.bulk_insert_entities(batch)
            batch = []
    total += store.bulk_insert_entities(batch) if batch else 0
    with store.write() as conn:
        for execution in executions:
            store.put_document(conn, "execution", execution["id"], execution,
                               links=[(context["id"], context["schema"]) for context in execution["contexts"]])
    return total
