"""Drift: attributes epilot sends for a schema that the mirror has not seen before, or whose JSON type changed.

Payloads stay whole whatever arrives; this only records and announces. The attributes of a schema's
first sync are its baseline. What a page carries is collected while its rows are built (no
database); `record_drift` compares that with what is known, kept per process, and writes only what
is new: nothing for a page like the ones before.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from projects.models import SchemaAttribute, SyncState

# Attributes the mirror itself reads (rows.py, relations, executions): never news, whenever they first appear.
READ_BY_THE_MIRROR = frozenset({"workflows", "items", "status", "address", "customer", "opportunity", "email", "budget",
                                "amount_total", "currency", "title"})

KINDS = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null", list: "array", dict: "object"}


def add_attribute_types(pairs: set[tuple[str, type]], payload: Mapping[str, Any]) -> None:
    """Add the (attribute, Python type) pairs of one payload to `pairs`; `named_attributes` names them."""
    # Called for each document while its objects are still in the CPU's cache (right after it is serialised): a
    # second pass over a whole page afterwards reads every value from memory again. Pairs, not names: every value
    # of every document passes here, and the few distinct pairs are then named and filtered once.
    pairs.update(zip(payload, map(type, payload.values()), strict=False))


def named_attributes(pairs: Iterable[tuple[str, type]]) -> set[tuple[str, str]]:
    """The (attribute, JSON type) pairs of `add_attribute_types`' pairs; epilot's own `_` attributes left out."""
    return {(name, KINDS.get(kind, "other")) for name, kind in pairs if not name.startswith("_")}


_known: dict[str, dict[str, set[str]]] = {}  # schema → attribute → the JSON types it came as
_synced_once: set[str] = set()


def record_drift(schema: str, attributes: set[tuple[str, str]], now: dt.datetime) -> None:
    """Record attributes not seen before, and a known attribute arriving as a JSON type it never had.

    During a schema's first sync every attribute and type is baseline (data often mixes types from
    the start); `kind` keeps every type an attribute came as, comma-separated. The new attributes of
    a page are written in one statement.
    """
    known = _load(schema)
    arrived: dict[str, set[str]] = {}
    for name, kind in attributes:
        kinds = known.get(name)
        if kinds is None or (kind not in kinds and kind != "null"):
            arrived.setdefault(name, set()).add(kind)
    if not arrived:
        return  # a page like the ones before costs nothing
    baseline = not _has_synced(schema)
    new = {name: kinds - {"null"} or kinds for name, kinds in arrived.items() if name not in known}
    SchemaAttribute.objects.bulk_create([
        SchemaAttribute(schema=schema, name=name[:200], kind=_joined(kinds), first_seen=now,
                        baseline=baseline or name in READ_BY_THE_MIRROR) for name, kinds in new.items()],
        ignore_conflicts=True)
    known.update(new)
    for name, kinds_now in arrived.items():
        if name in new:
            continue
        kinds = known[name]
        before = _joined(kinds)
        kinds.discard("null")  # an attribute known only without a value learns its type; that is no change
        kinds.update(kinds_now)
        changed = {"kind_changed_at": now, "previous_kind": before, "acknowledged_at": None} \
            if not baseline and before != "null" else {}
        SchemaAttribute.objects.filter(schema=schema, name=name[:200]).update(kind=_joined(kinds), **changed)


def _joined(kinds: set[str]) -> str:
    return ",".join(sorted(kinds))[:20]


def _load(schema: str) -> dict[str, set[str]]:
    if schema not in _known:
        _known[schema] = {name: set(kind.split(",")) for name, kind in
                          SchemaAttribute.objects.filter(schema=schema).values_list("name", "kind")}
    return _known[schema]


def _has_synced(schema: str) -> bool:
    """Whether a sync of the schema ever finished (until then, everything is baseline)."""
    if schema not in _synced_once and SyncState.objects.filter(schema=schema, last_success_at__isnull=False).exists():
        _synced_once.add(schema)
    return schema in _synced_once


def forget_known_attributes() -> None:
    """Drop the per-process memory of recorded attributes (tests, and after staff acknowledged some)."""
    _known.clear()
    _synced_once.clear()
