"""A rollout area mid-build for the demo: Flandersbach, whose buildings stand at every stage, some of them stuck.

Its history is written as epilot would hold it after months of work: opportunities and orders
created weeks ago, "Ausbau Glasfaser" (V1) executions with steps completed on past days and
"Hausanschluss Glasfaser" (V2) flows on the orders, each with the completion times epilot reports.
Stable ids: seeding again replaces the same documents.
"""
from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

from integrations.epilot_sandbox.query import iso_ms
from integrations.epilot_sandbox.seed import AUSBAU_DEFINITION_ID, HAUSANSCHLUSS_TEMPLATE_ID, demo_id
from integrations.epilot_sandbox.store import SandboxStore
from integrations.epilot_sandbox.workflows import (
    WorkflowHandlers,
    _advance_v1,
    _execution_from_definition,
    _flow_execution_from_template,
    _v1_steps,
)

AREA = "Flandersbach"
STREET = "Flandersbacher Weg"
CENTRE = (51.2958, 7.0031)  # Flandersbach, north of Wülfrath's centre
# (house number, units, stage, days since it reached that stage): every stage, some standing too long.
BUILDINGS = [
    (1, 2, "in_scope", 0), (3, 1, "in_scope", 0), (5, 4, "in_scope", 0), (7, 1, "in_scope", 0),
    (9, 2, "signed", 12), (11, 6, "signed", 30), (13, 1, "signed", 125), (15, 2, "signed", 140),
    (17, 3, "passed", 8), (19, 1, "passed", 21), (21, 2, "passed", 33), (23, 8, "passed", 75),
    (25, 1, "connected", 3), (27, 2, "connected", 9), (29, 4, "connected", 22), (31, 1, "connected", 41),
    (33, 2, "activated", 4), (35, 1, "activated", 18), (37, 3, "activated", 36), (39, 2, "activated", 57),
    (41, 1, "activated", 80), (43, 12, "activated", 95),
]
# The days between milestones of a building, counted back from the day it reached its stage (each building varies
# them by up to a third, so the forecasts have a spread to learn).
SIGNED_TO_PASSED, PASSED_TO_CONNECTED, CONNECTED_TO_ACTIVATED = 45, 20, 10
# The promises on the orders (services/promises.py reads the attributes): connection 65 days after the contract,
# activation 14 days after the connection; two buildings were promised less than the build usually takes.
PROMISED_CONNECTION_DAYS = {11: 40, 21: 50}
PROMISED_ACTIVATION_DAYS = 14


