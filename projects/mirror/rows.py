"""epilot documents to mirror rows: every value whole and fitting its column, or a reason to quarantine."""
from __future__ import annotations

import datetime as dt
import functools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models

from integrations.epilot.types import MalformedPayload, SystemAttributes, relation_ids, system_attributes
from projects.mirror.addresses import address_key, searchable
from projects.mirror.bulk import dumps_json, dumps_json_utf8
from projects.mirror.schemas import model_for

MAX_PAYLOAD_BYTES = 512 * 1024


COMMON_FIELDS = ["title", "status", "tags", "epilot_created_at", "epilot_updated_at", "epilot_deleted_at", "payload", "synced_at"]
EXTRA_FIELDS: dict[str, list[str]] = {
    "contact": ["email", "search_text"],
    "opportunity": ["customer_epilot_id", "street", "postal_code", "city", "address_key", "budget", "latitude",
                    "longitude", "search_text"],
    "order": ["amount_total", "currency", "opportunity_epilot_id", "search_text"],
}


# What the header search finds a contact by, besides its title and e-mail addresses.
CONTACT_WORDS = ("first_name", "last_name", "customer_number", "company_name")


class QuarantineReason(ValueError):
    """An entity is readable but cannot be mirrored; the message says why."""


ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def dumps_payload(payload: Any) -> str:
    """The JSON text the mirror stores for a document (orjson, ten times faster; json for what orjson refuses)."""
    return dumps_json(payload, default=str)


def dumps_payload_utf8(payload: Any) -> bytes:
    """`dumps_payload`'s text as UTF-8 bytes: how a sync's row carries it to the database."""
    return dumps_json_utf8(payload, default=str)


def entity_row(schema: str, document: Any, now: dt.datetime) -> dict[str, Any]:
    """The model fields of one epilot document; raises QuarantineReason for what cannot be mirrored, malformed system
    attributes included. The row holds the document itself as its payload: the caller hands it over."""
    try:
        system = system_attributes(document)
    except MalformedPayload as malformed:
        raise QuarantineReason(str(malformed)) from None
    return document_row(schema, system, document, now)


def document_row(schema: str, entity: SystemAttributes, payload: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The model fields of a document whose system attributes `entity` are (`system_attributes`); raises
    QuarantineReason for what cannot be mirrored. The row holds `payload` itself: the caller hands it over."""
    if type(payload) is not dict:  # a read-only view, say: the JSON encoders take dicts
        payload = dict(payload)
    if entity.updated_at is None:
        raise QuarantineReason("_updated_at is missing")
    encoded = dumps_payload_utf8(payload)
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise QuarantineReason(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB")
    if has_nul(encoded):
        raise QuarantineReason("the payload contains a NUL character (\\u0000), which PostgreSQL cannot store")
    title = entity.title or ""
    status = payload.get("status")
    if status is not None and not isinstance(status, str):
        raise QuarantineReason(f"status is {type(status).__name__}, not a string")
    tags = list(entity.tags)
    row: dict[str, Any] = {
        "title": title, "status": status or "", "tags__json": dumps_json(tags),  # written as this text, never read
        "epilot_created_at": entity.created_at, "epilot_updated_at": entity.updated_at,
        "epilot_deleted_at": entity.deleted_at, "payload": payload, "payload__json": encoded, "synced_at": now,
    }
    if schema == "contact":
        emails = payload.get("email")
        first = emails[0] if isinstance(emails, list) and emails else None
        row["email"] = str(first.get("email", "")) if isinstance(first, dict) else ""
        all_emails = [as_text(item.get("email")) for item in emails if isinstance(item, dict)] if isinstance(emails, list) else []
        row["search_text"] = searchable(title, *(as_text(payload.get(key)) for key in CONTACT_WORDS), *all_emails)
    elif schema == "opportunity":
        row["customer_epilot_id"] = single_relation(payload, "customer")
        address = first_address(payload)
        row["street"] = " ".join(as_text(address.get(key)) for key in ("street", "street_number")).strip()
        row["postal_code"] = as_text(address.get("postal_code"))
        row["city"] = as_text(address.get("city"))
        row["address_key"] = address_key(row["postal_code"], as_text(address.get("street")),
                                          as_text(address.get("street_number")))[:240]
        row["budget"] = as_decimal(payload.get("budget"), "budget")
        row["latitude"], row["longitude"] = coordinates_of(address) or (None, None)
        row["search_text"] = searchable(title, as_text(payload.get("opportunity_number")), row["street"],
                                        row["postal_code"], row["city"])
    elif schema == "order":
        amount = payload.get("amount_total")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, (int, float))):
            raise QuarantineReason(f"amount_total is {type(amount).__name__}, not a number")
        if isinstance(amount, float) and not math.isfinite(amount):
            raise QuarantineReason("amount_total is not a finite number")
        row["amount_total"] = int(amount) if amount is not None else None
        row["currency"] = as_text(payload.get("currency"))
        row["opportunity_epilot_id"] = single_relation(payload, "opportunity")
        row["search_text"] = searchable(title, as_text(payload.get("order_number")))
    row["epilot_id"] = entity.id
    check_fits(model_for(schema), row)
    return row


def first_address(payload: dict[str, Any]) -> dict[str, Any]:
    """The opportunity's address: its `address` attribute, else the first attribute that holds an address (street,
    postal code or city), first item of a list; {} when there is none."""
    def first_item(value: Any) -> Any:
        return value[0] if isinstance(value, list) and value else value

    preferred = first_item(payload.get("address"))
    if isinstance(preferred, dict):
        return preferred
    for key, value in payload.items():
        candidate = first_item(value)
        if not key.startswith("_") and isinstance(candidate, dict) and {"street", "postal_code", "city"} & set(candidate):
            return candidate
    return {}


def coordinates_of(address: dict[str, Any]) -> tuple[float, float] | None:
    """(latitude, longitude) of an epilot address, from `coordinates` or `geo`; None when absent or unreadable.

    Read leniently, as tenants fill it differently: "lat,lng" text, an object with lat/lng (lon, latitude,
    longitude), a GeoJSON point ([lng, lat]) or a [lat, lng] pair. A map is optional; a bad value never quarantines.
    """
    for name in ("coordinates", "geo"):
        value = address.get(name)
        if isinstance(value, dict) and isinstance(value.get("coordinates"), list):  # GeoJSON Point
            point = value["coordinates"][:2]
            pair = (point[1], point[0]) if len(point) == 2 else None
        elif isinstance(value, dict):
            lat = next((value[k] for k in ("lat", "latitude") if k in value), None)
            lng = next((value[k] for k in ("lng", "lon", "long", "longitude") if k in value), None)
            pair = (lat, lng)
        elif isinstance(value, str) and value.count(",") == 1:
            pair = tuple(part.strip() for part in value.split(","))
        elif isinstance(value, list) and len(value) == 2:
            pair = tuple(value)
        else:
            pair = None
        located = _as_point(pair)
        if located:
            return located
    return None


def _as_point(pair: Any) -> tuple[float, float] | None:
    try:
        lat, lng = (float(part) for part in pair)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lng)) or not (-90 <= lat <= 90 and -180 <= lng <= 180) or (lat, lng) == (0, 0):
        return None
    return lat, lng


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


INTEGER_RANGES = {
    "BigIntegerField": (-(2**63), 2**63 - 1),
    "IntegerField": (-(2**31), 2**31 - 1),
    "PositiveIntegerField": (0, 2**31 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
}


# The epilot attribute each mirrored column comes from, to name it in a quarantine reason.
SOURCE_ATTRIBUTES = {
    "epilot_id": "_id", "title": "_title", "email": "email[0].email", "customer_epilot_id": "customer ($relation entity_id)",
    "street": "address street + street_number", "postal_code": "address postal_code", "city": "address city",
    "opportunity_epilot_id": "opportunity ($relation entity_id)", "definition_epilot_id": "definition id",
}


def check_fits(model: type[models.Model], row: dict[str, Any]) -> None:
    """Raise QuarantineReason when a value does not fit its column whole (length, range, NUL).

    PostgreSQL refuses such values and SQLite would keep them; a mirrored value is either
    whole or quarantined, never cut.
    """
    texts, integers = _column_checks(model)
    for name, max_length in texts:
        value = row.get(name)
        if not isinstance(value, str):
            continue
        if max_length is not None and len(value) > max_length:
            raise QuarantineReason(f"{SOURCE_ATTRIBUTES.get(name, name)} is {len(value)} characters long; "
                                   f"the mirror keeps at most {max_length}")
        if "\x00" in value:
            raise QuarantineReason(f"{SOURCE_ATTRIBUTES.get(name, name)} contains a NUL character, "
                                   "which PostgreSQL cannot store")
    for name, low, high in integers:
        value = row.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            raise QuarantineReason(f"{SOURCE_ATTRIBUTES.get(name, name)} is out of range ({value})")


@functools.cache
def _column_checks(model: type[models.Model]) -> tuple[list[tuple[str, int | None]], list[tuple[str, int, int]]]:
    """What check_fits looks at, worked out once per model (it runs for every entity): the text columns with
    their maximum length, and the integer columns with their range. JSON columns are checked as a whole."""
    texts, integers = [], []
    for field in model._meta.concrete_fields:
        if isinstance(field, models.JSONField):
            continue
        if isinstance(field, (models.CharField, models.TextField)):
            texts.append((field.name, field.max_length))
        elif field.get_internal_type() in INTEGER_RANGES:
            integers.append((field.name, *INTEGER_RANGES[field.get_internal_type()]))
    return texts, integers


def has_nul(encoded: str | bytes) -> bool:
    """Whether a JSON text (as json.dumps or orjson writes it, or its UTF-8 bytes) holds a NUL character in any string
    or key."""
    if isinstance(encoded, bytes):
        return b"\\u0000" in encoded and ESCAPED_NUL.search(encoded.decode()) is not None
    return "\\u0000" in encoded and ESCAPED_NUL.search(encoded) is not None


def single_relation(payload: dict[str, Any], attribute: str) -> str:
    value = payload.get(attribute)
    if value is None:
        return ""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and "$relation" in item:
            refs = item["$relation"]
            if not isinstance(refs, list) or not all(
                isinstance(ref, dict) and isinstance(ref.get("entity_id"), str) for ref in refs
            ):
                raise QuarantineReason(f"relation {attribute} is broken: $relation must be a list of {{entity_id}}")
    ids = relation_ids(value)
    return ids[0] if ids else ""


def as_decimal(value: Any, name: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise QuarantineReason(f"{name} is a boolean, not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise QuarantineReason(f"{name} is not a number: {str(value)[:40]!r}") from None
    if not number.is_finite() or abs(number) >= Decimal("1e12"):
        raise QuarantineReason(f"{name} is out of range")
    return number.quantize(Decimal("0.01"))