def position(number: int) -> tuple[float, float]:
    """The building's (lat, lng): along a bending street, the houses alternately on either side."""
    along = (number // 2) / 10
    side = 1 if (number // 2) % 2 == 0 else -1
    lat = CENTRE[0] + 0.0022 * along + 0.0007 * math.sin(2.4 * along) + side * 0.00011
    lng = CENTRE[1] + 0.0036 * along - side * 0.00008
    return round(lat, 6), round(lng, 6)


def coordinates(number: int) -> str:
    """The building's position as "lat,lng" (how the demo's addresses carry it)."""
    lat, lng = position(number)
    return f"{lat:.6f},{lng:.6f}"


def address(number: int) -> dict[str, Any]:
    return {"street": STREET, "street_number": str(number), "postal_code": "42489", "city": "Wülfrath", "country": "DE",
            "coordinates": coordinates(number)}


def area_rows() -> list[dict[str, str]]:
    """The area's address list as a surveyor delivers it: every building with its units and coordinates."""
    return [{"area": AREA, "postal_code": "42489", "street": STREET, "house_number": str(number), "units": str(units),
             "lat": str(position(number)[0]), "lon": str(position(number)[1])}
            for number, units, _stage, _days in BUILDINGS]


def seed_build_site(store: SandboxStore, *, now: dt.datetime | None = None) -> int:
    """Write Flandersbach's opportunities, orders and workflow history into the sandbox; returns the buildings with a
    contract."""
    now = now or dt.datetime.now(dt.UTC)
    rng = random.Random(7)
    definition = store.get_document("definition", AUSBAU_DEFINITION_ID)
    template = store.get_document("flow_template", HAUSANSCHLUSS_TEMPLATE_ID)
    handlers = WorkflowHandlers()
    handlers.store = store
    signed = 0
    for number, units, stage, days in BUILDINGS:
        if stage == "in_scope":
            continue
        reached = now - dt.timedelta(days=days, hours=rng.randint(1, 9))
        dates = _milestone_dates(stage, reached, rng)
        opportunity_id, order_id = demo_id(f"opportunity:flandersbach-{number}"), demo_id(f"order:flandersbach-{number}")
        created = iso_ms((dates["signed"] - dt.timedelta(days=3)).isoformat())
        base = {"_org": store.org_id, "_owners": [{"org_id": store.org_id}], "_tags": ["glasfaser", "ftth"],
                "_acl": {"view": [f"org:{store.org_id}"], "edit": [f"org:{store.org_id}"],
                         "delete": [f"org:{store.org_id}"]}}
        opportunity = {**base, "_id": opportunity_id, "_schema": "opportunity", "_created_at": created,
                       "_updated_at": created, "_title": f"Glasfaser {STREET} {number}", "title": f"Glasfaser {STREET} {number}",
                       "status": "geschlossen", "address": address(number), "wohneinheiten": units,
                       "items": {"$relation": [{"entity_id": order_id}]}}
        signed_at = iso_ms(dates["signed"].isoformat())
        order = {**base, "_id": order_id, "_schema": "order", "_created_at": signed_at, "_updated_at": signed_at,
                 "_title": f"Hausanschluss {STREET} {number}", "order_number": f"AUF-FB-{number:03d}", "status": "placed",
                 "amount_total": 79900 * units, "currency": "EUR",
                 "opportunity": {"$relation": [{"entity_id": opportunity_id}]},
                 "zugesagter_anschlusstermin": (dates["signed"] + dt.timedelta(
                     days=PROMISED_CONNECTION_DAYS.get(number, 65))).date().isoformat()}
        if "connected" in dates:
            order["zugesagte_aktivierung"] = (dates["connected"] + dt.timedelta(days=PROMISED_ACTIVATION_DAYS)).date().isoformat()
        store.bulk_insert_entities([opportunity, order])
        signed += 1
        with store.write() as conn:
            if "passed" in dates or days > 20:  # recently signed buildings wait for their workflow
                execution = _v1_history(definition, opportunity, dates, store.org_id)
                contexts = execution["contexts"]
                store.put_document(conn, "execution", execution["id"], execution,
                                   links=[(c["id"], c["schema"]) for c in contexts])
                handlers._reflect_execution(conn, execution, contexts)
            if "connected" in dates:
                flow = _v2_history(template, order, dates, store.org_id)
                store.put_document(conn, "flow_execution", flow["id"], flow,
                                   links=[(c["entity_id"], c["entity_schema"]) for c in flow["contexts"]])
                handlers._reflect_execution(conn, flow, flow["contexts"])
    return signed


def _milestone_dates(stage: str, reached: dt.datetime, rng: random.Random) -> dict[str, dt.datetime]:
    order = ["signed", "passed", "connected", "activated"]
    gaps = {"passed": SIGNED_TO_PASSED, "connected": PASSED_TO_CONNECTED, "activated": CONNECTED_TO_ACTIVATED}
    gaps = {name: round(days * rng.uniform(0.67, 1.33)) for name, days in gaps.items()}
    dates = {stage: reached}
    for earlier, later in zip(reversed(order[: order.index(stage)]), reversed(order[1: order.index(stage) + 1]), strict=True):
        dates[earlier] = dates[later] - dt.timedelta(days=gaps[later])
    return dates


def _stamp(moment: dt.datetime) -> str:
    return iso_ms(moment.isoformat())


def _v1_history(definition: dict[str, Any], opportunity: dict[str, Any], dates: dict[str, dt.datetime],
                org_id: str) -> dict[str, Any]:
    """An "Ausbau Glasfaser" execution on the opportunity, its steps completed up to the building's furthest milestone:
    planning after the contract, "Tiefbau durchführen" the day the street was passed, the house connection and the
    splice the day the building was connected."""
    context = {"id": opportunity["_id"], "schema": "opportunity", "title": opportunity["_title"]}
    execution = _execution_from_definition(definition, [context], "MANUAL", org_id)
    execution["id"] = demo_id(f"execution:{opportunity['_id']}")[:11]
    started = dates["signed"] + dt.timedelta(days=2)
    execution["creationTime"] = _stamp(started)
    passed, connected = dates.get("passed"), dates.get("connected")
    when_done = {"Trassenplanung erstellen": started + dt.timedelta(days=3),
                 "Genehmigungen einholen": started + dt.timedelta(days=8)}
    if passed:
        when_done.update({"Tiefbau beauftragen": passed - dt.timedelta(days=12), "Tiefbau durchführen": passed})
    if connected:
        when_done.update({"Hausanschluss setzen": connected, "Glasfaser einblasen und spleißen": connected})
    last = started
    for step in _v1_steps(execution):
        when = when_done.get(step["name"])
        if when is None:
            break
        step.update(executionId=execution["id"], status="COMPLETED", completedTime=_stamp(when),
                    statusLastUpdated=_stamp(when), lastUpdated=_stamp(when))
        last = max(last, when)
    _advance_v1(execution, _stamp(last))
    return execution


def _v2_history(template: dict[str, Any], order: dict[str, Any], dates: dict[str, dt.datetime],
                org_id: str) -> dict[str, Any]:
    """A "Hausanschluss Glasfaser" flow on the order: the appointment and the modem on connection, the activation when
    the building went live (left open otherwise: that is what it waits on)."""
    context = {"entity_id": order["_id"], "entity_schema": "order", "is_primary": True}
    flow = _flow_execution_from_template(template, [context], {"type": "MANUAL"}, org_id)
    flow["id"] = demo_id(f"flow:{order['_id']}")[:12]
    flow["created_at"] = _stamp(dates["connected"] - dt.timedelta(days=6))
    completions = {"Termin mit Eigentümer vereinbaren": dates["connected"] - dt.timedelta(days=5),
                   "Glasfaser-Modem montieren": dates["connected"]}
    if "activated" in dates:
        completions["Anschluss aktivieren"] = dates["activated"]
    for task in flow["tasks"]:
        when = completions.get(task["name"])
        if when is not None:
            task.update(status="COMPLETED", updated_at=_stamp(when))
            task["analytics"] = {"completed_at": _stamp(when)}
    remaining = [task for task in flow["tasks"] if task["status"] != "COMPLETED"]
    last = max(completions.values())
    flow["crt_tasks"] = [{"id": remaining[0]["id"], "crt_since": _stamp(last)}] if remaining else []
    if not remaining:
        flow["status"] = "DONE"
        flow.setdefault("analytics", {})["completed_at"] = _stamp(last)
    flow["updated_at"] = _stamp(last)
    return flow
